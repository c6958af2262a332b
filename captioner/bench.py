"""The captioner's `attend bench decode` and `attend bench train`: speed and memory as JSON,
with random weights at the COCO size or the shipped model's."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from core.bench import peak_rss_mb, timed, write_random_cache
from core.errors import AttendError
from core.features import FeatureCache
from core.training import make_optimizer
from core.vocab import SPECIALS, Vocab

from .data import images_per_batch
from .decode import beam_search
from .fast import FastDecoder, TrainingDecoder
from .model import AttentionDecoder, CaptionerConfig, caption_loss
from .scst import CiderD, ScstLoss

# The common COCO configuration (ResNet-101 at 448 px, 512/512/512, Karpathy vocabulary).
COCO_SHAPE = {
    "grid": [14, 14],
    "encoder_dim": 2048,
    "embed_dim": 512,
    "attention_dim": 512,
    "hidden_dim": 512,
    "vocab_size": 9490,
}


def _decoder(shape: dict, device: str, cls: type[AttentionDecoder] = AttentionDecoder):
    torch.manual_seed(0)
    config = CaptionerConfig(**shape)
    return cls(config).to(device).eval(), config


def bench_decode(
    shape: dict,
    steps=(12, 51),
    beams=(3, 5),
    batches=(1, 32),
    device: str = "cpu",
    repeats: int = 3,
    weights=("float32", "int8"),
) -> dict:
    """Beam-search ms per image per step, with random weights and random grids, for each kind
    of decoder ``weights``: "float32" and "int8" (CPU only; skipped on CUDA) through
    ``fast.FastDecoder``, "plain" through the reference ``model.AttentionDecoder``.

    The search is forced to run exactly ``steps`` steps: the output bias of <end> is pushed
    down so the random model never ends early, and max_len cuts the search there, which is
    the worst case for a caption of that length.
    """
    decoder, config = _decoder(shape, device)
    with torch.no_grad():
        decoder.fc.bias[Vocab.end_id] = -1e4
    decoders = {"float32": FastDecoder(decoder), "plain": decoder}
    if "int8" in weights and torch.device(device).type == "cpu":
        decoders["int8"] = FastDecoder(decoder, int8=True)
    p = config.grid[0] * config.grid[1]
    rows = []
    for kind in weights:
        if kind not in decoders:
            continue
        for n_steps in steps:
            for beam in beams:
                for batch in batches:
                    features = torch.randn(batch, p, config.encoder_dim, device=device)
                    seconds = timed(
                        partial(beam_search, decoders[kind], features, beam, max_len=n_steps), repeats=repeats, warmup=1
                    )
                    rows.append(
                        {
                            "weights": kind,
                            "steps": n_steps,
                            "beam": beam,
                            "batch": batch,
                            "ms_per_image_per_step": round(1000 * seconds / batch / n_steps, 3),
                            "ms_per_image": round(1000 * seconds / batch, 1),
                        }
                    )
    return {
        "bench": "decode",
        "shape": shape,
        "device": device,
        "threads": torch.get_num_threads(),
        "results": rows,
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_train(
    shape: dict,
    batch: int = 32,
    caption_len: int = 16,
    steps: int = 5,
    cache_images: int = 0,
    device: str = "cpu",
    folder: str | None = None,
    captions_per_image: int = 0,
    fast: bool = True,
    scst: bool = False,
) -> dict:
    """Training captions per second from cached features (forward, loss, backward, Adam), with
    the fast teacher forcing (``fast.TrainingDecoder``) or, ``fast=False``, the plain model.

    ``scst``: a self-critical step instead (``scst.ScstLoss``, mean baseline): K =
    ``captions_per_image`` (5 if 0) captions of exactly ``caption_len`` words sampled per
    grid, each rewarded by CIDEr-D against 5 random references, then the teacher-forced
    pass over the samples, backward and Adam; a caption is one sampled caption.

    Batches are made as `attend train captioner` makes them: ``batch`` counts captions, and
    with ``captions_per_image`` K > 0 a batch holds ``batch // K`` grids with K captions each
    (30 captions for 32 and 5); with 0, ``batch`` grids with one caption each.

    With no cache the step reads one batch of random grids held in memory. With
    ``cache_images`` > 0 a float16 feature cache of that many random grids is written to
    ``folder`` (reused if one of that size and shape is there; a temporary folder is removed
    after) and read through ``FeatureCache``, as `attend train` reads it; after the timed
    steps one more pass reads every grid of the cache, as an epoch does, so the peak memory
    shows whether it grows with the data set.
    """
    decoder, config = _decoder(shape, device, TrainingDecoder if fast else AttentionDecoder)
    decoder.train()
    optimizer = make_optimizer(decoder.parameters(), lr=1e-4)  # as `attend train` makes it
    p = config.grid[0] * config.grid[1]
    if scst:
        captions_per_image = captions_per_image or 5
    images, k = images_per_batch(batch, captions_per_image), max(1, captions_per_image)  # grids, captions each
    generator = torch.Generator().manual_seed(0)
    if scst:  # random references; samples run exactly caption_len words (<end> pushed down)
        with torch.no_grad():
            decoder.fc.bias[Vocab.end_id] = -1e4
        decoder.config.max_len = caption_len
        vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(config.vocab_size - len(SPECIALS)))])
        words = torch.randint(4, config.vocab_size, (images, 5, caption_len), generator=generator)
        corpus = [[vocab.decode(ref) for ref in refs.tolist()] for refs in words]
        scst_loss = ScstLoss(CiderD(corpus), vocab, samples=k, baseline="mean")
    cache = keys = None
    temporary = cache_images and folder is None
    if cache_images:
        folder = Path(folder or tempfile.mkdtemp(prefix="attend-bench-"))
        try:
            cache = FeatureCache(folder)
        except AttendError:
            cache = None
        if cache is None or (len(cache), cache.dim, cache.grid) != (
            cache_images,
            config.encoder_dim,
            tuple(config.grid),
        ):
            cache = FeatureCache(write_random_cache(folder, cache_images, config.grid, config.encoder_dim))
        keys = cache.keys()

    in_memory = (
        None if cache is not None else torch.randn(images, p, config.encoder_dim, generator=generator).to(device)
    )

    def one_step():
        if cache is not None:
            index = torch.randint(len(keys), (images,), generator=generator).tolist()
            features = torch.from_numpy(np.stack([cache[keys[i]] for i in index])).to(device).float()
        else:  # grids already in memory: drawing 12.8M random numbers is not training's work
            features = in_memory
        if scst:
            loss, _ = scst_loss(decoder, (features, torch.arange(images)), device)
        else:
            captions = torch.randint(4, config.vocab_size, (images * k, caption_len + 2), generator=generator)
            captions[:, 0] = 1
            captions = captions.to(device)
            logits, alphas = decoder(features, captions)
            loss, _ = caption_loss(logits, alphas, captions[:, 1:], config.alpha_c)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = timed(one_step, repeats=steps, warmup=1)
    swept = 0
    if cache is not None:  # read the whole cache once, as an epoch does
        for i in range(0, len(keys), batch):
            swept += len(np.stack([cache[k] for k in keys[i : i + batch]]))
        if temporary:
            shutil.rmtree(folder)
    return {
        "bench": "train",
        "shape": shape,
        "device": device,
        "path": "fast" if fast else "plain",
        "loss": "scst" if scst else "cross-entropy",
        "batch": images * k,
        "images_per_batch": images,
        "captions_per_image": captions_per_image,
        "caption_words": caption_len,
        "captions_per_s": round(images * k / seconds, 1),
        "ms_per_step": round(1000 * seconds, 1),
        "cache_images": cache_images,
        "cache_images_read": swept,
        "peak_rss_mb": peak_rss_mb(),
    }
