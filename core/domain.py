"""Is this image like the ones the model was trained on? A per-image domain check.

A model trained on generated scenes writes confident nonsense for a photograph, and its
softmax says nothing about it. What does tell is an ImageNet encoder: the pooled feature
vector of a photograph lies far from those of the training images. So a checkpoint records
the statistics of its training images' pooled features, and every image gets a distance:

* The features: the packaged EfficientNet-Lite0 at 224 px, last stage, averaged over the
  grid: (1280,), whatever encoder the model itself reads (core/recognise.py, the "probe";
  the VQA models' own features are exactly these, the captioner's 448 px ones are not).
  The 448 px features with the mid-level stage tell a JPEG or a blurred copy of a scene from
  the scene as sharply as a photograph (measured: scores 5-7 against photographs' 6-13), so
  they measure "drawn by this renderer", not "a picture of this kind".
* The training images, each also as a degraded copy (JPEG at quality 20-90, a blur, a
  downscale or noise: ``degrade``), so that an ordinary re-encoding or another renderer's
  softer edges stay in domain.
* A Gaussian fitted to them, kept as its mean, its top ``k`` principal directions with their
  variances, and one variance for everything outside them (the probabilistic-PCA form of the
  covariance: a full 1280 x 1280 precision matrix would be 6.5 MB and ill-conditioned from
  a few thousand images).
* ``distance``: the image's squared Mahalanobis distance under it, divided by D (about 1 for
  a typical training image), square-rooted.
* A threshold: the ``quantile`` (default 0.999) of the distances of held-out images of the
  training domain (never the images the Gaussian was fitted to; also with degraded copies),
  times ``margin`` (default 1.5); ``domain_score = distance / threshold``: at most 1 is in
  domain.

The statistics are a dict of tensors and numbers (``DomainStats.to_dict``), stored in a
checkpoint under ``"domain"`` or, for a checkpoint written before the check existed (the
shipped models), in a file beside it, ``NAME.domain.pt`` (``attend domain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import AttendError
from .recognise import PROBE_DIM

COMPONENTS = 64
QUANTILE = 0.999
MARGIN = 1.5


@dataclass
class DomainStats:
    mean: torch.Tensor  # (D,)
    basis: torch.Tensor  # (k, D) principal directions, orthonormal rows
    variances: torch.Tensor  # (k,) the variance along each
    residual: float  # the mean variance per dimension outside the basis
    threshold: float  # the in-domain limit of ``distance``
    source: str = ""  # what the statistics were fitted on, in words
    images: int = 0  # how many images they were fitted on
    held_out: int = 0  # how many held-out images set the threshold

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, D) pooled features -> (N,) root mean squared Mahalanobis distance per dimension."""
        z = pooled.double() - self.mean.double()  # (N, D); float64: the part outside the basis is a difference
        proj = z @ self.basis.double().T  # (N, k)
        outside = ((z * z).sum(1) - (proj * proj).sum(1)).clamp_min(0)  # (N,)
        d2 = (proj * proj / self.variances.double()).sum(1)
        if self.basis.shape[0] < self.dim:  # with every direction kept, nothing lies outside (only rounding)
            d2 = d2 + outside / self.residual
        return (d2 / self.dim).sqrt().float()

    def score(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) ``distance / threshold``: at most 1 is in domain."""
        return self.distance(pooled) / self.threshold

    def check(self, pooled: torch.Tensor) -> list[dict]:
        """(N, D) -> per image ``{"in_domain": bool, "domain_score": float}``."""
        return [{"in_domain": bool(s <= 1.0), "domain_score": round(float(s), 3)} for s in self.score(pooled)]

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.float(),
            "basis": self.basis.half(),
            "variances": self.variances.float(),
            "residual": float(self.residual),
            "threshold": float(self.threshold),
            "source": self.source,
            "images": int(self.images),
            "held_out": int(self.held_out),
        }

    @classmethod
    def from_dict(cls, d: object, where: str = "domain") -> DomainStats:
        """Checked: the right types, shapes that agree, finite positive variances."""
        if not isinstance(d, dict):
            raise AttendError(f"{where} is a {type(d).__name__} (expected a dict)")
        for name in ("mean", "basis", "variances"):
            if not isinstance(d.get(name), torch.Tensor) or not d[name].is_floating_point():
                raise AttendError(f"{where}.{name} is missing or not a floating-point tensor")
            if not torch.isfinite(d[name]).all():
                raise AttendError(f"{where}.{name} is not finite")
        mean, basis, variances = d["mean"], d["basis"], d["variances"]
        if mean.dim() != 1 or basis.dim() != 2 or basis.shape[1] != mean.shape[0] or variances.shape != basis.shape[:1]:
            raise AttendError(
                f"{where}: shapes disagree (mean {list(mean.shape)}, basis {list(basis.shape)}, "
                f"variances {list(variances.shape)})"
            )
        for name in ("residual", "threshold"):
            value = d.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise AttendError(f"{where}.{name} is {value!r} (expected a positive number)")
        if not (variances > 0).all():
            raise AttendError(f"{where}.variances holds a value that is not positive")
        return cls(
            mean,
            basis,
            variances,
            float(d["residual"]),
            float(d["threshold"]),
            str(d.get("source", "")),
            int(d.get("images", 0)),
            int(d.get("held_out", 0)),
        )


def pooled(features: torch.Tensor) -> torch.Tensor:
    """(N, P, D) grids -> (N, D): the mean over the grid, what the domain check compares."""
    return features.float().mean(1)


def fit_domain(
    train: torch.Tensor,
    held_out: torch.Tensor,
    source: str = "",
    components: int = COMPONENTS,
    quantile: float = QUANTILE,
    margin: float = MARGIN,
) -> DomainStats:
    """Fit on ``train`` (N, D) pooled features; set the threshold on ``held_out`` (M, D).

    The variances are floored at a small fraction of the largest so that a direction the
    training images never vary along does not make every other image infinitely far.
    """
    train = train.double()
    n, dim = train.shape
    if n < 2 or held_out.shape[0] < 1:
        raise AttendError(
            f"the domain check needs at least 2 training and 1 held-out image (got {n} and {len(held_out)})"
        )
    mean = train.mean(0)
    z = train - mean
    k = min(components, n - 1, dim)
    # The right singular vectors of the centred data are the covariance's eigenvectors.
    _, s, vh = torch.linalg.svd(z, full_matrices=False)
    eig = s * s / (n - 1)  # (min(n, D),) in decreasing order
    floor = float(eig[0]) * 1e-6
    variances = eig[:k].clamp_min(floor)
    residual = max(float(eig[k:].sum()) / max(dim - k, 1), floor)
    stats = DomainStats(mean.float(), vh[:k].float(), variances.float(), residual, 1.0, source, n, len(held_out))
    distances = stats.distance(held_out)
    stats.threshold = float(torch.quantile(distances.double(), quantile)) * margin
    return stats


def sidecar(checkpoint: str | Path) -> Path:
    """Where the domain statistics of a checkpoint that lacks them live: ``NAME.domain.pt`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".domain.pt")


def domain_for(path: str | Path, state: dict, dim: int = PROBE_DIM) -> DomainStats | None:
    """The statistics of the checkpoint at ``path`` (its ``state``): its own ``"domain"``, or the
    side file's; None when it has neither (the check is then reported as unknown: ``in_domain``
    null). ``dim``: the width of the features they must describe (the probe's 1280)."""
    if state.get("domain") is not None:
        where, d = f"{path}: domain", state["domain"]
    else:
        where = str(sidecar(path))
        if not sidecar(path).is_file():
            return None
        try:
            d = torch.load(where, map_location="cpu", weights_only=True)
        except Exception as e:
            raise AttendError(f"{where}: not a readable domain file ({type(e).__name__})") from None
    stats = DomainStats.from_dict(d, where)
    if stats.dim != dim:
        raise AttendError(f"{where}: statistics of {stats.dim}-channel features, the check compares {dim}")
    return stats


def caption_flags(tokens: list[str], max_length: int) -> list[str]:
    """What marks a caption as likely nonsense, whatever the image: ``"length_limit"`` (the
    decoder stopped at ``max_length`` words without ending the sentence) and
    ``"repeated_word"`` (a word twice in a row, as in "green green")."""
    flags = []
    if len(tokens) >= max_length:
        flags.append("length_limit")
    if any(a == b for a, b in zip(tokens, tokens[1:])):
        flags.append("repeated_word")
    return flags


FIT_IMAGES = 1000  # training images (each also degraded) the Gaussian is fitted on
HELD_OUT_IMAGES = 300  # held-out images (each also degraded) that set the threshold


def split_images(data_dir: str | Path, split: str) -> list[str]:
    """The image keys of ``split`` in a prepared folder (captions.json and vqa.json together), sorted."""
    from .prepared import CAPTIONS, VQA, read_prepared

    keys: set[str] = set()
    for name in (CAPTIONS, VQA):
        if (Path(data_dir) / name).is_file():
            keys.update(r["image"] for r in read_prepared(data_dir, name)["splits"].get(split, []))
    return sorted(keys)


def spread(items: list, limit: int) -> list:
    """At most ``limit`` of ``items``, evenly spaced (deterministic)."""
    if len(items) <= limit:
        return list(items)
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else items[:1]


def jpeg_copy(image, quality: int):
    """A PIL image as it reads back after saving it as JPEG at ``quality`` (RGB)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def degrade(image, rng):
    """One ordinary degradation of a PIL image, drawn from ``rng`` (a ``random.Random``): JPEG at
    quality 20-90, a Gaussian blur of radius 0.5-2.5, a downscale to 80-200 px, or Gaussian noise
    of sigma 5-25. What a camera, a re-encoding or another renderer does to a picture of the same kind."""
    import numpy as np
    from PIL import Image, ImageFilter

    kind = rng.randrange(4)
    if kind == 0:
        return jpeg_copy(image, rng.randint(20, 90))
    if kind == 1:
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
    if kind == 2:
        side = rng.randint(80, 200)
        return image.resize((side, side * image.height // max(image.width, 1) or 1), Image.Resampling.BILINEAR)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(5, 25), (image.height, image.width, 3))
    return Image.fromarray((np.asarray(image, dtype=np.float32) + noise).clip(0, 255).astype(np.uint8))


def probe_features(paths: list, seed: int = 0, batch: int = 32, log=None) -> torch.Tensor:
    """(2N, 1280) pooled probe features of N image files: each image, then a degraded copy of it.
    An unreadable image is skipped."""
    import random

    from .images import ImageError, load_image, to_tensor
    from .recognise import LABEL_ENCODER, probe_encoder

    encoder = probe_encoder()
    rng = random.Random(seed)
    rows, pending = [], []

    def flush():
        with torch.inference_mode():
            rows.append(pooled(encoder(torch.stack(pending))[0]))
        pending.clear()

    size = LABEL_ENCODER.image_size
    for n, path in enumerate(paths):
        try:
            image = load_image(path)
        except ImageError:
            continue
        for version in (image, degrade(image.convert("RGB"), rng)):
            pending.append(to_tensor(version, size, encoder.mean, encoder.std))
        if len(pending) >= batch:
            flush()
        if log and (n + 1) % 500 == 0:
            log(f"domain check: {n + 1}/{len(paths)} images encoded")
    if pending:
        flush()
    return torch.cat(rows) if rows else torch.empty(0, encoder.dim)


def fit_on_images(
    train: list, held_out: list, source: str, fit_images: int = FIT_IMAGES, held_images: int = HELD_OUT_IMAGES, log=None
) -> DomainStats:
    """The domain check fitted on image files: the Gaussian on up to ``fit_images`` of ``train``,
    the threshold on up to ``held_images`` of ``held_out`` (evenly spaced), each with a degraded copy."""
    stats = fit_domain(
        probe_features(spread(train, fit_images), seed=0, log=log),
        probe_features(spread(held_out, held_images), seed=1, log=log),
        source,
    )
    stats.images //= 2  # count images, not images and their copies
    stats.held_out //= 2
    return stats


def fit_from_data(
    data_dir: str | Path, train_split: str = "train", held_out_split: str = "val", log=None
) -> DomainStats:
    """The domain check of a model trained on a prepared folder's ``train_split``, its threshold set
    on ``held_out_split``."""
    from .prepared import image_paths

    paths = image_paths(data_dir)
    train = [paths[k] for k in split_images(data_dir, train_split) if k in paths]
    held = [paths[k] for k in split_images(data_dir, held_out_split) if k in paths]
    source = f"{Path(data_dir).name}: {train_split} images"
    return fit_on_images(train, held, source, log=log)


def domain_record(data_dir: str | Path, train_split: str, held_out_split: str, log=print) -> dict | None:
    """What training stores under a checkpoint's ``"domain"`` (``fit_from_data``); None, and a log
    line, when the folder has too few readable images to fit it."""
    try:
        stats = fit_from_data(data_dir, train_split, held_out_split, log=log)
    except AttendError as e:
        log(f"no domain check in this checkpoint: {e}")
        return None
    return stats.to_dict()


def save_domain(path: str | Path, stats: DomainStats) -> None:
    """Write ``stats`` to a file of its own (a checkpoint's side file), atomically."""
    import io

    from .prepared import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(stats.to_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


FLAG_TEXT = {
    "length_limit": "the caption ran to the length limit without ending",
    "repeated_word": "the caption repeats a word back to back",
}


def notices(result: dict, trained_on: str = "") -> list[str]:
    """The warnings to print right beside a caption or an answer (``result``: its JSON dict with
    ``in_domain``, ``domain_score``, optional ``flags`` and ``labels``); none for a trusted one."""
    lines = []
    if result.get("in_domain") is False:
        where = f" ({trained_on})" if trained_on else ""
        lines.append(
            f"warning: this image is unlike the model's training images{where} "
            f"(domain score {result['domain_score']:.2f}; in domain is at most 1), so this is likely wrong"
        )
    lines += [f"warning: {FLAG_TEXT[f]}" for f in result.get("flags") or []]
    if lines and result.get("labels"):
        seen = ", ".join(f"{name} {p:.0%}" for name, p in result["labels"][:3])
        lines.append(f"the encoder's ImageNet classifier sees: {seen}")
    return lines
