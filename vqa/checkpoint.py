"""VQA checkpoints: the shipped models by name, and one file back to a model.

``load_vqa("scenes")``, ``load_vqa("easy-vqa")`` or a path gives the network, its question
vocabulary, its answer list and the encoder settings it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.checkpoint import load_checkpoint, resolve
from core.encoder import EncoderConfig
from core.errors import AttendError
from core.vocab import Vocab

from .model import VQAConfig, VQANet

KIND = "vqa"
WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = {"scenes": WEIGHTS / "scenes.pt", "easy-vqa": WEIGHTS / "easy_vqa.pt"}
DEFAULT = "scenes"


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A checkpoint path, or the name of a shipped model (``scenes``, ``easy-vqa``; None = scenes)."""
    return resolve(checkpoint, SHIPPED, DEFAULT, "VQA")


def load_vqa(checkpoint: str | Path | None = None, device: str | torch.device = "cpu"):
    """Rebuild the model from one checkpoint file (or a shipped name).

    Returns (net in eval mode, question vocab, answers, encoder config, checkpoint dict).
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path, KIND)
    try:
        net = VQANet(VQAConfig(**state["config"]))
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
        vocab = Vocab.from_dict(state["question_vocab"])
        answers = list(state["answers"])
        encoder = EncoderConfig(**state["encoder"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise AttendError(f"{path}: VQA checkpoint does not match this version ({type(e).__name__})") from None
    return net.to(device).eval(), vocab, answers, encoder, state
