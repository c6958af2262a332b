"""Reproducible runs on the CPU: two runs with the same seed give the same losses and the
same weights, and a run interrupted after an epoch and resumed from last.pt gives exactly
what the uninterrupted run gives (the example order, the captions drawn, dropout and the
initial weights all follow (seed, epoch); the optimizer and schedule states are saved)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from captioner.train import train_captioner
from core.checkpoint import load_checkpoint
from core.training import TrainConfig
from vqa.train import train_vqa

CAPTIONER = {"hidden_dim": 32, "embed_dim": 16, "attention_dim": 16, "dropout": 0.3}
VQA = {"hidden_dim": 16, "embed_dim": 8, "attention_dim": 8, "classifier_dim": 16, "dropout": 0.3}


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(message: str) -> None:
    """The log line of a finished epoch comes after its last.pt is written: a crash there."""
    if message.startswith("epoch=1 "):
        raise Interrupt


def _train_task(
    task: str, data: Path, run: Path, seed: int = 0, resume: bool = False, log=lambda m: None, init=None
) -> dict:
    cfg = TrainConfig(str(run), epochs=2, batch_size=4, lr=1e-2, warmup_steps=1, seed=seed, resume=resume)
    if task == "scst":  # the captions are sampled by the model: torch's generator, re-seeded each epoch
        return train_captioner(data, run, {}, cfg, device="cpu", init=init, scst=True, scst_samples=2, log=log)
    if task == "captioner":  # two captions drawn per image: the data set's own randomness
        return train_captioner(data, run, dict(CAPTIONER), cfg, device="cpu", captions_per_image=2, log=log)
    return train_vqa(data, run, dict(VQA), cfg, device="cpu", log=log)


def _losses(result: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result["history"]]


def _weights(run: Path, task: str) -> dict:
    return load_checkpoint(run / "last.pt", task)["model"]


@pytest.mark.parametrize("task", ["captioner", "vqa", "scst"])
def test_same_seed_same_run_and_resume_continues_exactly(scenes_dir, tmp_path, one_thread, task, request):
    init = request.getfixturevalue("tiny_captioner") if task == "scst" else None
    _train = partial(_train_task, init=init)
    kind = "vqa" if task == "vqa" else "captioner"
    first = _train(task, scenes_dir, tmp_path / "a")
    second = _train(task, scenes_dir, tmp_path / "b")
    assert _losses(first) == _losses(second)
    assert len(first["history"]) == 2 and first["history"][0]["train_loss"] != first["history"][1]["train_loss"]
    a, b = _weights(tmp_path / "a", kind), _weights(tmp_path / "b", kind)
    assert all(torch.equal(a[name], b[name]) for name in a)

    other = _train(task, scenes_dir, tmp_path / "c", seed=1)
    assert _losses(other)[0]["train_loss"] != _losses(first)[0]["train_loss"]  # the seed matters

    with pytest.raises(Interrupt):
        _train(task, scenes_dir, tmp_path / "d", log=_stop_after_first_epoch)
    assert load_checkpoint(tmp_path / "d" / "last.pt", kind)["train"]["epoch"] == 0
    resumed = _train(task, scenes_dir, tmp_path / "d", resume=True)
    assert _losses(resumed) == _losses(first)  # epoch 1 from last.pt's history, epoch 2 run again
    d = _weights(tmp_path / "d", kind)
    # Exactly equal: fused Adam on the CPU is deterministic, and every state is saved exactly.
    assert all(torch.equal(a[name], d[name]) for name in a)
