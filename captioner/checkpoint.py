"""Captioner checkpoints: the shipped models by name, and one file back to a decoder.

``load_captioner("scenes")`` or a path gives the decoder, its vocabulary and the encoder
settings it was trained on; ``fast`` picks the decoding path (``captioner.fast``) or the
plain model (``captioner.model``), which give the same captions.

``check_captioner`` checks every field of a checkpoint against bounds and against each
other (vocabulary size, every tensor's shape, finite weights) before anything is allocated;
a file that fails gets one line naming the field. Whether the model's grid and feature width
fit its encoder setting is ``core.checkpoint.check_encoder_fit``'s to say, where features
are fed to it (evaluation, fine-tuning).
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.checkpoint import (
    check_common,
    check_state_dict,
    check_words,
    invalid,
    load_checkpoint,
    meta_model,
    resolve,
)
from core.config import MAX_DIM, MAX_GRID, MAX_VOCAB, Bound, Mismatch, check_fields
from core.encoder import EncoderConfig, check_encoder_config
from core.errors import AttendError
from core.vocab import SPECIALS, Vocab

from .decode import Decoder
from .fast import FastDecoder
from .model import CELLS, AttentionDecoder, CaptionerConfig

KIND = "captioner"
WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = {"scenes": WEIGHTS / "scenes.pt"}
DEFAULT = "scenes"

# What each CaptionerConfig field may hold (checked for --set and for checkpoint files).
BOUNDS = {
    "vocab_size": Bound(len(SPECIALS), MAX_VOCAB),
    "encoder_dim": Bound(1, MAX_DIM),
    "embed_dim": Bound(1, MAX_DIM),
    "attention_dim": Bound(1, MAX_DIM),
    "hidden_dim": Bound(1, MAX_DIM),
    "cell": Bound(choices=CELLS),
    "attention_query": Bound(choices=("previous", "current")),
    "gate": Bound(choices=("scalar", "vector")),
    "attention_mode": Bound(choices=("soft", "hard")),
    "hard_entropy": Bound(0.0, 1e6),
    "hard_reinforce": Bound(0.0, 1e6),
    "dropout": Bound(0.0, 1.0),
    "alpha_c": Bound(0.0, 1e6),
    "max_len": Bound(3, 10_000),  # <start>, one word, <end>
    "grid": Bound(1, MAX_GRID, length=2),
}
DERIVED = ("vocab_size", "encoder_dim", "grid")  # set from the data and the features, never by --set


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A checkpoint path, or the name of a shipped captioner (``scenes``; None = scenes)."""
    return resolve(checkpoint, SHIPPED, DEFAULT, KIND)


def captioner_config(checkpoint: dict) -> dict:
    """The model options of a captioner checkpoint; those written before the ``gate`` option
    existed had a per-channel gate."""
    config = checkpoint["config"]
    return {"gate": "vector", **config} if isinstance(config, dict) else config


def check_captioner(path: str | Path, state: dict) -> tuple[CaptionerConfig, Vocab, EncoderConfig]:
    """Check every field of a captioner checkpoint, then every tensor's name and shape against
    the model its config describes (built on the meta device) and that the weights are
    finite, all before anything is allocated: (config, vocab, encoder config).

    Raises ``AttendError``, one line naming the file and the field.
    """
    try:
        for name in ("config", "vocab", "encoder"):
            if name not in state:
                raise Mismatch(f"no {name!r}")
        config = CaptionerConfig(**check_fields(CaptionerConfig, captioner_config(state), BOUNDS, "config"))
        encoder = check_encoder_config(state["encoder"], "encoder")
    except Mismatch as e:
        raise AttendError(f"{path}: captioner checkpoint does not match this version ({e})") from None
    except AttendError as e:
        raise invalid(path, KIND, str(e)) from None
    check_common(path, state, KIND)
    if not isinstance(state["vocab"], dict) or "itos" not in state["vocab"]:
        raise invalid(path, KIND, "vocab is not a vocabulary (expected {'itos': [...]})")
    itos = check_words(path, KIND, "vocab.itos", state["vocab"]["itos"], config.vocab_size)
    try:
        vocab = Vocab(itos)
    except ValueError as e:
        raise invalid(path, KIND, f"vocab: {e}") from None
    per_image = state.get("captions_per_image", 0)
    if isinstance(per_image, bool) or not isinstance(per_image, int) or not 0 <= per_image <= MAX_VOCAB:
        raise invalid(path, KIND, f"captions_per_image is {per_image!r} (expected an integer of at least 0)")
    if not isinstance(state.get("init"), (str, type(None))):
        raise invalid(path, KIND, f"init is a {type(state['init']).__name__} (expected a path or none)")
    check_state_dict(path, KIND, meta_model(lambda: AttentionDecoder(config)), state["model"])
    return config, vocab, encoder


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
    config, vocab, encoder = check_captioner(path, state)
    decoder = AttentionDecoder(config)
    try:
        decoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
    except RuntimeError as e:  # check_captioner compared every shape already
        raise invalid(path, KIND, str(e).strip().splitlines()[0]) from None
    decoder = decoder.to(device).eval()
    return (FastDecoder(decoder, int8=int8) if fast else decoder), vocab, encoder, state
