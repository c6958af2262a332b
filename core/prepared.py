"""The prepared-data layout: what `attend prepare ...` writes and training reads.

Every data set (COCO, Karpathy, VQA v2, easy-VQA, scenes) is turned into the same files
in one folder DIR::

    DIR/images.json     {"format": "attend-images-v1",
                         "images": {KEY: PATH}}         PATH absolute or relative to DIR
    DIR/captions.json   {"format": "attend-captions-v1", "source": str,
                         "vocab": {"itos": [...]},
                         "splits": {SPLIT: [{"image": KEY, "image_id": int,
                                             "captions": [raw str, ...],
                                             "tokens": [[str, ...], ...]}]}}
    DIR/vqa.json        {"format": "attend-vqa-v1", "source": str,
                         "question_vocab": {"itos": [...]}, "answers": [str, ...],
                         "splits": {SPLIT: [{"question_id": int, "image_id": int,
                                             "image": KEY, "question": str,
                                             "tokens": [str, ...],
                                             "answers": [str, ...],   # raw human answers
                                             "targets": [[answer_index, score], ...],
                                             "answer_type": str, "question_type": str,
                                             "choices": [str, ...]}]}}  # optional: multiple choice
    DIR/features/TAG/   the feature cache (captioner/features.py), one per encoder setting

KEY names an image uniquely across splits (easy-VQA restarts its ids in each split), for
example ``train2014/COCO_train2014_000000000009.jpg`` or ``scenes/train/000012.png``.
A data set may have captions.json, vqa.json or both (the scenes have both).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import AttendError

IMAGES, CAPTIONS, VQA = "images.json", "captions.json", "vqa.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
FORMATS = {IMAGES: "attend-images-v1", CAPTIONS: "attend-captions-v1", VQA: "attend-vqa-v1"}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=indent).encode())


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file, turning a missing or malformed file into an ``AttendError``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AttendError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise AttendError(f"{path}: is a directory, expected a {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AttendError(f"{path}: not a valid JSON {what} ({e})") from None


def write_prepared(data_dir: str | os.PathLike, name: str, payload: dict) -> Path:
    """Write one of the layout's files (``IMAGES``, ``CAPTIONS``, ``VQA``) atomically."""
    path = Path(data_dir) / name
    atomic_write_json(path, {"format": FORMATS[name], **payload})
    return path


def read_prepared(data_dir: str | os.PathLike, name: str) -> dict:
    """Read one of the layout's files, checking its format tag."""
    path = Path(data_dir) / name
    if not path.exists():
        hint = {CAPTIONS: "captions", VQA: "VQA", IMAGES: "image"}[name]
        raise AttendError(f"{path}: no prepared {hint} data here (run `attend prepare` first)")
    obj = read_json(path, "prepared data file")
    if not isinstance(obj, dict) or obj.get("format") != FORMATS[name]:
        raise AttendError(f"{path}: not an attend {name} file (format tag missing or wrong)")
    return obj


def image_paths(data_dir: str | os.PathLike) -> dict[str, Path]:
    """KEY -> absolute image path, from DIR/images.json."""
    data_dir = Path(data_dir)
    images = read_prepared(data_dir, IMAGES)["images"]
    return {key: (data_dir / p).resolve() for key, p in images.items()}


def split_records(data_dir: str | os.PathLike, name: str, split: str) -> tuple[dict, list[dict]]:
    """The whole prepared file and the records of one split; an unknown or empty split is an error."""
    obj = read_prepared(data_dir, name)
    splits = obj["splits"]
    if split not in splits:
        raise AttendError(f"{Path(data_dir) / name}: no split {split!r} (have: {', '.join(sorted(splits)) or 'none'})")
    if not splits[split]:
        raise AttendError(f"{Path(data_dir) / name}: split {split!r} is empty")
    return obj, splits[split]


def add_images(data_dir: str | os.PathLike, images: dict[str, str | os.PathLike]) -> Path:
    """Merge KEY -> PATH entries into DIR/images.json (captions and VQA of one set share it).

    Paths inside DIR are stored relative to it, so a prepared folder can be moved.
    """
    data_dir = Path(data_dir)
    path = data_dir / IMAGES
    existing = read_prepared(data_dir, IMAGES)["images"] if path.exists() else {}
    root = data_dir.resolve()
    for key, p in images.items():
        p = Path(p)
        p = p if p.is_absolute() else (Path.cwd() / p)
        try:
            existing[key] = str(p.resolve().relative_to(root))
        except ValueError:
            existing[key] = str(p.resolve())
    return write_prepared(data_dir, IMAGES, {"images": existing})
