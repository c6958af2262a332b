"""The one tokenizer and the vocabulary, shared by captions and VQA questions.

The tokenizer needs no downloaded data (nltk's ``word_tokenize`` needs its punkt data,
which is not there offline): lowercase (``str.lower``), then runs of letters and digits of
any script, keeping inner apostrophes ("what's", "don't"; the curly ``’`` counts as one).
Punctuation and symbols are dropped, as in the Karpathy split's tokens; so is the
underscore, which is not a letter ("red_circle" -> "red", "circle").

ASCII text is tokenized exactly as by the original ``[a-z0-9]+(?:'[a-z0-9]+)*`` (the
vocabularies of the shipped models depend on it). Other text is put in NFC form, so that
"café" typed with a combining accent is the same word as with a precomposed "é", and
combining marks stay inside their word (Devanagari vowel signs, Thai tone marks).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import regex

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

# ASCII: letters and digits, joined by inner apostrophes. Unchanged since the first
# vocabularies were built; ASCII text never reaches the Unicode pattern below.
_ASCII_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


# Any script: a word is letters and digits, each followed by any combining marks (Devanagari
# vowel signs, Thai tone marks: categories M, which ``\w`` leaves out), words joined by inner
# apostrophes. The ``regex`` package (nltk's own dependency) knows the Unicode categories.
_UNICODE_WORD = r"[\p{L}\p{N}]\p{M}*(?:[\p{L}\p{N}]\p{M}*)*"
_UNICODE_TOKEN = regex.compile(rf"{_UNICODE_WORD}(?:'{_UNICODE_WORD})*")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into word tokens; punctuation is dropped.

    >>> tokenize("What's the Café’s colour? (red_circle)")
    ["what's", 'the', "café's", 'colour', 'red', 'circle']
    """
    text = text.lower().replace("\u2019", "'")
    if text.isascii():
        return _ASCII_TOKEN.findall(text)
    return _UNICODE_TOKEN.findall(unicodedata.normalize("NFC", text))


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
