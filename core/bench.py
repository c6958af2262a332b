"""What every `attend bench` measurement shares: timing, peak memory, the encoder's speed, and
a random feature cache in the layout `attend features` writes.

Each bench function returns a plain dict; the CLI prints it as JSON.
"""

from __future__ import annotations

import resource
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .encoder import EncoderConfig, ImageEncoder
from .features import EncoderRunner, write_index
from .prepared import atomic_write_json


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


def bench_encoder(
    sizes=(224, 448), batches=(1, 32), compile: bool = True, repeats: int = 3, device: str = "cpu"
) -> dict:
    """Encoder ms per image at each input size and batch size, on random input.

    With ``compile`` the encoder runs as `attend features` runs it (torch.compile, fixed
    batch shape); compile time is reported separately and not counted.
    """
    results = []
    for size in sizes:
        encoder = ImageEncoder(EncoderConfig(image_size=size)).to(device)
        for batch in batches:
            run = EncoderRunner(encoder, batch, compile, log=lambda m: None)
            x = torch.randn(batch, 3, size, size, device=device)
            start = time.perf_counter()
            run(x)
            first = time.perf_counter() - start
            seconds = timed(partial(run, x), repeats=repeats if batch > 1 else 10 * repeats, warmup=1)
            results.append(
                {
                    "image_size": size,
                    "grid": list(encoder.grid),
                    "batch": batch,
                    "ms_per_image": round(1000 * seconds / batch, 2),
                    "first_call_s": round(first, 1),
                }
            )
    return {
        "bench": "encoder",
        "backbone": "efficientnet-lite0",
        "compile": compile,
        "device": device,
        "threads": torch.get_num_threads(),
        "results": results,
        "peak_rss_mb": peak_rss_mb(),
    }


def write_random_cache(folder, images: int, grid: list[int], dim: int, shard_size: int = 1024) -> Path:
    """A feature cache of ``images`` random float16 grids in the layout `attend features` writes
    (shards of ``shard_size`` rows, their key lists, index.json), filled slice by slice so that
    writing needs no large buffer. Returns the cache folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    p = grid[0] * grid[1]
    block = np.random.default_rng(0).standard_normal((64, p, dim), dtype=np.float32).astype(np.float16)
    names = []
    for s, first in enumerate(range(0, images, shard_size)):
        n = min(shard_size, images - first)
        name = f"shard_{s:05d}"
        array = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float16, shape=(n, p, dim))
        for i in range(0, n, len(block)):
            rows = min(len(block), n - i)
            array[i : i + rows] = block[:rows] + np.float16(first + i)  # every grid on disk, none alike
        array.flush()
        del array
        atomic_write_json(folder / f"{name}.json", {"keys": [f"{first + i:08d}" for i in range(n)], "skipped": []})
        names.append(name)
    side = 32 * grid[0]  # index.json records the grid as image_size // 32
    write_index(folder, EncoderConfig(backbone="resnet101", image_size=side), names, shard_size)
    return folder
