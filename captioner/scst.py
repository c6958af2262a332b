"""Self-critical sequence training (Rennie et al. 2017): REINFORCE on the caption-level CIDEr-D.

Legend: B images, K sampled captions per image, N = B * K rows (image-major), T steps.

For each image the model draws K captions from its own distribution; each gets a reward r,
the CIDEr-D of the caption against the image's references, and the loss is

    L = - sum_n (r_n - b_n) sum_t log p(w_nt)  /  (number of sampled words, <end> included)

whose gradient is the REINFORCE estimate of the gradient of the expected reward. The
baseline b lowers the estimate's variance without biasing it, since it does not depend on
the sample it is subtracted from:

* ``mean`` (Luo 2020, "a better variant of SCST"): the mean reward of the image's other K-1
  samples;
* ``greedy`` (Rennie et al.): the reward of the model's own greedy caption. A sample scores
  above zero only where it beats what the model would say at test time.

CIDEr-D (Vedantam et al. 2015; pycocoevalcap's ``Cider`` is this variant) weighs each n-gram
(n = 1..4) by tf-idf, with document frequencies from the training references, and clips a
caption's n-gram counts at the reference's: naming an object twice earns no more than naming
it once, and it costs the length penalty. That is the repetition error cross-entropy never
sees as a whole.

How a step runs (``ScstLoss``): the K samples are drawn without gradients through the fast
decoder (``decode.sample(..., per_image=K)``), which draws what the plain model would; their
log-probabilities are then computed with gradients by one teacher-forced pass of the
training model over the sampled captions, which runs the fast teacher forcing and DDP's
gradient averaging as cross-entropy training does. Both passes see the same distribution
only without dropout, so an SCST run sets dropout to 0 unless told otherwise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from core.errors import AttendError
from core.features import FeatureCache
from core.vocab import Vocab
from data_prep.scenes.measures import caption_correct

from .data import cached_records
from .decode import greedy, sample
from .fast import FastDecoder
from .model import word_log_probs

BASELINES = ("mean", "greedy")


# ---------------------------------------------------------------------------- the reward


def ngram_counts(words: Sequence[str], n: int = 4) -> Counter:
    """Every 1..n-gram of ``words`` with its count (tuples of words)."""
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """CIDEr-D of captions against the references of a fixed corpus of images.

    ``references[i]`` holds the token lists of image i. The document frequencies come from
    the whole corpus (training references, for the reward), and each image's reference
    vectors are built once, here: a reward then costs the candidate's n-grams and a few
    dictionary look-ups per reference. The numbers are pycocoevalcap's ``Cider``, computed
    on the same references (a test checks it), including its details: an n-gram unseen in
    the corpus gets the document frequency 1, and the Gaussian length penalty compares
    bigram counts (the toolkit's ``length``), which differ from word counts only below two words.
    """

    def __init__(self, references: Sequence[Sequence[Sequence[str]]], n: int = 4, sigma: float = 6.0):
        if not references:
            raise AttendError("CIDEr-D needs at least one image's references")
        self.n, self.sigma = n, sigma
        cooked = [[ngram_counts(r, n) for r in refs] for refs in references]
        df: Counter = Counter()
        for refs in cooked:
            df.update({g for ref in refs for g in ref})
        self.log_images = math.log(len(cooked))
        self.idf = {g: self.log_images - math.log(max(1.0, count)) for g, count in df.items()}
        self.refs = [[self._vector(ref) for ref in refs] for refs in cooked]

    def _vector(self, counts: Counter) -> tuple[list[dict], list[float], int]:
        """tf-idf weights per n-gram order, their norms, and the bigram count."""
        vec = [{} for _ in range(self.n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * self.idf.get(gram, self.log_images)  # log(N) - log(1) if unseen
        norms = [math.sqrt(sum(v * v for v in order.values())) for order in vec]
        length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, norms, length

    def score(self, image: int, words: Sequence[str]) -> float:
        """The CIDEr-D of one caption of corpus image ``image`` (x10, as the toolkit reports it)."""
        vec, norms, length = self._vector(ngram_counts(words, self.n))
        refs = self.refs[image]
        total = 0.0
        for ref_vec, ref_norms, ref_length in refs:
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma**2))
            for order in range(self.n):
                ref_order = ref_vec[order]
                value = sum(min(w, ref_order.get(g, 0.0)) * ref_order.get(g, 0.0) for g, w in vec[order].items())
                if norms[order] and ref_norms[order]:
                    value /= norms[order] * ref_norms[order]
                total += value * penalty
        return 10.0 * total / (self.n * len(refs))

    def scores(self, images: Sequence[int], captions: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of ``captions[j]`` for corpus image ``images[j]``: (len(captions),) float64."""
        return np.array([self.score(i, c) for i, c in zip(images, captions)], dtype=np.float64)


# ---------------------------------------------------------------------------- the loss


def mean_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """(B, K) rewards -> each sample's baseline, the mean of its image's other K-1 samples."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("the mean baseline needs at least 2 samples per image")
    return (rewards.sum(1, keepdim=True) - rewards) / (k - 1)


def reinforce_loss(
    logits: torch.Tensor, targets: torch.Tensor, advantages: torch.Tensor, pad_id: int = Vocab.pad_id
) -> torch.Tensor:
    """- sum_n A_n sum_t log p(w_nt) / (sampled words): logits (N, T, V) of the teacher-forced
    pass over the samples, targets (N, T) their words (<end> included, then <pad>), A (N,)."""
    mask = (targets != pad_id).float()  # (N, T)
    logp = word_log_probs(logits, targets)  # (N, T)
    return -(advantages.unsqueeze(1) * logp * mask).sum() / mask.sum().clamp(min=1.0)


def as_captions(decoded, max_len: int, device) -> torch.Tensor:
    """Sampled captions -> the (N, T) ids teacher forcing reads: <start> words [<end>] <pad>...;
    a caption cut at ``max_len`` without <end> gets none."""
    rows = [[Vocab.start_id, *d.ids, *([Vocab.end_id] if len(d.ids) < max_len else [])] for d in decoded]
    out = torch.full((len(rows), max(len(r) for r in rows)), Vocab.pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out.to(device)


class ScstLoss:
    """The training step's loss for ``core.training.fit``: (net, batch, device) -> (loss, metrics).

    ``batch`` is (grids (B, P, D), corpus indices (B,)) from ``ScstImages``. Sampling draws
    from torch's global generator, which the training loop re-seeds from (seed, epoch, rank)
    every epoch: a run is reproducible, and a resumed run draws what the uninterrupted one did.
    """

    def __init__(
        self,
        reward: CiderD,
        vocab: Vocab,
        samples: int = 5,
        baseline: str = "mean",
        objects: Sequence[Sequence[dict]] | None = None,
        object_bonus: float = 0.0,
    ):
        self.check(samples, baseline)
        self.reward, self.vocab, self.samples, self.baseline = reward, vocab, samples, baseline
        if object_bonus and objects is None:
            raise AttendError("--scst-object-bonus needs the scenes' ground truth (data prepared from the scenes)")
        self.objects, self.object_bonus = objects, object_bonus

    def rewards(self, images: Sequence[int], captions: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of each caption of corpus image ``images[j]``, plus ``object_bonus`` where the
        caption is right about the whole scene (``measures.caption_correct``: every object named,
        none twice, every relation true)."""
        rewards = self.reward.scores(images, captions)
        if self.object_bonus:
            right = [caption_correct(c, self.objects[i]) for i, c in zip(images, captions)]
            rewards = rewards + self.object_bonus * np.array(right, dtype=np.float64)
        return rewards

    @staticmethod
    def check(samples: int, baseline: str) -> None:
        if baseline not in BASELINES:
            raise AttendError(f"--scst-baseline {baseline!r}: choose from {', '.join(BASELINES)}")
        least = 2 if baseline == "mean" else 1
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < least:
            raise AttendError(f"--scst-samples {samples!r}: the {baseline} baseline needs at least {least} per image")

    def __call__(self, net, batch, device):
        features, images = batch
        features = features.to(device, non_blocking=True).float()  # (B, P, D)
        decoder = net.module if hasattr(net, "module") else net
        b, k, max_len = features.shape[0], self.samples, decoder.config.max_len
        fast = FastDecoder(decoder)  # a snapshot of the weights as they are at this step
        drawn = sample(fast, features, per_image=k)  # N = B * K, image-major
        images = images.tolist()
        corpus = [i for i in images for _ in range(k)]
        rewards = torch.from_numpy(self.rewards(corpus, [self.vocab.decode(d.ids) for d in drawn]))
        rewards = rewards.float().view(b, k)  # (B, K)
        if self.baseline == "mean":
            base = mean_baseline(rewards)
        else:
            best = greedy(fast, features)
            base = torch.from_numpy(self.rewards(images, [self.vocab.decode(d.ids) for d in best]))
            base = base.float().view(b, 1).expand(b, k)
        captions = as_captions(drawn, max_len, device)  # (N, T)
        logits, _ = net(features, captions)  # (N, T-1, V)
        advantages = (rewards - base).reshape(-1).to(device)  # (N,)
        loss = reinforce_loss(logits, captions[:, 1:], advantages)
        metrics = {
            "loss": loss.item(),
            "reward": rewards.mean().item(),
            "baseline": base.mean().item(),
            "sample_words": sum(len(d.ids) for d in drawn) / len(drawn),
        }
        return loss, metrics


class ScstImages(torch.utils.data.Dataset):
    """One training image per item: its grid (P, D) float16 and its index in the reward's corpus."""

    def __init__(self, records: list[dict], cache: FeatureCache):
        self.records, self.cache = cached_records(records, cache), cache

    def references(self) -> list[list[list[str]]]:
        return [r["tokens"] for r in self.records]

    def objects(self, truth: dict[int, list[dict]]) -> list[list[dict]]:
        """The scenes' objects of each item, from ``measures.split_ground_truth``."""
        missing = [r["image_id"] for r in self.records if r["image_id"] not in truth]
        if missing:
            raise AttendError(f"image {missing[0]} of the training split has no scene objects in its instances file")
        return [truth[r["image_id"]] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.cache[self.records[i]["image"]]), i


def collate_images(batch):
    """[(grid, index)] -> grids (B, P, D), indices (B,)."""
    return torch.stack([f for f, _ in batch]), torch.tensor([i for _, i in batch])
