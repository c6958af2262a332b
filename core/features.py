"""The feature cache: run the frozen encoder once over every image, read the grids back by key.

Layout of DIR/features/TAG/ (TAG = EncoderConfig.tag, e.g. ``efficientnet-lite0-224``)::

    shard_00000.npy    float16 (n, P, D): the grids of the shard's readable images
    shard_00000.json   {"keys": [KEY, ...] (one per row), "skipped": [[KEY, reason], ...],
                        "shape": [n, P, D], "dtype": "float16", "bytes": size of the .npy,
                        "crc32": zlib.crc32 of the whole .npy file}
    index.json         {"encoder": asdict(EncoderConfig), "grid": [h, w], "dim": D,
                        "shard_size": S, "shards": ["shard_00000", ...], "skipped": [...],
                        "images": rows in all, "checksum": "crc32"}

Which images a shard holds. A shard is a unit of work, not a range of the sort order:
each shard's .json lists its keys, and a key is read from the shard that lists it.
``write_features`` (`attend features`) first checks every existing shard, then encodes
the images the data lists (DIR/images.json) that no intact shard covers, sorted, in new
shards of up to S keys, named with the lowest free numbers. So:

* a fresh cache is shards 0, 1, ... of the sorted keys [i*S, (i+1)*S);
* a grown data set keeps every intact shard and encodes only the new images, in shards of
  their own, wherever they fall in the sort order (rebuilding by position would re-encode
  every shard after the first new key);
* a damaged shard (.npy missing, of the wrong size or shape, or whose checksum differs:
  truncated, overwritten) is deleted and its images encoded again; one without its .json
  (an interrupted write: the .json is written last, each file atomically) counts as absent,
  so an interrupted run resumes where it stopped;
* an image recorded as skipped (unreadable when it was encoded: a corrupt or deleted file)
  counts as covered, so it is not retried; delete its shard's .json to retry it;
* keys the data no longer lists stay in their shards, unread.

The checksum is zlib.crc32 of the whole .npy file. Measured on the 2-core development
machine for a 1,000-image 224 px shard (125 MB): 37 ms over the bytes in memory, 50-55 ms
reading the file back from the page cache, against about 20 s to encode those images there
(``attend bench encoder``: ~20 ms per image) and 120 ms just to serialise the array; blake2b
took 164 ms, sha256 82 ms. ``write_features`` checks every shard's checksum (a full read of
the cache per run); ``FeatureCache.require`` checks those of the shards a split reads (once
per process, before training or evaluation starts), and a shard is checked the first time it
is read from if ``require`` did not; size and shape are checked when a cache is opened (no
data read), so a truncated shard is one line naming it and the command that repairs it.

Caches written before the checksum existed (shard .json without "crc32") stay readable:
``FeatureCache`` checks their size and shape but cannot check their bytes. ``write_features``
checks that every value of such a shard is finite (overwritten float16 bytes are NaN or
infinite about once in 32 values, so a damaged shard does not pass) and then records its
checksum from then on; a shard that fails is encoded again.

Under torchrun rank 0 checks the shards and plans the work, every rank encodes the new
shards j % world_size == rank of the plan, and rank 0 writes the index once all exist.
Reading memory-maps the shards, so memory does not grow with the size of the data set.
"""

from __future__ import annotations

import io
import itertools
import json
import mmap
import re
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .encoder import EncoderConfig, ImageEncoder, check_encoder_config, feature_dim, feature_grid
from .errors import AttendError
from .images import ImageError, load_tensor
from .prepared import atomic_write_bytes, atomic_write_json, image_paths, read_json

SHARD_NAME = re.compile(r"shard_(\d{5,})")
CHUNK = 8 * 2**20  # bytes read at a time when checksumming


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


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ---------------------------------------------------------------- checking shards


def file_crc32(path: str | Path) -> int:
    """zlib.crc32 of a file, read in chunks (nothing of it stays mapped in this process)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran order, data offset) of a .npy file; OSError/ValueError if unreadable."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return shape, dtype, fortran, f.tell()


def _record(path: Path) -> dict:
    """A shard's .json, its structure checked; ValueError says what is wrong."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable .json ({type(e).__name__})") from None
    if not isinstance(record, dict):
        raise ValueError(".json is not a shard record")
    keys, skipped = record.get("keys"), record.get("skipped", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(".json has no list of keys")
    if not isinstance(skipped, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s) for s in skipped
    ):
        raise ValueError(".json has a malformed list of skipped images")
    return record


def shard_layout(npy: Path, record: dict, cell_shape: tuple[int, int]) -> tuple[tuple[int, int, int], int]:
    """Check a shard's .npy against its record without reading its data: float16, C order,
    (len(keys), P, D), and exactly the size its header promises (a truncated or padded file
    fails). Returns (shape, data offset); ValueError says what is wrong."""
    try:
        shape, dtype, fortran, offset = read_npy_header(npy)
        size = npy.stat().st_size
    except FileNotFoundError:
        raise ValueError("its .npy is missing") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable .npy header ({e})") from None
    expected = (len(record["keys"]), *cell_shape)
    if dtype != np.float16 or fortran or len(shape) != 3:
        raise ValueError(f"not a float16 (n, P, D) array ({dtype}, shape {list(shape)})")
    if tuple(shape) != expected:
        raise ValueError(f"shape {list(shape)}, expected {list(expected)} ({len(record['keys'])} keys)")
    if "shape" in record and list(record["shape"]) != list(shape):
        raise ValueError(f"shape {list(shape)}, its .json recorded {record['shape']}")
    want = offset + int(np.prod(shape)) * 2
    if size != want or ("bytes" in record and record["bytes"] != size):
        raise ValueError(f"{size} bytes, its header needs {want} (truncated or overwritten)")
    return tuple(shape), offset


def _all_finite(npy: Path, shape: tuple[int, ...], offset: int) -> bool:
    array = np.memmap(npy, dtype=np.float16, mode="r", offset=offset, shape=shape)
    try:
        return all(np.isfinite(array[i : i + 64]).all() for i in range(0, shape[0], 64))
    finally:
        del array


def _inspect(folder: Path, name: str, cell_shape: tuple[int, int]) -> tuple[dict | None, str]:
    """Fully check one shard for ``write_features``: (its record, "") when intact, (None, why) when
    not. A shard without a checksum (an older attend's) is checked for finite values instead,
    and its checksum is recorded ("checksum added")."""
    npy = folder / f"{name}.npy"
    try:
        record = _record(folder / f"{name}.json")
        shape, offset = shard_layout(npy, record, cell_shape)
    except ValueError as e:
        return None, str(e)
    if "crc32" in record:
        if file_crc32(npy) != record["crc32"]:
            return None, "its bytes changed since they were written (checksum mismatch)"
        return record, ""
    if not _all_finite(npy, shape, offset):
        return None, "holds values that are not finite (written by an older attend, without a checksum)"
    record.update(shape=list(shape), dtype="float16", bytes=npy.stat().st_size, crc32=file_crc32(npy))
    atomic_write_json(folder / f"{name}.json", record)
    return record, "checksum added"


# ---------------------------------------------------------------- writing


def _plan(out: Path, keys: list[str], shard_size: int, cell_shape: tuple[int, int], log) -> dict:
    """Check the shards in ``out`` and decide what to encode: {"kept": [names], "new": [[name,
    keys]], counts}. Deletes the damaged shards that no new shard replaces by name."""
    kept: dict[int, dict] = {}
    damaged, upgraded = [], 0
    for path in sorted(out.glob("shard_*.json")):
        match = SHARD_NAME.fullmatch(path.stem)
        if not match:
            continue
        record, note = _inspect(out, path.stem, cell_shape)
        if record is None:
            log(f"{out / path.stem}: damaged ({note}); encoding its images again")
            damaged.append(int(match.group(1)))
        else:
            kept[int(match.group(1))] = record
            upgraded += note == "checksum added"
    if upgraded:
        log(f"{out}: recorded the checksum of {upgraded} shard(s) written by an older attend")
    covered = set()
    for record in kept.values():
        covered.update(record["keys"])
        covered.update(k for k, _ in record.get("skipped", []))
    todo = [k for k in keys if k not in covered]
    chunks = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    free = (i for i in itertools.count() if i not in kept)
    new = [[f"shard_{next(free):05d}", chunk] for chunk in chunks]
    reused = {name for name, _ in new}
    for i in damaged:
        name = f"shard_{i:05d}"
        (out / f"{name}.json").unlink(missing_ok=True)  # the .json first: the shard is incomplete from here
        if name not in reused:
            (out / f"{name}.npy").unlink(missing_ok=True)
    return {"kept": [f"shard_{i:05d}" for i in sorted(kept)], "new": new, "damaged": len(damaged), "upgraded": upgraded}


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
    """Encode every image of DIR/images.json that the cache in DIR/features/TAG/ lacks, after
    checking (and repairing) the shards already there; see the module docstring.

    Args:
        compile: use ``torch.compile`` (about 2x faster on the CPU after a ~25 s compile;
            ``None`` = only when there are enough images to pay for it).
        rank, world_size: this process's part under torchrun.
    Returns:
        A summary: images, encoded, skipped, the shards kept/written/damaged/given a
        checksum, seconds, images/s, the cache folder.
    """
    from tqdm import tqdm

    config = config or EncoderConfig()
    if config.trainable_blocks:
        raise AttendError("the feature cache is for a frozen encoder (trainable_blocks must be 0)")
    config = check_encoder_config(config)
    if shard_size < 1:
        raise AttendError(f"shard size must be at least 1, got {shard_size}")
    paths = image_paths(data_dir)
    if not paths:
        raise AttendError(f"{data_dir}: no images to encode")
    keys = sorted(paths)
    out = cache_dir(data_dir, config)
    h, w = feature_grid(config)
    cell_shape = (h * w, feature_dim(config))
    start = time.perf_counter()
    distributed = world_size > 1
    if distributed and not torch.distributed.is_initialized():  # rank 0 plans for all: they must talk
        raise AttendError("encoding with several processes needs torchrun (torch.distributed is not initialised)")
    plan = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        plan = _plan(out, keys, shard_size, cell_shape, log)
    if distributed:  # the others wait here until rank 0 has checked the shards, then share its plan
        shared = [plan]
        torch.distributed.broadcast_object_list(shared, src=0)
        plan = shared[0]
    mine = [(name, chunk) for j, (name, chunk) in enumerate(plan["new"]) if j % world_size == rank]

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoded, skipped = 0, 0
    n_todo = sum(len(chunk) for _, chunk in mine)
    if mine:
        encoder = ImageEncoder(config).to(device)
        if compile is None:
            compile = device.type == "cpu" and n_todo >= 512
        run = EncoderRunner(encoder, batch_size, compile, log)
        bar = tqdm(total=n_todo, unit="img", disable=not progress, desc=f"encoding ({config.tag})")
        for name, chunk in mine:
            dataset = _Images([(k, paths[k]) for k in chunk], config, encoder.mean, encoder.std)
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
            array = np.concatenate(rows) if rows else np.zeros((0, *cell_shape), np.float16)
            if array.shape[1:] != cell_shape:  # the encoder and feature_dim/feature_grid disagree: a bug
                raise AttendError(
                    f"{config.tag}: the encoder gave {list(array.shape[1:])}, expected {list(cell_shape)}"
                )
            data = _npy_bytes(array)
            atomic_write_bytes(out / f"{name}.npy", data)
            record = {"keys": good, "skipped": bad, "shape": list(array.shape), "dtype": "float16"}
            atomic_write_json(out / f"{name}.json", {**record, "bytes": len(data), "crc32": zlib.crc32(data)})
            encoded, skipped = encoded + len(good), skipped + len(bad)
        bar.close()

    if distributed:
        torch.distributed.barrier()
    if rank == 0:
        write_index(out, config, sorted(plan["kept"] + [name for name, _ in plan["new"]]), shard_size)
    seconds = time.perf_counter() - start
    return {
        "cache": str(out),
        "images": len(keys),
        "encoded": encoded,
        "skipped": skipped,
        "shards": {
            "kept": len(plan["kept"]),
            "written": len(plan["new"]),
            "damaged": plan["damaged"],
            "checksums_added": plan["upgraded"],
        },
        "seconds": round(seconds, 1),
        "images_per_s": round(encoded / seconds, 1) if encoded else 0.0,
    }


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
    """index.json over the shards ``names`` (each must have its .json)."""
    missing = [n for n in names if not (out / f"{n}.json").exists()]
    if missing:
        raise AttendError(f"{out}: {len(missing)} shard(s) not written yet ({missing[0]}, ...)")
    records = [read_json(out / f"{n}.json", "feature shard record") for n in names]
    present = {k for r in records for k in r["keys"]}
    skipped = {k: reason for r in records for k, reason in r.get("skipped", []) if k not in present}
    dims = [read_npy_header(out / f"{n}.npy")[0][-1] for n in names[:1]]
    h, w = feature_grid(config)
    atomic_write_json(
        out / "index.json",
        {
            "encoder": {**config.__dict__},
            "grid": [h, w],
            "dim": int(dims[0]) if dims else feature_dim(config),
            "shard_size": shard_size,
            "shards": names,
            "skipped": [[k, reason] for k, reason in skipped.items()],
            "images": sum(len(r["keys"]) for r in records),
            "checksum": "crc32",
        },
    )


RELEASE_BYTES = 32 * 2**20  # FeatureCache hands its mapped pages back after this much reading


class FeatureCache:
    """Memory-mapped read access to a feature cache: ``cache[key] -> (P, D) float16``.

    Opening it checks every shard's size and shape against its header and record (no data
    read); the first read from a shard checks its checksum (``verify``; shards of an older
    attend have none). Either failure is one line naming the shard and the command that
    repairs it. ``require`` checks that the cache covers the images a split needs.

    Each read returns a private copy of the row; after every ``RELEASE_BYTES`` read, the
    mapped pages are dropped from this process (``release``), so a process that sweeps a
    cache of any size keeps only a few tens of MB of it resident.
    """

    def __init__(
        self, folder: str | Path, command: str = "attend features", verify: bool = True, data_dir: Path | None = None
    ):
        """``command``: the one that writes this cache, named in the errors that it can fix;
        ``data_dir``: the prepared folder it belongs to (``require`` then tells images that
        images.json does not list from images not encoded yet)."""
        self.folder, self.command, self.verify, self.data_dir = Path(folder), command, verify, data_dir
        index_path = self.folder / "index.json"
        if not index_path.exists():
            raise AttendError(f"{self.folder}: no feature cache here (run `{command}` first)")
        index = read_json(index_path, "feature index")
        try:
            self.encoder = EncoderConfig(**index["encoder"])
            self.grid = tuple(int(x) for x in index["grid"])
            self.dim = int(index["dim"])
            self.skipped = dict((str(k), str(r)) for k, r in index["skipped"])
            self._names = [str(n) for n in index["shards"]]
            if len(self.grid) != 2:
                raise ValueError("grid")
        except (KeyError, TypeError, ValueError) as e:
            raise AttendError(f"{index_path}: not a feature index ({type(e).__name__}); run `{command}`") from None
        self._shards: dict[int, tuple[mmap.mmap, np.ndarray]] = {}
        self._layout: list[tuple[tuple[int, int, int], int, int | None]] = []  # (shape, offset, crc32)
        self._verified: set[int] = set()
        self._unreleased = 0  # bytes read since the mapped pages were last handed back
        self._where: dict[str, tuple[int, int]] = {}
        cell_shape = (self.grid[0] * self.grid[1], self.dim)
        for s, name in enumerate(self._names):
            try:
                record = _record(self.folder / f"{name}.json")
                shape, offset = shard_layout(self.folder / f"{name}.npy", record, cell_shape)
            except ValueError as e:
                raise AttendError(
                    f"{self.folder / name}: damaged feature shard ({e}); run `{command}` to repair it"
                ) from None
            self._layout.append((shape, offset, record.get("crc32")))
            for row, key in enumerate(record["keys"]):
                self._where.setdefault(key, (s, row))

    @classmethod
    def for_data(cls, data_dir: str | Path, config: EncoderConfig | None = None) -> FeatureCache:
        """The cache of ``data_dir`` for this encoder setting; if there is none, the error names
        the `attend features` command that writes it."""
        config = check_encoder_config(config or EncoderConfig())
        return cls(cache_dir(data_dir, config), command=features_command(data_dir, config), data_dir=Path(data_dir))

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> list[str]:
        return list(self._where)

    def require(self, keys, what: str) -> list[str]:
        """Check that every image of ``keys`` is in the cache or was skipped when it was built
        (unreadable); returns the skipped ones. ``what`` names them in the error, e.g.
        "split 'train'".

        The shards holding them have their checksums checked here, so a damaged one stops a
        run before its first step.

        Raises:
            AttendError: how many images are missing and the command that encodes them (or,
                for images DIR/images.json does not list, that the data must be prepared again);
                a damaged shard.
        """
        unique = list(dict.fromkeys(keys))
        missing = [k for k in unique if k not in self._where and k not in self.skipped]
        if missing:
            if self.data_dir is not None:
                listed = image_paths(self.data_dir)
                unlisted = [k for k in missing if k not in listed]
                if unlisted:
                    raise AttendError(
                        f"{len(unlisted)} of the {len(unique)} images of {what} are not listed in "
                        f"{Path(self.data_dir) / 'images.json'} (e.g. {unlisted[0]}); prepare the data again"
                    )
            raise AttendError(
                f"{len(missing)} of the {len(unique)} images of {what} are not in the feature cache "
                f"{self.folder} (e.g. {missing[0]}); run `{self.command}` to encode them"
            )
        for s in sorted({self._where[k][0] for k in unique if k in self._where}):
            self._check(s)  # every shard the split reads, before the first step rather than mid-epoch
        return [k for k in unique if k not in self._where]

    def _check(self, s: int) -> None:
        """Compare shard s's bytes with its recorded checksum, once per process (with ``verify``)."""
        crc = self._layout[s][2]
        if not self.verify or crc is None or s in self._verified:
            return
        path = self.folder / f"{self._names[s]}.npy"
        try:
            intact = file_crc32(path) == crc
        except OSError as e:
            raise AttendError(f"{path}: unreadable feature shard ({e}); run `{self.command}`") from None
        if not intact:
            raise AttendError(
                f"{self.folder / self._names[s]}: damaged feature shard (its bytes changed since they were "
                f"written: checksum mismatch); run `{self.command}` to repair it"
            )
        self._verified.add(s)

    def _shard(self, s: int) -> tuple[mmap.mmap, np.ndarray]:
        """Map shard s: (the mmap, the (n, P, D) array over it), its checksum checked first."""
        if s not in self._shards:
            path = self.folder / f"{self._names[s]}.npy"
            shape, offset, _ = self._layout[s]
            self._check(s)
            try:
                with open(path, "rb") as f:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except OSError as e:
                raise AttendError(f"{path}: unreadable feature shard ({e}); run `{self.command}`") from None
            if len(mapped) != offset + int(np.prod(shape)) * 2:  # changed since it was opened
                raise AttendError(f"{path}: damaged feature shard (its size changed); run `{self.command}`")
            array = np.frombuffer(mapped, dtype=np.float16, count=int(np.prod(shape)), offset=offset).reshape(shape)
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


def features_command(data_dir: str | Path, config: EncoderConfig) -> str:
    """The `attend features` command line that writes the cache of ``config`` for ``data_dir``."""
    default = EncoderConfig()
    flags = "".join(
        [
            f" --encoder {config.backbone}" if config.backbone != default.backbone else "",
            f" --image-size {config.image_size}" if config.image_size != default.image_size else "",
            " --encoder-weights FILE" if config.weights else "",
            " --mid-level" if config.mid_level else "",
        ]
    )
    return f"attend features --data {data_dir}{flags}"
