"""Character-model checkpoints: the shipped model by name, and one file back to a ``CharLM``.

``load_charlm("stdlib")`` or a path gives the model (the plain reference, ``charlm.model``, in
eval mode) and its vocabulary. ``check_charlm`` checks every field against bounds and against
each other (vocabulary size, every tensor's name and shape on a model built on the meta device,
finite weights) before anything is allocated; a file that fails gets one line naming the field.
"""

from __future__ import annotations

from pathlib import Path

from core.checkpoint import check_common, check_state_dict, check_words, invalid, load_checkpoint, meta_model, resolve
from core.config import MAX_DIM, Bound, Mismatch, check_fields
from core.errors import AttendError

from .data import CharVocab
from .model import CELLS, CharLM, CharLMConfig

KIND = "charlm"
WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = {"stdlib": WEIGHTS / "stdlib.pt"}
DEFAULT = "stdlib"

MAX_CHARS = 1_114_112  # every Unicode code point, plus nothing
# What each CharLMConfig field may hold (checked for the options and for checkpoint files).
BOUNDS = {
    "vocab_size": Bound(2, MAX_CHARS),  # the unknown character and at least one more
    "cell": Bound(choices=CELLS),
    "layers": Bound(1, 64),
    "hidden": Bound(1, MAX_DIM),
    "embed_dim": Bound(1, MAX_DIM),
    "dropout": Bound(0.0, 0.99),
}
DERIVED = ("vocab_size",)  # set from the text


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A checkpoint path, or the name of a shipped character model (``stdlib``; None = stdlib)."""
    return resolve(checkpoint, SHIPPED, DEFAULT, KIND)


def check_charlm(path: str | Path, state: dict) -> tuple[CharLMConfig, CharVocab]:
    """Every field of a character-model checkpoint, then every tensor against the model its
    config describes (built on the meta device), all before anything is allocated.

    Raises ``AttendError``: one line naming the file and the field.
    """
    try:
        for name in ("config", "vocab"):
            if name not in state:
                raise Mismatch(f"no {name!r}")
        config = CharLMConfig(**check_fields(CharLMConfig, state["config"], BOUNDS, "config"))
    except Mismatch as e:
        raise AttendError(f"{path}: character-model checkpoint does not match this version ({e})") from None
    except AttendError as e:
        raise invalid(path, KIND, str(e)) from None
    check_common(path, state, KIND)
    if not isinstance(state["vocab"], dict) or "chars" not in state["vocab"]:
        raise invalid(path, KIND, "vocab is not a character vocabulary (expected {'chars': [...]})")
    chars = check_words(path, KIND, "vocab.chars", state["vocab"]["chars"], config.vocab_size)
    try:
        vocab = CharVocab(chars)
    except ValueError as e:
        raise invalid(path, KIND, f"vocab: {e}") from None
    check_state_dict(path, KIND, meta_model(lambda: CharLM(config)), state["model"])
    return config, vocab


def load_charlm(name_or_path: str, device="cpu") -> tuple[CharLM, CharVocab]:
    """Rebuild a character model from one checkpoint file or shipped name (``stdlib``), in eval
    mode on ``device`` and in float32 (shipped files hold float16): (model, vocab)."""
    path = resolve_checkpoint(name_or_path)
    state = load_checkpoint(path, KIND)
    config, vocab = check_charlm(path, state)
    model = CharLM(config)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
    except RuntimeError as e:  # check_charlm compared every shape already
        raise invalid(path, KIND, str(e).strip().splitlines()[0]) from None
    return model.to(device).eval(), vocab
