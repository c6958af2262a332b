"""Captioner checkpoints: the shipped models by name, and one file back to a decoder.

``load_captioner("scenes")`` or a path gives the decoder, its vocabulary and the encoder
settings it was trained on; ``fast`` picks the decoding path (``captioner.fast``) or the
plain model (``captioner.model``), which give the same captions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.checkpoint import load_checkpoint, resolve
from core.encoder import EncoderConfig
from core.errors import AttendError
from core.vocab import Vocab

from .decode import Decoder
from .fast import FastDecoder
from .model import AttentionDecoder, CaptionerConfig

KIND = "captioner"
WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = {"scenes": WEIGHTS / "scenes.pt"}
DEFAULT = "scenes"


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A checkpoint path, or the name of a shipped captioner (``scenes``; None = scenes)."""
    return resolve(checkpoint, SHIPPED, DEFAULT, KIND)


def captioner_config(checkpoint: dict) -> dict:
    """The model options of a captioner checkpoint; those written before the ``gate`` option
    existed had a per-channel gate."""
    return {"gate": "vector", **checkpoint["config"]}


def load_captioner(
    checkpoint: str | Path | None, device: str | torch.device = "cpu", int8: bool = False, fast: bool = True
) -> tuple[Decoder, Vocab, EncoderConfig, dict]:
    """Rebuild a decoder from one checkpoint file or shipped name, ready to decode:
    (decoder, vocab, encoder config, the checkpoint dict).

    Args:
        fast: decode through ``fast.FastDecoder`` (the default); False gives the plain
            ``model.AttentionDecoder``, the reference, in eval mode.
        int8: with ``fast``, int8 weights in the per-step layers (CPU only).
    """
    if int8 and torch.device(device).type != "cpu":
        raise AttendError("int8 decoding runs on the CPU only (drop --int8 or use --device cpu)")
    if int8 and not fast:
        raise AttendError("int8 decoding is part of the fast path (drop --int8 or --plain)")
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path, KIND)
    try:
        decoder = AttentionDecoder(CaptionerConfig(**captioner_config(state)))
        decoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
        vocab = Vocab.from_dict(state["vocab"])
        encoder = EncoderConfig(**state["encoder"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise AttendError(f"{path}: captioner checkpoint does not match this version ({type(e).__name__})") from None
    decoder = decoder.to(device).eval()
    return (FastDecoder(decoder, int8=int8) if fast else decoder), vocab, encoder, state
