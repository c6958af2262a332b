"""Checkpoint files: one file holds everything needed to rebuild and run a model.

A checkpoint is a dict of tensors and plain containers only -- ``kind`` ("captioner" or
"vqa"), ``config`` (the model's dataclass as a dict), ``model`` (the state_dict), the
vocabulary or answer list, the encoder's settings, ``metrics`` and, in ``last.pt``, the
training state -- so it loads with ``torch.load(weights_only=True)``, which cannot run code.
Each task names its shipped models (``captioner.checkpoint``, ``vqa.checkpoint``).

A checkpoint is read from a file a user names, so nothing in it is trusted: the tasks check
every field against bounds (``core.config``) before building anything, then build the model
on the meta device (no memory) and compare every tensor's name and shape with the file's
(``check_state_dict``), and refuse weights that are not finite -- all before a single
parameter is allocated. A failure is one line naming the file and the field.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .encoder import EncoderConfig, feature_dim, feature_grid
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


def invalid(path: str | Path, kind: str, problem: str) -> AttendError:
    """The one-line error of a checkpoint that fails a check."""
    return AttendError(f"{path}: invalid {kind} checkpoint: {problem}")


def check_common(path: str | Path, state: dict, kind: str) -> None:
    """The fields every checkpoint has besides the model's own: version, metrics, data."""
    version = state.get("version", CHECKPOINT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise invalid(path, kind, f"version is {version!r} (expected a positive integer)")
    if version > CHECKPOINT_VERSION:
        raise AttendError(f"{path}: written by a newer attend (checkpoint version {version}); upgrade attend")
    for name in ("metrics", "data"):
        if name in state and not isinstance(state[name], dict):
            raise invalid(path, kind, f"{name} is a {type(state[name]).__name__} (expected a dict)")
    source = state.get("data", {}).get("source", "")
    if not isinstance(source, str):
        raise invalid(path, kind, f"data.source is {type(source).__name__} (expected a string)")
    if not isinstance(state["model"], dict):
        raise invalid(path, kind, f"model is a {type(state['model']).__name__} (expected a state_dict)")


def check_words(path: str | Path, kind: str, name: str, words, size: int) -> list[str]:
    """A list of ``size`` distinct strings (a vocabulary's itos, an answer list)."""
    if not isinstance(words, (list, tuple)):
        raise invalid(path, kind, f"{name} is a {type(words).__name__} (expected a list of strings)")
    if len(words) != size:
        raise invalid(path, kind, f"{name} holds {len(words)} entries, the model's config says {size}")
    bad = next((w for w in words if not isinstance(w, str) or len(w) > 1000), None)
    if bad is not None:
        raise invalid(path, kind, f"{name} holds {str(bad)[:40]!r} (expected strings of up to 1000 characters)")
    if len(set(words)) != len(words):
        raise invalid(path, kind, f"{name} holds duplicate entries")
    return list(words)


def check_encoder_fit(path: str | Path, kind: str, grid, encoder_dim: int, encoder: EncoderConfig) -> None:
    """A model's grid and feature width (its config's ``grid``, ``encoder_dim``) against the
    features its encoder setting gives; a model that does not fit cannot read them.

    Kept apart from loading: a checkpoint may pair any model with any setting (tests build
    small synthetic ones), and only the code that feeds the model features from ``encoder``
    (evaluation, fine-tuning, captioning an image) needs the two to agree.
    """
    want_grid, want_dim = list(feature_grid(encoder)), feature_dim(encoder)
    if list(grid) != want_grid:
        raise invalid(path, kind, f"config.grid is {list(grid)}, its {encoder.image_size} px features give {want_grid}")
    if encoder_dim != want_dim:
        raise invalid(path, kind, f"config.encoder_dim is {encoder_dim}, {encoder.tag} features have {want_dim}")


def meta_model(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: every parameter's shape, no memory."""
    with torch.device("meta"):
        return build()


def check_state_dict(path: str | Path, kind: str, model: nn.Module, state_dict: dict) -> None:
    """The file's tensors against ``model``'s (build it with ``meta_model``): the same names,
    the same shapes, floating-point where the model's are, and every value finite.

    The model is built from checked options and compared before any memory is allocated,
    so a crafted file cannot make the loader allocate more than the file itself holds.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise invalid(path, kind, f"model lacks the tensor {missing[0]!r} ({len(missing)} missing)")
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise invalid(path, kind, f"model has the unexpected tensor {str(extra[0])!r}")
    for name, want in expected.items():
        got = state_dict[name]
        if not isinstance(got, torch.Tensor):
            raise invalid(path, kind, f"model.{name} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(want.shape):
            raise invalid(
                path,
                kind,
                f"model.{name} has shape {list(got.shape)}, the config gives {list(want.shape)}",
            )
        if want.is_floating_point() != got.is_floating_point():
            raise invalid(path, kind, f"model.{name} is {got.dtype}, expected {want.dtype}")
    check_finite(path, kind, state_dict)


def check_finite(path: str | Path, kind: str, state_dict: dict) -> None:
    """Refuse a state_dict holding NaN or infinity (a diverged run, a corrupt file)."""
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise AttendError(f"{path}: weights are not finite (model.{name} holds NaN or infinity)")


def finite_state(state_dict: dict) -> bool:
    """Whether every floating-point tensor of ``state_dict`` is finite."""
    tensors = [t for t in state_dict.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def half_state_dict(state_dict: dict) -> dict:
    """Floating-point tensors to float16: how the shipped default models are stored."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def export_checkpoint(checkpoint: str | Path, out: str | Path, kind: str) -> dict:
    """A float16 copy of a trained checkpoint without the optimizer state: what ships in
    captioner/weights/ and vqa/weights/."""
    state = load_checkpoint(checkpoint, kind)
    shipped = {k: v for k, v in state.items() if k != "train"}
    shipped["model"] = half_state_dict(state["model"])
    check_finite(checkpoint, kind, state["model"])
    if not finite_state(shipped["model"]):  # float16 tops out at 65504
        raise AttendError(f"{checkpoint}: weights beyond float16's range; it cannot be exported as float16")
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
