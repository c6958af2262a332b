"""Seeded, bounded fuzzing of what users hand the command line: feature-cache shards,
checkpoints and images with bytes flipped, cut off or appended.

Every run must end in a correct result (exit 0, finite numbers, one output per input) or in
one-line errors (``attend: error: ...``, exit 1): never a traceback (an exception other than
``AttendError`` escapes ``main`` and fails the test), never NaN, never a hang (an alarm
turns one into a failure).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.cli import main
from data_prep.scenes import make_scene

pytestmark = pytest.mark.slow
SECONDS_PER_RUN = 60


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flip 1-64 random bytes, cut the data at a random length, or append junk."""
    kind = rng.integers(3)
    if kind == 0:
        out = bytearray(data)
        for i in rng.integers(0, len(out), int(rng.integers(1, 65))):
            out[i] ^= int(rng.integers(1, 256))
        return bytes(out)
    if kind == 1:
        return data[: int(rng.integers(0, len(data)))]
    return data + rng.bytes(int(rng.integers(1, 4096)))


def run(argv: list) -> tuple[int, str, str]:
    """``attend ARGV`` in this process, with a time limit: (exit status, stdout, stderr)."""

    def hang(*_):
        raise TimeoutError(f"attend {' '.join(map(str, argv))} ran past {SECONDS_PER_RUN} s")

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(SECONDS_PER_RUN)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([str(a) for a in argv])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return status, out.getvalue(), err.getvalue()


def error_lines(stderr: str) -> list[str]:
    """The error lines of stderr; every line that is not progress must be one of them."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("attend: error: ")]
    assert "Traceback" not in stderr, stderr
    return errors


def finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True


def test_damaged_shards_give_one_line_or_a_correct_evaluation(scenes_dir, tiny_captioner, tmp_path):
    rng = np.random.default_rng(20261203)
    cache = next((scenes_dir / "features").iterdir())
    targets = sorted(p.relative_to(scenes_dir) for p in cache.iterdir() if p.suffix in (".npy", ".json"))
    outcomes = {"error": 0, "result": 0}
    for case in range(16):
        data = tmp_path / f"data{case}"
        shutil.copytree(scenes_dir, data, ignore=shutil.ignore_patterns("images"))
        (data / "images").symlink_to(scenes_dir / "images")
        target = data / targets[int(rng.integers(len(targets)))]
        target.write_bytes(mutate(target.read_bytes(), rng))
        argv = [
            "evaluate",
            "captioner",
            "--checkpoint",
            tiny_captioner,
            "--data",
            data,
            "--split",
            "val",
            "--beam",
            "1",
            "--json",
        ]
        status, stdout, stderr = run(argv)
        errors = error_lines(stderr)
        if status == 0:
            summary = json.loads(stdout)
            assert finite(summary) and summary["images"] > 0, (target, summary)
            outcomes["result"] += 1
        else:
            assert status == 1 and len(errors) == 1 and "\n" not in errors[0], (target, stderr)
            outcomes["error"] += 1
        shutil.rmtree(data)
    assert outcomes["error"] > 0, outcomes  # the mutations do reach the checks


def test_training_on_a_damaged_shard_stops_in_one_line_or_writes_finite_weights(scenes_dir, tmp_path):
    import torch

    rng = np.random.default_rng(3)
    for case in range(3):
        data = tmp_path / f"data{case}"
        shutil.copytree(scenes_dir, data, ignore=shutil.ignore_patterns("images"))
        (data / "images").symlink_to(scenes_dir / "images")
        shard = next((data / "features").iterdir()) / "shard_00000.npy"
        shard.write_bytes(mutate(shard.read_bytes(), rng))
        out = tmp_path / f"run{case}"
        model = ["hidden_dim=32", "embed_dim=16", "attention_dim=16"]
        status, _, stderr = run(["train", "captioner", "--data", data, "--out", out, "--epochs", "1", "--set", *model])
        errors = error_lines(stderr)
        if status == 0:
            weights = torch.load(out / "best.pt", weights_only=True)["model"]
            assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
        else:
            assert status == 1 and len(errors) == 1, stderr
            assert not (out / "best.pt").exists() or all(
                torch.isfinite(t).all() for t in torch.load(out / "best.pt", weights_only=True)["model"].values()
            )


def test_damaged_checkpoints_give_one_line_or_a_caption(tiny_captioner, tmp_path):
    rng = np.random.default_rng(7)
    _, pixels, _, _ = make_scene(3, "test", 0)
    image = tmp_path / "scene.png"
    Image.fromarray(pixels).save(image)
    original = Path(tiny_captioner).read_bytes()
    outcomes = {"error": 0, "result": 0}
    for case in range(14):
        checkpoint = tmp_path / f"c{case}.pt"
        checkpoint.write_bytes(mutate(original, rng))
        status, stdout, stderr = run(["caption", image, "--checkpoint", checkpoint, "--json", "--beam", "2"])
        errors = error_lines(stderr)
        if status == 0:
            (result,) = [json.loads(line) for line in stdout.splitlines()]
            assert isinstance(result["caption"], str) and finite(result["attention"]), result
            outcomes["result"] += 1
        else:
            assert status == 1 and len(errors) == 1, stderr
            outcomes["error"] += 1
    assert outcomes["error"] > 0, outcomes


def test_damaged_images_are_captioned_or_reported_one_line_each(tiny_captioner, tmp_path):
    rng = np.random.default_rng(11)
    _, pixels, _, _ = make_scene(3, "test", 1)
    originals = {}
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("GIF", ".gif")):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        originals[suffix] = buffer.getvalue()
    paths = []
    for case in range(40):
        suffix = list(originals)[case % len(originals)]
        path = tmp_path / f"m{case:02d}{suffix}"
        path.write_bytes(mutate(originals[suffix], rng))
        paths.append(path)
    status, stdout, stderr = run(["caption", *paths, "--json", "--beam", "2"])
    errors = error_lines(stderr)
    results = [json.loads(line) for line in stdout.splitlines()]
    assert [r["image"] for r in results] == [str(p) for p in paths]  # one line per image, in order
    bad = [r for r in results if "error" in r]
    assert len(bad) == len(errors) and status == (1 if bad else 0), (status, stderr)
    for r in results:
        assert "error" in r or (isinstance(r["caption"], str) and finite(r["attention"])), r
    assert 0 < len(bad) < len(paths)  # both outcomes occur: the fuzzing is not vacuous
