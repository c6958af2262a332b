"""Speed and memory measurements behind `attend bench ...` (JSON out, no timed tests).

Each function returns a plain dict; the CLI prints it as JSON.
"""
from __future__ import annotations

import resource
import time

import torch

from .encoder import EncoderConfig, ImageEncoder


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_encoder(sizes=(224, 448), batches=(1, 32), compile: bool = True, repeats: int = 3,
                  device: str = "cpu") -> dict:
    """Encoder ms per image at each input size and batch size, on random input.

    With ``compile`` the encoder runs as `attend features` runs it (torch.compile, fixed
    batch shape); compile time is reported separately and not counted.
    """
    from .features import _Runner

    results = []
    for size in sizes:
        encoder = ImageEncoder(EncoderConfig(image_size=size)).to(device)
        for batch in batches:
            run = _Runner(encoder, batch, compile, log=lambda m: None)
            x = torch.randn(batch, 3, size, size, device=device)
            start = time.perf_counter()
            run(x)
            first = time.perf_counter() - start
            seconds = timed(lambda: run(x), repeats=repeats if batch > 1 else 10 * repeats, warmup=1)
            results.append({"image_size": size, "grid": list(encoder.grid), "batch": batch,
                            "ms_per_image": round(1000 * seconds / batch, 2),
                            "first_call_s": round(first, 1)})
    return {"bench": "encoder", "backbone": "efficientnet-lite0", "compile": compile,
            "device": device, "threads": torch.get_num_threads(), "results": results,
            "peak_rss_mb": peak_rss_mb()}
