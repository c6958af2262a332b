"""Caption training examples read from the prepared layout and the memory-mapped feature cache.

Two ways to batch them:

* ``CaptionPairs``: one (grid, caption) pair per reference caption, batched freely.
* ``CaptionGroups``: one image with K of its reference captions per item (K = 5 for COCO's
  five: neuraltalk2's "seq_per_img"). The decoder then makes everything it makes per image
  once for K captions (``AttentionDecoder.forward``), and an epoch reads each grid once.
  Which K it picks is drawn from a generator seeded by (seed, epoch, item) (``set_epoch``,
  called by the training loop): the same whatever the number of loader workers, and the
  same when a run is resumed.

Both keep the records whose image is in the feature cache; the callers first check with
``FeatureCache.require`` that the cache covers the split, so the only images left out are
those the cache records as skipped (unreadable when it was built).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from core.errors import AttendError
from core.features import FeatureCache
from core.training import epoch_seed
from core.vocab import Vocab


def cached_records(records: list[dict], cache: FeatureCache) -> list[dict]:
    """The records with captions whose image is in the cache; none is a one-line error."""
    records = [r for r in records if r["image"] in cache and r["tokens"]]
    if not records:
        raise AttendError("no caption has its image in the feature cache (run `attend features`)")
    return records


class CaptionPairs(Dataset):
    """One (image grid, caption) pair per reference caption: (P, D) float16, (T,) ids."""

    def __init__(self, records: list[dict], cache: FeatureCache, vocab: Vocab, max_len: int):
        self.cache, self.vocab = cache, vocab
        self.pairs = [
            (r["image"], tokens[: max_len - 2]) for r in cached_records(records, cache) for tokens in r["tokens"]
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        key, tokens = self.pairs[i]
        features = torch.from_numpy(self.cache[key])  # (P, D) float16, a copy of the mapped row
        return features, [torch.tensor(self.vocab.encode(tokens, add_start_end=True))]


class CaptionGroups(Dataset):
    """One image per item with exactly ``per_image`` of its captions: (P, D) float16 and a list
    of K (T,) id tensors. An image with more references gives a fresh random K of them each
    time it is read (each epoch); one with fewer repeats some, drawn at random."""

    def __init__(self, records: list[dict], cache: FeatureCache, vocab: Vocab, max_len: int, per_image: int):
        if per_image < 1:
            raise ValueError("per_image must be at least 1")
        self.cache, self.vocab, self.per_image = cache, vocab, per_image
        self.images = [(r["image"], [t[: max_len - 2] for t in r["tokens"]]) for r in cached_records(records, cache)]
        self.seed, self.epoch = 0, 0

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Draw the captions of ``epoch`` of a run seeded with ``seed`` (the training loop calls it)."""
        self.epoch, self.seed = epoch, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        key, references = self.images[i]
        n, k = len(references), self.per_image
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, i))
        if n >= k:
            chosen = torch.randperm(n, generator=generator)[:k].tolist()
        else:  # every reference once, the rest drawn again
            chosen = list(range(n)) + torch.randint(n, (k - n,), generator=generator).tolist()
        features = torch.from_numpy(self.cache[key])  # (P, D) float16
        return features, [torch.tensor(self.vocab.encode(references[j], add_start_end=True)) for j in chosen]


def images_per_batch(batch_size: int, per_image: int) -> int:
    """Grids in a batch of ``batch_size`` captions: ``batch_size // K`` (at least 1) with K
    captions each, or ``batch_size`` with 0 (every caption on its own)."""
    return max(1, batch_size // per_image) if per_image else batch_size


def collate_captions(batch):
    """[(grid, [K captions])] -> grids (B, P, D) and captions (B*K, T), image-major, 0 = <pad>."""
    features = torch.stack([f for f, _ in batch])  # (B, P, D)
    rows = [c for _, caps in batch for c in caps]
    captions = torch.zeros(len(rows), max(len(c) for c in rows), dtype=torch.long)  # (B*K, T)
    for i, c in enumerate(rows):
        captions[i, : len(c)] = c
    return features, captions
