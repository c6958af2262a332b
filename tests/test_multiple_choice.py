"""Multiple-choice VQA (issue #17): ranking candidates by the model's answer scores, the
command line, the data (VQA v1's ``multiple_choices``, the scenes' and easy-VQA's
candidates) and ``attend evaluate vqa --multiple-choice``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apps import app_logic as logic
from core.answers import normalize_answer, vqa_accuracy
from core.checkpoint import save_checkpoint
from core.encoder import EncoderConfig
from core.errors import AttendError
from core.features import write_features
from core.prepared import VQA, read_prepared
from core.training import TrainConfig
from core.vocab import SPECIALS, Vocab
from data_prep import easy_vqa
from data_prep.scenes.generate import NUM_CHOICES, POPULAR_ANSWERS, generate_scenes, make_scene, question_choices
from vqa.checkpoint import load_vqa
from vqa.choices import ChoiceError, answer_forms, check_choices, rank_choices
from vqa.data import pad_questions, question_ids
from vqa.inference import Answerer, ask_file, read_question_items
from vqa.model import VQAConfig, VQANet
from vqa.train import train_vqa

from cli_helpers import cli_error, quiet, run_cli

ANSWERS = ["yes", "no", "red", "blue", "circle", "2", "dog"]
QUESTION_WORDS = ["what", "colour", "is", "the", "circle", "how", "many", "dogs", "are", "there"]


# ---------------------------------------------------------------- ranking


def _independent_choice(logits: torch.Tensor, answers: list[str], choices: list[str]) -> tuple[str | None, list]:
    """The reference: softmax over all answers, each candidate's probability by a plain scan
    of the answer list for its normalised form, argmax over the scorable candidates."""
    probs = torch.softmax(logits.double(), dim=0)
    scored = []
    for choice in choices:
        matching = [k for k, a in enumerate(answers) if normalize_answer(a) == normalize_answer(choice)]
        if matching:
            scored.append((choice, float(sum(probs[k] for k in matching))))
    if not scored:
        return None, []
    best = max(range(len(scored)), key=lambda i: (scored[i][1], -i))
    return scored[best][0], scored


def test_ranking_is_the_argmax_of_the_candidates_probabilities():
    generator = torch.Generator().manual_seed(0)
    forms = answer_forms(ANSWERS)
    choices = ["Two", "a dog", "red", "the cat", "no"]
    for _ in range(50):
        logits = torch.randn(len(ANSWERS), generator=generator) * 3
        ranked = rank_choices(torch.softmax(logits, 0), forms, choices)
        expected, scored = _independent_choice(logits, ANSWERS, choices)
        assert ranked["choice"] == expected
        assert ranked["unscorable"] == ["the cat"]
        by_choice = dict(scored)
        assert [r["rank"] for r in ranked["ranked"]] == [1, 2, 3, 4]
        for r in ranked["ranked"]:
            assert r["probability"] == pytest.approx(by_choice[r["choice"]], abs=5e-5)
        probabilities = [r["probability"] for r in ranked["ranked"]]
        assert probabilities == sorted(probabilities, reverse=True)


def test_normalisation_maps_choices_to_the_models_answers():
    forms = answer_forms(ANSWERS)
    probs = torch.zeros(len(ANSWERS))
    probs[ANSWERS.index("2")] = 0.6
    probs[ANSWERS.index("dog")] = 0.3
    probs[ANSWERS.index("yes")] = 0.1
    ranked = rank_choices(probs, forms, ["a dog", "Two", "the cat", "Yes."])
    assert ranked["choice"] == "Two"
    assert [(r["choice"], r["form"], r["probability"]) for r in ranked["ranked"]] == [
        ("Two", "2", 0.6),
        ("a dog", "dog", 0.3),
        ("Yes.", "yes", 0.1),
    ]
    assert ranked["unscorable"] == ["the cat"] and "note" not in ranked
    # The same forms the official metric compares: "Two" scores as "2" against varied humans.
    assert vqa_accuracy("Two", ["2"] * 5 + ["3"] * 5) == vqa_accuracy("2", ["2"] * 5 + ["3"] * 5) == 1.0


def test_no_scorable_candidate_means_no_answer_chosen():
    ranked = rank_choices(torch.full((len(ANSWERS),), 1 / len(ANSWERS)), answer_forms(ANSWERS), ["a cat", "purple"])
    assert ranked["choice"] is None and ranked["ranked"] == []
    assert ranked["unscorable"] == ["a cat", "purple"]
    assert "no answer chosen" in ranked["note"] and "none of the 2 candidates" in ranked["note"]


@pytest.mark.parametrize(
    "choices, message",
    [
        (["red"], "at least 2"),
        ([], "at least 2"),
        (["red", "  "], "candidate 2 is empty"),
        (["red", "the"], "candidate 2 ('the') is empty"),
        (["Two", "2"], "'Two' and '2' are the same answer once normalised ('2')"),
        (["a dog", "dog"], "same answer once normalised ('dog')"),
        (["x"] * 101, "too many"),
        ("red", "list of strings"),
    ],
)
def test_bad_choices_are_one_line_errors(choices, message):
    with pytest.raises(ChoiceError, match=None) as info:
        check_choices(choices)
    assert isinstance(info.value, AttendError) and message in str(info.value) and "\n" not in str(info.value)


def test_check_choices_keeps_order_and_cleans_ends():
    assert check_choices([" a bald eagle\n", "a sparrow"]) == ["a bald eagle", "a sparrow"]


# ---------------------------------------------------------------- the Answerer on a tiny model


def write_tiny_vqa(path: Path, image_size: int = 64) -> Path:
    """A random-weight VQA checkpoint in the shipped format (64 px, a 2x2 grid)."""
    torch.manual_seed(0)
    vocab = Vocab([*SPECIALS, *QUESTION_WORDS])
    config = VQAConfig(
        question_vocab_size=len(vocab),
        num_answers=len(ANSWERS),
        grid=[image_size // 32] * 2,
        embed_dim=8,
        hidden_dim=16,
        attention_dim=8,
        classifier_dim=16,
    )
    save_checkpoint(
        path,
        {
            "kind": "vqa",
            "config": asdict(config),
            "model": VQANet(config).state_dict(),
            "question_vocab": vocab.to_dict(),
            "answers": ANSWERS,
            "encoder": asdict(EncoderConfig(image_size=image_size)),
            "metric": "exact",
            "version": 1,
        },
    )
    return path


@pytest.fixture(scope="module")
def tiny_vqa(tmp_path_factory) -> Path:
    return write_tiny_vqa(tmp_path_factory.mktemp("mc_model") / "vqa.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("mc_images")
    paths = []
    for index in range(3):
        _, pixels, _, _ = make_scene(4242, "test", index)
        paths.append(folder / f"scene{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_answerer_ranks_by_its_own_logits(tiny_vqa, one_thread):
    answerer = Answerer.load(tiny_vqa)
    torch.manual_seed(1)
    features = torch.randn(4, 4, answerer.net.config.encoder_dim)  # (N, P, D)
    questions = ["what colour is the circle", "how many dogs are there", "is the circle red", "what is there"]
    tokens = [q.split() for q in questions]
    choices = [["Two", "a dog", "the circle", "blue"], ["yes", "no"], None, ["no", "yes", "the cat"]]
    results = answerer.answer_features(features, tokens, top_k=3, choices=choices)
    # The reference: the network run directly, softmax, argmax over the candidates.
    ids = pad_questions([torch.tensor(question_ids(t, answerer.vocab)) for t in tokens])  # (B, T)
    with torch.no_grad():
        logits, _ = answerer.net(features, ids)  # (B, K)
    for b, result in enumerate(results):
        if choices[b] is None:
            assert "multiple_choice" not in result
            continue
        expected, _ = _independent_choice(logits[b], ANSWERS, choices[b])
        assert result["multiple_choice"]["choice"] == expected
        assert result["answer"] == ANSWERS[int(logits[b].argmax())]  # the open-ended answer is unchanged
    assert results[3]["multiple_choice"]["unscorable"] == ["the cat"]


def test_ask_without_choices_is_unchanged_and_bad_choices_fail_one_question(tiny_vqa, images, one_thread):
    answerer = Answerer.load(tiny_vqa)
    plain = answerer.ask([images[0], images[1]], ["what colour is the circle", "how many dogs"], top_k=2)
    assert all("multiple_choice" not in r for r in plain)
    mixed = answerer.ask(
        [images[0], images[1], images[1]],
        ["what colour is the circle", "how many dogs", "how many dogs"],
        top_k=2,
        choices=[None, ["2", "Two"], ["2", "3", "yes"]],
    )
    assert mixed[0] == plain[0]
    assert "same answer once normalised" in mixed[1]["error"]
    assert mixed[2]["multiple_choice"]["unscorable"] == ["3"]
    with pytest.raises(ChoiceError, match="at least 2"):
        answerer.ask_one(images[0], "what colour is the circle", choices=["red"])


# ---------------------------------------------------------------- the command line


def test_cli_choices_json_and_text(tiny_vqa, images, capsys, one_thread):
    image = images[0]
    args = ["ask", image, "what colour is the circle?", "--checkpoint", tiny_vqa]
    code, out, err = run_cli(capsys, *args, "--json", "--choices", "Two", "a dog", "a bald eagle", "yes")
    assert code == 0, err
    result = json.loads(out)
    expected = Answerer.load(tiny_vqa).ask_one(
        image, "what colour is the circle?", choices=["Two", "a dog", "a bald eagle", "yes"]
    )
    assert result["multiple_choice"] == json.loads(json.dumps(expected["multiple_choice"]))
    mc = result["multiple_choice"]
    assert mc["unscorable"] == ["a bald eagle"] and [r["rank"] for r in mc["ranked"]] == [1, 2, 3]
    assert mc["choice"] == mc["ranked"][0]["choice"]

    code, out, err = run_cli(capsys, *args, "--choices", "Two", "a dog", "a bald eagle")
    assert code == 0, err
    lines = out.splitlines()
    expected = Answerer.load(tiny_vqa).ask_one(
        image, "what colour is the circle?", choices=["Two", "a dog", "a bald eagle"]
    )
    ranked = expected["multiple_choice"]["ranked"]
    assert lines[0] == f"{ranked[0]['choice']}  (chosen of 3 candidates)"
    assert lines[1:3] == [f"  {r['rank']:2d}. {r['probability']:6.1%}  {r['choice']}" for r in ranked]
    assert any(line.startswith("not among the model's answers") and "a bald eagle" in line for line in lines)
    assert any(line.startswith("open-ended answer: ") for line in lines)

    code, out, err = run_cli(capsys, *args, "--choices", "a cat", "a bald eagle")
    assert code == 0, err
    assert out.splitlines()[0].startswith("no answer chosen: none of the 2 candidates")


@pytest.mark.parametrize(
    "choices, message",
    [
        (["red"], "at least 2 candidate answers"),
        (["red", ""], "candidate 2 is empty"),
        (["Two", "2"], "same answer once normalised"),
        (["a dog", "dog", "cat"], "same answer once normalised"),
    ],
)
def test_cli_bad_choices_are_one_line_errors(tiny_vqa, images, capsys, choices, message):
    line = cli_error(
        capsys, "ask", images[0], "what colour is the circle?", "--checkpoint", tiny_vqa, "--choices", *choices
    )
    assert message in line


def test_cli_choices_before_the_image_is_an_error(tiny_vqa, images, capsys):
    line = cli_error(capsys, "ask", "--choices", "red", "blue", images[0], "what colour?", "--checkpoint", tiny_vqa)
    assert "give IMAGE and QUESTION before --choices" in line


def test_cli_choices_with_a_questions_file_is_an_error(tiny_vqa, tmp_path, capsys):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text("")
    assert "--choices goes with IMAGE QUESTION" in cli_error(
        capsys, "ask", "--questions", jsonl, "--checkpoint", tiny_vqa, "--choices", "a", "b"
    )


def test_cli_jsonl_choices(tiny_vqa, images, tmp_path, capsys, one_thread):
    lines = [
        {"image": str(images[0]), "question": "what colour is the circle?", "choices": ["red", "blue", "a cat"]},
        {"image": str(images[1]), "question": "how many dogs are there?"},
        {"image": str(images[1]), "question": "how many dogs are there?", "choices": ["2", "two"]},
        {"image": str(images[2]), "question": "is the circle red?", "choices": "yes"},
        {"image": str(images[2]), "question": "is the circle red?", "choices": ["yes", "no"]},
    ]
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert [item[3] for item in read_question_items(jsonl)] == [
        ["red", "blue", "a cat"],
        None,
        ["2", "two"],
        None,
        ["yes", "no"],
    ]
    # --allow-unknown: the tiny model does not know "red", and the choices are the point here
    code, out, err = run_cli(capsys, "ask", "--questions", jsonl, "--checkpoint", tiny_vqa, "--allow-unknown")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["multiple_choice"]["unscorable"] == ["a cat"]
    assert {r["choice"] for r in results[0]["multiple_choice"]["ranked"]} == {"red", "blue"}
    assert "multiple_choice" not in results[1] and "answer" in results[1]
    assert "same answer once normalised" in results[2]["error"]
    assert results[3] == {"line": 4, "error": 'line 4: "choices" must be a list of candidate answers (strings)'}
    assert results[4]["multiple_choice"]["choice"] in ("yes", "no")
    # The same through the library, one line at a time.
    answerer = Answerer.load(tiny_vqa, allow_unknown=True)
    assert json.loads(json.dumps(list(ask_file(answerer, jsonl, batch_lines=1)))) == results


def test_ask_help_has_choices_default_and_example(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "ask", "--help")
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert "--choices ANSWER [ANSWER ...]" in text
    assert "default: none, open-ended" in text and '--choices "a bald eagle" "a sparrow"' in text


# ---------------------------------------------------------------- VQA v1 multiple choice, end to end

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 170, 60)}
FILLERS = [
    "cat",
    "dog",
    "tree",
    "1",
    "2",
    "3",
    "frisbee",
    "pizza",
    "white",
    "black",
    "tennis",
    "left",
    "right",
    "up",
    "down",
]


def _write_v1_split(root: Path, subtype: str, n_images: int, start_qid: int) -> tuple[Path, Path, Path]:
    """VQA v1 multiple-choice files (``MultipleChoice_mscoco_*_questions.json``, task_type
    "Multiple-Choice", 18 ``multiple_choices``; ``mscoco_*_annotations.json``) for one-colour images."""
    folder = root / subtype
    folder.mkdir(parents=True)
    names = list(COLOURS)
    questions, annotations = [], []
    qid = start_qid
    for image_id in range(1, n_images + 1):
        colour = names[image_id % len(names)]
        Image.new("RGB", (40, 30), COLOURS[colour]).save(folder / f"COCO_{subtype}_{image_id:012d}.jpg")
        for text, answer, qtype, atype, choices in [
            ("What color is the picture?", colour, "what color is the", "other", [*names, *FILLERS]),
            (
                "Is the picture red?",
                "yes" if colour == "red" else "no",
                "is the",
                "yes/no",
                ["yes", "no", "red", *FILLERS],
            ),
        ]:
            questions.append(
                {"question_id": qid, "image_id": image_id, "question": text, "multiple_choices": choices[:18]}
            )
            human = [answer] * 8 + ["maybe", "dunno"]
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
    info = {"description": "fixture", "version": "1.0", "year": 2015}
    licence = {"name": "fixture", "url": ""}
    q_path = root / f"MultipleChoice_mscoco_{subtype}_questions.json"
    q_path.write_text(
        json.dumps(
            {
                "info": info,
                "task_type": "Multiple-Choice",
                "data_type": "mscoco",
                "license": licence,
                "data_subtype": subtype,
                "num_choices": 18,
                "questions": questions,
            }
        )
    )
    a_path = root / f"mscoco_{subtype}_annotations.json"
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


def test_vqa_v1_multiple_choice_prepare_train_evaluate(tmp_path, capsys, one_thread):
    raw, data = tmp_path / "raw", tmp_path / "data"
    train = _write_v1_split(raw, "train2014", 9, 100)
    val = _write_v1_split(raw, "val2014", 3, 500)
    # Val: question 500 loses its candidates (skipped for MC); question 502 gets none the model knows.
    questions = json.loads(val[0].read_text())
    del questions["questions"][0]["multiple_choices"]
    questions["questions"][2]["multiple_choices"] = FILLERS[:6]
    val[0].write_text(json.dumps(questions))

    splits = [f"{name}={q}:{a}:{img}" for name, (q, a, img) in (("train", train), ("val", val))]
    code, out, err = run_cli(capsys, "prepare", "vqa", "--out", data, "--top-k", "10", "--split", *splits)
    assert code == 0, err
    assert json.loads(out)["questions_with_choices"] == {"train": 18, "val": 5}
    prepared = read_prepared(data, VQA)
    records = {r["question_id"]: r for r in prepared["splits"]["val"]}
    assert "choices" not in records[500] and records[501]["choices"] == ["yes", "no", "red", *FILLERS[:15]]
    assert len(records[503]["choices"]) == 18

    encoder = EncoderConfig(image_size=64)
    write_features(data, encoder, batch_size=8, workers=0, compile=False, progress=False, log=quiet)
    run = tmp_path / "run"
    model = {"hidden_dim": 16, "embed_dim": 8, "attention_dim": 8, "classifier_dim": 16}
    train_config = TrainConfig(out_dir=str(run), epochs=1, batch_size=8, warmup_steps=1)
    train_vqa(data, run, model, train_config, encoder=encoder, device="cpu", log=quiet)

    # The trained model, made to prefer "yes" > "red" > "no" > "blue" > "green" whatever it sees:
    # its choices are then known by hand.
    net, _, answers, _, _ = load_vqa(run / "best.pt")
    state = torch.load(run / "best.pt", weights_only=True)
    last = net.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        for score, answer in zip((5, 4, 3, 2, 1), ("yes", "red", "no", "blue", "green")):
            last.bias[answers.index(answer)] = score
    state["model"] = net.state_dict()
    fixed = tmp_path / "fixed.pt"
    save_checkpoint(fixed, state)

    code, out, err = run_cli(
        capsys, "evaluate", "vqa", "--checkpoint", fixed, "--data", data, "--split", "val",
        "--multiple-choice", "--out", tmp_path / "eval", "--device", "cpu", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    # Val images 1, 2, 3 are blue, green, red. Open-ended: always "yes", right only for
    # "Is the picture red?" of image 3: 1 of 6 questions.
    assert result["accuracy"] == round(100 / 6, 2)
    mc = result["multiple_choice"]
    # MC: q500 skipped (no candidates); q501 (blue, red?) picks "yes": 0; q502 nothing scorable: 0;
    # q503 (green, red?) "yes": 0; q504 (red, colour) picks "red": 1; q505 (red, red?) "yes": 1.
    assert mc["skipped_no_choices"] == 1 and mc["questions_with_choices"] == 5
    assert mc["no_scorable_choice"] == 1 and mc["scored"] == 5
    assert mc["accuracy"] == 40.0
    assert mc["per_answer_type"] == {"other": 50.0, "yes/no": round(100 / 3, 2)}
    # A uniform pick: 1/18 right of each 18-candidate question, 0 for q502.
    assert mc["random_choice_accuracy"] == round(100 * (4 / 18) / 5, 2)
    picked = json.loads((tmp_path / "eval" / "vqa_val_mc_results.json").read_text())
    assert picked == [
        {"question_id": 501, "answer": "yes"},
        {"question_id": 503, "answer": "yes"},
        {"question_id": 504, "answer": "red"},
        {"question_id": 505, "answer": "yes"},
    ]
    metrics = json.loads((tmp_path / "eval" / "metrics_val.json").read_text())
    assert metrics["multiple_choice"]["accuracy"] == 40.0

    # Without the flag the result is the open-ended one only, and old prepared data (no
    # choices at all) still evaluates, with every question skipped for MC.
    code, out, _ = run_cli(capsys, "evaluate", "vqa", "--checkpoint", fixed, "--data", data, "--split", "val", "--json")
    assert code == 0 and "multiple_choice" not in json.loads(out)
    for r in prepared["splits"]["val"]:
        r.pop("choices", None)
    (data / "vqa.json").write_text(json.dumps(prepared))
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "vqa",
        "--checkpoint",
        fixed,
        "--data",
        data,
        "--split",
        "val",
        "--multiple-choice",
        "--json",
    )
    assert code == 0
    mc = json.loads(out)["multiple_choice"]
    assert mc["skipped_no_choices"] == 6 and mc["scored"] == 0 and mc["accuracy"] is None


@pytest.mark.parametrize("bad", ["red", [], ["red", 3], None])
def test_vqa_v1_bad_multiple_choices_are_one_line_errors(tmp_path, bad):
    from data_prep.vqa_v2 import prepare_vqa

    q_path, a_path, images = _write_v1_split(tmp_path / "raw", "train2014", 2, 100)
    questions = json.loads(q_path.read_text())
    questions["questions"][1]["multiple_choices"] = bad
    q_path.write_text(json.dumps(questions))
    if bad is None:  # null: the same as absent
        prepare_vqa(tmp_path / "data", {"train": (q_path, a_path, images)})
        assert "choices" not in read_prepared(tmp_path / "data", VQA)["splits"]["train"][1]
        return
    with pytest.raises(AttendError, match="question 101: 'multiple_choices' must be a non-empty list of answers"):
        prepare_vqa(tmp_path / "data", {"train": (q_path, a_path, images)})


# ---------------------------------------------------------------- the generated data

SEED, COUNTS = 3, {"train": 5, "val": 2, "test": 3}
# Taken with the generator as it was before multiple choice (git be49ebb): every image's
# pixels and every JSON file (with the new "multiple_choices"/"choices" fields removed) of
# generate_scenes(seed=3, counts=COUNTS, prepare=True). The candidates must change nothing else.
BEFORE_CHOICES = "e2e45b00bf7130821d3c1a94884f96fbaa4b0cb3cc489dee122ca5c22def8275"


def _strip_choices(obj):
    if isinstance(obj, dict):
        return {k: _strip_choices(v) for k, v in obj.items() if k not in ("multiple_choices", "choices")}
    if isinstance(obj, list):
        return [_strip_choices(v) for v in obj]
    return obj


def _fingerprint(folder: Path) -> str:
    parts = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.suffix == ".png":
            parts[name] = hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()[:16]
        elif path.suffix == ".json":
            data = _strip_choices(json.loads(path.read_text()))
            parts[name] = hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def test_scenes_have_18_candidates_and_nothing_else_changed(tmp_path):
    generate_scenes(tmp_path, seed=SEED, counts=COUNTS, workers=1, prepare=True)
    assert _fingerprint(tmp_path) == BEFORE_CHOICES
    prepared = read_prepared(tmp_path, VQA)
    n_questions = 0
    for split in COUNTS:
        questions = json.loads((tmp_path / "raw" / f"questions_{split}.json").read_text())["questions"]
        annotations = json.loads((tmp_path / "raw" / f"annotations_{split}.json").read_text())["annotations"]
        records = {r["question_id"]: r for r in prepared["splits"][split]}
        for q, a in zip(questions, annotations):
            choices, answer = q["multiple_choices"], a["multiple_choice_answer"]
            assert len(choices) == NUM_CHOICES == 18
            assert choices.count(answer) == 1
            assert len({normalize_answer(c) for c in choices}) == 18  # no duplicates, even once normalised
            assert set(POPULAR_ANSWERS) <= set(choices)
            assert records[q["question_id"]]["choices"] == choices  # prepared as given
            n_questions += 1
    assert n_questions > 50
    # A function of (seed, split, index) and the answers alone; the right answer's place varies.
    last = COUNTS["test"] - 1  # the loop ended on the test split: compare its last scene
    _, _, _, qs = make_scene(SEED, "test", last)
    again = question_choices(SEED, "test", last, [a for _, _, a, _ in qs])
    assert again == question_choices(SEED, "test", last, [a for _, _, a, _ in qs])
    assert again == [q["multiple_choices"] for q in questions if q["image_id"] == questions[-1]["image_id"]]
    places = {c.index(a) for c, (_, _, a, _) in zip(again, qs)}
    assert len(places) > 1


def test_easy_vqa_candidates():
    import easy_vqa as package

    answers = package.get_answers()
    for question_id in range(40):
        for answer in answers:
            choices = easy_vqa.question_choices(answer, answers, question_id)
            assert len(choices) == len(set(choices)) == easy_vqa.NUM_CHOICES == 8
            assert choices.count(answer) == 1 and set(choices) <= set(answers)
            kind = easy_vqa.question_type(answer)
            same_type = {a for a in answers if easy_vqa.question_type(a) == kind}
            assert same_type <= set(choices)  # every answer of its type (8 colours fill the 8)
            assert choices == easy_vqa.question_choices(answer, answers, question_id)
    places = {easy_vqa.question_choices("yes", answers, q).index("yes") for q in range(40)}
    assert len(places) > 3


# ---------------------------------------------------------------- the app


def test_app_logic_choices():
    assert logic.parse_choices(None) == [] and logic.parse_choices(" \n\n") == []
    assert logic.parse_choices(" a bald eagle \n\na sparrow\n") == ["a bald eagle", "a sparrow"]
    mc = {
        "choice": "red",
        "ranked": [
            {"choice": "red", "form": "red", "probability": 0.75, "rank": 1},
            {"choice": "Two", "form": "2", "probability": 0.05, "rank": 2},
        ],
        "unscorable": ["a cat"],
    }
    assert logic.choice_rows(mc) == [("red", 0.75, "1. red: 75.0%"), ("Two", 0.05, "2. Two: 5.0%")]
    assert logic.unscorable_note(mc) == "Not among this model's answers, so not ranked: a cat."
    assert logic.unscorable_note({**mc, "unscorable": []}) is None


def test_app_ranks_choices(tiny_vqa, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from test_app import APP, TIMEOUT, scene_png, write_tiny_checkpoints

    captioner, vqa = write_tiny_checkpoints(tmp_path)
    monkeypatch.setenv(logic.ENV_CAPTIONER, str(captioner))
    monkeypatch.setenv(logic.ENV_VQA, str(vqa))
    threads = torch.get_num_threads()
    try:
        app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        app.run()
        data = scene_png(3)
        app.file_uploader(key="upload").set_value(("scene.png", data, "image/png")).run()
        app.text_input(key="question").set_value("what colour is the circle?")
        app.text_area(key="choices").set_value("red\nblue\na bald eagle\n")  # a form: sent by Ask
        app.button(key="ask").click().run()
        assert not app.exception, app.exception
        expected = Answerer.load(vqa).ask_one(
            data, "what colour is the circle?", top_k=5, choices=["red", "blue", "a bald eagle"]
        )
        mc = expected["multiple_choice"]
        headings = [logic.plain(m.value) for m in app.markdown if m.value.startswith("### ")]
        assert headings[-1] == f"### {mc['choice']}"
        bars = [logic.plain(b.text) for b in app.get("progress")]
        assert bars[:2] == [label for _, _, label in logic.choice_rows(mc)]
        assert len(bars) == 2 + 5  # the candidates, then the open-ended top 5
        captions = [logic.plain(c.value) for c in app.caption]
        assert "Not among this model's answers, so not ranked: a bald eagle." in captions
        assert f"Open-ended answer: {expected['answer']}" in captions

        app.text_area(key="choices").set_value("red\nRed")
        app.button(key="ask").click().run()
        assert any("same answer once normalised" in logic.plain(w.value) for w in app.warning)
    finally:
        torch.set_num_threads(threads)
