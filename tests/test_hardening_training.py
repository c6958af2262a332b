"""Training refuses what would waste or poison a run: a loss or gradient that is not finite
stops it with one line naming the epoch and step and keeps the last good checkpoint; the
selection metric, the --set model options and the training options are checked before the
first step; --resume refuses a last.pt that does not fit the run, in one line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from core.distributed import Context
from core.encoder import EncoderConfig
from core.errors import AttendError
from core.features import cache_dir, write_features
from core.training import TrainConfig, fit

from cli_helpers import npy_data_offset, quiet, run_cli

SMALL = EncoderConfig(image_size=64)
TINY = ["hidden_dim=16", "embed_dim=8", "attention_dim=8"]


def _one_line_error(code: int, err: str) -> str:
    """The error line; progress lines logged before it (to stderr too) are allowed."""
    lines = [line for line in err.splitlines() if line.startswith("attend: error:")]
    assert code == 1 and len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert "Traceback" not in err
    return lines[0]


def _train_args(data: Path, run: Path, *more) -> list:
    return ["train", "captioner", "--data", data, "--out", run, "--batch-size", "8", "--warmup", "1", *more]


# ---------------------------------------------------------------- a loss that is not finite


def test_a_nan_shard_stops_training_and_keeps_the_last_good_checkpoint(scenes_copy, tmp_path, capsys, one_thread):
    write_features(scenes_copy, SMALL, shard_size=4, compile=False, workers=0, progress=False, log=quiet)
    run = tmp_path / "run"
    args = _train_args(scenes_copy, run, "--image-size", "64", "--set", *TINY)
    code, _, err = run_cli(capsys, *args, "--epochs", "1")
    assert code == 0, err
    kept = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl")}

    # A shard of an older cache (no checksum to catch it) overwritten with NaN, size unchanged.
    folder = cache_dir(scenes_copy, SMALL)
    for path in folder.glob("shard_*.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({"keys": record["keys"], "skipped": record["skipped"]}))
    shard = folder / "shard_00001.npy"
    data = shard.read_bytes()
    offset = npy_data_offset(shard)
    shard.write_bytes(data[:offset] + b"\xff" * (len(data) - offset))

    code, _, err = run_cli(capsys, *args, "--epochs", "2", "--resume")
    line = _one_line_error(code, err)
    assert "epoch 2, step " in line and "training loss is not finite" in line, line
    assert f"{run / 'last.pt'} holds epoch 1" in line
    for name, before in kept.items():
        assert (run / name).read_bytes() == before, name


class _Line(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x @ self.weight


def _fit(tmp_path: Path, loss_fn, data=None, **train) -> dict:
    data = data or TensorDataset(torch.arange(24, dtype=torch.float32).view(8, 3))
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), **{"epochs": 2, "batch_size": 2, "warmup_steps": 1, **train})
    return fit(
        _Line(),
        data,
        lambda batch: torch.stack([b[0] for b in batch]),
        loss_fn,
        lambda model: {"score": float(-model.weight.sum())},
        "score",
        cfg,
        Context(),
        {"kind": "line", "config": {}},
        log=quiet,
    )


def test_fit_stops_at_the_first_step_whose_loss_or_gradient_is_not_finite(tmp_path):
    steps = []

    def nan_at_third(net, batch, device):
        steps.append(1)
        loss = (net(batch) ** 2).mean() * (math.nan if len(steps) == 3 else 1.0)
        return loss, {"loss": loss.item()}

    with pytest.raises(AttendError, match=r"^epoch 1, step 3: the training loss is not finite \(nan\); .*nothing"):
        _fit(tmp_path, nan_at_third)
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()

    def infinite_gradient(net, batch, device):  # d sqrt(u) / du at u = 0
        loss = torch.sqrt(0 * net(batch).sum())
        return loss, {"loss": loss.item()}

    with pytest.raises(AttendError, match="epoch 1, step 1: the training gradient is not finite"):
        _fit(tmp_path, infinite_gradient)


class _Damaged(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        raise AttendError("x/shard_00001: damaged feature shard (checksum mismatch); run `attend features`")


def test_an_error_raised_in_a_loader_worker_is_still_one_line(tmp_path):
    """DataLoader re-raises a worker's exception with the worker's traceback in its message."""
    with pytest.raises(AttendError) as info:
        _fit(tmp_path, lambda net, batch, device: None, data=_Damaged(), workers=1)
    assert str(info.value) == "x/shard_00001: damaged feature shard (checksum mismatch); run `attend features`"


@pytest.mark.parametrize(
    "option, value, flag",
    [
        ("lr", math.nan, "--lr nan"),
        ("lr", -1e-3, "--lr -0.001"),
        ("epochs", 0, "--epochs 0"),
        ("batch_size", -1, "--batch-size -1"),
        ("grad_clip", math.inf, "--grad-clip inf"),
        ("warmup_steps", -2, "--warmup -2"),
        ("schedule", "linear", "--schedule 'linear'"),
        ("workers", 1.5, "--workers 1.5"),
    ],
)
def test_fit_checks_the_training_options_first(tmp_path, option, value, flag):
    def never(net, batch, device):
        raise AssertionError("no step may run")

    with pytest.raises(AttendError) as info:
        _fit(tmp_path, never, **{option: value})
    assert str(info.value).startswith(flag), str(info.value)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- checks before the first step


@pytest.mark.parametrize(
    "more, message",
    [
        (["--select", "nope"], "--select nope: not a validation metric here (choose from bleu1, bleu2"),
        (["--select", "pointing_accuracy", "--no-attention"], "--select pointing_accuracy: not a validation metric"),
        (["--set", "hidden_dim=abc"], "--set hidden_dim='abc': expected an integer from 1 to 65536"),
        (["--set", "hidden_dim=-5"], "--set hidden_dim=-5: expected an integer from 1 to 65536"),
        (["--set", "dropout=nan"], "--set dropout=nan: expected a finite number from 0 to 1"),
        (["--set", "alpha_c=inf"], "--set alpha_c=inf: expected a finite number"),
        (["--set", "cell=transformer"], "--set cell='transformer': expected one of lstm, gru, rnn"),
        (["--set", "attention=1"], "--set attention=1: expected true or false"),
        (["--set", "vocab_size=5"], "--set vocab_size: set from the data"),
    ],
)
def test_train_captioner_refuses_bad_choices_before_anything_runs(scenes_dir, tmp_path, capsys, more, message):
    run = tmp_path / "run"
    line = _one_line_error(*run_cli(capsys, *_train_args(scenes_dir, run, "--epochs", "1", *more))[::2])
    assert message in line, line
    assert not run.exists()


def test_train_vqa_checks_its_selection_metric_and_options_first(scenes_dir, tmp_path, capsys):
    from vqa.train import train_vqa

    run = tmp_path / "run"
    cfg = TrainConfig(out_dir=str(run), epochs=1)
    with pytest.raises(AttendError, match=r"--select nope: .*accuracy, type_colour, type_count"):
        train_vqa(scenes_dir, run, {}, cfg, select="nope", log=quiet)
    for option, message in (
        ("glimpses=0", "--set glimpses=0: expected an integer from 1 to 1024"),
        ("dropout=inf", "--set dropout=inf: expected a finite number from 0 to 1"),
        ("num_answers=3", "--set num_answers: set from the data"),
    ):
        argv = ["train", "vqa", "--data", scenes_dir, "--out", run, "--epochs", "1", "--set", option]
        assert message in _one_line_error(*run_cli(capsys, *argv)[::2])
    assert not run.exists()


def test_resume_refuses_a_changed_shape_and_a_last_pt_without_training_state(scenes_dir, tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    args = _train_args(scenes_dir, run, "--set", "hidden_dim=16", "embed_dim=8", "attention_dim=8")
    code, _, err = run_cli(capsys, *args, "--epochs", "1")
    assert code == 0, err
    before = (run / "last.pt").read_bytes()

    changed = _train_args(scenes_dir, run, "--set", "hidden_dim=24", "embed_dim=8", "attention_dim=8")
    line = _one_line_error(*run_cli(capsys, *changed, "--epochs", "2", "--resume")[::2])
    assert "changes the model's shape (hidden_dim=16->24)" in line, line
    assert (run / "last.pt").read_bytes() == before

    exported = tmp_path / "exported"
    exported.mkdir()
    shutil.copy(run / "best.pt", exported / "last.pt")  # best.pt holds no optimizer state
    args = _train_args(scenes_dir, exported, "--set", *TINY, "--epochs", "2", "--resume")
    line = _one_line_error(*run_cli(capsys, *args)[::2])
    assert "no training state to resume from" in line, line
