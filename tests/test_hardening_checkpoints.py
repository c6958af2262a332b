"""Crafted checkpoints: every field of a captioner and a VQA checkpoint is checked against
bounds and against the others before anything is allocated, and a file that fails is one
line naming the field -- never a traceback, never a 23 GB allocation."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from apps.cli import main
from captioner.checkpoint import load_captioner
from captioner.inference import Captioner
from core.checkpoint import export_checkpoint
from core.errors import AttendError
from vqa.checkpoint import SHIPPED as VQA_SHIPPED
from vqa.checkpoint import load_vqa


def _craft(source: Path, target: Path, change: Callable[[dict], None]) -> Path:
    state = torch.load(source, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, target)
    return target


def _set(*path_and_value):
    """A change that sets state[a][b]... = value."""
    *path, value = path_and_value

    def change(state: dict) -> None:
        node = state
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _poison(name: str, value: float) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        state["model"][name] = state["model"][name].clone()
        state["model"][name].view(-1)[0] = value

    return change


def _reshape(name: str) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        state["model"][name] = torch.zeros(3, 5)

    return change


def _drop(name: str) -> Callable[[dict], None]:
    return lambda state: state["model"].pop(name)


def _grow_vocab(state: dict) -> None:
    state["vocab"]["itos"] = state["vocab"]["itos"] + ["zebra"]


CAPTIONER_CASES = {
    "image size 10**6": (_set("encoder", "image_size", 10**6), "encoder.image_size is 1000000"),
    "image size not a multiple of 32": (_set("encoder", "image_size", 100), "encoder.image_size is 100"),
    "unknown backbone": (_set("encoder", "backbone", "vgg19"), "encoder.backbone is 'vgg19'"),
    "mid_level not a bool": (_set("encoder", "mid_level", "yes"), "encoder.mid_level is 'yes'"),
    "hidden_dim a string": (_set("config", "hidden_dim", "32"), "config.hidden_dim is '32'"),
    "hidden_dim huge": (_set("config", "hidden_dim", 10**6), "config.hidden_dim is 1000000"),
    "hidden_dim negative": (_set("config", "hidden_dim", -5), "config.hidden_dim is -5"),
    "dropout NaN": (_set("config", "dropout", math.nan), "config.dropout is nan"),
    "attention an int": (_set("config", "attention", 1), "config.attention is 1 (expected true or false)"),
    "unknown cell": (_set("config", "cell", "transformer"), "config.cell is 'transformer'"),
    "encoder_dim against the tensors": (_set("config", "encoder_dim", 999), "model.position.weight has shape"),
    "vocabulary longer than the config": (_grow_vocab, "vocab.itos holds"),
    "vocabulary not a list": (_set("vocab", "itos", 5), "vocab.itos is a int"),
    "a NaN weight": (_poison("fc.weight", math.nan), "weights are not finite (model.fc.weight"),
    "an infinite weight": (_poison("init_h.bias", math.inf), "weights are not finite (model.init_h.bias"),
    "a tensor of the wrong shape": (_reshape("fc.weight"), "model.fc.weight has shape [3, 5]"),
    "a tensor missing": (_drop("fc.bias"), "model lacks the tensor 'fc.bias'"),
    "a newer version": (_set("version", 99), "written by a newer attend"),
    "metrics not a dict": (_set("metrics", [1, 2]), "metrics is a list"),
}


@pytest.mark.parametrize("case", list(CAPTIONER_CASES))
def test_crafted_captioner_checkpoints_are_refused_naming_the_field(tiny_captioner, tmp_path, case):
    change, message = CAPTIONER_CASES[case]
    path = _craft(tiny_captioner, tmp_path / "crafted.pt", change)
    with pytest.raises(AttendError) as info:
        load_captioner(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text, text


def test_attend_caption_refuses_a_million_pixel_image_size_at_once(tiny_captioner, scenes_dir, tmp_path, capsys):
    path = _craft(tiny_captioner, tmp_path / "huge.pt", _set("encoder", "image_size", 10**6))
    with pytest.raises(AttendError, match="encoder.image_size"):
        Captioner.load(path)  # before the encoder, before any image is resized
    code = main(["caption", str(scenes_dir / "images" / "train" / "000000000000.png"), "--checkpoint", str(path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "encoder.image_size is 1000000" in lines[0], err
    assert "multiple of 32, from 32 to 2048" in lines[0]


@pytest.mark.parametrize(
    "change, message",
    [
        (_set("config", "grid", [14, 14]), "config.grid is [14, 14], its 224 px features give [7, 7]"),
        (
            _set("encoder", "mid_level", True),
            "config.encoder_dim is 1280, efficientnet-lite0-224-mid features have 1360",
        ),
    ],
)
def test_evaluate_refuses_a_model_that_does_not_fit_its_features(
    tiny_captioner, scenes_dir, tmp_path, capsys, change, message
):
    path = _craft(tiny_captioner, tmp_path / "crafted.pt", change)
    code = main(["evaluate", "captioner", "--checkpoint", str(path), "--data", str(scenes_dir), "--split", "val"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and message in lines[0], lines


def _shrink_answers(state: dict) -> None:
    state["answers"] = state["answers"][:5]


def _duplicate_word(state: dict) -> None:
    itos = state["question_vocab"]["itos"]
    itos[-1] = itos[-2]


VQA_CASES = {
    "image size 10**6": (_set("encoder", "image_size", 10**6), "encoder.image_size is 1000000"),
    "num_answers a string": (_set("config", "num_answers", "17"), "config.num_answers is '17'"),
    "glimpses zero": (_set("config", "glimpses", 0), "config.glimpses is 0"),
    "evidence not a bool": (_set("config", "evidence", "no"), "config.evidence is 'no'"),
    "answer list shorter than the config": (_shrink_answers, "answers holds 5 entries, the model's config says 17"),
    "duplicate question word": (_duplicate_word, "question_vocab.itos holds duplicate entries"),
    "unknown metric": (_set("metric", "bleu"), "metric is 'bleu'"),
    "a NaN weight": (_poison("classifier.4.weight", math.nan), "weights are not finite (model.classifier.4.weight"),
    "a tensor of the wrong shape": (_reshape("image_proj.weight"), "model.image_proj.weight has shape [3, 5]"),
}


@pytest.mark.parametrize("case", list(VQA_CASES))
def test_crafted_vqa_checkpoints_are_refused_naming_the_field(tmp_path, case):
    change, message = VQA_CASES[case]
    path = _craft(VQA_SHIPPED["scenes"], tmp_path / "crafted.pt", change)
    with pytest.raises(AttendError) as info:
        load_vqa(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text, text


def test_attend_ask_refuses_a_crafted_checkpoint_in_one_line(scenes_dir, tmp_path, capsys):
    path = _craft(VQA_SHIPPED["scenes"], tmp_path / "nan.pt", _poison("lstm.weight_hh_l0", math.nan))
    image = scenes_dir / "images" / "train" / "000000000000.png"
    code = main(["ask", str(image), "what colour is the circle?", "--checkpoint", str(path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "weights are not finite" in lines[0], lines


def test_the_shipped_checkpoints_pass_every_check():
    from captioner.checkpoint import SHIPPED as CAPTIONER_SHIPPED

    load_captioner(CAPTIONER_SHIPPED["scenes"])
    for path in VQA_SHIPPED.values():
        load_vqa(path)


def test_export_refuses_weights_that_are_not_finite_or_beyond_float16(tiny_captioner, tmp_path):
    nan = _craft(tiny_captioner, tmp_path / "nan.pt", _poison("fc.weight", math.nan))
    with pytest.raises(AttendError, match="weights are not finite"):
        export_checkpoint(nan, tmp_path / "out.pt", "captioner")
    big = _craft(tiny_captioner, tmp_path / "big.pt", _poison("fc.weight", 1e6))
    with pytest.raises(AttendError, match="beyond float16"):
        export_checkpoint(big, tmp_path / "out.pt", "captioner")
    assert not (tmp_path / "out.pt").exists()
