"""Every user mistake ends in ONE line on stderr, ``attend: error: ...``, and exit status 1
(bad argument values: argparse's usage message and exit status 2); never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apps.cli import main
from core.prepared import CAPTIONS, IMAGES, write_prepared

from cli_helpers import caption_lines

ATTEND = Path(sys.executable).parent / "attend"  # the installed console script of this venv


def _error_line(capsys, argv) -> str:
    """Run ``attend argv`` in-process; check the one-line error contract; return the line."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("attend: error: "), err
    assert "Traceback" not in err and out == ""
    return lines[0]


# ---------------------------------------------------------------- attend caption


@pytest.fixture
def bad_images(tmp_path) -> dict[str, Path]:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    return {"missing": tmp_path / "missing.jpg", "empty": empty, "text": text, "folder": folder}


@pytest.mark.parametrize(
    "kind, reason",
    [("missing", "no such file"), ("empty", "empty file"), ("text", "not an image file"), ("folder", "is a directory")],
)
def test_caption_bad_image(tiny_captioner, bad_images, capsys, kind, reason):
    line = _error_line(capsys, ["caption", bad_images[kind], "--checkpoint", tiny_captioner])
    assert str(bad_images[kind]) in line and reason in line


def test_caption_mixed_batch_captions_the_good_images_and_names_each_bad_one(
    tiny_captioner, scenes_dir, bad_images, capsys
):
    """One unusable image no longer costs the others their captions: every good one is printed in
    order, each bad one gets its own error line, and the exit status is 1 at the end."""
    good = sorted((scenes_dir / "images" / "train").glob("*.png"))[:2]
    argv = ["caption", good[0], bad_images["text"], good[1], bad_images["missing"], "--checkpoint", tiny_captioner]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    assert [line.split("\t")[0] for line in caption_lines(out)] == [str(good[0]), str(good[1])]
    assert all(line.split("\t")[1] for line in caption_lines(out))  # a caption each
    errors = err.splitlines()
    assert len(errors) == 2 and all(line.startswith("attend: error: ") for line in errors)
    assert f"{bad_images['text']}: not an image file" in errors[0]
    assert f"{bad_images['missing']}: no such file" in errors[1]


def test_int8_on_cuda_is_refused(tiny_captioner, scenes_dir, capsys, monkeypatch):
    if not torch.cuda.is_available():  # past the --device check: the int8 refusal is what is tested
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    good = scenes_dir / "images" / "train" / "000000000000.png"
    line = _error_line(capsys, ["caption", good, "--checkpoint", tiny_captioner, "--int8", "--device", "cuda"])
    assert "CPU only" in line


def test_int8_caption_runs_and_prints_one_caption_per_image(tiny_captioner, scenes_dir, capsys):
    images = sorted((scenes_dir / "images" / "train").glob("*.png"))[:2]
    assert main(["caption", *map(str, images), "--checkpoint", str(tiny_captioner), "--int8", "--beam", "2"]) == 0
    lines = caption_lines(capsys.readouterr().out)
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in images]


# ---------------------------------------------------------------- attend evaluate captioner


@pytest.fixture
def bad_checkpoints(tmp_path) -> dict[str, Path]:
    wrong_kind = tmp_path / "vqa.pt"
    torch.save({"kind": "vqa", "model": {}}, wrong_kind)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    not_ours = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    old = tmp_path / "old.pt"
    torch.save({"kind": "captioner", "model": {}, "config": {"no_such_option": 1}}, old)
    return {"missing": tmp_path / "nope.pt", "wrong_kind": wrong_kind, "junk": junk, "not_ours": not_ours, "old": old}


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "checkpoint not found"),
        ("wrong_kind", "a vqa checkpoint, expected a captioner checkpoint"),
        ("junk", "not a readable attend checkpoint"),
        ("not_ours", "not an attend checkpoint"),
        ("old", "does not match this version"),
    ],
)
def test_evaluate_bad_checkpoint(bad_checkpoints, scenes_dir, capsys, kind, reason):
    line = _error_line(
        capsys, ["evaluate", "captioner", "--checkpoint", bad_checkpoints[kind], "--data", scenes_dir, "--split", "val"]
    )
    assert reason in line and bad_checkpoints[kind].name in line


def test_evaluate_empty_and_unknown_split(tiny_captioner, tmp_path, capsys):
    record = {"image": "a.png", "image_id": 1, "captions": ["a red square"], "tokens": [["a", "red", "square"]]}
    write_prepared(
        tmp_path,
        CAPTIONS,
        {
            "source": "test",
            "vocab": {"itos": ["<pad>", "<start>", "<end>", "<unk>"]},
            "splits": {"train": [record], "test": []},
        },
    )
    args = ["evaluate", "captioner", "--checkpoint", tiny_captioner, "--data", tmp_path]
    assert "split 'test' is empty" in _error_line(capsys, args + ["--split", "test"])
    line = _error_line(capsys, args + ["--split", "val"])
    assert "no split 'val'" in line and "have: test, train" in line


def test_evaluate_without_prepared_data(tiny_captioner, tmp_path, capsys):
    line = _error_line(capsys, ["evaluate", "captioner", "--checkpoint", tiny_captioner, "--data", tmp_path])
    assert "no prepared captions data here" in line


def test_evaluate_without_the_checkpoints_feature_cache_names_the_command(scenes_dir, capsys):
    """The shipped captioner reads 448 px middle-level features; data encoded otherwise gets
    the exact `attend features` command that writes the cache it needs."""
    from captioner.checkpoint import SHIPPED

    line = _error_line(capsys, ["evaluate", "captioner", "--checkpoint", SHIPPED["scenes"], "--data", scenes_dir])
    assert line.endswith(
        f"no feature cache here (run `attend features --data {scenes_dir} --image-size 448 --mid-level` first)"
    ), line


# ---------------------------------------------------------------- attend features, prepare, train


def test_features_without_images_json(tmp_path, capsys):
    line = _error_line(capsys, ["features", "--data", tmp_path, "--no-compile"])
    assert str(tmp_path / IMAGES) in line and "no prepared image data here" in line


@pytest.mark.parametrize(
    "spec", ["train=captions.json", "train", "=captions.json:images", "train=:images", "train=captions.json:"]
)
def test_prepare_coco_malformed_captions_spec(tmp_path, capsys, spec):
    line = _error_line(capsys, ["prepare", "coco", "--out", tmp_path / "out", "--captions", spec])
    assert "expected SPLIT=CAPTIONS_JSON:IMAGE_DIR" in line
    assert not (tmp_path / "out").exists()


def test_prepare_coco_missing_files_and_no_source(tmp_path, capsys):
    line = _error_line(
        capsys,
        ["prepare", "coco", "--out", tmp_path / "out", "--captions", f"train={tmp_path / 'nope.json'}:{tmp_path}"],
    )
    assert "nope.json" in line and "not found" in line
    assert "--karpathy" in _error_line(capsys, ["prepare", "coco", "--out", tmp_path / "out"])


def test_train_unknown_model_option_and_bad_set_syntax(scenes_dir, tmp_path, capsys):
    base = ["train", "captioner", "--data", scenes_dir, "--out", tmp_path / "run", "--epochs", "1"]
    assert "unknown model option(s): hiden_dim" in _error_line(capsys, base + ["--set", "hiden_dim=32"])
    assert "expected NAME=VALUE" in _error_line(capsys, base + ["--set", "hidden_dim"])
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["caption", "x.jpg", "--beam", "0"], "--beam: must be at least 1, got 0"),
        (["caption", "x.jpg", "--batch-size", "-2"], "--batch-size: must be at least 1, got -2"),
        (["evaluate", "captioner", "--checkpoint", "c.pt", "--beam", "two"], "expected an integer, got 'two'"),
        (["train", "captioner", "--out", "r", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["features", "--image-size", "16"], "--image-size: must be at least 32, got 16"),
        (["features", "--encoder", "vgg"], "invalid choice: 'vgg'"),
    ],
)
def test_bad_argument_values_exit_2_from_argparse(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err
    assert err.splitlines()[0].startswith("usage: attend")


# ---------------------------------------------------------------- the installed command


def test_installed_command_exit_codes_and_stderr(tmp_path):
    """The console script itself (not main()): exit 1 with one line, exit 2 for argparse."""
    assert ATTEND.is_file(), ATTEND
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(512))
    result = subprocess.run(
        [str(ATTEND), "evaluate", "captioner", "--checkpoint", str(junk), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and result.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"attend: error: {junk}: not a readable attend checkpoint ("), (
        result.stderr
    )  # then the exception's class name, which depends on the random bytes

    result = subprocess.run(
        [str(ATTEND), "caption", "x.jpg", "--beam", "0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "must be at least 1" in result.stderr and "Traceback" not in result.stderr
