"""The feature cache under damage and growth: every shard records its shape and checksum;
`attend features` verifies and repairs what is there and encodes what is missing (a grown
data set, a truncated or overwritten shard, a cache of an older attend); train and both
evaluations refuse a cache that is damaged or does not cover the split with one line
naming the command that fixes it, and the evaluations count the skipped images."""

from __future__ import annotations

import io
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from core.encoder import EncoderConfig
from core.errors import AttendError
from core.features import FeatureCache, cache_dir, write_features
from core.prepared import CAPTIONS, add_images, image_paths, read_prepared, write_prepared

from cli_helpers import npy_data_offset, one_line_error, quiet, run_cli

SMALL = EncoderConfig(image_size=64)  # a 2x2 grid: encoding and training take seconds
TINY = ["hidden_dim=16", "embed_dim=8", "attention_dim=8"]


def _features(data: Path, **kwargs) -> dict:
    return write_features(data, SMALL, shard_size=4, compile=False, workers=0, progress=False, log=quiet, **kwargs)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("shard_*"))}


def _assert_same_grids(shard: Path, data: bytes) -> None:
    """The shard holds the grids ``data`` held (encoded again; the thread count may move the last bit)."""
    repaired, original = np.load(shard), np.load(io.BytesIO(data))
    np.testing.assert_allclose(repaired.astype(np.float32), original.astype(np.float32), atol=1e-2)


@pytest.fixture
def small(scenes_copy) -> Path:
    """A writable prepared scenes folder (10 images) with a 64 px cache in shards of 4."""
    _features(scenes_copy)
    return scenes_copy


def _train(capsys, data: Path, run: Path, *more) -> tuple[int, str, str]:
    return run_cli(
        capsys,
        "train",
        "captioner",
        "--data",
        data,
        "--out",
        run,
        "--image-size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--warmup",
        "1",
        "--set",
        *TINY,
        *more,
    )


def test_each_shard_records_its_shape_and_checksum(small):
    folder = cache_dir(small, SMALL)
    for name in ("shard_00000", "shard_00001", "shard_00002"):
        record = json.loads((folder / f"{name}.json").read_text())
        data = (folder / f"{name}.npy").read_bytes()
        assert record["crc32"] == zlib.crc32(data) and record["bytes"] == len(data)
        assert record["dtype"] == "float16" and record["shape"] == [len(record["keys"]), 4, 1280]
        assert list(np.load(folder / f"{name}.npy", mmap_mode="r").shape) == record["shape"]
    index = json.loads((folder / "index.json").read_text())
    assert index["checksum"] == "crc32" and index["images"] == 10


def test_a_truncated_shard_is_one_line_everywhere_and_features_repairs_it(small, tmp_path, capsys, one_thread):
    from captioner.train import train_captioner
    from core.training import TrainConfig
    from vqa.train import train_vqa

    # A captioner and a VQA model trained on the intact cache, for the evaluations below.
    runs = {}
    for task, train in (("captioner", train_captioner), ("vqa", train_vqa)):
        runs[task] = tmp_path / task
        options = dict(hidden_dim=16, embed_dim=8, attention_dim=8)
        train(small, runs[task], options, TrainConfig(str(runs[task]), epochs=1, batch_size=8), SMALL, log=quiet)
    folder = cache_dir(small, SMALL)
    shard = folder / "shard_00001.npy"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    command = f"attend features --data {small} --image-size 64"
    for argv in (
        ["train", "captioner", "--data", small, "--out", tmp_path / "again", "--image-size", "64", "--set", *TINY],
        ["train", "vqa", "--data", small, "--out", tmp_path / "again", "--image-size", "64"],
        ["evaluate", "captioner", "--checkpoint", runs["captioner"] / "last.pt", "--data", small, "--split", "train"],
        ["evaluate", "vqa", "--checkpoint", runs["vqa"] / "last.pt", "--data", small, "--split", "train"],
    ):
        line = one_line_error(*run_cli(capsys, *argv)[::2])
        assert "shard_00001" in line and "damaged feature shard" in line and f"`{command}`" in line, line
    assert not (tmp_path / "again").exists()

    # `attend features` rewrites exactly the damaged shard, then everything works again.
    before = _mtimes(folder)
    code, out, err = run_cli(capsys, "features", "--data", small, "--image-size", "64", "--no-compile")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["encoded"] == 4 and summary["shards"] == {
        "kept": 2,
        "written": 1,
        "damaged": 1,
        "checksums_added": 0,
    }
    after = _mtimes(folder)
    assert {n for n in after if after[n] != before[n]} == {"shard_00001.npy", "shard_00001.json"}
    _assert_same_grids(shard, data)
    code, out, err = run_cli(
        capsys, "evaluate", "vqa", "--checkpoint", runs["vqa"] / "last.pt", "--data", small, "--split", "train"
    )
    assert code == 0, err


def test_an_overwritten_shard_is_found_by_its_checksum(small, tmp_path, capsys, one_thread):
    folder = cache_dir(small, SMALL)
    shard = folder / "shard_00002.npy"
    good = shard.read_bytes()
    offset = npy_data_offset(shard)
    shard.write_bytes(good[:offset] + bytes(len(good) - offset))  # same size, the grids zeroed: all finite
    cache = FeatureCache.for_data(small, SMALL)  # size and shape still fit: it opens
    key = json.loads((folder / "shard_00002.json").read_text())["keys"][0]
    with pytest.raises(AttendError, match="shard_00002: damaged feature shard .*checksum mismatch.*attend features"):
        cache[key]
    line = one_line_error(*_train(capsys, small, tmp_path / "run")[::2])  # before the first step
    assert "shard_00002" in line and "checksum" in line and not (tmp_path / "run").exists()

    summary = _features(small)
    assert summary["encoded"] == 2 and summary["shards"]["damaged"] == 1
    _assert_same_grids(shard, good)


def test_a_grown_data_set_encodes_only_the_new_images_and_training_waits_for_them(small, capsys, tmp_path):
    folder = cache_dir(small, SMALL)
    paths = image_paths(small)
    before = _mtimes(folder)
    # Four new images whose keys sort between the old ones: position-based shards would all shift.
    new = {}
    for source in (
        "train/000000000000.png",
        "train/000000000002.png",
        "train/000000000004.png",
        "val/000000000006.png",
    ):
        target = small / "images" / "more" / source.replace("/", "_")
        target.parent.mkdir(exist_ok=True)
        shutil.copy(paths[source], target)
        new[source.replace(".png", "b.png")] = target
    add_images(small, new)
    captions = read_prepared(small, CAPTIONS)
    for n, key in enumerate(new):
        captions["splits"]["train"].append({**captions["splits"]["train"][0], "image": key, "image_id": 100 + n})
    write_prepared(small, CAPTIONS, {k: v for k, v in captions.items() if k != "format"})

    # Training first: the cache does not cover the split, and the message says by how much and what to run.
    line = one_line_error(*_train(capsys, small, tmp_path / "run")[::2])
    assert "4 of the 10 images of split 'train' are not in the feature cache" in line, line
    assert f"run `attend features --data {small} --image-size 64`" in line
    assert not (tmp_path / "run").exists()

    summary = _features(small)
    assert summary["images"] == 14 and summary["encoded"] == 4 and summary["shards"]["kept"] == 3
    assert _mtimes(folder).items() >= before.items()  # every old shard untouched
    cache = FeatureCache.for_data(small, SMALL)
    assert set(cache.keys()) == set(image_paths(small)) and len(cache) == 14
    for key in new:
        np.testing.assert_allclose(cache[key], cache[key.replace("b.png", ".png")], atol=1e-2)
    assert _features(small)["encoded"] == 0
    code, _, err = _train(capsys, small, tmp_path / "run")
    assert code == 0, err


def test_an_older_cache_without_checksums_is_read_then_given_them(small):
    folder = cache_dir(small, SMALL)
    legacy_keys = ("keys", "skipped")
    for path in folder.glob("shard_*.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({k: record[k] for k in legacy_keys}))
    cache = FeatureCache.for_data(small, SMALL)  # unverified, still readable
    assert len(cache) == 10 and cache["val/000000000007.png"].shape == (4, 1280)
    # An older shard whose bytes were overwritten with NaN cannot be caught by a checksum:
    # attend features finds its values are not finite and encodes it again.
    shard = folder / "shard_00000.npy"
    good = shard.read_bytes()
    offset = npy_data_offset(shard)
    shard.write_bytes(good[:offset] + b"\xff" * (len(good) - offset))
    npy_before = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_*.npy")}
    summary = _features(small)
    assert summary["encoded"] == 4 and summary["shards"] == {
        "kept": 2,
        "written": 1,
        "damaged": 1,
        "checksums_added": 2,
    }
    for path in folder.glob("shard_*.json"):
        assert "crc32" in json.loads(path.read_text()), path
    npy_after = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_*.npy")}
    assert npy_after["shard_00001.npy"] == npy_before["shard_00001.npy"]  # checksummed in place, not rewritten
    _assert_same_grids(shard, good)


def test_evaluations_count_the_images_the_cache_skipped(scenes_copy, tmp_path, one_thread):
    from captioner.train import evaluate_captioner, train_captioner
    from core.training import TrainConfig
    from vqa.train import evaluate_vqa, train_vqa

    image_paths(scenes_copy)["test/000000000009.png"].unlink()  # deleted before the cache was built
    summary = _features(scenes_copy)
    assert summary["skipped"] == 1
    options = dict(hidden_dim=16, embed_dim=8, attention_dim=8)
    for train in (train_captioner, train_vqa):
        run = tmp_path / train.__name__
        train(scenes_copy, run, options, TrainConfig(str(run), epochs=1, batch_size=8), SMALL, log=quiet)
    captions = evaluate_captioner(tmp_path / "train_captioner" / "last.pt", scenes_copy, split="test", beam_size=1)
    assert captions["images"] == 1 and captions["skipped_images"] == 1
    questions = [q for q in read_prepared(scenes_copy, "vqa.json")["splits"]["test"]]
    lost = sum(q["image"] == "test/000000000009.png" for q in questions)
    answers = evaluate_vqa(tmp_path / "train_vqa" / "last.pt", scenes_copy, split="test", out=tmp_path / "eval")
    assert answers["skipped_images"] == 1 and answers["skipped_questions"] == lost > 0
    assert answers["answered"] == len(questions) - lost
    assert json.loads((tmp_path / "eval" / "metrics_test.json").read_text())["skipped_images"] == 1
