"""Checkpoint files: one file holds everything needed to rebuild and run a model.

A checkpoint is a dict of tensors and plain containers only -- ``kind`` ("captioner" or
"vqa"), ``config`` (the model's dataclass as a dict), ``model`` (the state_dict), the
vocabulary or answer list, the encoder's settings, ``metrics`` and, in ``last.pt``, the
training state -- so it loads with ``torch.load(weights_only=True)``, which cannot run code.
Each task names its shipped models (``captioner.checkpoint``, ``vqa.checkpoint``).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .errors import AttendError
from .prepared import atomic_write_bytes

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """torch.save to memory, then an atomic replace: a crash never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """Load a checkpoint safely (``weights_only=True``) and check that it is of ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise AttendError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AttendError(f"{path}: not a readable attend checkpoint ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or "kind" not in checkpoint or "model" not in checkpoint:
        raise AttendError(f"{path}: not an attend checkpoint")
    if kind is not None and checkpoint["kind"] != kind:
        raise AttendError(f"{path}: a {checkpoint['kind']} checkpoint, expected a {kind} checkpoint")
    return checkpoint


def half_state_dict(state_dict: dict) -> dict:
    """Floating-point tensors to float16: how the shipped default models are stored."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def export_checkpoint(checkpoint: str | Path, out: str | Path, kind: str) -> dict:
    """A float16 copy of a trained checkpoint without the optimizer state: what ships in
    captioner/weights/ and vqa/weights/."""
    state = load_checkpoint(checkpoint, kind)
    shipped = {k: v for k, v in state.items() if k != "train"}
    shipped["model"] = half_state_dict(state["model"])
    save_checkpoint(out, shipped)
    return {"path": str(out), "megabytes": round(Path(out).stat().st_size / 1e6, 2)}


def resolve(checkpoint: str | Path | None, shipped: dict[str, Path], default: str, kind: str) -> Path:
    """A checkpoint path, or the name of one of ``shipped`` (None: ``default``), a ``kind`` model."""
    name = default if checkpoint is None else str(checkpoint)
    if name in shipped:
        path = shipped[name]
        if not path.is_file():
            raise AttendError(
                f"the shipped {name} {kind} model is missing ({path}); reinstall attend or pass --checkpoint PATH"
            )
        return path
    return Path(checkpoint)
