"""The Streamlit app: every flow through AppTest, and its pixel logic as plain functions.

The app runs on tiny random-weight checkpoints (64 px input, a 2x2 grid) named through
ATTEND_CAPTIONER / ATTEND_VQA, so these tests need neither the shipped models nor time:
they check plumbing and messages, not caption quality. One test uses the shipped models
when they are installed.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from apps import app_logic as logic
from captioner.model import AttentionDecoder, CaptionerConfig
from core.checkpoint import save_checkpoint
from core.encoder import EncoderConfig
from core.images import ImageError, load_image, resize_for_model
from core.overlay import overlay
from core.vocab import SPECIALS, Vocab
from data_prep.scenes import make_scene
from vqa.model import VQAConfig, VQANet

APP = Path(__file__).resolve().parent.parent / "apps" / "streamlit_app.py"
TIMEOUT = 60  # s: the first run loads two encoders
WORDS = ["a", "small", "large", "red", "blue", "green", "circle", "square", "star", "triangle", "and"]
QUESTION_WORDS = ["what", "colour", "is", "the", "circle", "how", "many", "objects", "are", "there"]
ANSWERS = ["yes", "no", "red", "blue", "circle", "2"]


# ---------------------------------------------------------------- tiny checkpoints


def write_tiny_checkpoints(folder: Path, image_size: int = 64) -> tuple[Path, Path]:
    """A random-weight captioner and VQA model in the shipped checkpoint format."""
    torch.manual_seed(0)
    encoder = asdict(EncoderConfig(image_size=image_size))
    grid = [image_size // 32] * 2
    vocab = Vocab([*SPECIALS, *WORDS])
    config = CaptionerConfig(vocab_size=len(vocab), embed_dim=16, attention_dim=16, hidden_dim=32, max_len=6, grid=grid)
    decoder = AttentionDecoder(config)
    with torch.no_grad():  # never <end> (nor a special token): every caption has max_len - 1 words
        decoder.fc.bias[: len(SPECIALS)] = -1e4
    captioner = folder / "captioner.pt"
    save_checkpoint(
        captioner,
        {
            "kind": "captioner",
            "config": asdict(config),
            "vocab": vocab.to_dict(),
            "encoder": encoder,
            "model": decoder.state_dict(),
            "version": 1,
        },
    )
    question_vocab = Vocab([*SPECIALS, *QUESTION_WORDS])
    vqa_config = VQAConfig(
        question_vocab_size=len(question_vocab),
        num_answers=len(ANSWERS),
        grid=grid,
        embed_dim=8,
        hidden_dim=16,
        attention_dim=8,
        classifier_dim=16,
    )
    vqa = folder / "vqa.pt"
    save_checkpoint(
        vqa,
        {
            "kind": "vqa",
            "config": asdict(vqa_config),
            "model": VQANet(vqa_config).state_dict(),
            "question_vocab": question_vocab.to_dict(),
            "answers": ANSWERS,
            "encoder": encoder,
            "metric": "exact",
            "version": 1,
        },
    )
    return captioner, vqa


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The app sets the server's torch thread count; AppTest runs it in this process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_checkpoints(tmp_path_factory.mktemp("app_models"))


@pytest.fixture
def app(tiny_models, monkeypatch):
    """A fresh AppTest of the app on the tiny models, already run once."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(logic.ENV_CAPTIONER, str(tiny_models[0]))
    monkeypatch.setenv(logic.ENV_VQA, str(tiny_models[1]))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


def scene_png(index: int = 1) -> bytes:
    _, pixels, _, _ = make_scene(logic.GALLERY_SEED, "test", index)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def texts(elements) -> list[str]:
    return [logic.plain(e.value) for e in elements]


def caption_of(at) -> str:
    """The caption heading (the only level-3 heading before the Ask section)."""
    headings = [m for m in texts(at.markdown) if m.startswith("### ")]
    assert headings, "no caption shown"
    return headings[0][4:]


def images(at):
    return at.get("image")


def assert_captioned(at, tokens_expected: int | None = None) -> None:
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    caption = caption_of(at)
    words = [p for p in at.pills if p.key.startswith("word_")][0]
    assert len(words.options) == len(caption.split())
    if tokens_expected is not None:
        assert len(words.options) == tokens_expected
    captions = [c for image in images(at) for c in image.captions]
    # The selected word's overlay, the image the model saw, and one tile per word.
    assert any(c.startswith(f'"{caption.split()[0]}"') for c in captions)
    assert any(c.startswith("The image as the model saw it") for c in captions)
    tiles = [b.label for b in at.button if b.key.startswith("tile_")]
    assert tiles == [f"{i + 1}. {w}" for i, w in enumerate(caption.split())]


# ---------------------------------------------------------------- flows


def test_start_page_shows_models_and_what_they_know(app):
    assert not app.error
    info = " ".join(texts(app.info))
    assert "synthetic" in info and "easy-VQA" in info and "attend train captioner" in info
    allowed = {t.lstrip(".") for t in app.file_uploader(key="upload").allowed_type}
    assert allowed == set(logic.UPLOAD_TYPES)


def test_upload_captions_with_a_map_per_word(app, tiny_models):
    from captioner.inference import Captioner

    data = scene_png(1)
    app.file_uploader(key="upload").set_value(("scene.png", data, "image/png")).run()
    expected = Captioner.load(tiny_models[0]).caption([data], beam_size=3)[0]
    assert caption_of(app) == expected.caption
    assert_captioned(app, len(expected.tokens))

    # A click on another word shows that word's map; beam size 1 re-captions greedily.
    words = [p for p in app.pills if p.key.startswith("word_")][0]
    if len(words.options) > 1:
        words.set_value(1).run()
        assert any(c.startswith(f'"{expected.tokens[1]}" (word 2)') for image in images(app) for c in image.captions)
        # A word's tile is a button as well: it selects that occurrence.
        last = len(expected.tokens) - 1
        app.button(key=f"tile_{last}").click().run()
        assert any(f"(word {last + 1})" in c for image in images(app) for c in image.captions)
    app.slider(key="beam").set_value(1).run()
    assert caption_of(app) == Captioner.load(tiny_models[0]).caption([data], beam_size=1)[0].caption
    assert not app.exception


@pytest.mark.parametrize("fmt, mime", [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_upload_jpeg_and_webp(app, fmt, mime):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(scene_png(5))).save(buffer, format=fmt, quality=90)
    app.file_uploader(key="upload").set_value((f"scene.{fmt.lower()}", buffer.getvalue(), mime)).run()
    assert_captioned(app)


def test_camera_photo(app):
    app.segmented_control(key="image_source").set_value("Camera").run()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(scene_png(2))).save(buffer, format="JPEG", quality=90)
    app.camera_input(key="camera").set_value(("photo.jpg", buffer.getvalue(), "image/jpeg")).run()
    assert_captioned(app)


def test_gallery_pick_and_example_question(app):
    app.segmented_control(key="image_source").set_value("Samples").run()
    assert not app.exception
    assert "Press" in " ".join(texts(app.caption))
    app.button(key="sample_0").click().run()
    assert_captioned(app)
    examples = app.pills(key="example_question")
    assert examples.options, "gallery scenes come with their questions"
    examples.set_value(examples.options[0]).run()
    assert app.text_input(key="question").value == examples.options[0]
    assert not app.exception
    # The tiny model knows few words: a withheld answer names them; the toggle answers anyway.
    if not app.get("progress"):
        assert any("No answer: the model does not know" in w for w in texts(app.warning)), texts(app.warning)
        app.toggle(key="allow_unknown").set_value(True)
        app.button(key="ask").click().run()
    assert len(app.get("progress")) >= 1

    # An easy-VQA test image is in the gallery as well.
    last = len(logic.gallery()) - 1
    app.button(key=f"sample_{last}").click().run()
    assert_captioned(app)


def answer_warnings(app) -> list[str]:
    """The warnings other than the notices beside a caption or an answer (those with the warning
    icon): the random-weight captioner's captions always carry one (they run to the length limit)."""
    return [logic.plain(w.value) for w in app.warning if w.icon != ":material/warning:"]


def ask(app, question: str):
    app.text_input(key="question").set_value(question)
    app.button(key="ask").click().run()
    assert not app.exception, app.exception
    return app


def test_ask_shows_answer_bars_and_glimpses(app, tiny_models):
    from vqa.inference import Answerer

    data = scene_png(3)
    app.file_uploader(key="upload").set_value(("scene.png", data, "image/png")).run()
    ask(app, "what colour is the circle?")
    expected = Answerer.load(tiny_models[1]).ask_one(data, "what colour is the circle?", top_k=5)
    headings = [m for m in texts(app.markdown) if m.startswith("### ")]
    assert headings[-1] == f"### {expected['answer']}"
    bars = app.get("progress")
    assert len(bars) == len(expected["top_k"]) == 5
    assert [b.value for b in bars] == [int(100 * p) for _, p in expected["top_k"]]  # percent, as drawn
    assert [logic.plain(b.text) for b in bars] == [f"{a}: {100 * p:.1f}%" for a, p in expected["top_k"]]
    glimpses = [c for image in images(app) for c in image.captions if c.startswith("glimpse")]
    assert glimpses == [f"glimpse {g + 1}" for g in range(len(expected["attention"]))]
    assert not answer_warnings(app)


@pytest.mark.parametrize(
    "question, message",
    [
        ("what colour is the zork circle?", "No answer: the model does not know 'zork'"),
        ("zork blorp?", "none of the question's words is known"),
        ("?!", "empty question"),
    ],
)
def test_unknown_and_empty_questions_get_a_friendly_message(app, question, message):
    app.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
    ask(app, question)
    assert any(message in w for w in texts(app.warning)), texts(app.warning)
    assert not app.error


def test_blank_question_only_prompts(app):
    app.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
    ask(app, "   ")
    assert not answer_warnings(app) and not app.error
    assert any("Type a question" in c for c in texts(app.caption))


def _truncated_png() -> bytes:
    return scene_png(1)[:2000]


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("broken.png", _truncated_png(), "truncated or corrupt"),
        ("notes.png", b"this is not an image, just text\n" * 10, "not an image file"),
        ("empty.jpg", b"", "empty file"),
        ("huge.png", b"\x89PNG" + bytes(logic.MAX_UPLOAD_BYTES), "file too large"),
    ],
)
def test_bad_file_gets_a_friendly_error(app, name, data, reason):
    app.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    assert not app.exception
    errors = texts(app.error)
    assert len(errors) == 1 and reason in errors[0] and name in errors[0], errors
    assert not [m for m in texts(app.markdown) if m.startswith("### ")]  # nothing captioned


@pytest.fixture
def garbage(tmp_path) -> Path:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00not a checkpoint" * 100)
    return path


@pytest.mark.parametrize("which", ["captioner", "vqa"])
def test_bad_checkpoint_path_gets_a_friendly_error(app, tiny_models, tmp_path, garbage, which, monkeypatch):
    monkeypatch.setenv(logic.ENV_MODELS, str(tmp_path))  # the box loads only from the models folder
    tiny_models = [Path(shutil.copy(model, tmp_path)) for model in tiny_models]
    other = tiny_models[1] if which == "captioner" else tiny_models[0]
    app.radio(key=f"{which}_choice").set_value("path").run()
    assert not app.exception and not app.error  # no path typed yet: a prompt, not an error
    cases = [
        (tmp_path / "missing.pt", "checkpoint not found"),
        (garbage, "not a readable attend checkpoint"),
        (other, "expected a captioner checkpoint" if which == "captioner" else "expected a vqa checkpoint"),
    ]
    for path, reason in cases:
        app.text_input(key=f"{which}_path").set_value(str(path)).run()
        assert not app.exception
        assert any(reason in e for e in texts(app.error)), (path, texts(app.error))
        assert any(reason in e for e in texts(app.sidebar.error))
    # A good path recovers, and the page still works.
    good = tiny_models[0] if which == "captioner" else tiny_models[1]
    app.text_input(key=f"{which}_path").set_value(str(good)).run()
    assert not app.error
    app.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
    assert_captioned(app)


def test_missing_default_models_get_a_clear_message(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import captioner.checkpoint
    import vqa.checkpoint

    monkeypatch.delenv(logic.ENV_CAPTIONER, raising=False)
    monkeypatch.delenv(logic.ENV_VQA, raising=False)
    monkeypatch.setitem(captioner.checkpoint.SHIPPED, "scenes", tmp_path / "scenes.pt")
    monkeypatch.setitem(vqa.checkpoint.SHIPPED, "scenes", tmp_path / "vqa_scenes.pt")
    st.cache_resource.clear()  # a default loaded by an earlier test must not hide the problem
    try:
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.run()
        assert not at.exception
        errors = texts(at.error)
        assert any("shipped scenes captioner model is missing" in e and "Checkpoint file" in e for e in errors), errors
        assert any("shipped scenes VQA model is missing" in e for e in errors), errors
        at.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
        assert not at.exception
        assert any("No captioner is loaded" in c for c in texts(at.caption))
    finally:
        st.cache_resource.clear()


SHIPPED = Path(logic.__file__).parent.parent / "captioner" / "weights" / "scenes.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped default captioner not installed")
def test_default_models_caption_a_scene(monkeypatch, tiny_models):
    from streamlit.testing.v1 import AppTest

    from vqa.checkpoint import SHIPPED as VQA_SHIPPED

    monkeypatch.delenv(logic.ENV_CAPTIONER, raising=False)
    if VQA_SHIPPED["scenes"].is_file():
        monkeypatch.delenv(logic.ENV_VQA, raising=False)
    else:
        monkeypatch.setenv(logic.ENV_VQA, str(tiny_models[1]))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
    assert_captioned(at)
    ask(at, "how many objects are there?")
    assert at.get("progress")


# ---------------------------------------------------------------- the pure helpers


def test_uniform_map_is_drawn_flat_not_as_noise():
    image = Image.new("RGB", (64, 64), (200, 220, 240))
    flat = np.full((7, 7), 1 / 49) + np.random.default_rng(0).normal(0, 1e-9, (7, 7))
    assert logic.is_uniform(flat) and logic.peak_cell(flat) is None
    pixels = np.asarray(logic.word_overlay(image, flat))
    assert (pixels == pixels[0, 0]).all()  # one colour everywhere: no rainbow
    peaked = np.zeros((7, 7))
    peaked[2, 5] = 1.0
    assert not logic.is_uniform(peaked) and logic.peak_cell(peaked) == (2, 5)


def test_overlay_is_smooth_and_peaks_where_the_model_looked():
    image = Image.new("RGB", (224, 224), (128, 128, 128))
    grid = np.zeros((7, 7))
    grid[1, 5] = 1.0  # row 1, column 5: upper right
    shown = np.asarray(logic.word_overlay(image, grid, 448), dtype=np.float64)
    assert shown.shape == (448, 448, 3)
    brightness = shown.sum(-1)
    cells = brightness.reshape(7, 64, 7, 64).mean((1, 3))  # mean brightness per grid cell
    assert np.unravel_index(cells.argmax(), cells.shape) == (1, 5)
    # The lit cell keeps the image's own brightness (no colour added); far cells are dimmed.
    assert shown[96, 352].tolist() == [128, 128, 128] and shown[400, 30].sum() < 0.3 * 3 * 128
    # A white contour encloses the lit cell; nothing else is white.
    white = (shown == 255).all(-1)
    ys, xs = np.nonzero(white)
    assert white.any() and ys.min() >= 20 and ys.max() <= 172 and xs.min() >= 276 and xs.max() <= 428
    # Smooth: away from the line, neighbouring pixels differ by far less than the full range.
    away = ~(white | np.roll(white, 1, 1) | np.roll(white, -1, 1))[:, 1:]
    assert np.abs(np.diff(brightness, axis=1))[away].max() < 0.1 * brightness.max()
    assert logic.word_overlay(image, grid).size == (224, 224)
    np.testing.assert_array_equal(np.asarray(logic.word_overlay(image, grid)), np.asarray(overlay(image, grid)))


def test_overlay_keeps_the_aspect_ratio_and_never_changes_a_colour():
    image = Image.new("RGB", (300, 150), (200, 40, 40))  # a red, wide picture
    grid = np.zeros((7, 7))
    grid[3, 3] = 1.0
    shown = logic.word_overlay(image, grid, 400)
    assert shown.size == (400, 200)
    pixels = np.asarray(shown, dtype=np.float64).reshape(-1, 3)
    plain = pixels[~(pixels == 255).all(1)]  # the contour aside, every pixel is the red, dimmed or not
    np.testing.assert_allclose(plain[:, 1] / plain[:, 0], 40 / 200, atol=0.02)
    flat = np.asarray(overlay(image, np.ones((7, 7))))  # a uniform map: evenly dimmed, no line
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1


def test_overlays_are_drawn_on_the_exact_image_the_model_saw(tiny_models):
    from captioner.inference import Captioner

    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 160, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    picture = logic.read_picture(buffer.getvalue(), "photo.png")
    result = Captioner.load(tiny_models[0]).caption([picture.image])[0]
    seen = resize_for_model(load_image(buffer.getvalue()), 64)
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(seen))
    np.testing.assert_array_equal(np.asarray(logic.model_view(picture.image, 64)), np.asarray(seen))
    tiles = logic.attention_overlays(result.image, result.attention, 150)
    assert len(tiles) == len(result.tokens) and all(t.size == (150, 150) for t in tiles)
    assert logic.attention_overlays(result.image, None) == []


def test_colour_bar_runs_from_dim_to_bright_and_marks_the_contour():
    bar = np.asarray(logic.colour_bar(200, 10), dtype=np.float64)
    assert bar.shape == (10, 200, 3)
    middle = bar[5, 1:-1].sum(-1)
    assert middle[0] < 0.3 * middle[-1] and middle[-1] > 650
    marks = np.nonzero(np.abs(np.diff(middle)) > 40)[0]
    assert marks.size and all(90 <= m <= 105 for m in marks)  # the contour's level: half the range


def test_read_picture_limits_and_errors():
    data = scene_png(0)
    picture = logic.read_picture(data, "scene.png")
    assert picture.image.mode == "RGB" and picture.image.size == (224, 224)
    assert picture.digest == logic.read_picture(data, "again.png").digest
    with pytest.raises(ImageError, match="file too large"):
        logic.read_picture(data, "scene.png", limit=len(data) - 1)
    with pytest.raises(ImageError, match="not an image file"):
        logic.read_picture(b"hello", "hello.png")


def test_gallery_samples_are_images_with_questions():
    samples = logic.gallery()
    kinds = [s.kind for s in samples]
    assert kinds.count("scene") == logic.GALLERY_SCENES and kinds.count("easy-vqa") == logic.GALLERY_EASY_VQA
    for sample in samples:
        assert sample.questions and all(q.endswith("?") for q in sample.questions)
        assert logic.read_picture(sample.data, sample.label).image.size in {(224, 224), (64, 64)}
    assert [s.data for s in logic.scene_samples(2)] == [s.data for s in logic.scene_samples(2)]


def test_model_source(monkeypatch, tmp_path):
    monkeypatch.delenv(logic.ENV_VQA, raising=False)
    monkeypatch.setenv(logic.ENV_MODELS, str(tmp_path))
    assert logic.model_source("default", "", logic.ENV_VQA) is None
    assert logic.model_source("easy-vqa", "", logic.ENV_VQA) == "easy-vqa"
    inside = str((tmp_path / "x" / "best.pt").resolve())
    assert logic.model_source("path", f' "{inside}" ', logic.ENV_VQA) == inside
    assert logic.model_source("path", "x/best.pt", logic.ENV_VQA) == inside  # relative to the models folder
    with pytest.raises(logic.CheckpointRefused):  # outside the models folder
        logic.model_source("path", ' "/x/best.pt" ', logic.ENV_VQA)
    with pytest.raises(ValueError):
        logic.model_source("path", "  ", logic.ENV_VQA)
    monkeypatch.setenv(logic.ENV_VQA, "/y.pt")
    assert logic.model_source("default", "", logic.ENV_VQA) == "/y.pt"


def test_text_never_becomes_markup():
    for text in ["a *b* <script>x</script>", "- a list?", "1. one", ":red[boo] :smile:", "# heading", "a_b_c"]:
        escaped = logic.escape_markdown(text)
        assert logic.plain(escaped) == text
        assert not any(c in escaped.replace("\\" + c, "") for c in "*<>[]_#")
    assert logic.top_k_rows([["red", 0.75], ["blue", 1.2]]) == [
        ("red", 0.75, "red: 75.0%"),
        ("blue", 1.0, "blue: 100.0%"),
    ]
    assert logic.unknown_note([]) is None and "zork" in logic.unknown_note(["zork", "zork"])


def test_app_never_uses_unsafe_html_and_library_never_imports_apps():
    source = APP.read_text()
    assert "unsafe_allow_html" not in source and "st.html" not in source
    imports = re.compile(r"^\s*(?:import|from)\s+(apps|streamlit)\b", re.MULTILINE)
    assert not imports.search(Path(logic.__file__).read_text().replace("from apps", "")), "app_logic imports streamlit"
    root = APP.parent.parent
    for package in ("captioner", "vqa", "data_prep"):
        for path in (root / package).rglob("*.py"):
            assert not imports.search(path.read_text()), f"{path} imports the apps or streamlit"


def test_attend_app_runs_streamlit_with_the_upload_limit(monkeypatch):
    from apps import cli

    seen = {}
    monkeypatch.setattr(cli.os, "execvp", lambda file, argv: seen.update(file=file, argv=argv))
    assert cli.main(["app", "--port", "8765"]) == 0
    argv = seen["argv"]
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] == str(APP)
    assert argv[argv.index("--server.maxUploadSize") + 1] == str(logic.MAX_UPLOAD_MB)
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert argv[argv.index("--server.headless") + 1] == "true"
    config = (APP.parent.parent / ".streamlit" / "config.toml").read_text()
    assert f"maxUploadSize = {logic.MAX_UPLOAD_MB}" in config
    assert 'address = "127.0.0.1"' in config


def test_the_server_listens_on_the_loopback_unless_told_otherwise():
    def address(command):
        return command[command.index("--server.address") + 1]

    assert address(logic.streamlit_command()) == "127.0.0.1"
    assert address(logic.streamlit_command(port=8765, address=None)) == "127.0.0.1"
    assert address(logic.streamlit_command(address="0.0.0.0")) == "0.0.0.0"
    assert logic.streamlit_command(address="::1").count("--server.address") == 1


# ---------------------------------------------------------------- what an attack found: memory


def huge_png(width: int = 8000, height: int = 8000) -> bytes:
    """A small PNG (mostly one colour) that decodes to width x height pixels."""
    pixels = np.full((height, width, 3), (235, 240, 245), dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (200, 40, 60)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def huge() -> bytes:
    return huge_png()


def large_images() -> list[tuple[int, int]]:
    gc.collect()
    images = [o for o in gc.get_objects() if issubclass(type(o), Image.Image)]  # type(): no attribute lookups
    return [image.size for image in images if max(image.size) > logic.MAX_SIDE]


def test_huge_upload_is_kept_small_and_decoded_once(app, huge, monkeypatch):
    decodes = []
    decode = logic.decode_small
    monkeypatch.setattr(logic, "decode_small", lambda *a, **k: decodes.append(a[1]) or decode(*a, **k))
    assert len(huge) < 300_000  # 192 MB of pixels
    app.file_uploader(key="upload").set_value(("huge.png", huge, "image/png")).run()
    assert_captioned(app)
    assert any("8000x8000 pixels; the app keeps it at 1024x1024" in c for c in texts(app.caption))
    # The session keeps small values only: the digest, the name and the small picture's PNG.
    kept = app.session_state["picture"]
    assert kept["digest"] == hashlib.sha256(huge).hexdigest() and kept["name"] == "huge.png"
    assert all(isinstance(v, (str, bytes, list, tuple)) for v in kept.values())
    with Image.open(io.BytesIO(kept["png"])) as small:
        assert small.size == (logic.MAX_SIDE, logic.MAX_SIDE)
    assert len(kept["png"]) < 4 * 2**20  # at most 1024 x 1024 x 3 bytes and a little
    # Nothing alive (script globals held by a widget's callback, session state, caches)
    # holds an image larger than the kept one.
    assert large_images() == []
    # A click on a word reruns the page on the kept picture: no second decode.
    words = [p for p in app.pills if p.key.startswith("word_")][0]
    words.set_value(len(words.options) - 1).run()
    assert not app.exception and decodes == ["huge.png"]
    assert large_images() == []
    # A bad file after it leaves the session without a picture.
    app.file_uploader(key="upload").set_value(("bad.png", b"not an image", "image/png")).run()
    assert "picture" not in app.session_state and len(texts(app.error)) == 1


def test_read_picture_shrinks_on_read():
    picture = logic.read_picture(huge_png(8000, 2000), "wide.png")
    assert picture.image.size == (1024, 256) and picture.image.mode == "RGB"
    assert picture.original_size == (8000, 2000)
    pixels = np.asarray(picture.image)
    assert tuple(pixels[0, 0]) == (235, 240, 245) and tuple(pixels[96, 384]) == (200, 40, 60)

    # A JPEG (decoded at a fraction of its size), with a phone's rotation applied once.
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    photo = photo.resize((3000, 2000), Image.Resampling.NEAREST)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=95, exif=exif)
    small = logic.read_picture(buffer.getvalue(), "phone.jpg").image
    expected = load_image(buffer.getvalue())
    assert expected.size == (2000, 3000)
    expected.thumbnail((1024, 1024))
    assert small.size == expected.size == (683, 1024)
    assert np.abs(np.asarray(small, dtype=float) - np.asarray(expected, dtype=float)).mean() < 4

    # Transparent areas go on white, as load_image puts them.
    rgba = np.zeros((3000, 3000, 4), dtype=np.uint8)
    rgba[:1500, :, :] = (0, 0, 255, 255)  # top half opaque blue, bottom half transparent
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    small = np.asarray(logic.read_picture(buffer.getvalue(), "alpha.png").image)
    assert small.shape == (1024, 1024, 3)
    assert tuple(small[100, 100]) == (0, 0, 255) and tuple(small[900, 100]) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16", "LA", "1"])
def test_read_picture_equals_load_image_for_images_that_fit(mode):
    """Up to 1024 px nothing is resized: the strip-wise conversion is load_image's, exactly."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (700, 300, 4), dtype=np.uint8), "RGBA")  # 3 strips
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (700, 300), dtype=np.uint16))
    elif mode == "P":
        image = image.convert("RGB").quantize(64)
        image.info["transparency"] = 3
    else:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    picture = logic.read_picture(data, "fits.png")
    assert picture.image.size == (300, 700) and picture.original_size == (300, 700)
    np.testing.assert_array_equal(np.asarray(picture.image), np.asarray(load_image(data)))


def test_read_picture_refuses_what_it_cannot_decode_small():
    # A WebP over 4096x4096 (Pillow's WebP reader holds ~15 bytes a pixel): refused from its header.
    header = b"VP8X" + (10).to_bytes(4, "little") + bytes(4) + (7999).to_bytes(3, "little") * 2
    webp = b"RIFF" + (len(header) + 4).to_bytes(4, "little") + b"WEBP" + header
    with pytest.raises(ImageError, match=r"WebP image too large \(8000x8000"):
        logic.read_picture(webp, "big.webp")
    for options in ({"quality": 80}, {"lossless": True}):
        buffer = io.BytesIO()
        Image.new("RGBA", (37, 21), (1, 2, 3, 4)).save(buffer, format="WEBP", **options)
        assert logic._webp_size(buffer.getvalue()) == (37, 21)
        assert logic.read_picture(buffer.getvalue(), "small.webp").image.size == (37, 21)
    # Another format under a .png name is not decoded at all.
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="TIFF")
    with pytest.raises(ImageError, match="a TIFF image; the app takes JPEG, PNG and WebP"):
        logic.read_picture(buffer.getvalue(), "renamed.png")


MEMORY_PROBE = """
import io, json, sys
from apps import app_logic as logic
def vm():
    lines = open("/proc/self/status").read().splitlines()
    return {k: int(v.split()[0]) / 1024 for k, _, v in (l.partition(":") for l in lines) if k in ("VmRSS", "VmHWM")}
data = open(sys.argv[1], "rb").read()
logic.read_picture(logic._png(__import__("numpy").zeros((8, 8, 3), "uint8")), "warm.png")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here on
before = vm()["VmRSS"]
picture = logic.read_picture(data, "huge.png")
after = vm()
print(json.dumps({"size": picture.image.size, "peak_extra_mb": after["VmHWM"] - before,
                  "kept_extra_mb": after["VmRSS"] - before}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_reading_a_huge_png_holds_its_pixels_once_and_keeps_nothing(tmp_path, huge):
    """Measured in a fresh process: Pillow holds an 8000x8000 RGB image as 256 MB (4 bytes a
    pixel) while it decodes; reading it used to take 730 MB at its peak and keep 244 MB."""
    path = tmp_path / "huge.png"
    path.write_bytes(huge)
    root = Path(logic.__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.splitlines()[-1])
    print(f"\nread_picture of an 8000x8000 PNG: {measured}")
    assert measured["size"] == [1024, 1024]
    assert measured["peak_extra_mb"] < 360  # the decoded pixels (256 MB) and little else
    assert measured["kept_extra_mb"] < 32


# ---------------------------------------------------------------- what an attack found: the checkpoint box


@pytest.fixture
def models_folder(tmp_path, tiny_models, monkeypatch) -> Path:
    folder = tmp_path / "models"
    (folder / "run").mkdir(parents=True)
    for model in tiny_models:
        shutil.copy(model, folder / "run" / model.name)
    (folder / "escape.pt").symlink_to("/etc/passwd")
    (folder / "loop.pt").symlink_to(folder / "loop.pt")
    monkeypatch.setenv(logic.ENV_MODELS, str(folder))
    return folder


@pytest.mark.parametrize("which", ["captioner", "vqa"])
def test_checkpoint_box_says_the_same_for_every_path_outside_the_models_folder(
    app, tiny_models, tmp_path, models_folder, which
):
    app.radio(key=f"{which}_choice").set_value("path").run()
    outside = [
        "/etc/passwd",  # exists, not a checkpoint
        "/etc/no-such-file.pt",  # does not exist
        str(tiny_models[0 if which == "captioner" else 1]),  # a good checkpoint, outside
        str(tmp_path),  # a folder
        str(models_folder / ".." / "missing.pt"),
        "../../../../../../etc/passwd",
        "escape.pt",  # a link inside the folder to a file outside
        "loop.pt",  # a link inside the folder to itself
        "/",
    ]
    seen = {}
    for text in outside:
        app.text_input(key=f"{which}_path").set_value(text).run()
        assert not app.exception, (text, app.exception)
        seen[text] = (tuple(texts(app.error)), tuple(texts(app.sidebar.error)))
    assert len(set(seen.values())) == 1, "\n".join(f"{k}: {v}" for k, v in seen.items())
    errors, sidebar = seen["/etc/passwd"]
    assert len(sidebar) == 1 and set(errors) == set(sidebar)  # in the sidebar and on the page
    assert "models folder" in errors[0] and "models/" in errors[0]
    assert "passwd" not in errors[0] and "exist" not in errors[0] and "found" not in errors[0]

    # Inside the folder: by absolute path, relative to the folder, or relative to the working directory.
    name = tiny_models[0 if which == "captioner" else 1].name
    inside = [str(models_folder / "run" / name), f"run/{name}", os.path.relpath(models_folder / "run" / name)]
    for text in inside:
        app.text_input(key=f"{which}_path").set_value(text).run()
        assert not app.exception and not app.error, (text, texts(app.error))
        assert any(c.endswith(text) for c in texts(app.sidebar.caption)), texts(app.sidebar.caption)
    # There, a missing or bad file is said as such, in the visitor's own words.
    for text, reason in [
        ("run/missing.pt", "checkpoint not found"),
        ("~root/.profile", "checkpoint not found"),  # no home folders: a name inside the folder
    ]:
        app.text_input(key=f"{which}_path").set_value(text).run()
        errors = texts(app.sidebar.error)
        assert len(errors) == 1 and f"{text}: {reason}" in errors[0], errors
        assert str(models_folder) not in errors[0]


def test_allowed_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    monkeypatch.delenv(logic.ENV_MODELS, raising=False)
    shipped = logic.shipped_models("vqa")
    assert logic.models_folder() == (tmp_path / "runs").resolve()
    assert logic.allowed_checkpoint("easy-vqa", shipped) == "easy-vqa"
    assert logic.allowed_checkpoint("runs/a/best.pt", shipped) == str(tmp_path / "runs" / "a" / "best.pt")
    assert logic.allowed_checkpoint("a/best.pt", shipped) == str(tmp_path / "runs" / "a" / "best.pt")
    assert logic.allowed_checkpoint(str(shipped["scenes"]), shipped) == str(shipped["scenes"].resolve())
    messages = set()
    for text in [".", "runs/../../x.pt", "/etc/passwd", "x\0y.pt", "../scenes.pt", "/etc/shadow", ".."]:
        with pytest.raises(logic.CheckpointRefused) as refused:
            logic.allowed_checkpoint(text, shipped)
        messages.add(str(refused.value))
    assert len(messages) == 1 and "runs/" in messages.pop()


SHIPPED_VQA = Path(logic.__file__).parent.parent / "vqa" / "weights"


@pytest.mark.skipif(
    not (SHIPPED.is_file() and (SHIPPED_VQA / "scenes.pt").is_file() and (SHIPPED_VQA / "easy_vqa.pt").is_file()),
    reason="shipped models not installed",
)
def test_checkpoint_box_takes_the_shipped_names(app, models_folder):
    for which, name in [("captioner", "scenes"), ("vqa", "scenes"), ("vqa", "easy-vqa")]:
        app.radio(key=f"{which}_choice").set_value("path").run()
        app.text_input(key=f"{which}_path").set_value(name).run()
        assert not app.exception and not app.error, (which, name, texts(app.error))
        assert any(c.endswith(f": {name}") for c in texts(app.sidebar.caption)), texts(app.sidebar.caption)


# ---------------------------------------------------------------- what an attack found: links


def test_text_never_becomes_a_link():
    for text in [
        "see www.evil.com.png",
        "WWW.EVIL.COM",
        "write to me@evil.com",
        "http://evil.com/x",
        "https://evil.com",
        "mailto:me@evil.com",
        "xmpp:me@evil.com",
        "runs/http://evil.com/x.pt: checkpoint not found",
    ]:
        escaped = logic.escape_markdown(text)
        assert logic.plain(escaped) == text
        # GitHub's autolink patterns: "www.", an address after "@", "scheme://".
        assert not re.search(r"(?i)www\.", escaped), escaped
        assert not re.search(r"@[A-Za-z0-9]", escaped), escaped
        assert not re.search(r"[A-Za-z]:/", escaped.replace("\\", "")), escaped


# ---------------------------------------------------------------- honest about the image


def test_withheld_answer_and_the_toggle_that_answers_anyway(app):
    app.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
    ask(app, "what colour is the person?")
    assert any("No answer: the model does not know 'person'" in w for w in answer_warnings(app)), texts(app.warning)
    assert not app.get("progress")
    app.toggle(key="allow_unknown").set_value(True)
    app.button(key="ask").click().run()
    assert len(app.get("progress")) == 5
    assert any("ignored: person" in w for w in answer_warnings(app))


def test_a_new_picture_clears_the_question_and_its_answer(app):
    app.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
    ask(app, "what colour is the circle?")
    assert app.get("progress")
    app.file_uploader(key="upload").set_value(("other.png", scene_png(2), "image/png")).run()
    assert not app.exception
    assert app.text_input(key="question").value == ""
    assert not app.get("progress")


def test_a_gallery_sample_brings_its_own_vqa_model(app):
    app.segmented_control(key="image_source").set_value("Samples").run()
    last = len(logic.gallery()) - 1
    assert logic.gallery()[last].kind == "easy-vqa"
    app.button(key=f"sample_{last}").click().run()
    assert not app.exception
    assert app.radio(key="vqa_choice").value == "easy-vqa"
    app.button(key="sample_0").click().run()
    assert app.radio(key="vqa_choice").value == "default"


def test_the_forms_a_model_knows_are_examples_for_any_image(app):
    app.file_uploader(key="upload").set_value(("scene.png", scene_png(1), "image/png")).run()
    assert not [p for p in app.pills if p.key == "example_question"]  # the tiny model names no data set
    assert logic.example_questions(None, "scenes")[0] == "what colour is the circle?"
    assert logic.example_questions(["is there a star?"], "scenes") == ["is there a star?"]
    assert "what color is the shape?" in logic.example_questions([], "easy-vqa")


def test_a_photograph_gets_a_notice_and_what_the_encoder_recognises(monkeypatch):
    """The shipped models on Grace Hopper's portrait (matplotlib's sample data)."""
    import matplotlib
    from streamlit.testing.v1 import AppTest

    from captioner.checkpoint import SHIPPED

    if not SHIPPED["scenes"].is_file():
        pytest.skip("the shipped captioner is not installed")
    monkeypatch.delenv(logic.ENV_CAPTIONER, raising=False)
    monkeypatch.delenv(logic.ENV_VQA, raising=False)
    photo = Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg").read_bytes()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.file_uploader(key="upload").set_value(("hopper.jpg", photo, "image/jpeg")).run()
    assert not at.exception
    notices = [logic.plain(w.value) for w in at.warning]
    assert any("unlike the model's training images (scenes)" in n for n in notices), notices
    labels = at.pills(key=[p.key for p in at.pills if p.key.startswith("label_")][0])
    assert len(labels.options) == 5
    shown = [c for image in images(at) for c in image.captions if c.startswith("Class activation map of")]
    assert shown and "military uniform" in shown[0]
    ask(at, "is there a person?")
    assert any("the model does not know 'person'" in logic.plain(w.value) for w in at.warning)


def test_repeated_words_get_distinct_chip_labels_that_look_the_same():
    words = ["a", "small", "a", "circle", "a"]
    chips = logic.distinct_labels(words)
    assert len(set(chips)) == len(chips)
    assert [logic.plain(c) for c in chips] == words
