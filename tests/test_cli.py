"""The `attend` command as options + one module per task: a shipped model's name works for
every --checkpoint, --plain runs the reference model with the same results, and the library
functions the CLI now calls (a JSONL file of questions, the attention PNG) do what it printed
and wrote before."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps import options
from apps.cli import build_parser
from captioner.checkpoint import SHIPPED as CAPTIONER_SHIPPED
from captioner.inference import Captioner, CaptionResult, save_attention
from charlm.checkpoint import SHIPPED as CHARLM_SHIPPED
from core.errors import AttendError
from core.overlay import overlay_sheet
from data_prep.scenes import make_scene
from vqa.checkpoint import SHIPPED as VQA_SHIPPED
from vqa.inference import Answerer, ask_file, read_questions

from cli_helpers import cli_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNSEEN_SEED = 31337  # a scenes seed no training run used

needs_shipped = pytest.mark.skipif(
    not (
        CAPTIONER_SHIPPED["scenes"].is_file() and VQA_SHIPPED["scenes"].is_file() and VQA_SHIPPED["easy-vqa"].is_file()
    ),
    reason="shipped models missing",
)


@pytest.fixture(scope="module")
def scene_images(tmp_path_factory) -> list[Path]:
    """Two generated scenes of an unseen seed, as PNG files."""
    folder = tmp_path_factory.mktemp("cli_scenes")
    paths = []
    for index in range(2):
        _, pixels, _, _ = make_scene(UNSEEN_SEED, "test", index)
        paths.append(folder / f"scene{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


# ---------------------------------------------------------------- the parser's shape


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple, argparse.ArgumentParser]:
    """Every runnable command of ``parser`` by its words, e.g. ("bench", "decode")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_subcommands(sub, (*prefix, name)) or {(*prefix, name): sub})
    return found


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def test_every_command_is_registered_once_with_plain_and_checkpoint_where_they_belong():
    commands = _subcommands(build_parser())
    assert set(commands) == {
        ("prepare", "scenes"),
        ("prepare", "coco"),
        ("prepare", "vqa"),
        ("prepare", "easy-vqa"),
        ("features",),
        ("train", "captioner"),
        ("train", "vqa"),
        ("evaluate", "captioner"),
        ("evaluate", "vqa"),
        ("bench", "encoder"),
        ("bench", "decode"),
        ("bench", "train"),
        ("bench", "vqa"),
        ("bench", "charlm"),
        ("charlm", "train"),
        ("charlm", "sample"),
        ("charlm", "evaluate"),
        ("charlm", "export"),
        ("charlm", "cells"),
        ("caption",),
        ("ask",),
        ("domain",),
        ("app",),
    }
    plain = {path for path, p in commands.items() if "--plain" in _options(p)}
    assert plain == {
        ("caption",),
        ("evaluate", "captioner"),
        ("train", "captioner"),
        ("bench", "train"),
        ("charlm", "train"),
        ("bench", "charlm"),
    }
    takes = {
        path: _options(p).get("--init" if path == ("train", "captioner") else "--checkpoint")
        for path, p in commands.items()
    }
    takes = {path: action for path, action in takes.items() if action is not None}
    assert set(takes) == {
        ("caption",),
        ("evaluate", "captioner"),
        ("train", "captioner"),
        ("evaluate", "vqa"),
        ("ask",),
        ("bench", "vqa"),
        ("charlm", "sample"),
        ("charlm", "evaluate"),
        ("charlm", "cells"),
        ("charlm", "export"),
        ("domain",),
    }
    for path, action in takes.items():
        if path in (("charlm", "export"), ("domain",)):
            assert action.required  # export: a trained checkpoint to copy; domain: the one to fit for
            continue
        names = CAPTIONER_SHIPPED
        if "vqa" in path or path == ("ask",):
            names = VQA_SHIPPED
        elif "charlm" in path:
            names = CHARLM_SHIPPED
        assert all(name in action.help for name in names), (path, action.help)
    # Defaults that existed before the split stay as they were.
    assert _options(commands[("bench", "vqa")])["--checkpoint"].default == "scenes"
    assert _options(commands[("evaluate", "captioner")])["--checkpoint"].required
    assert _options(commands[("bench", "decode")])["--weights"].default == ["float32", "int8"]


def test_the_help_texts_name_the_models_that_ship():
    """options.SHIPPED is spelled out so that --help needs no torch; it must match the library's."""
    from captioner.checkpoint import DEFAULT as CAPTIONER_DEFAULT
    from charlm.checkpoint import DEFAULT as CHARLM_DEFAULT
    from vqa.checkpoint import DEFAULT as VQA_DEFAULT

    assert set(options.SHIPPED["captioner"]) == set(CAPTIONER_SHIPPED)
    assert set(options.SHIPPED["vqa"]) == set(VQA_SHIPPED)
    assert set(options.SHIPPED["charlm"]) == set(CHARLM_SHIPPED) and options.SHIPPED["charlm"][0] == CHARLM_DEFAULT
    assert options.SHIPPED["captioner"][0] == CAPTIONER_DEFAULT and options.SHIPPED["vqa"][0] == VQA_DEFAULT


def _apps_imports(path: Path) -> set[str]:
    """The modules of ``apps`` that ``path`` (a module of apps) imports, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(filter(None, ["apps" if node.level else "", node.module]))
            found.add(base)
            if node.level and not node.module:
                found.update(f"apps.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "apps" or m.startswith("apps.")}


def test_command_modules_import_only_options_and_the_library():
    for name in ("cli_data", "cli_captioner", "cli_vqa"):
        assert _apps_imports(ROOT / "apps" / f"{name}.py") == {"apps.options"}, name
    assert _apps_imports(ROOT / "apps" / "options.py") == set()
    assert _apps_imports(ROOT / "apps" / "cli.py") >= {"apps.cli_data", "apps.cli_captioner", "apps.cli_vqa"}


# ---------------------------------------------------------------- shipped names, --plain


@needs_shipped
def test_caption_by_shipped_name_and_plain_give_the_shipped_models_captions(scene_images, capsys, monkeypatch):
    reference = Captioner.load(CAPTIONER_SHIPPED["scenes"], device="cpu").caption([str(p) for p in scene_images])
    assert all(r.tokens for r in reference)

    code, out, err = run_cli(capsys, "caption", *scene_images, "--checkpoint", "scenes", "--json", "--device", "cpu")
    assert code == 0, err
    fast = [json.loads(line) for line in out.splitlines()]
    assert [r["tokens"] for r in fast] == [r.tokens for r in reference]

    from captioner.model import AttentionDecoder

    built = []
    load = Captioner.load.__func__

    def spy(cls, *args, **kwargs):
        captioner = load(cls, *args, **kwargs)
        built.append(type(captioner.decoder))
        return captioner

    monkeypatch.setattr(Captioner, "load", classmethod(spy))
    code, out, err = run_cli(
        capsys, "caption", *scene_images, "--checkpoint", "scenes", "--json", "--device", "cpu", "--plain"
    )
    assert code == 0, err
    assert built == [AttentionDecoder]  # the reference model really ran
    plain = [json.loads(line) for line in out.splitlines()]
    assert [r["tokens"] for r in plain] == [r["tokens"] for r in fast]
    for p, f in zip(plain, fast):
        np.testing.assert_allclose(np.asarray(p["attention"]), np.asarray(f["attention"]), atol=1e-3)


@pytest.mark.slow
@needs_shipped
def test_evaluate_captioner_by_shipped_name_fast_and_plain(tmp_path, capsys):
    from captioner.train import evaluate_captioner
    from core.checkpoint import load_checkpoint
    from core.encoder import EncoderConfig
    from core.features import write_features
    from data_prep.scenes import generate_scenes

    data = tmp_path / "unseen"
    generate_scenes(data, seed=UNSEEN_SEED, counts={"train": 1, "val": 1, "test": 3}, workers=1)
    encoder = EncoderConfig(**load_checkpoint(CAPTIONER_SHIPPED["scenes"], "captioner")["encoder"])
    write_features(data, encoder, compile=False, workers=0, progress=False, log=lambda m: None)
    reference = json.loads(
        json.dumps(evaluate_captioner(CAPTIONER_SHIPPED["scenes"], data, split="test", device="cpu"))
    )  # as printed: JSON keys are strings

    def without_run_details(summary: dict) -> dict:
        return {k: v for k, v in summary.items() if k not in ("checkpoint", "seconds")}

    for extra in ([], ["--plain"]):
        code, out, err = run_cli(
            capsys,
            "evaluate",
            "captioner",
            "--checkpoint",
            "scenes",
            "--data",
            data,
            "--device",
            "cpu",
            "--examples",
            "--json",
            *extra,
        )
        assert code == 0, err
        summary = json.loads(out)
        assert summary["checkpoint"] == "scenes" and summary["images"] == 3
        assert without_run_details(summary) == without_run_details(reference), extra


@needs_shipped
def test_ask_by_shipped_name_uses_that_model(capsys):
    import easy_vqa

    image = easy_vqa.get_test_image_paths()[0]
    questions = [q for q, _, image_id in zip(*easy_vqa.get_test_questions()) if image_id == 0][:3]
    answers = [a for _, a, image_id in zip(*easy_vqa.get_test_questions()) if image_id == 0][:3]
    reference = Answerer.load(VQA_SHIPPED["easy-vqa"])
    right = 0
    for question, answer in zip(questions, answers):
        code, out, err = run_cli(capsys, "ask", image, question, "--checkpoint", "easy-vqa", "--json", "--top-k", "20")
        assert code == 0, err
        result = json.loads(out)
        assert {a for a, _ in result["top_k"]} == set(easy_vqa.get_answers())  # easy-VQA's answers, not the scenes'
        assert result == json.loads(json.dumps(reference.ask_one(image, question, top_k=20)))
        right += result["answer"] == answer
    assert right >= 2, f"{right} of 3 right"


@pytest.mark.parametrize(
    "argv",
    [
        ["caption", "x.png", "--checkpoint", "no-such-model"],
        ["evaluate", "captioner", "--checkpoint", "no-such-model", "--data", "."],
        ["evaluate", "vqa", "--checkpoint", "no-such-model", "--data", "."],
        ["ask", "x.png", "what colour is the circle?", "--checkpoint", "no-such-model"],
    ],
)
def test_unknown_model_name_is_one_line_checkpoint_not_found(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)  # so that no file of that name exists
    assert cli_error(capsys, *argv) == "attend: error: no-such-model: checkpoint not found"


def test_train_init_with_an_unknown_model_name(scenes_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = cli_error(
        capsys, "train", "captioner", "--data", scenes_dir, "--out", tmp_path / "run", "--init", "no-such-model"
    )
    assert line == "attend: error: no-such-model: checkpoint not found"
    assert not (tmp_path / "run" / "last.pt").exists()


def test_int8_with_plain_is_refused_in_one_line(tiny_captioner, scene_images, capsys):
    line = cli_error(capsys, "caption", scene_images[0], "--checkpoint", tiny_captioner, "--int8", "--plain")
    assert "drop --int8 or --plain" in line


# ---------------------------------------------------------------- a JSONL file of questions


@needs_shipped
def test_ask_file_aligns_results_with_line_numbers_as_the_cli_prints_them(scene_images, tmp_path, capsys):
    folder = scene_images[0].parent
    colour = "what colour is the circle?"
    lines = [
        json.dumps({"image": str(scene_images[0]), "question": colour}),  # 1
        "",  # 2: blank, skipped
        "{not json",  # 3
        json.dumps(["image", "question"]),  # 4
        json.dumps({"image": scene_images[1].name, "question": "is there a red square?"}),  # 5: relative
        json.dumps({"image": str(scene_images[0]), "question": "florp zzyzx"}),
    ]  # 6: no known word
    jsonl = folder / "questions.jsonl"
    jsonl.write_text("\n".join(lines) + "\n   \n")
    answerer = Answerer.load("scenes")
    results = list(ask_file(answerer, jsonl, top_k=2))

    assert [r["line"] for r in results] == [1, 3, 4, 5, 6]
    assert results[1] == {"line": 3, "error": "line 3: not valid JSON"}
    assert results[2] == {"line": 4, "error": 'line 4: expected {"image": PATH, "question": TEXT}'}
    assert results[3]["image"] == str(folder / scene_images[1].name)  # found next to the file
    for result, (image, question) in zip(
        [results[0], results[3]], [(scene_images[0], colour), (scene_images[1], "is there a red square?")]
    ):
        alone = answerer.ask_one(image, question, top_k=2)
        assert result["answer"] == alone["answer"] and result["question"] == question
        assert [a for a, _ in result["top_k"]] == [a for a, _ in alone["top_k"]]
        np.testing.assert_allclose([p for _, p in result["top_k"]], [p for _, p in alone["top_k"]], atol=1e-3)
    assert results[4]["line"] == 6 and "none of the question's words is known" in results[4]["error"]
    one_by_one = list(ask_file(answerer, jsonl, top_k=2, batch_lines=1))
    assert [(r["line"], r.get("answer"), r.get("error")) for r in one_by_one] == [
        (r["line"], r.get("answer"), r.get("error")) for r in results
    ]

    code, out, err = run_cli(capsys, "ask", "--questions", jsonl, "--top-k", "2")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == json.loads(json.dumps(results))


def test_read_questions_lines_and_unreadable_files(tmp_path):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('\n{"image": "a.png", "question": "why?"}\n{"image": 3, "question": "x"}\n')
    assert list(read_questions(jsonl)) == [
        (2, "a.png", "why?", None),
        (3, None, None, 'line 3: expected {"image": PATH, "question": TEXT}'),
    ]
    with pytest.raises(AttendError, match="questions file not found"):
        list(read_questions(tmp_path / "missing.jsonl"))
    with pytest.raises(AttendError, match="cannot read questions file"):
        list(read_questions(tmp_path))  # a folder


# ---------------------------------------------------------------- the attention PNG


@pytest.mark.parametrize("words, rows", [(["a", "red", "circle"], 1), (["a", "red", "circle", "left", "of", "it"], 2)])
def test_save_attention_writes_the_overlay_sheet_as_a_png(tmp_path, words, rows):
    rng = np.random.default_rng(0)
    attention = rng.random((len(words), 7, 7))
    attention /= attention.sum(axis=(1, 2), keepdims=True)
    image = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    result = CaptionResult("x.png", " ".join(words), words, attention, (7, 7), image)

    target = tmp_path / "maps" / "x_attention.png"
    assert save_attention(result, target) == target
    assert target.read_bytes().startswith(PNG_MAGIC)
    with Image.open(target) as sheet:
        assert sheet.format == "PNG" and sheet.size == (5 * 160, 40 + rows * (160 + 18))  # a header, then tiles
        np.testing.assert_array_equal(
            np.asarray(sheet.convert("RGB")), np.asarray(overlay_sheet(image, words, attention))
        )
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left behind


def test_save_attention_without_attention_writes_nothing(tmp_path):
    result = CaptionResult("x.png", "a", ["a"], None, (7, 7), Image.new("RGB", (32, 32)))
    assert save_attention(result, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_recipe_scenes_sets_the_shipped_options_and_the_command_line_wins():
    from apps.cli_captioner import apply_recipe

    parser = build_parser()
    args = parser.parse_args(["train", "captioner", "--out", "r", "--recipe", "scenes", "--epochs", "2"])
    args = apply_recipe(args, args.defaults)
    assert (args.image_size, args.mid_level, args.batch_size, args.lr) == (448, True, 128, 3e-3)
    assert args.epochs == 2  # given: kept
    assert args.select == "object_accuracy" and args.set == ["attention_query=current", "alpha_c=0"]
    args = parser.parse_args(["train", "captioner", "--out", "r", "--recipe", "scenes", "--set", "alpha_c=1"])
    assert apply_recipe(args, args.defaults).set == ["alpha_c=1", "attention_query=current"]
    plain = parser.parse_args(["train", "captioner", "--out", "r"])  # no recipe: the defaults stay
    assert (apply_recipe(plain, plain.defaults).image_size, plain.epochs, plain.set) == (224, 20, None)


def test_every_option_has_help_and_shows_its_default():
    commands = _subcommands(build_parser())
    for path, parser in commands.items():
        for action in parser._actions:
            if action.dest in ("help", "func", "defaults"):
                continue
            assert action.help, (path, action.dest)
            if action.default not in (None, False) and action.option_strings:
                assert "default" in action.help, (path, action.dest, action.help)
        parser.format_help()  # every %(default)s expands


def test_import_attend_gives_the_python_api():
    import attend
    from captioner.inference import Captioner
    from vqa.inference import Answerer

    assert attend.Captioner is Captioner and attend.Answerer is Answerer
    assert set(attend.__all__) <= set(dir(attend))
