"""Caption training pairs read from the prepared layout and the memory-mapped feature cache."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .errors import AttendError
from .features import FeatureCache
from .vocab import Vocab


class CaptionPairs(Dataset):
    """One (image grid, caption) pair per reference caption: (P, D) float16, (T,) ids."""

    def __init__(self, records: list[dict], cache: FeatureCache, vocab: Vocab, max_len: int):
        self.cache, self.vocab = cache, vocab
        self.pairs = [(r["image"], tokens[: max_len - 2]) for r in records if r["image"] in cache
                      for tokens in r["tokens"]]
        if not self.pairs:
            raise AttendError("no caption has its image in the feature cache (run `attend features`)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        key, tokens = self.pairs[i]
        features = torch.from_numpy(self.cache[key])  # (P, D) float16, a copy of the mapped row
        return features, torch.tensor(self.vocab.encode(tokens, add_start_end=True))


def collate_pairs(batch):
    features = torch.stack([f for f, _ in batch])                            # (B, P, D)
    longest = max(len(c) for _, c in batch)
    captions = torch.zeros(len(batch), longest, dtype=torch.long)           # (B, T), 0 = <pad>
    for i, (_, c) in enumerate(batch):
        captions[i, : len(c)] = c
    return features, captions
