"""Plain functions behind the Streamlit app (no Streamlit import here, so tests call them directly).

The app (``apps/streamlit_app.py``) only lays widgets out; reading an upload, choosing a
model file, drawing attention maps and the sample gallery live here or in the library.

What a visitor can make the server do is bounded here:

* Uploads are decoded straight to a small picture (longest side at most ``MAX_SIDE`` =
  1024 px: JPEG through Pillow's ``draft``, everything else reduced strip by strip right
  after decoding, one large decode at a time), and a session keeps only that small
  picture's PNG bytes and the upload's digest (``remember_picture``), never the decoded
  original.
* The *Checkpoint file* box loads only the shipped models (by name: ``scenes``,
  ``easy-vqa``) and files inside the models folder: ``runs/`` under the directory the app
  was started in, or the folder named by the environment variable ``ATTEND_MODELS_DIR``.
  Any other path gets one and the same message, whether it exists or not.
* Text shown by the app is escaped Markdown (``escape_markdown``): no formatting, no HTML,
  and no auto-linked ``www.`` / e-mail / URL text.

Environment variables read by the app: ``ATTEND_CAPTIONER`` / ``ATTEND_VQA`` (the models
behind the "default" choices; the operator's setting, not limited to the models folder)
and ``ATTEND_MODELS_DIR`` (the models folder).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import io
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageDraw

from core.errors import AttendError
from core.images import MAX_PIXELS, ImageError, load_image, resize_for_model
from core.overlay import normalise_map, overlay

APP_PATH = Path(__file__).with_name("streamlit_app.py")

# One limit, used by the widget, the server flag and the check in code. 10 MB is far above
# any photo a phone sends and keeps a bad upload from tying up the 2-core server.
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp"]

# Point the app's "default" models elsewhere without touching the sidebar (tests, demos).
ENV_CAPTIONER = "ATTEND_CAPTIONER"
ENV_VQA = "ATTEND_VQA"
# The only folder the *Checkpoint file* box may load from (default: runs/ in the working directory).
ENV_MODELS = "ATTEND_MODELS_DIR"
DEFAULT_MODELS_DIR = "runs"

# The server listens on the loopback interface unless told otherwise (`attend app --address`).
DEFAULT_ADDRESS = "127.0.0.1"

# Uploads are kept at most this many pixels on their longest side: 4.6x the 224 px the
# models see, and 3 MB as RGB, however large the upload decodes.
MAX_SIDE = 1024

# The scenes behind the gallery: a seed the shipped models never trained on.
GALLERY_SEED = 424242
GALLERY_SCENES = 6
GALLERY_EASY_VQA = 4

TRAINED_ON = (
    "The default models were trained only on **synthetic images**: the captioner and the "
    "scenes VQA model on 224x224 scenes of 1 to 4 coloured shapes (circle, square, triangle, "
    "star; six colours; small or large) on a light background, and the easy-VQA model on the "
    "64x64 one-shape images of the easy-VQA set. On photos they will still answer, but with "
    "words from that tiny world."
)
COCO_HOWTO = (
    "To caption photos, train a captioner on COCO: `attend prepare coco ...`, "
    "`attend features --data DIR`, `attend train captioner --data DIR --out RUN`; then choose "
    "*Checkpoint file* in the sidebar and enter `RUN/best.pt`. VQA v2 works the same way "
    "(`attend prepare vqa`, `attend train vqa`)."
)


# Torch threads for the server. Measured on the 2-core machine with two training jobs
# beside it: a beam-3 caption of a scene took 0.2-0.4 s with one thread and 1-9 s with two
# (each thread waits for the other to get a core). Sessions run in threads of their own,
# so two visitors still use both cores.
SERVER_TORCH_THREADS = 1


def use_server_threads(threads: int = SERVER_TORCH_THREADS) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def streamlit_command(
    port: int | None = None, address: str | None = DEFAULT_ADDRESS, extra: list[str] | None = None
) -> list[str]:
    """The command line that serves the app (``attend app`` and the browser test use it).

    ``address`` is where the server listens: the loopback interface (127.0.0.1) unless an
    address is given (``0.0.0.0`` for all interfaces); None also means the loopback.
    The upload limit is passed on the command line as well as in .streamlit/config.toml,
    because the config file is only read from the current directory.
    """
    address = address or DEFAULT_ADDRESS
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.maxUploadSize",
        str(MAX_UPLOAD_MB),
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
    ]
    if port is not None:
        command += ["--server.port", str(port)]
    command += ["--server.address", address]
    return command + list(extra or [])


# ---------------------------------------------------------------- models


class CheckpointRefused(AttendError):
    """A typed checkpoint path outside the models folder: the message never says more."""


def models_folder() -> Path:
    """The folder the *Checkpoint file* box may load from, absolute: $ATTEND_MODELS_DIR, else
    ``runs/`` in the working directory (relative settings count from the working directory)."""
    text = os.environ.get(ENV_MODELS, "").strip()
    return (Path.cwd() / Path(text or DEFAULT_MODELS_DIR).expanduser()).resolve()


def shipped_models(kind: str) -> dict[str, Path]:
    """The shipped models of ``kind`` ("captioner" or "vqa"), name -> file."""
    if kind == "captioner":
        from captioner.checkpoint import SHIPPED
    else:
        from vqa.checkpoint import SHIPPED
    return dict(SHIPPED)


def _folder_label(folder: Path) -> str:
    try:
        return f"{folder.relative_to(Path.cwd().resolve())}/"
    except ValueError:
        return f"{folder}/"


def refusal(shipped: dict[str, Path], folder: Path) -> str:
    """The one message for every path the box will not load (it names nothing the visitor typed)."""
    names = ", ".join(f"`{name}`" for name in shipped)
    return (
        f"the checkpoint box loads only the shipped models ({names}) and .pt files inside the models "
        f"folder, {escape_markdown(_folder_label(folder))} (set by `{ENV_MODELS}` where the app is started)"
    )


def allowed_checkpoint(text: str, shipped: dict[str, Path], folder: Path | None = None) -> str:
    """What the *Checkpoint file* box may load for ``text``: a shipped model's name as it is,
    or the resolved path of a file inside the models folder (or beside the shipped models).

    A relative path counts from the working directory (``runs/coco/best.pt``) or else from
    the models folder (``coco/best.pt``). Symbolic links and ``..`` are resolved first, so
    neither leads out. Anything else raises ``CheckpointRefused`` with the same message,
    whether the path exists or not; nothing is read or reported about it.
    """
    if text in shipped:
        return text
    root = models_folder() if folder is None else Path(folder).resolve()
    roots = [root, *{path.parent.resolve() for path in shipped.values()}]
    typed = Path(text)
    for candidate in [typed] if typed.is_absolute() else [Path.cwd() / typed, root / typed]:
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL byte
            continue
        if any(resolved != r and resolved.is_relative_to(r) for r in roots):
            return str(resolved)
    raise CheckpointRefused(refusal(shipped, root))


def typed_path(text: str | None) -> str:
    """The checkpoint box's text without surrounding blanks and quotes (as pasted from a shell)."""
    return (text or "").strip().strip('"').strip("'")


def model_source(
    choice: str, path_text: str, env_name: str, shipped: str | None = None, names: dict[str, Path] | None = None
) -> str | None:
    """What to load for a sidebar choice: a path, a shipped model's name, or None (the default).

    ``choice`` is "default", "path" or another shipped name (e.g. "easy-vqa"). The default
    may be redirected by an environment variable (``ATTEND_CAPTIONER`` / ``ATTEND_VQA``).
    A typed path must pass ``allowed_checkpoint`` (``names``: the shipped models of the
    kind), else ``CheckpointRefused``; an empty box raises ``ValueError`` (a prompt).
    """
    if choice == "path":
        text = typed_path(path_text)
        if not text:
            raise ValueError("enter the path of a checkpoint file (a .pt written by `attend train`)")
        return allowed_checkpoint(text, names or {})
    if choice == "default":
        override = os.environ.get(env_name, "").strip()
        return override or shipped
    return choice


def model_stamp(source: str | None) -> tuple:
    """A cache key that changes when the checkpoint file on disk changes."""
    if source is None or not Path(source).is_file():
        return (source, None)
    stat = Path(source).stat()
    return (source, stat.st_mtime_ns, stat.st_size)


# ---------------------------------------------------------------- images in


@dataclass
class Picture:
    """An image chosen in the app, already small: RGB, at most ``MAX_SIDE`` px on its longest
    side. The digest of the file's bytes is the cache key; the file itself is not kept."""

    name: str
    image: Image.Image
    digest: str
    questions: list[str] = field(default_factory=list)  # suggested questions (gallery images)
    original_size: tuple[int, int] | None = None  # (width, height) of the file's pixels


# Decodes of more pixels than this run one at a time (Pillow holds a 64-megapixel PNG as
# 256 MB while it is reduced), so concurrent uploads cannot add their peaks up.
LARGE_DECODE_PIXELS = 4_000_000
# What Pillow decodes uploads as (by content, whatever the file's name says).
UPLOAD_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}
# Pillow's WebP reader holds about 15 bytes a pixel while it decodes (its canvas, a copy as
# bytes, the image), against 4 for PNG: 4096x4096 keeps a WebP decode near 280 MB.
MAX_WEBP_PIXELS = 4096 * 4096
_LARGE_DECODE = threading.Lock()
STRIP_ROWS = 256  # rows converted to RGB and box-reduced at a time
REDUCING_GAP = 2.0  # box-reduce to at least twice the final size, then resample (as Pillow's thumbnail)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise: after a large
    decode the server's resident memory would stay up). A no-op without glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP file's first chunk header; None if it is not one we can read."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended (alpha, animation, metadata): the canvas size
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _open(data: bytes, name: str) -> Image.Image | None:
    """The image's header (nothing decoded yet, except that Pillow's WebP reader decodes on
    opening), if Pillow reads one within the pixel limit; None: ``load_image`` says what is
    wrong. A format the app does not take raises ``ImageError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Exception:
        return None
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        image.close()
        return None
    if image.format not in UPLOAD_FORMATS:  # e.g. a JPEG 2000 or TIFF renamed .png: not decoded here
        kind = image.format
        image.close()
        raise ImageError(name, f"a {kind} image; the app takes JPEG, PNG and WebP")
    return image


def _shrink(image: Image.Image, name: str, max_side: int) -> Image.Image:
    """An opened (not yet decoded) image -> RGB with its longest side at most ``max_side``.

    JPEGs decode at 1/2, 1/4 or 1/8 scale (``draft``). Other formats decode at full size
    (Pillow cannot do less), then go to RGB and are box-reduced ``STRIP_ROWS`` rows at a
    time, so no full-size copy is made besides the decoded pixels; the caller drops those
    as soon as this returns. The colour handling is ``load_image``'s, applied per strip.
    """
    width, height = image.size
    scale = max_side / max(width, height)
    if scale < 1 and image.format in ("JPEG", "MPO"):
        image.draft(None, (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
    image.load()
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # unreadable EXIF should not cost the user the picture
        orientation = 1
    width, height = image.size
    factor = max(1, int(max(width, height) // (max_side * REDUCING_GAP)))
    rows = max(factor, STRIP_ROWS // factor * factor)
    keep = {key: value for key, value in image.info.items() if key == "transparency"}
    small = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height)))
        strip.info = dict(keep)  # no EXIF: the orientation is applied once, at the end
        rgb = load_image(strip, name=name)
        small.paste(rgb.reduce(factor) if factor > 1 else rgb, (0, top // factor))
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    method = _TRANSPOSE.get(orientation)
    return small.transpose(method) if method is not None else small


def decode_small(data: bytes, name: str, max_side: int = MAX_SIDE) -> tuple[Image.Image, tuple[int, int]]:
    """Bytes of an image -> (RGB image with its longest side at most ``max_side``, the file's
    pixel size); ``ImageError`` (one friendly line, mostly from ``load_image``) if unusable.

    The full-size pixels live only inside this call, and only one large decode runs at a
    time in the process. The result equals ``load_image(data)`` for images that fit.
    """
    webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if webp:  # Pillow decodes a WebP when it opens it: check the size first, open it under the lock
        size = _webp_size(data)
        if size is not None and size[0] * size[1] > MAX_WEBP_PIXELS:
            raise ImageError(
                name,
                f"WebP image too large ({size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.1f} megapixels; the app "
                f"takes WebP up to {MAX_WEBP_PIXELS / 1e6:.1f} megapixels: save it as JPEG or PNG)",
            )
        image = None
    else:
        image = _open(data, name)
        size = image.size if image is not None else None
    large = size is None or size[0] * size[1] > LARGE_DECODE_PIXELS
    with _LARGE_DECODE if large else contextlib.nullcontext():
        try:
            if webp:
                image = _open(data, name)
            small = None if image is None else _shrink(image, name, max_side)
        except ImageError:
            raise
        except Exception:
            small = None  # load_image below says why (or takes what this path could not)
        finally:
            if image is not None:
                image.close()  # the decoded full-size pixels go now
            image = None
        if small is None:
            small = load_image(data, name=name)  # raises ImageError for anything unusable
            size = size or small.size
            small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if large:
        release_memory()
    return small, size


def read_picture(
    data: bytes,
    name: str,
    limit: int = MAX_UPLOAD_BYTES,
    questions: list[str] | None = None,
    max_side: int = MAX_SIDE,
) -> Picture:
    """Bytes of an upload -> a small ``Picture``; ``ImageError`` (one friendly line) if unusable."""
    if len(data) > limit:
        raise ImageError(name, f"file too large ({len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB)")
    image, size = decode_small(data, name, max_side)
    return Picture(name, image, hashlib.sha256(data).hexdigest(), list(questions or []), size)


def picture_state(picture: Picture) -> dict:
    """What a session keeps of its picture: small values only (the digest, the name, the
    questions, and the small image as PNG bytes: at most about 3 MB)."""
    buffer = io.BytesIO()
    picture.image.save(buffer, format="PNG", compress_level=1)
    return {
        "digest": picture.digest,
        "name": picture.name,
        "png": buffer.getvalue(),
        "questions": list(picture.questions),
        "original_size": picture.original_size,
    }


def picture_from_state(state: dict) -> Picture:
    with Image.open(io.BytesIO(state["png"])) as png:
        image = png.convert("RGB")
    return Picture(state["name"], image, state["digest"], list(state["questions"]), state["original_size"])


def remember_picture(
    store: MutableMapping, key: str, data: bytes, name: str, questions: list[str] | None = None
) -> Picture:
    """The small ``Picture`` of ``data``, decoded once per session: ``store`` (the session's
    state) keeps ``picture_state`` under ``key``, and a rerun on the same file reads that
    back instead of decoding the upload again. A new file replaces it (a bad one clears it)."""
    digest = hashlib.sha256(data).hexdigest()
    kept = store.get(key)
    if isinstance(kept, dict) and kept.get("digest") == digest and kept.get("name") == name:
        return picture_from_state(kept)
    store.pop(key, None)
    picture = read_picture(data, name, questions=questions)
    store[key] = picture_state(picture)
    return picture


def model_view(image: Image.Image, size: int) -> Image.Image:
    """The image exactly as a model of input side ``size`` sees it (whole image, resized)."""
    return resize_for_model(image, size)


def _png(pixels: np.ndarray | Image.Image) -> bytes:
    buffer = io.BytesIO()
    (pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Sample:
    label: str
    kind: str  # "scene" or "easy-vqa"
    data: bytes  # PNG bytes: samples go through the same path as an upload
    questions: list[str]


def scene_samples(count: int = GALLERY_SCENES, seed: int = GALLERY_SEED) -> list[Sample]:
    """Generated scenes, rendered in memory, with the questions generated for them."""
    from data_prep.scenes import make_scene

    samples = []
    for index in range(count):
        _, pixels, _, questions = make_scene(seed, "test", index)
        samples.append(Sample(f"scene {index + 1}", "scene", _png(pixels), [q for _, q, _, _ in questions][:4]))
    return samples


def easy_vqa_samples(count: int = GALLERY_EASY_VQA) -> list[Sample]:
    """The first test images of the installed easy-VQA set with their questions ([] if absent)."""
    try:
        import easy_vqa
    except ImportError:
        return []
    paths = easy_vqa.get_test_image_paths()
    questions, _, image_ids = easy_vqa.get_test_questions()
    asked: dict[int, list[str]] = {}
    for question, image_id in zip(questions, image_ids):
        asked.setdefault(int(image_id), []).append(question)
    samples = []
    for image_id in sorted(paths)[:count]:
        data = Path(paths[image_id]).read_bytes()
        samples.append(Sample(f"easy-VQA {image_id}", "easy-vqa", data, asked.get(image_id, [])[:4]))
    return samples


def gallery() -> list[Sample]:
    return scene_samples() + easy_vqa_samples()


# ---------------------------------------------------------------- attention out


def is_uniform(grid: np.ndarray) -> bool:
    """True when a map says nothing (all cells equal): it is drawn flat, not as noise."""
    return not normalise_map(grid).any()


def word_overlay(image: Image.Image, grid: np.ndarray, size: int | None = None) -> Image.Image:
    """One attention map over ``image`` at its own aspect ratio, ``size`` px on its longer side
    (None: as it is); the map, which tiles the whole image, is stretched onto it."""
    if size is not None and max(image.size) != size:
        scale = size / max(image.size)
        fitted = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(fitted, Image.Resampling.BICUBIC)
    return overlay(image, grid)


def attention_overlays(image: Image.Image, attention: np.ndarray | None, size: int | None = None) -> list[Image.Image]:
    """One overlay per map of ``attention`` (L, h, w) -- words, or VQA glimpses."""
    if attention is None:
        return []
    return [word_overlay(image, grid, size) for grid in np.asarray(attention, dtype=np.float64)]


LEGEND = (
    "Dim: the map's lowest value; full brightness and colour: its highest; the white line "
    "encloses where it is above half its range. Each map is scaled to its own range."
)


def colour_bar(width: int = 240, height: int = 14) -> Image.Image:
    """The legend: a light grey dimmed as the spotlight dims it, from the map's minimum (left) to
    its maximum (right), with the contour's level marked."""
    from core.overlay import CONTOUR, FLOOR, LINE

    ramp = FLOOR + (1 - FLOOR) * np.linspace(0.0, 1.0, width)  # (W,)
    pixels = np.repeat((np.outer(ramp, [235, 235, 235])).astype(np.uint8)[None], height, axis=0)  # (H, W, 3)
    bar = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(bar)
    x = round(CONTOUR * (width - 1))
    draw.line([(x, 0), (x, height - 1)], fill=(40, 40, 40), width=2)
    draw.line([(x + 2, 0), (x + 2, height - 1)], fill=LINE, width=1)
    draw.rectangle([0, 0, width - 1, height - 1], outline=(120, 120, 120))
    return bar


def peak_cell(grid: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the strongest cell, or None for a uniform map."""
    grid = np.asarray(grid)
    if is_uniform(grid):
        return None
    row, col = np.unravel_index(int(grid.argmax()), grid.shape)
    return int(row), int(col)


# ---------------------------------------------------------------- text out

# Characters st.markdown could act on anywhere in a line (":" for Streamlit's :emoji: and
# :colour[...] directives), and the line starts that make lists or headings.
_MARKDOWN_SPECIALS = set("\\`*_[]<>#|~$:")
_LEADING = re.compile(r"^(\s*)(\d+)([.)])|^(\s*)([-+=])", re.MULTILINE)


# Where Streamlit's Markdown (GitHub's autolink extension) would turn plain text into a link:
# "www." and e-mail addresses ("@"), and "scheme://". An invisible word joiner there breaks
# the pattern; what the page shows is unchanged.
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(?<=www)(?=\.)|(?<=@)|(?<=:)(?=//)")


def escape_markdown(text: str) -> str:
    """Text for st.markdown / st.error / widget labels: shown as typed, never as formatting,
    HTML or a link."""
    escaped = "".join("\\" + c if c in _MARKDOWN_SPECIALS else c for c in str(text))
    escaped = _LEADING.sub(lambda m: f"{m[1]}{m[2]}\\{m[3]}" if m[2] else f"{m[4]}\\{m[5]}", escaped)
    return _AUTOLINK.sub(WORD_JOINER, escaped)


def distinct_labels(labels: list[str]) -> list[str]:
    """``labels`` made pairwise distinct without changing how they look: the k-th repeat of a
    label gets k invisible word joiners. Streamlit's pills map a click back to an option by its
    label, so without this every chip of a repeated word selects the same occurrence."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        out.append(label + WORD_JOINER * seen.get(label, 0))
        seen[label] = seen.get(label, 0) + 1
    return out


def plain(markdown: str) -> str:
    """Undo ``escape_markdown`` (tests compare what the page shows)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace(WORD_JOINER, "")


def top_k_rows(top_k: list) -> list[tuple[str, float, str]]:
    """[[answer, probability], ...] -> (answer, probability in 0..1, label) for progress bars."""
    rows = []
    for answer, probability in top_k:
        p = min(max(float(probability), 0.0), 1.0)
        rows.append((str(answer), p, f"{answer}: {100 * p:.1f}%"))
    return rows


def unknown_note(unknown: list[str]) -> str | None:
    """The line listing the question's words the model does not know (None if all known)."""
    words = list(dict.fromkeys(unknown))
    if not words:
        return None
    return (
        f"Not in this model's vocabulary, so ignored: {', '.join(words)}. "
        "Rephrase with words like those of the example questions."
    )


def pick_option(state: MutableMapping, key: str, value) -> None:
    """A button's callback that selects ``value`` in the widget ``key`` (a word tile selects its chip)."""
    state[key] = value


def take_example(state: MutableMapping, source: str = "example_question", target: str = "question") -> None:
    """The example-question chips' callback: the picked question goes into the question box.
    A plain function of small arguments, so the widget keeps nothing of the page alive."""
    picked = state.get(source)
    if picked:
        state[target] = picked


# ---------------------------------------------------------------- multiple choice


def parse_choices(text: str | None) -> list[str]:
    """The choices box -> candidate answers, one per line (ends stripped, blank lines dropped).
    An empty box gives [] (open-ended); ``vqa.choices.check_choices`` judges the rest."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def choice_rows(multiple_choice: dict) -> list[tuple[str, float, str]]:
    """The ranked candidates of an answer's ``multiple_choice`` -> (candidate, probability in
    0..1, label) for progress bars, best first."""
    rows = []
    for r in multiple_choice["ranked"]:
        p = min(max(float(r["probability"]), 0.0), 1.0)
        rows.append((str(r["choice"]), p, f"{r['rank']}. {r['choice']}: {100 * p:.1f}%"))
    return rows


def unscorable_note(multiple_choice: dict) -> str | None:
    """The line listing the candidates the model cannot score (None if it can score them all)."""
    unscorable = multiple_choice["unscorable"]
    if not unscorable:
        return None
    return f"Not among this model's answers, so not ranked: {', '.join(unscorable)}."


# ---------------------------------------------------------------- honest about the image


def use_sample(state: MutableMapping, index: int, kind: str) -> None:
    """A gallery *Use* button's callback (it runs before the page is drawn, so it may set the
    sidebar): the sample is chosen and brings its own VQA model -- an easy-VQA picture the
    shipped easy-VQA model, a scene the scenes model -- unless the visitor loads a file."""
    state["sample"] = index
    if state.get("vqa_choice") == "path":
        return
    state["vqa_choice"] = "easy-vqa" if kind == "easy-vqa" else "default"


ANSWER_KEYS = ("question", "choices", "example_question")


def forget_answer_on_new_picture(state: MutableMapping, digest: str) -> bool:
    """Clear the question box (and with it the answer) when the picture changes, so no answer
    stays on screen under another image. True when it cleared something."""
    if state.get("answered_picture") == digest:
        return False
    state["answered_picture"] = digest
    cleared = False
    for key in ANSWER_KEYS:
        if state.get(key):
            state.pop(key, None)
            cleared = True
    return cleared


def domain_notice(result: dict, trained_on: str = "") -> str | None:
    """One warning to show right beside a caption or an answer (``core.domain.notices`` joined),
    or None when nothing is wrong."""
    from core.domain import notices

    lines = [line.removeprefix("warning: ") for line in notices(result, trained_on)]
    return " ".join(line[0].upper() + line[1:] + "." for line in lines) if lines else None


# The question forms each shipped VQA model was trained on (README, "What the shipped models can
# and cannot do"): offered as examples for any image, since other forms get unreliable answers.
QUESTION_FORMS = {
    "scenes": [
        "what colour is the circle?",
        "what shape is the red object?",
        "how many objects are there?",
        "how many blue objects are there?",
        "is there a green square?",
        "is the red circle left of the blue star?",
        "what shape is left of the blue star?",
    ],
    "easy-vqa": [
        "what color is the shape?",
        "what shape is in the image?",
        "is there a blue shape?",
        "does the image contain a circle?",
        "is there not a red shape?",
    ],
}


def example_questions(own: list[str] | None, source: str) -> list[str]:
    """The picture's own questions (a gallery sample's), else the forms the model knows."""
    return list(own) if own else list(QUESTION_FORMS.get(source, []))
