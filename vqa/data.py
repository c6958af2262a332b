"""VQA examples read from the prepared layout (DIR/vqa.json) and the memory-mapped feature cache.

The unit is an image with all its questions: VQA sets ask 5-10 questions per image, and
the model's image side (normalisation, position, attention projection) does not depend on
the question, so a batch computes it once per image rather than once per question (about
5x less work per training step on the CPU). An item is (grid (P, D) float16, [question
ids (T,), ...], [targets [[answer, score], ...], ...]); ``collate`` pads the questions with
0, densifies the targets to (B, K) and says which image each question is about.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.utils.data import Dataset

from core.errors import AttendError
from core.features import FeatureCache
from core.vocab import Vocab

MAX_QUESTION_TOKENS = 40  # longer questions are refused at inference and cut in training


def question_ids(tokens: list[str], vocab: Vocab) -> list[int]:
    """Tokens -> ids (unknown words -> <unk>), no <start>/<end>: the LSTM reads the words only."""
    return vocab.encode(tokens[:MAX_QUESTION_TOKENS])


class VQAExamples(Dataset):
    """The records of one split whose image is in the cache, grouped by image.

    ``training=True`` also drops records without targets (test splits; questions none of
    whose human answers is among the kept answers): they carry no training signal.
    ``records`` lists the kept records in item order (image by image), the order in which
    ``predict`` returns answers.
    """

    def __init__(self, records: list[dict], cache: FeatureCache, vocab: Vocab, training: bool = False):
        self.cache = cache
        by_image: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            if r["image"] in cache and (r["targets"] or not training):
                by_image[r["image"]].append(r)
        if not by_image:
            raise AttendError(
                "no question has its image in the feature cache"
                + (" and a training target" if training else "")
                + " (run `attend features`)"
            )
        self.images = list(by_image)
        self.groups = [by_image[key] for key in self.images]
        self.records = [r for group in self.groups for r in group]
        self.ids = [
            [torch.tensor(question_ids(r["tokens"], vocab), dtype=torch.long) for r in group] for group in self.groups
        ]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def questions(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        features = torch.from_numpy(self.cache[self.images[i]])  # (P, D) float16, a copy
        return features, self.ids[i], [r["targets"] for r in self.groups[i]]


def pad_questions(ids: list[torch.Tensor]) -> torch.Tensor:
    """Question id tensors -> (B, T) padded with 0; an empty question is one pad token."""
    longest = max(1, max(len(q) for q in ids))
    questions = torch.zeros(len(ids), longest, dtype=torch.long)  # (B, T)
    for i, q in enumerate(ids):
        questions[i, : len(q)] = q
    return questions


def collate(batch, num_answers: int | None):
    """Images with their questions -> features (N, P, D) float16, questions (B, T),
    image_index (B,) (the row of ``features`` each question is about), targets (B, K)
    float32 (None when ``num_answers`` is None: answering needs no targets)."""
    features = torch.stack([f for f, _, _ in batch])  # (N, P, D)
    ids = [q for _, qs, _ in batch for q in qs]
    questions = pad_questions(ids)  # (B, T)
    image_index = torch.tensor([n for n, (_, qs, _) in enumerate(batch) for _ in qs])  # (B,)
    if num_answers is None:
        return features, questions, image_index, None
    targets = torch.zeros(len(ids), num_answers)  # (B, K)
    pairs = [t for _, _, ts in batch for t in ts]
    for i, question_targets in enumerate(pairs):
        for k, score in question_targets:
            targets[i, int(k)] = float(score)
    return features, questions, image_index, targets


class Collate:
    """``collate`` with K bound, picklable for DataLoader worker processes."""

    def __init__(self, num_answers: int | None):
        self.num_answers = num_answers

    def __call__(self, batch):
        return collate(batch, self.num_answers)
