"""VQA v2 (official question and annotation files) -> DIR/vqa.json + DIR/images.json.

The answer classifier predicts one of the ``top_k`` most frequent answers of the train
split (3,000 in Kazemi & Elqursh 2017). Each question's training target is the soft
score of every candidate: its official VQA accuracy against the 10 human answers
(``vqa.metrics``), kept where it is above 0. Training on these scores optimises the
metric the model is judged by.

VQA v1's multiple-choice questions files (``MultipleChoice_mscoco_*_questions.json``,
task_type "Multiple-Choice") give every question ``multiple_choices``: 18 candidate answers,
one of them right. Where a question has them they are kept, as given, in its record's
``choices`` (``attend evaluate vqa --multiple-choice`` ranks them); records of questions
without them have no ``choices`` key, so prepared folders from before stay valid.
v1's annotation files have the same fields as v2's.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from core.answers import normalize_answer, soft_scores
from core.errors import AttendError
from core.prepared import VQA, add_images, read_json, write_prepared
from core.vocab import Vocab, tokenize

QUESTION_FILE_KEYS = ("info", "task_type", "data_type", "data_subtype", "questions")
QUESTION_KEYS = ("image_id", "question", "question_id")
ANNOTATION_KEYS = ("question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers")
N_HUMAN_ANSWERS = 10
# test-dev is a subset of the test images: its questions file says "test-dev2015" but the
# images are named COCO_test2015_*.jpg and lie in test2015/.
IMAGE_SUBTYPE = {"test-dev2015": "test2015"}


def _read_questions(path: Path) -> tuple[str, list[dict]]:
    """(data_subtype, questions) of an official questions file, validated."""
    data = read_json(path, "VQA questions file")
    if not isinstance(data, dict) or any(k not in data for k in QUESTION_FILE_KEYS):
        raise AttendError(f"{path}: not a VQA questions file (expected keys {', '.join(QUESTION_FILE_KEYS)})")
    questions = data["questions"]
    if not isinstance(questions, list) or not all(
        isinstance(q, dict) and all(k in q for k in QUESTION_KEYS) for q in questions
    ):
        raise AttendError(f"{path}: every question needs {', '.join(QUESTION_KEYS)}")
    for q in questions:
        choices = q.get("multiple_choices")
        if choices is not None and (
            not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices)
        ):
            raise AttendError(
                f"{path}: question {q['question_id']}: 'multiple_choices' must be a non-empty list of answers"
            )
    return str(data["data_subtype"]), questions


def _read_annotations(path: Path, data_subtype: str) -> dict[int, dict]:
    """question_id -> annotation of an official annotations file, validated."""
    data = read_json(path, "VQA annotations file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise AttendError(f"{path}: not a VQA annotations file (expected an 'annotations' list)")
    if "data_subtype" in data and str(data["data_subtype"]) != data_subtype:
        raise AttendError(
            f"{path}: annotations are for {data['data_subtype']!r} but the questions are for {data_subtype!r}"
        )
    by_id = {}
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or any(k not in ann for k in ANNOTATION_KEYS):
            raise AttendError(f"{path}: annotation #{n} lacks one of {', '.join(ANNOTATION_KEYS)}")
        answers = ann["answers"]
        if (
            not isinstance(answers, list)
            or len(answers) != N_HUMAN_ANSWERS
            or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)
        ):
            raise AttendError(
                f"{path}: annotation #{n} (question {ann['question_id']}) needs "
                f"{N_HUMAN_ANSWERS} answers, each with an 'answer'"
            )
        by_id[int(ann["question_id"])] = ann
    return by_id


def prepare_vqa(
    out_dir: str | os.PathLike,
    splits: dict[str, tuple[Path, Path | None, Path]],
    top_k: int = 3000,
    min_count: int = 1,
    image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg",
    source: str = "vqa-v2",
) -> dict:
    """Prepare VQA v2 from its official files.

    ``splits`` maps a split name to ``(questions json, annotations json or None, image
    folder)``; annotations are None for test-dev/test, whose records then have no
    answers, no targets and empty ``answer_type``/``question_type``. A "train" split with
    annotations is required: it defines the answer list (the ``top_k`` most frequent
    normalized ``multiple_choice_answer``s, ties alphabetical) and the question
    vocabulary (words seen at least ``min_count`` times).

    Image file = ``image_pattern.format(data_subtype=..., image_id=...)`` with the
    questions file's data_subtype; KEY = ``"<image folder name>/<file>"``.
    Returns a summary: questions and images per split, answer and vocabulary sizes, and
    how many train questions have a target among the kept answers.
    """
    loaded: dict[str, tuple[list[dict], dict[int, dict] | None, str, Path]] = {}
    for split, (q_path, a_path, image_folder) in splits.items():
        q_path, image_folder = Path(q_path), Path(image_folder)
        data_subtype, questions = _read_questions(q_path)
        if not questions:
            raise AttendError(f"{q_path}: split {split!r} has no questions")
        annotations = None
        if a_path is not None:
            a_path = Path(a_path)
            annotations = _read_annotations(a_path, data_subtype)
            q_ids = {int(q["question_id"]) for q in questions}
            if q_ids != set(annotations):
                missing, extra = len(q_ids - set(annotations)), len(set(annotations) - q_ids)
                raise AttendError(
                    f"{a_path}: annotations do not match {q_path.name} "
                    f"({missing} questions without an annotation, "
                    f"{extra} annotations without a question)"
                )
        if not image_folder.is_dir():
            raise AttendError(f"{image_folder}: image folder for split {split!r} not found")
        loaded[split] = (questions, annotations, IMAGE_SUBTYPE.get(data_subtype, data_subtype), image_folder)

    if "train" not in loaded or loaded["train"][1] is None:
        raise AttendError(
            "a 'train' split with annotations is needed to choose the answers and build the question vocabulary"
        )
    train_questions, train_annotations, _, _ = loaded["train"]

    # The answer list: most frequent normalized multiple-choice answers, ties alphabetical.
    counts = Counter(normalize_answer(a["multiple_choice_answer"]) for a in train_annotations.values())
    counts.pop("", None)  # e.g. an answer that was only an article: nothing to predict
    answers = sorted(counts, key=lambda a: (-counts[a], a))[:top_k]
    # Candidates by the form a prediction is compared in (answers are already normalized,
    # so this is nearly always the identity; kept general so scores equal vqa_accuracy).
    by_form: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        by_form.setdefault(normalize_answer(a), []).append(i)

    question_vocab = Vocab.build((tokenize(q["question"]) for q in train_questions), min_count)

    out: dict[str, list[dict]] = {}
    images: dict[str, Path] = {}
    for split, (questions, annotations, subtype, image_folder) in loaded.items():
        records = []
        for q in questions:
            qid, image_id = int(q["question_id"]), int(q["image_id"])
            try:
                file_name = image_pattern.format(data_subtype=subtype, image_id=image_id)
            except (KeyError, IndexError, ValueError) as e:
                raise AttendError(
                    f"image pattern {image_pattern!r} is not usable: it may name "
                    f"only {{data_subtype}} and {{image_id}} ({e!r})"
                ) from None
            key = f"{image_folder.name}/{file_name}"
            if key not in images:  # several questions per image
                images[key] = image_folder / file_name
            record = {
                "question_id": qid,
                "image_id": image_id,
                "image": key,
                "question": q["question"],
                "tokens": tokenize(q["question"]),
                "answers": [],
                "targets": [],
                "answer_type": "",
                "question_type": "",
            }
            if q.get("multiple_choices") is not None:  # VQA v1's multiple-choice candidates
                record["choices"] = list(q["multiple_choices"])
            if annotations is not None:
                ann = annotations[qid]
                human = [a["answer"] for a in ann["answers"]]
                scores = soft_scores(human)
                record["answers"] = human
                record["targets"] = sorted([i, s] for form, s in scores.items() for i in by_form.get(form, ()))
                record["answer_type"] = str(ann["answer_type"])
                record["question_type"] = str(ann["question_type"])
            records.append(record)
        out[split] = records

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_prepared(
        out_dir,
        VQA,
        {
            "source": source,
            "metric": "vqa",
            "question_vocab": question_vocab.to_dict(),
            "answers": answers,
            "splits": out,
        },
    )
    add_images(out_dir, images)
    train, kept = out["train"], set(answers)
    return {
        "source": source,
        "questions": {s: len(r) for s, r in out.items()},
        "images": {s: len({x["image"] for x in r}) for s, r in out.items()},
        "answers": len(answers),
        "question_vocab_size": len(question_vocab),
        "train_questions_with_target": sum(bool(r["targets"]) for r in train),
        "questions_with_choices": {s: sum("choices" in x for x in r) for s, r in out.items()},
        "train_answer_coverage": round(
            sum(normalize_answer(train_annotations[r["question_id"]]["multiple_choice_answer"]) in kept for r in train)
            / len(train),
            4,
        ),
    }
