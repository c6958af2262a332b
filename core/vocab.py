"""The one tokenizer and the vocabulary, shared by captions and VQA questions.

The tokenizer needs no downloaded data (nltk's ``word_tokenize`` needs its punkt data,
which is not there offline): lowercase, then runs of letters and digits, keeping inner apostrophes
("what's", "don't"). Punctuation is dropped, as in the Karpathy split's tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into word tokens; punctuation is dropped."""
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


class Vocab:
    """Token <-> id mapping with ``<pad>`` = 0, ``<start>`` = 1, ``<end>`` = 2, ``<unk>`` = 3."""

    def __init__(self, itos: Sequence[str]):
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.itos = list(itos)
        self.stoi = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tokens in vocabulary")

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_count: int = 1) -> Vocab:
        """Keep every token seen at least ``min_count`` times, most frequent first.

        Ties are broken alphabetically so the same data always gives the same ids.
        """
        counts = Counter(token for tokens in token_lists for token in tokens)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in SPECIALS), key=lambda t: (-counts[t], t)
        )
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str], add_start_end: bool = False) -> list[int]:
        ids = [self.stoi.get(t, self.unk_id) for t in tokens]
        return [self.start_id, *ids, self.end_id] if add_start_end else ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens, skipping ``<start>``/``<pad>`` and stopping at ``<end>``."""
        tokens = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            tokens.append(self.itos[i])
        return tokens

    def unknown(self, tokens: Sequence[str]) -> list[str]:
        """The tokens of ``tokens`` that this vocabulary does not know."""
        return [t for t in tokens if t not in self.stoi]

    def to_dict(self) -> dict:
        """A plain dict, safe in a ``weights_only`` checkpoint and in JSON."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(d["itos"])
