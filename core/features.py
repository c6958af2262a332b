"""The feature cache: run the frozen encoder once over every image, read the grids back by key.

Layout of DIR/features/TAG/ (TAG = EncoderConfig.tag, e.g. ``efficientnet-lite0-224``)::

    shard_00000.npy    float16 (n, P, D): the grids of the shard's readable images
    shard_00000.json   {"keys": [KEY, ...] (one per row), "skipped": [[KEY, reason], ...]}
    index.json         {"encoder": asdict(EncoderConfig), "grid": [h, w], "dim": D,
                        "shard_size": S, "shards": ["shard_00000", ...], "skipped": [...]}

Shard i holds the sorted keys [i*S, (i+1)*S). Each shard's two files are written
atomically (the .json last, so a .json means a complete shard); a rerun keeps finished
shards, so an interrupted run resumes. Under torchrun each rank encodes the shards
i % world_size == rank, and rank 0 writes the index once all shards exist.
Reading memory-maps the shards, so memory does not grow with the size of the data set.
"""

from __future__ import annotations

import io
import mmap
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .encoder import EncoderConfig, ImageEncoder
from .errors import AttendError
from .images import ImageError, load_tensor
from .prepared import atomic_write_bytes, atomic_write_json, image_paths, read_json


def cache_dir(data_dir: str | Path, config: EncoderConfig) -> Path:
    return Path(data_dir) / "features" / config.tag


class _Images(Dataset):
    """(key, tensor or None, error or None) per image: decoding runs in loader workers."""

    def __init__(self, items: list[tuple[str, Path]], config: EncoderConfig, mean, std):
        self.items, self.size, self.mean, self.std = items, config.image_size, mean, std

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        key, path = self.items[i]
        try:
            return key, load_tensor(path, self.size, self.mean, self.std, name=str(path)), None
        except ImageError as e:
            return key, None, str(e)


def _collate(batch):
    return batch


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def write_features(
    data_dir: str | Path,
    config: EncoderConfig | None = None,
    batch_size: int = 32,
    workers: int = 1,
    shard_size: int = 1024,
    compile: bool | None = None,
    device: str | torch.device | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    log=print,
) -> dict:
    """Encode every image of DIR/images.json into DIR/features/TAG/.

    Args:
        compile: use ``torch.compile`` (about 2x faster on the CPU after a ~25 s compile;
            ``None`` = only when there are enough images to pay for it).
        rank, world_size: this process's part under torchrun.
    Returns:
        A summary: encoded, skipped, seconds, images/s, the cache folder.
    """
    from tqdm import tqdm

    config = config or EncoderConfig()
    if config.trainable_blocks:
        raise AttendError("the feature cache is for a frozen encoder (trainable_blocks must be 0)")
    paths = image_paths(data_dir)
    if not paths:
        raise AttendError(f"{data_dir}: no images to encode")
    keys = sorted(paths)
    out = cache_dir(data_dir, config)
    out.mkdir(parents=True, exist_ok=True)
    shards = [keys[i : i + shard_size] for i in range(0, len(keys), shard_size)]
    names = [f"shard_{i:05d}" for i in range(len(shards))]
    todo = [i for i in range(len(shards)) if i % world_size == rank and not (out / f"{names[i]}.json").exists()]

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start, encoded, skipped = time.perf_counter(), 0, 0
    n_todo = sum(len(shards[i]) for i in todo)
    if todo:
        encoder = ImageEncoder(config).to(device)
        if compile is None:
            compile = device.type == "cpu" and n_todo >= 512
        run = EncoderRunner(encoder, batch_size, compile, log)
        bar = tqdm(total=n_todo, unit="img", disable=not progress, desc=f"encoding ({config.tag})")
        for i in todo:
            dataset = _Images([(k, paths[k]) for k in shards[i]], config, encoder.mean, encoder.std)
            loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
            rows, good, bad = [], [], []
            for batch in loader:
                ok = [(k, t) for k, t, err in batch if err is None]
                for k, _, err in batch:
                    if err is not None:
                        bad.append([k, err])
                        log(f"skipped: {err}")
                if ok:
                    x = torch.stack([t for _, t in ok]).to(device)  # (B, C, S, S)
                    rows.append(run(x).to("cpu", torch.float16).numpy())  # (B, P, D)
                    good.extend(k for k, _ in ok)
                bar.update(len(batch))
            array = np.concatenate(rows) if rows else np.zeros((0, *_grid_shape(encoder)), np.float16)
            _save_npy(out / f"{names[i]}.npy", array)
            atomic_write_json(out / f"{names[i]}.json", {"keys": good, "skipped": bad})
            encoded, skipped = encoded + len(good), skipped + len(bad)
        bar.close()

    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0:
        write_index(out, config, names, shard_size)
    seconds = time.perf_counter() - start
    return {
        "cache": str(out),
        "images": len(keys),
        "encoded": encoded,
        "skipped": skipped,
        "seconds": round(seconds, 1),
        "images_per_s": round(encoded / seconds, 1) if encoded else 0.0,
    }


def _grid_shape(encoder: ImageEncoder) -> tuple[int, int]:
    return encoder.grid[0] * encoder.grid[1], encoder.dim


class EncoderRunner:
    """The encoder's forward, optionally compiled for one fixed batch shape: short batches are
    padded so the graph is compiled once. If compiling fails (no C++ compiler, say), it
    falls back to eager mode, which gives the same features more slowly."""

    def __init__(self, encoder: ImageEncoder, batch_size: int, compile: bool, log):
        self.encoder, self.batch_size, self.log = encoder, batch_size, log
        self.compiled = torch.compile(self._eager, dynamic=False) if compile else None

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self._eager(x)
        n = x.shape[0]
        # Every batch, full or short, is copied into a fresh buffer made here, in inference
        # mode: a padded batch built in here and a full one built by the caller outside it
        # differ in their dispatch keys, and that difference alone makes dynamo recompile
        # (a second ~25 s compile; the feature cache test checks there is none).
        padded = x.new_zeros(max(n, self.batch_size), *x.shape[1:])  # (batch_size, C, S, S)
        padded[:n] = x
        x = padded
        try:
            return self.compiled(x)[:n]
        except Exception as e:
            self.log(f"torch.compile failed ({type(e).__name__}); encoding without it")
            self.compiled = None
            return self._eager(x)[:n]


def write_index(out: Path, config: EncoderConfig, names: list[str], shard_size: int) -> None:
    missing = [n for n in names if not (out / f"{n}.json").exists()]
    if missing:
        raise AttendError(f"{out}: {len(missing)} shard(s) not written yet ({missing[0]}, ...)")
    skipped = [s for n in names for s in read_json(out / f"{n}.json")["skipped"]]
    first = np.load(out / f"{names[0]}.npy", mmap_mode="r")
    h = w = config.image_size // 32
    atomic_write_json(
        out / "index.json",
        {
            "encoder": {**config.__dict__},
            "grid": [h, w],
            "dim": int(first.shape[-1]),
            "shard_size": shard_size,
            "shards": names,
            "skipped": skipped,
        },
    )


RELEASE_BYTES = 32 * 2**20  # FeatureCache hands its mapped pages back after this much reading


class FeatureCache:
    """Memory-mapped read access to a feature cache: ``cache[key] -> (P, D) float16``.

    Each read returns a private copy of the row; after every ``RELEASE_BYTES`` read, the
    mapped pages are dropped from this process (``release``), so a process that sweeps a
    cache of any size keeps only a few tens of MB of it resident.
    """

    def __init__(self, folder: str | Path, command: str = "attend features"):
        """``command``: the one that writes this cache, named in the error if it is missing."""
        self.folder = Path(folder)
        index_path = self.folder / "index.json"
        if not index_path.exists():
            raise AttendError(f"{self.folder}: no feature cache here (run `{command}` first)")
        index = read_json(index_path, "feature index")
        self.encoder = EncoderConfig(**index["encoder"])
        self.grid = tuple(index["grid"])
        self.dim = index["dim"]
        self.skipped = dict((k, r) for k, r in index["skipped"])
        self._shards: dict[int, tuple[mmap.mmap, np.ndarray]] = {}
        self._unreleased = 0  # bytes read since the mapped pages were last handed back
        self._where: dict[str, tuple[int, int]] = {}
        self._names = index["shards"]
        for s, name in enumerate(self._names):
            for row, key in enumerate(read_json(self.folder / f"{name}.json")["keys"]):
                self._where[key] = (s, row)

    @classmethod
    def for_data(cls, data_dir: str | Path, config: EncoderConfig | None = None) -> FeatureCache:
        """The cache of ``data_dir`` for this encoder setting; if there is none, the error names
        the `attend features` command that writes it."""
        config, default = config or EncoderConfig(), EncoderConfig()
        flags = "".join(
            [
                f" --encoder {config.backbone}" if config.backbone != default.backbone else "",
                f" --image-size {config.image_size}" if config.image_size != default.image_size else "",
                " --encoder-weights FILE" if config.weights else "",
                " --mid-level" if config.mid_level else "",
            ]
        )
        return cls(cache_dir(data_dir, config), command=f"attend features --data {data_dir}{flags}")

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> list[str]:
        return list(self._where)

    def _shard(self, s: int) -> tuple[mmap.mmap, np.ndarray]:
        """Map shard s: (the mmap, the (n, P, D) array over it)."""
        if s not in self._shards:
            path = self.folder / f"{self._names[s]}.npy"
            try:
                with open(path, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, fortran, dtype = read_header(f)
                    offset = f.tell()
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise AttendError(f"{path}: unreadable feature shard ({e})") from None
            if fortran or len(shape) != 3:
                raise AttendError(f"{path}: not a (n, P, D) feature shard")
            array = np.frombuffer(mapped, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
            self._shards[s] = (mapped, array)
        return self._shards[s]

    def __getitem__(self, key: str) -> np.ndarray:
        """The (P, D) float16 grid of ``key``, a private writable copy."""
        try:
            s, row = self._where[key]
        except KeyError:
            reason = self.skipped.get(key)
            raise AttendError(
                f"{key}: not in the feature cache" + (f" (skipped: {reason})" if reason else "")
            ) from None
        grid = self._shard(s)[1][row].copy()
        self._unreleased += grid.nbytes
        if self._unreleased >= RELEASE_BYTES:
            self.release()
        return grid

    def release(self) -> None:
        """Drop every mapped page from this process (``madvise(MADV_DONTNEED)``; the data stays
        in the OS page cache, so a later read costs only a minor fault). Whole mappings are
        released, not single rows: a fault maps the page cache's folio around it, often
        hundreds of KB of neighbouring rows, which a per-row release would leave behind."""
        for mapped, _ in self._shards.values():
            if hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_DONTNEED)
        self._unreleased = 0
