"""Shared fixtures: one tiny scenes data set with its feature cache, the packaged encoder and
a tiny trained captioner, each built ONCE per test session (the suite stays fast).

Tests must treat these as read-only; a test that changes a data folder copies it first
(``scenes_copy``).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch

# 6 / 2 / 2 scenes: enough for every code path (several shards, batches, splits), small
# enough that encoding them eagerly takes a few seconds on 2 cores.
SCENE_COUNTS = {"train": 6, "val": 2, "test": 2}
TINY_MODEL = {"hidden_dim": 32, "embed_dim": 16, "attention_dim": 16, "dropout": 0.0}


def pytest_configure(config):
    # Tiny, barely trained models make nltk's corpus_bleu warn that an n-gram order has no
    # match (the score is then 0, which is right); the warning says nothing about the code.
    config.addinivalue_line("filterwarnings", "ignore:\\nThe hypothesis contains 0 counts:UserWarning")


def _quiet(_message: str) -> None:
    pass


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` intra-op threads. The tiny models' ops take microseconds, and
    two OpenMP threads synchronising on every one of them cost far more than they save:
    measured here on a loaded 2-core machine, 4 epochs of the tiny captioner took 79 s with
    2 threads and 13 s with 1 (backward alone 37 s vs 1.3 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """For tests that train or decode tiny models (see ``torch_threads``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def scenes_prepared(tmp_path_factory) -> Path:
    """A prepared scenes folder (images, raw COCO/VQA files, captions.json, vqa.json), no features."""
    from data_prep.scenes import generate_scenes

    out = tmp_path_factory.mktemp("scenes") / "data"
    generate_scenes(out, seed=0, counts=SCENE_COUNTS, workers=1)
    return out


@pytest.fixture(scope="session")
def scenes_dir(scenes_prepared, tmp_path_factory) -> Path:
    """The prepared scenes plus the EfficientNet-Lite0 224 px feature cache (eager, no compile)."""
    from core.features import write_features

    out = tmp_path_factory.mktemp("scenes_features") / "data"
    shutil.copytree(scenes_prepared, out)
    write_features(out, compile=False, workers=0, progress=False, log=_quiet)
    return out


@pytest.fixture
def scenes_copy(scenes_prepared, tmp_path) -> Path:
    """A private, writable copy of the prepared scenes without a feature cache.

    images.json stores paths relative to the folder, so a copy is self-contained.
    """
    out = tmp_path / "data"
    shutil.copytree(scenes_prepared, out, ignore=shutil.ignore_patterns("features"))
    return out


@pytest.fixture(scope="session")
def encoder():
    """The default encoder: EfficientNet-Lite0 with the packaged ImageNet weights, 224 px, frozen."""
    from core.encoder import ImageEncoder

    return ImageEncoder()


@pytest.fixture(scope="session")
def tiny_captioner(scenes_dir, tmp_path_factory) -> Path:
    """The checkpoint (last.pt) of a tiny captioner trained a few epochs on ``scenes_dir``.

    Not a good model: the tests that use it check plumbing (shapes, order, errors), not
    quality. last.pt rather than best.pt: validation BLEU-4 of so small a model stays 0, so
    best.pt would be the first epoch's model, which may decode <end> straight away.
    """
    from captioner.train import train_captioner
    from core.training import TrainConfig

    run = tmp_path_factory.mktemp("tiny_captioner") / "run"
    # 4 epochs of 7 steps: enough that greedy decoding starts with "a ..." rather than <end>
    # (checked with seeds 0-2), so the caption tests have words and maps to look at.
    train = TrainConfig(out_dir=str(run), epochs=4, batch_size=4, lr=1e-2, warmup_steps=1)
    with torch_threads(1):
        train_captioner(scenes_dir, run, dict(TINY_MODEL), train, device="cpu", log=_quiet)
    return run / "last.pt"
