"""Speed and memory of the VQA model behind `attend bench vqa` (JSON out, no timed tests).

Measured twice: the model at the default config with random weights (the vocabulary and
answer sizes of VQA v2: ~10k words, 3,000 answers) and a shipped model. For each: one
question on an image already encoded, one question including the image's encoding, and
answers per second over a batch of questions (pre-encoded, and with their images encoded).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from core.bench import peak_rss_mb, timed
from core.encoder import ImageEncoder
from core.vocab import SPECIALS, Vocab, tokenize

from .inference import Answerer
from .model import VQAConfig, VQANet

RANDOM_VOCAB, RANDOM_ANSWERS = 10_000, 3_000
QUESTION = "is the red circle left of the blue square?"


def _images(n: int, size: int = 224) -> list[bytes]:
    """n distinct PNG files in memory (random pixels; the content does not change the cost)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _measure(answerer: Answerer, batch: int, repeats: int) -> dict:
    tokens = tokenize(QUESTION)  # unknown words become <unk>: the cost is the same
    images = _images(batch)
    one = answerer.encode(images[:1])  # (1, P, D)
    many = answerer.encode(images)  # (N, P, D)
    encoded_1 = timed(lambda: answerer.answer_features(one, [tokens]), repeats=10 * repeats)
    full_1 = timed(lambda: answerer.answer_features(answerer.encode(images[:1]), [tokens]), repeats=repeats)
    encoded_n = timed(lambda: answerer.answer_features(many, [tokens] * batch), repeats=repeats)
    full_n = timed(
        lambda: answerer.answer_features(answerer.encode(images), [tokens] * batch), repeats=max(1, repeats // 2)
    )
    return {
        "latency_ms_encoded": round(1000 * encoded_1, 2),
        "latency_ms_with_encoding": round(1000 * full_1, 2),
        "batch": batch,
        "answers_per_s_encoded": round(batch / encoded_n, 1),
        "answers_per_s_with_encoding": round(batch / full_n, 1),
        "parameters": sum(p.numel() for p in answerer.net.parameters()),
        "grid": answerer.grid,
    }


def bench_vqa(checkpoint: str | None = "scenes", batch: int = 64, repeats: int = 5) -> dict:
    """Both measurements as one JSON-ready dict; ``checkpoint=None`` skips the shipped model."""
    torch.manual_seed(0)
    encoder = ImageEncoder()
    net = VQANet(VQAConfig(question_vocab_size=RANDOM_VOCAB, num_answers=RANDOM_ANSWERS)).eval()
    words = list(dict.fromkeys(tokenize(QUESTION)))
    vocab = Vocab([*SPECIALS, *words, *(f"w{i}" for i in range(RANDOM_VOCAB - len(SPECIALS) - len(words)))])
    random = Answerer(net, vocab, [f"a{i}" for i in range(RANDOM_ANSWERS)], encoder, {}, torch.device("cpu"))
    results = {
        "bench": "vqa",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "question": QUESTION,
        "random_default": {
            "config": f"VQAConfig defaults, {RANDOM_VOCAB} words, {RANDOM_ANSWERS} answers",
            **_measure(random, batch, repeats),
        },
    }
    if checkpoint:
        shipped = Answerer.load(checkpoint)
        results["shipped"] = {"checkpoint": str(checkpoint), **_measure(shipped, batch, repeats)}
    results["peak_rss_mb"] = peak_rss_mb()
    return results
