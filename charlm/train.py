"""Train and evaluate the character model (`attend charlm train`, `attend charlm evaluate`).

Training runs the shared loop (``core.training.fit``) with truncated backpropagation through
time: ``data.BPTTStreams`` hands each rank one chunk of each of its B streams per step, in
order (``fit(shuffle=False)``), and ``TruncatedBPTT`` carries the state from one chunk to the
next, detached, so gradients reach back at most ``bptt`` characters while the state remembers
further. The fused kernels (``fast.TrainingCharLM``) do the work; ``fast=False`` trains the
plain model (slower, the same numbers without dropout).

Validation each epoch: bits per character on the held-out files (capped at ``val_chars``,
spread over them, ``metrics.windows``); ``best.pt`` is the epoch of the lowest bpc (``fit``
keeps the highest of what it selects on, so it selects on ``neg_bpc`` = -bpc).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch.nn.functional as F

from core import distributed
from core.checkpoint import export_checkpoint, load_checkpoint
from core.config import check_options
from core.errors import AttendError
from core.training import TrainConfig, check_train_config, fit, seed_everything

from .checkpoint import BOUNDS, DERIVED, KIND, check_charlm, load_charlm, resolve_checkpoint
from .data import BPTTStreams, CharVocab, Corpus, collate_chunks
from .fast import TrainingCharLM
from .metrics import KneserNey, Unigram, model_bpc, windows
from .model import CharLM, CharLMConfig, detach_state

SELECT = "neg_bpc"  # fit keeps the highest: the lowest bits per character
METRICS = ("bpc", SELECT)


class TruncatedBPTT:
    """The loss function of ``fit``: cross-entropy of each chunk's next characters, the state
    carried from the previous chunk of the same streams and detached (no gradient crosses it).

    The state starts from zeros at chunk 0 of an epoch (the streams have moved) and whenever the
    batch's shape changes (a last, smaller batch).
    """

    def __init__(self):
        self.state = None

    def __call__(self, net, batch, device):
        ids, chunk = batch
        ids = ids.to(device, non_blocking=True)  # (B, T + 1)
        if chunk == 0 or self.state is None or self.state[0].h.shape[0] != ids.shape[0]:
            self.state = None
        logits, state, _ = net(ids[:, :-1], self.state)  # (B, T, V)
        self.state = detach_state(state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        value = float(loss.detach())
        return loss, {"loss": value, "bpc": value / math.log(2)}


def describe_vocab(vocab: CharVocab) -> dict:
    return {"chars": list(vocab.chars)}


def _check_resume_data(out_dir: Path, corpus_data: dict) -> None:
    """A resumed run must read the same training text as the run it continues."""
    last = out_dir / "last.pt"
    if not last.exists():
        return
    saved = load_checkpoint(last, KIND).get("data", {})
    before = saved.get("train", {}).get("sha256") if isinstance(saved, dict) else None
    if before is not None and before != corpus_data["train"]["sha256"]:
        raise AttendError(
            f"--resume: {last} was trained on other text (--text/--stdlib/--max-chars or another Python); "
            "choose another --out"
        )


def train_charlm(
    corpus: Corpus,
    out_dir: str | Path,
    model_overrides: dict,
    train: TrainConfig,
    bptt: int = 100,
    chars_per_epoch: int = 1_500_000,
    val_chars: int = 200_000,
    device: str | None = None,
    export: str | Path | None = None,
    fast: bool = True,
    log=print,
) -> dict:
    """Truncated-BPTT training on ``corpus``'s training files; validation bpc on its held-out files.

    Args:
        model_overrides: ``CharLMConfig`` fields (cell, layers, hidden, embed_dim, dropout).
        train: the loop's options; ``batch_size`` is B, the streams per process.
        bptt: T, characters per chunk (how far back gradients reach).
        chars_per_epoch: characters read per epoch, all processes together.
        val_chars: held-out characters scored per epoch (spread over the held-out text).
        export: also write best.pt as a float16 shippable checkpoint there.
        fast: train through the fused kernels (``fast.TrainingCharLM``); False: the plain model.
    """
    train = check_train_config(train)
    model_overrides = check_options(CharLMConfig, model_overrides, BOUNDS, DERIVED)
    if bptt < 1 or chars_per_epoch < 1 or val_chars < 1:
        raise AttendError("--bptt, --chars-per-epoch and --val-chars must be at least 1")
    train_text = corpus.train_text
    vocab = CharVocab.build(train_text)
    train_ids, val_ids = vocab.encode(train_text), vocab.encode(corpus.val_text)  # (N,), (M,)
    if len(val_ids) < 2:
        raise AttendError("the held-out text is too short to score (at least 2 characters)")
    val_rows = windows(val_ids, val_chars)  # (S, L + 1)
    data = corpus.describe()
    log(
        f"text: {data['train']['files']} training files ({len(train_ids):,} characters), "
        f"{data['val']['files']} held out ({len(val_ids):,}), {len(vocab)} characters in the vocabulary"
    )
    out_dir = Path(out_dir)
    if train.resume:
        _check_resume_data(out_dir, data)
    seed_everything(train.seed)  # the initial weights follow the seed
    config = CharLMConfig(**{"vocab_size": len(vocab), **model_overrides})
    model = (TrainingCharLM if fast else CharLM)(config)
    ctx = distributed.init(device)
    try:
        train_set = BPTTStreams(train_ids, train.batch_size, bptt, chars_per_epoch, world=ctx.world_size)
        log(
            f"{ctx.world_size * train.batch_size} streams x {train_set.chunks} chunks of {bptt} characters "
            f"per epoch ({len(train_set) * bptt:,} characters)"
        )

        def evaluate(model):
            bpc = model_bpc(model, val_rows, fast=fast)
            return {"bpc": round(bpc, 5), SELECT: round(-bpc, 5)}

        extra = {
            "kind": KIND,
            "config": asdict(config),
            "vocab": describe_vocab(vocab),
            "data": data,
            "bptt": bptt,
            "chars_per_epoch": chars_per_epoch,
        }
        result = fit(
            model,
            train_set,
            collate_chunks,
            TruncatedBPTT(),
            evaluate,
            SELECT,
            train,
            ctx,
            extra,
            log=log,
            metric_names=METRICS,
            shuffle=False,
        )
        result["best_bpc"] = -result["best"] if math.isfinite(result["best"]) else None  # rank 0 evaluates
        if export and ctx.is_main:
            result["exported"] = export_checkpoint(result["checkpoint"], export, KIND)
    finally:
        distributed.shutdown()
    return result


def evaluate_charlm(
    checkpoint: str,
    corpus: Corpus | None = None,
    max_chars: int | None = 1_000_000,
    device: str | None = None,
    order: int = 5,
    log=print,
) -> dict:
    """Bits per character on the corpus's held-out files of the model and of two baselines trained
    on the same training files: add-one unigram and an interpolated Kneser-Ney ``order``-gram.

    ``corpus`` None: the standard library when the checkpoint was trained on it. ``max_chars``:
    at most this many held-out characters, spread over them (None: all).
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path, KIND)
    check_charlm(path, state)
    trained_on = state.get("data", {})
    if corpus is None:
        if trained_on.get("source") != "stdlib":
            raise AttendError(f"{path}: was not trained on --stdlib; give the text to score: --text FILE...")
        from .data import stdlib_corpus

        corpus = stdlib_corpus()
    model, vocab = load_charlm(str(checkpoint), device or "cpu")
    data = corpus.describe()
    notes = []
    if corpus.note:
        notes.append(corpus.note)
    same = trained_on.get("train", {}).get("sha256") == data["train"]["sha256"]
    if not same:
        notes.append("the checkpoint was trained on other text than this corpus's training files")
    train_ids, val_ids = vocab.encode(corpus.train_text), vocab.encode(corpus.val_text)  # (N,), (M,)
    if len(val_ids) < 2:
        raise AttendError("the held-out text is too short to score (at least 2 characters)")
    rows = windows(val_ids, max_chars)  # (S, L + 1)
    log(f"scoring {rows.shape[0] * (rows.shape[1] - 1):,} held-out characters")
    result = {
        "checkpoint": str(path),
        "held_out_files": data["val"]["files"],
        "chars_scored": rows.shape[0] * (rows.shape[1] - 1),
        "unknown_chars": int((rows[:, 1:] == 0).sum()),
        "bpc": {
            "model": round(model_bpc(model, rows), 4),
            "unigram": round(Unigram(train_ids, len(vocab)).bpc(rows), 4),
            f"{order}-gram": round(KneserNey(train_ids, len(vocab), order).bpc(rows), 4),
        },
        "python": data["python"],
        "same_training_text": same,
    }
    if notes:
        result["notes"] = notes
    return result
