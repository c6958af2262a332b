"""Plain functions behind the Streamlit app (no Streamlit import here, so tests call them directly).

The app (``apps/streamlit_app.py``) only lays widgets out; reading an upload, choosing a
model file, drawing attention maps and the sample gallery live here or in the library.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.images import ImageError, load_image, resize_for_model
from core.overlay import COLORMAP, normalise_map, overlay

APP_PATH = Path(__file__).with_name("streamlit_app.py")

# One limit, used by the widget, the server flag and the check in code. 10 MB is far above
# any photo a phone sends and keeps a bad upload from tying up the 2-core server.
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp"]

# Point the app's "default" models elsewhere without touching the sidebar (tests, demos).
ENV_CAPTIONER = "ATTEND_CAPTIONER"
ENV_VQA = "ATTEND_VQA"

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


def streamlit_command(port: int | None = None, address: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The command line that serves the app (``attend app`` and the browser test use it).

    The upload limit is passed on the command line as well as in .streamlit/config.toml,
    because the config file is only read from the current directory.
    """
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
    if address is not None:
        command += ["--server.address", address]
    return command + list(extra or [])


# ---------------------------------------------------------------- models


def model_source(choice: str, path_text: str, env_name: str, shipped: str | None = None) -> str | None:
    """What to load for a sidebar choice: a path, a shipped model's name, or None (the default).

    ``choice`` is "default", "path" or another shipped name (e.g. "easy-vqa"). The default
    may be redirected by an environment variable (``ATTEND_CAPTIONER`` / ``ATTEND_VQA``).
    """
    if choice == "path":
        text = (path_text or "").strip().strip('"').strip("'")
        if not text:
            raise ValueError("enter the path of a checkpoint file (a .pt written by `attend train`)")
        return str(Path(text).expanduser())
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
    """An image chosen in the app: its bytes (the cache key) and the decoded RGB image."""

    name: str
    data: bytes
    image: Image.Image
    digest: str
    questions: list[str] = field(default_factory=list)  # suggested questions (gallery images)


def read_picture(data: bytes, name: str, limit: int = MAX_UPLOAD_BYTES, questions: list[str] | None = None) -> Picture:
    """Bytes of an upload -> a ``Picture``; ``ImageError`` (one friendly line) if unusable."""
    if len(data) > limit:
        raise ImageError(name, f"file too large ({len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB)")
    image = load_image(data, name=name)
    return Picture(name, data, image, hashlib.sha256(data).hexdigest(), list(questions or []))


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
    """One attention map over the image the model saw, smoothly upsampled to ``size`` px."""
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return overlay(image, grid)


def attention_overlays(image: Image.Image, attention: np.ndarray | None, size: int | None = None) -> list[Image.Image]:
    """One overlay per map of ``attention`` (L, h, w) -- words, or VQA glimpses."""
    if attention is None:
        return []
    return [word_overlay(image, grid, size) for grid in np.asarray(attention, dtype=np.float64)]


def colour_bar(width: int = 240, height: int = 14, colormap: str = COLORMAP) -> Image.Image:
    """The legend: the colour map from "looked least" (left) to "looked most" (right)."""
    from matplotlib import colormaps

    ramp = colormaps[colormap](np.linspace(0.0, 1.0, width))[:, :3]  # (W, 3)
    pixels = np.repeat((ramp * 255).astype(np.uint8)[None], height, axis=0)  # (H, W, 3)
    bar = Image.fromarray(pixels, mode="RGB")
    ImageDraw.Draw(bar).rectangle([0, 0, width - 1, height - 1], outline=(120, 120, 120))
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


def escape_markdown(text: str) -> str:
    """Text for st.markdown / st.error: shown as typed, never as formatting or HTML."""
    escaped = "".join("\\" + c if c in _MARKDOWN_SPECIALS else c for c in str(text))
    return _LEADING.sub(lambda m: f"{m[1]}{m[2]}\\{m[3]}" if m[2] else f"{m[4]}\\{m[5]}", escaped)


def plain(markdown: str) -> str:
    """Undo ``escape_markdown`` (tests compare what the page shows)."""
    return re.sub(r"\\(.)", r"\1", markdown)


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
