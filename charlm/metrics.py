"""Bits per character: of the model, and of two baselines trained on the same training text.

Bits per character (bpc) is the mean of -log2 p(next character) over a text: the cross-entropy
in bits, what a compressor driven by the model would spend per character. Karpathy et al. 2016
report their LSTMs in the same unit (as cross-entropy on held-out text).

The baselines say what the number means:

* ``Unigram``: add-one (Laplace) character frequencies, no context at all;
* ``KneserNey``: a 5-gram character model with interpolated Kneser-Ney smoothing (Kneser & Ney
  1995; Chen & Goodman 1998, section 3.5, "interpolated Kneser-Ney" with one absolute discount
  per order, D = n1 / (n1 + 2 n2)). The highest order counts what follows each 4-character
  history; the lower orders count in how many different contexts a sequence was seen (the
  continuation counts), and the unigram level is interpolated with the uniform distribution,
  so every character of the vocabulary gets a probability and they sum to 1 for any history.

All three read a text as the same ``windows``: up to ``streams`` equal pieces spread evenly over
the text (so a capped evaluation samples every part of it, not only its first files), each read
from its start with no context before it.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from .fast import fused_forward
from .model import CharLM, detach_state

LN2 = math.log(2)


def windows(ids: torch.Tensor, max_chars: int | None = None, streams: int = 64) -> torch.Tensor:
    """Rows of ``L + 1`` ids (S, L + 1): S <= ``streams`` pieces of the text, spread evenly over
    it, L predictions each, S * L <= ``max_chars`` (None: as much of the text as S rows of equal
    length hold; fewer than S characters are left over)."""
    n = len(ids)
    if n < 2:
        raise ValueError("a text of at least 2 characters is needed to score a prediction")
    rows = max(1, min(streams, n - 1))
    length = (n - 1) // rows
    if max_chars is not None:
        length = max(1, min(length, max_chars // rows))
    spacing = (n - 1 - length) // (rows - 1) if rows > 1 else 0
    starts = torch.arange(rows) * spacing  # (S,)
    return torch.stack([ids[s : s + length + 1] for s in starts.tolist()])  # (S, L + 1)


@torch.no_grad()
def model_bpc(model: CharLM, rows: torch.Tensor, bptt: int = 256, fast: bool = True) -> float:
    """The model's bits per character on ``rows`` (S, L + 1), each row read from its start with
    the state carried across chunks of ``bptt`` characters (so context reaches back to the row's
    start); ``fast``: through the fused kernels (``charlm.fast``), else the reference forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = rows.to(device)
    state, nats, count = None, 0.0, 0
    for first in range(0, rows.shape[1] - 1, bptt):
        x = rows[:, first : first + bptt]  # (S, T)
        y = rows[:, first + 1 : first + bptt + 1]  # (S, T)
        x = x[:, : y.shape[1]]
        if fast:
            logits, state = fused_forward(model, x, state)  # (S, T, V)
        else:
            logits, state, _ = model(x, state)  # (S, T, V)
        state = detach_state(state)
        nats += float(torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum"))
        count += y.numel()
    model.train(was_training)
    return nats / count / LN2


class Unigram:
    """p(c) = (count(c) + 1) / (N + V) over the ids 0..V-1: character frequencies, add-one smoothed."""

    def __init__(self, train_ids: torch.Tensor, vocab_size: int):
        counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size).astype(np.float64)
        self.prob = (counts + 1) / (counts.sum() + vocab_size)  # (V,)

    def bpc(self, rows: torch.Tensor) -> float:
        targets = np.asarray(rows[:, 1:], dtype=np.int64).ravel()
        return float(-np.log2(self.prob[targets]).mean())


def _as_string(ids) -> str:
    """Ids as a string of one character per id (chr(id)): n-grams become dictionary keys cheaply."""
    return np.asarray(ids, dtype=np.uint32).tobytes().decode("utf-32-le")


class KneserNey:
    """An interpolated Kneser-Ney character n-gram model over the ids 0..V-1 (see the module docstring).

    Counting uses one pass over the text (the ``order``-grams); every lower order's continuation
    counts come from the distinct grams of the order above, so a few million characters take
    seconds.
    """

    def __init__(self, train_ids: torch.Tensor, vocab_size: int, order: int = 5):
        if order < 1:
            raise ValueError("order must be at least 1")
        self.order, self.vocab_size = order, vocab_size
        text = _as_string(train_ids)
        n = order
        # counts[k]: raw counts at the top order, continuation counts N1+(. g) below it.
        counts: dict[int, Counter] = {n: Counter(text[i : i + n] for i in range(len(text) - n + 1))}
        for k in range(n - 1, 0, -1):
            above = counts[k + 1]
            grams = Counter(g[1:] for g in above)  # in how many contexts each k-gram was seen
            # every k-gram of the text but the first is the suffix of a (k+1)-gram; the first
            # counts once (its context is the start of the text) unless seen elsewhere
            head = text[:k]
            if len(head) == k and head not in grams:
                grams[head] = 1
            counts[k] = grams
        self.counts = counts
        self.discount, self.totals, self.types = {}, {}, {}
        for k, grams in counts.items():
            histogram = Counter(grams.values())
            n1, n2 = histogram.get(1, 0), histogram.get(2, 0)
            self.discount[k] = min(0.95, max(0.05, n1 / (n1 + 2 * n2))) if n1 + n2 else 0.5
            totals, types = Counter(), Counter()
            for gram, c in grams.items():
                totals[gram[:-1]] += c
                types[gram[:-1]] += 1
            self.totals[k], self.types[k] = totals, types

    def prob(self, history: str, char: str) -> float:
        """p(char | history), both as ``_as_string`` gives them; the last ``order - 1`` characters count."""
        d, total, types = self.discount[1], self.totals[1][""], self.types[1][""]
        p = 1.0 / self.vocab_size
        if total:
            p = (max(self.counts[1].get(char, 0) - d, 0) + d * types * p) / total
        for k in range(2, min(self.order, len(history) + 1) + 1):
            h = history[len(history) - (k - 1) :]
            total = self.totals[k].get(h, 0)
            if total:  # an unseen history: the lower order's estimate stands
                d = self.discount[k]
                p = (max(self.counts[k].get(h + char, 0) - d, 0) + d * self.types[k][h] * p) / total
        return p

    def distribution(self, history_ids) -> np.ndarray:
        """p(. | history) over all V ids (V,): sums to 1."""
        history = _as_string(history_ids)
        return np.array([self.prob(history, chr(c)) for c in range(self.vocab_size)])

    def bpc(self, rows: torch.Tensor) -> float:
        bits, count, context = 0.0, 0, self.order - 1
        for row in rows:
            text = _as_string(row)
            for t in range(1, len(text)):
                bits -= math.log2(self.prob(text[max(0, t - context) : t], text[t]))
                count += 1
        return bits / count
