"""Text for the character-level model: the vocabulary, the corpus and the streams of
truncated backpropagation through time.

The corpus is a list of text files (``--text FILE...``; a folder gives its ``*.py`` files) or
the Python standard library's own source (``--stdlib``), split into training and held-out
text BY FILE: a file's relative path decides, through a hash, whether it is held out (about
5%), so no held-out line is ever trained on and the split never depends on the order files
were listed in.

Truncated BPTT (Williams & Peng 1990) reads the training text as B parallel streams, each a
contiguous slice, in chunks of T characters; the model's state is carried from one chunk of a
stream to the next and detached (``charlm.train``). ``BPTTStreams`` lays the chunks out as
data set items for ``core.training.fit(shuffle=False)``; an "epoch" is a fixed budget of
characters, and each epoch starts its streams at new places drawn from (seed, epoch).
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import AttendError
from core.training import epoch_seed

UNKNOWN = "\ufffd"  # id 0: every character the vocabulary lacks reads as this one


class CharVocab:
    """Characters <-> ids. Id 0 is ``UNKNOWN``; the rest are sorted by code point, so the
    same text always gives the same ids."""

    def __init__(self, chars: list[str]):
        if not chars or chars[0] != UNKNOWN or len(set(chars)) != len(chars):
            raise ValueError("a character vocabulary starts with the unknown character and repeats none")
        if any(len(ch) != 1 for ch in chars):
            raise ValueError("a character vocabulary holds single characters")
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def build(cls, text: str, min_count: int = 1) -> CharVocab:
        """Every character seen at least ``min_count`` times in ``text``."""
        counts = Counter(text)
        return cls([UNKNOWN, *sorted(ch for ch, n in counts.items() if n >= min_count and ch != UNKNOWN)])

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of ``text`` (T,), int64; unknown characters -> 0."""
        if not text:
            return torch.zeros(0, dtype=torch.long)
        # A table from code point to id: millions of characters in a second, not a dict per character.
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (T,)
        known = np.array([ord(ch) for ch in self.chars[1:]], dtype=np.int64)
        table = np.zeros(max(int(codes.max()), int(known.max(initial=0))) + 1, dtype=np.int64)
        table[known] = np.arange(1, len(self.chars))
        return torch.from_numpy(table[codes])  # (T,)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


# ---------------------------------------------------------------- the corpus

HELD_OUT_PER_MILLE = 50  # ~5% of the files are held out for validation
# Folders of the standard library that are not its own source or differ between machines.
STDLIB_SKIP_PARTS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def held_out(relative_path: str) -> bool:
    """Whether a file belongs to the held-out text: a hash of its relative path, so the same
    file is held out on every machine and in every run, whatever else the corpus holds."""
    digest = hashlib.blake2b(relative_path.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 1000 < HELD_OUT_PER_MILLE


@dataclass
class TextFile:
    path: str  # relative to the corpus root (a folder, the standard library), or as given
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Corpus:
    """Training and held-out text, each the concatenation of whole files in sorted order."""

    source: str  # "stdlib" or "text"
    train_files: list[TextFile]
    val_files: list[TextFile]
    python: str = field(default_factory=lambda: ".".join(map(str, sys.version_info[:3])))
    note: str = ""  # how the split was made when it could not go by file

    @property
    def train_text(self) -> str:
        return "".join(f.text for f in self.train_files)

    @property
    def val_text(self) -> str:
        return "".join(f.text for f in self.val_files)

    def describe(self) -> dict:
        """What the checkpoint records: the source, Python's version, and each split's file count,
        characters and a hash of its (path, content hash) list; the held-out files by name."""

        def summary(files: list[TextFile]) -> dict:
            listing = "\n".join(f"{f.path}\t{f.sha256}" for f in files)
            return {
                "files": len(files),
                "chars": sum(len(f.text) for f in files),
                "sha256": hashlib.sha256(listing.encode("utf-8", "surrogatepass")).hexdigest(),
            }

        return {
            "source": self.source,
            "python": self.python,
            "train": summary(self.train_files),
            "val": summary(self.val_files) | {"paths": [f.path for f in self.val_files]},
            "note": self.note,
        }


def read_text_file(path: Path, shown: str | None = None) -> str:
    """A UTF-8 text file, or one line saying why not (missing, a folder, empty, binary)."""
    shown = shown or str(path)
    if not path.exists():
        raise AttendError(f"{shown}: no such file")
    if not path.is_file():
        raise AttendError(f"{shown}: not a file")
    data = path.read_bytes()
    if not data.strip():
        raise AttendError(f"{shown}: empty text file")
    if b"\x00" in data:
        raise AttendError(f"{shown}: a binary file, not text (it holds NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttendError(f"{shown}: not UTF-8 text (byte {e.start})") from None
    return text if text.endswith("\n") else text + "\n"  # files meet at a line break


def _split(source: str, files: list[TextFile], max_chars: int | None) -> Corpus:
    """Files (sorted by path) -> a corpus split by file; at most ``max_chars`` in all (files
    taken in the order of their hash, so a cap keeps a spread of the corpus, not its first
    folders). One file, or a split that leaves a side empty: its last 5% is held out."""
    files = sorted(files, key=lambda f: f.path)
    if max_chars is not None:
        kept, total = set(), 0
        for f in sorted(files, key=lambda f: hashlib.blake2b(f.path.encode(), digest_size=8).digest()):
            if total + len(f.text) <= max_chars:
                kept.add(f.path)
                total += len(f.text)
        if not kept:
            raise AttendError(f"--max-chars {max_chars}: smaller than every file of the text")
        files = [f for f in files if f.path in kept]
    train = [f for f in files if not held_out(f.path)]
    val = [f for f in files if held_out(f.path)]
    if train and val:
        return Corpus(source, train, val)
    text = "".join(f.text for f in files)
    cut = len(text) - max(1, len(text) // 20)
    if cut < 2:
        raise AttendError("the text is too short to train on (at least 3 characters)")
    note = "too few files to hold some out: the last 5% of the text is held out"
    return Corpus(source, [TextFile("<train>", text[:cut])], [TextFile("<held out>", text[cut:])], note=note)


def text_corpus(paths: list[str | Path], max_chars: int | None = None) -> Corpus:
    """``--text FILE...``: files, or folders (their ``*.py`` files, recursively, sorted)."""
    files: dict[str, TextFile] = {}
    for given in paths:
        given = Path(given)
        if given.is_dir():
            found = sorted(p for p in given.rglob("*.py") if p.is_file())
            if not found:
                raise AttendError(f"{given}: a folder without .py files")
            for p in found:
                name = p.relative_to(given).as_posix()
                files[name] = TextFile(name, read_text_file(p))
        else:
            files[given.as_posix()] = TextFile(given.as_posix(), read_text_file(given))
    if not files:
        raise AttendError("no text given (--text FILE... or --stdlib)")
    return _split("text", list(files.values()), max_chars)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's own ``.py`` source, relative to its root, sorted: no installed
    packages, no test suites (``test/``, ``tests/``, idlelib's and lib2to3's tests), nothing that
    differs between machines of one Python version (``_sysconfigdata*``, the ``config-*`` folder)."""
    root = root or stdlib_root()
    found = []
    for p in root.rglob("*.py"):
        relative = p.relative_to(root)
        parts = relative.parts
        if STDLIB_SKIP_PARTS & set(parts) or parts[0].startswith("config-"):
            continue
        if parts[0] in ("idlelib", "lib2to3") and any("test" in part for part in parts[1:]):
            continue
        if relative.name.startswith("_sysconfigdata"):
            continue
        found.append(relative)
    return sorted(found, key=lambda r: r.as_posix())


def stdlib_corpus(max_chars: int | None = None) -> Corpus:
    """``--stdlib``: the standard library's source (files that are not valid UTF-8 are skipped)."""
    root = stdlib_root()
    files = []
    for relative in stdlib_files(root):
        try:
            text = (root / relative).read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip() and "\x00" not in text:
            files.append(TextFile(relative.as_posix(), text if text.endswith("\n") else text + "\n"))
    if not files:
        raise AttendError(f"{root}: no Python source found in the standard library")
    return _split("stdlib", files, max_chars)


def load_corpus(text: list[str | Path] | None, stdlib: bool, max_chars: int | None = None) -> Corpus:
    """``--text FILE...`` or ``--stdlib`` (exactly one)."""
    if bool(text) == bool(stdlib):
        raise AttendError("give the text to train on: --text FILE... or --stdlib (one of the two)")
    return stdlib_corpus(max_chars) if stdlib else text_corpus(list(text), max_chars)


# ---------------------------------------------------------------- streams for truncated BPTT


class BPTTStreams(Dataset):
    """The training text as ``world * batch`` streams read in chunks of ``bptt`` characters.

    Item j is one stream's chunk: (ids (bptt + 1,), chunk index), the input and, shifted by one,
    the targets. Under ``DistributedSampler(shuffle=False)`` rank r of W reads items r, r + W, ...,
    so item j belongs to stream group j % W (that rank's own B streams) and its k = j // W-th item
    is chunk k // B of stream k % B: each loader batch of B items is one chunk of every stream of
    the rank, in order, which is what carrying the state from batch to batch needs.

    An epoch reads ``chunks`` chunks per stream (about ``chars_per_epoch`` characters over all
    ranks). ``set_epoch(epoch, seed)`` places the streams anew: stream s of S starts at a point
    drawn uniformly from the s-th of S equal parts of the text (so the streams spread over it),
    from a generator seeded by (seed, epoch) only; a stream that runs past the end wraps round.
    """

    def __init__(self, ids: torch.Tensor, batch: int, bptt: int, chars_per_epoch: int, world: int = 1):
        if len(ids) < 2:
            raise AttendError("the training text is too short (at least 2 characters)")
        self.ids, self.batch, self.bptt, self.world = ids, batch, bptt, world
        self.streams = world * batch  # S
        self.chunks = max(1, chars_per_epoch // (self.streams * bptt))
        self.starts = torch.zeros(self.streams, dtype=torch.long)  # (S,)
        self.set_epoch(0, 0)

    def set_epoch(self, epoch: int, seed: int) -> None:
        n = len(self.ids)
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, 1))
        u = torch.rand(self.streams, generator=generator, dtype=torch.float64)  # (S,)
        self.starts = ((torch.arange(self.streams, dtype=torch.float64) + u) * n / self.streams).long() % n  # (S,)

    def __len__(self) -> int:
        return self.world * self.chunks * self.batch

    def locate(self, j: int) -> tuple[int, int]:
        """Item j -> (stream index among all S, chunk index)."""
        group, k = j % self.world, j // self.world
        return group * self.batch + k % self.batch, k // self.batch

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        stream, chunk = self.locate(j)
        first = int(self.starts[stream]) + chunk * self.bptt
        positions = (first + torch.arange(self.bptt + 1)) % len(self.ids)  # (T + 1,)
        return self.ids[positions], chunk


def collate_chunks(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int]:
    """B items of one chunk -> ids (B, T + 1) and the chunk's index."""
    chunk = items[0][1]
    if any(c != chunk for _, c in items):  # the sampler and the layout disagree: a bug, not a user error
        raise RuntimeError("a batch mixes chunks of different positions")
    return torch.stack([x for x, _ in items]), chunk  # (B, T + 1)
