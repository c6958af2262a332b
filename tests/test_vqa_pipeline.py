"""The VQA pipeline end to end on a fixture in the official VQA v2 formats, and `attend ask`
on the shipped scenes model."""

import json
from pathlib import Path

import pytest
from PIL import Image

from core.encoder import EncoderConfig
from core.features import write_features
from core.prepared import read_prepared
from core.training import TrainConfig
from data_prep.scenes import make_scene
from data_prep.vqa_v2 import prepare_vqa
from vqa.checkpoint import SHIPPED, load_vqa
from vqa.train import evaluate_vqa, train_vqa

from cli_helpers import run_cli

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 170, 60)}


def _write_split(root: Path, subtype: str, n_images: int, annotated: bool, start_qid: int):
    """Official VQA v2 files for ``n_images`` one-colour images, 2 questions each."""
    folder = root / subtype
    folder.mkdir(parents=True)
    names = list(COLOURS)
    questions, annotations = [], []
    qid = start_qid
    for image_id in range(1, n_images + 1):
        colour = names[image_id % len(names)]
        Image.new("RGB", (40, 30), COLOURS[colour]).save(folder / f"COCO_{subtype}_{image_id:012d}.jpg")
        for text, answer, qtype, atype in [
            ("What color is the picture?", colour, "what color is the", "other"),
            ("Is the picture red?", "yes" if colour == "red" else "no", "is the", "yes/no"),
        ]:
            questions.append({"image_id": image_id, "question": text, "question_id": qid})
            human = [answer] * 8 + ["maybe", "dunno"]  # 8 agree: a soft score of 1
            annotations.append(
                {
                    "question_type": qtype,
                    "multiple_choice_answer": answer,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(human)
                    ],
                    "image_id": image_id,
                    "answer_type": atype,
                    "question_id": qid,
                }
            )
            qid += 1
    info = {"description": "fixture", "version": "2.0", "year": 2017}
    licence = {"name": "fixture", "url": ""}
    q_path = root / f"v2_OpenEnded_mscoco_{subtype}_questions.json"
    q_path.write_text(
        json.dumps(
            {
                "info": info,
                "task_type": "Open-Ended",
                "data_type": "mscoco",
                "license": licence,
                "data_subtype": subtype,
                "questions": questions,
            }
        )
    )
    a_path = None
    if annotated:
        a_path = root / f"v2_mscoco_{subtype}_annotations.json"
        a_path.write_text(
            json.dumps(
                {
                    "info": info,
                    "license": licence,
                    "data_type": "mscoco",
                    "data_subtype": subtype,
                    "annotations": annotations,
                }
            )
        )
    return q_path, a_path, folder


def test_vqa_v2_prepare_features_train_evaluate(tmp_path):
    raw, data = tmp_path / "raw", tmp_path / "data"
    splits = {
        "train": _write_split(raw, "train2014", 9, True, 100),
        "val": _write_split(raw, "val2014", 3, True, 500),
        "test": _write_split(raw, "test2015", 3, False, 900),
    }
    summary = prepare_vqa(data, splits, top_k=10)
    assert summary["questions"] == {"train": 18, "val": 6, "test": 6}
    encoder = EncoderConfig(image_size=64)  # a 2x2 grid: fast
    write_features(data, encoder, batch_size=8, workers=0, compile=False, progress=False, log=lambda m: None)

    run = tmp_path / "run"
    train_vqa(
        data,
        run,
        {"hidden_dim": 16, "embed_dim": 8, "attention_dim": 8, "classifier_dim": 16},
        TrainConfig(out_dir=str(run), epochs=1, batch_size=8, warmup_steps=1),
        encoder=encoder,
        device="cpu",
        export=tmp_path / "small.pt",
        log=lambda m: None,
    )
    assert (run / "best.pt").exists() and (run / "metrics.jsonl").exists() and (run / "metrics.png").exists()
    from core.checkpoint import load_checkpoint
    from core.domain import domain_for

    assert domain_for(run / "best.pt", load_checkpoint(run / "best.pt", "vqa")).images > 0  # recorded by training
    net, vocab, answers, enc, state = load_vqa(tmp_path / "small.pt")
    assert state["kind"] == "vqa" and state["metric"] == "vqa" and enc == encoder
    assert state["model"]["classifier.4.weight"].dtype.is_floating_point
    assert "train" not in state and net.config.grid == [2, 2]

    val = evaluate_vqa(run / "best.pt", data, split="val", out=tmp_path / "eval")
    assert val["answered"] == val["scored"] == 6
    assert 0 <= val["accuracy"] <= 100
    assert set(val["per_answer_type"]) == {"other", "yes/no"}
    assert set(val["per_question_type"]) == {"what color is the", "is the"}
    results = json.loads((tmp_path / "eval" / "vqa_val_results.json").read_text())
    assert sorted(r["question_id"] for r in results) == list(range(500, 506))
    assert all(set(r) == {"question_id", "answer"} and r["answer"] in answers for r in results)

    # The test split has no annotations: skipped in training, still answered here.
    test = evaluate_vqa(run / "best.pt", data, split="test", out=tmp_path / "eval")
    assert test["accuracy"] is None and test["answered"] == 6
    results = json.loads((tmp_path / "eval" / "vqa_test_results.json").read_text())
    test_ids = [q["question_id"] for q in read_prepared(data, "vqa.json")["splits"]["test"]]
    assert sorted(r["question_id"] for r in results) == sorted(test_ids)


# ---------------------------------------------------------------- attend ask on the shipped model

needs_shipped = pytest.mark.skipif(not SHIPPED["scenes"].is_file(), reason="shipped scenes model missing")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A scene of a seed never used for training, with its questions."""
    folder = tmp_path_factory.mktemp("scene")
    picked = []
    for index in range(20):
        objects, pixels, _, questions = make_scene(424242, "test", index)
        path = folder / f"scene{index}.png"
        Image.fromarray(pixels).save(path)
        # Colour and existence questions: what any working model must get right.
        picked += [(str(path), q, a) for qtype, q, a, _ in questions if qtype in ("colour", "existence")]
        if len(picked) >= 5:
            return folder, picked[:5]
    raise AssertionError("not enough questions")


@needs_shipped
def test_ask_answers_scene_questions(scene, capsys):
    _, picked = scene
    right = 0
    for image, question, answer in picked[:2]:
        code, out, _ = run_cli(capsys, "ask", image, question, "--json", "--top-k", "2")
        assert code == 0
        result = json.loads(out)
        assert set(result) >= {"answer", "top_k", "attention", "grid", "unknown_words", "question_tokens"}
        assert len(result["top_k"]) == 2 and result["top_k"][0][0] == result["answer"]
        h, w = result["grid"]
        assert (
            len(result["attention"]) == 2 and len(result["attention"][0]) == h and len(result["attention"][0][0]) == w
        )
        assert sum(map(sum, result["attention"][0])) == pytest.approx(1, abs=1e-2)
        right += result["answer"] == answer
    # The rest through the batch form, with a bad line, a bad question and a bad image mixed in.
    folder, _ = scene
    lines = [json.dumps({"image": img, "question": q}) for img, q, _ in picked[2:]]
    lines += [
        "not json",
        json.dumps({"image": picked[0][0], "question": "   "}),
        json.dumps({"image": str(folder / "missing.png"), "question": "what colour is the circle?"}),
        json.dumps({"image": picked[0][0], "question": "what coulour is the blob"}),
    ]
    jsonl = folder / "questions.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(capsys, "ask", "--questions", str(jsonl))
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == len(lines)
    for (_, _, answer), result in zip(picked[2:], answers):
        right += result["answer"] == answer
    assert right >= 4, f"{right} of 5 right"
    assert "error" in answers[3] and "error" in answers[4] and "empty" in answers[4]["error"]
    assert "no such file" in answers[5]["error"]
    assert answers[6]["unknown_words"] == ["coulour", "blob"] and "answer" in answers[6]


@needs_shipped
@pytest.mark.parametrize(
    "question, message",
    [
        ("", "empty question"),
        ("florp zzyzx?", "unknown words: florp, zzyzx"),
        ("is " * 50, "too long"),
    ],
)
def test_ask_refuses_bad_questions(scene, capsys, question, message):
    _, picked = scene
    code, out, err = run_cli(capsys, "ask", picked[0][0], question)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("attend: error:") and message in err


@needs_shipped
def test_ask_bad_image_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    code, out, err = run_cli(capsys, "ask", str(bad), "what colour is the circle?")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "not an image file" in err
