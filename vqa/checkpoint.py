"""VQA checkpoints: the shipped models by name, and one file back to a model.

``load_vqa("scenes")``, ``load_vqa("easy-vqa")`` or a path gives the network, its question
vocabulary, its answer list and the encoder settings it was trained on.

``check_vqa`` checks every field of a checkpoint against bounds and against each other
(vocabulary and answer list sizes, every tensor's shape, finite weights) before anything is
allocated; a file that fails gets one line naming the field. Whether the model's grid and
feature width fit its encoder setting is ``core.checkpoint.check_encoder_fit``'s to say,
where features are fed to it (evaluation).
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

from .model import VQAConfig, VQANet

KIND = "vqa"
WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = {"scenes": WEIGHTS / "scenes.pt", "easy-vqa": WEIGHTS / "easy_vqa.pt"}
DEFAULT = "scenes"
METRICS = ("vqa", "exact")  # how a data set's answers are scored: 10 humans, or one answer

# What each VQAConfig field may hold (checked for --set and for checkpoint files).
BOUNDS = {
    "question_vocab_size": Bound(len(SPECIALS), MAX_VOCAB),
    "num_answers": Bound(1, MAX_VOCAB),
    "encoder_dim": Bound(1, MAX_DIM),
    "grid": Bound(1, MAX_GRID, length=2),
    "position_dim": Bound(0, MAX_DIM),
    "embed_dim": Bound(1, MAX_DIM),
    "hidden_dim": Bound(1, MAX_DIM),
    "attention_dim": Bound(1, MAX_DIM),
    "glimpses": Bound(1, 1024),
    "classifier_dim": Bound(1, MAX_DIM),
    "classifier_layers": Bound(0, 64),
    "dropout": Bound(0.0, 1.0),
}
DERIVED = ("question_vocab_size", "num_answers", "encoder_dim", "grid")  # from the data and the features


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A checkpoint path, or the name of a shipped model (``scenes``, ``easy-vqa``; None = scenes)."""
    return resolve(checkpoint, SHIPPED, DEFAULT, "VQA")


def check_vqa(path: str | Path, state: dict) -> tuple[VQAConfig, Vocab, list[str], EncoderConfig]:
    """Check every field of a VQA checkpoint, then every tensor's name and shape against the
    model its config describes (built on the meta device) and that the weights are finite,
    all before anything is allocated: (config, question vocab, answers, encoder config).

    Raises ``AttendError``, one line naming the file and the field.
    """
    try:
        for name in ("config", "question_vocab", "answers", "encoder"):
            if name not in state:
                raise Mismatch(f"no {name!r}")
        config = VQAConfig(**check_fields(VQAConfig, state["config"], BOUNDS, "config"))
        encoder = check_encoder_config(state["encoder"], "encoder")
    except Mismatch as e:
        raise AttendError(f"{path}: VQA checkpoint does not match this version ({e})") from None
    except AttendError as e:
        raise invalid(path, "VQA", str(e)) from None
    check_common(path, state, "VQA")
    if not isinstance(state["question_vocab"], dict) or "itos" not in state["question_vocab"]:
        raise invalid(path, "VQA", "question_vocab is not a vocabulary (expected {'itos': [...]})")
    itos = check_words(path, "VQA", "question_vocab.itos", state["question_vocab"]["itos"], config.question_vocab_size)
    try:
        vocab = Vocab(itos)
    except ValueError as e:
        raise invalid(path, "VQA", f"question_vocab: {e}") from None
    answers = check_words(path, "VQA", "answers", state["answers"], config.num_answers)
    if state.get("metric", "vqa") not in METRICS:
        raise invalid(path, "VQA", f"metric is {state['metric']!r} (expected one of {', '.join(METRICS)})")
    check_state_dict(path, "VQA", meta_model(lambda: VQANet(config)), state["model"])
    return config, vocab, answers, encoder


def load_vqa(checkpoint: str | Path | None = None, device: str | torch.device = "cpu"):
    """Rebuild the model from one checkpoint file (or a shipped name).

    Returns (net in eval mode, question vocab, answers, encoder config, checkpoint dict).
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path, KIND)
    config, vocab, answers, encoder = check_vqa(path, state)
    net = VQANet(config)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
    except RuntimeError as e:  # check_vqa compared every shape already
        raise invalid(path, "VQA", str(e).strip().splitlines()[0]) from None
    return net.to(device).eval(), vocab, answers, encoder, state
