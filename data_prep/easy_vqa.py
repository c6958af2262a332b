"""easy-VQA (the ``easy-vqa`` PyPI package: 64x64 shape images) -> DIR/vqa.json + images.json.

Splits:

* ``train`` and ``test`` are the package's own splits.
* ``val`` is carved out of the package's train split **by image**: the last 10% of the
  train image ids (ids 3600..3999 of 4000) and all their questions. No val question
  shares an image with a train question, so val measures generalisation to new images,
  as test does.

Every question has one ground-truth answer, so records carry ``answers=[answer]`` and
``targets=[[answer_index, 1.0]]`` and the payload says ``"metric": "exact"`` (exact match,
not the 10-human VQA accuracy). The answer list is the package's 13 answers, in its order.
Images stay inside the installed package; images.json points at them by absolute path.
Image ids restart at 0 in each package split, hence KEY = ``easy-vqa/<split>/<id>.png``
with the package's split (val images keep their ``easy-vqa/train/...`` key).

Multiple choice: easy-VQA has only 13 answers, too few for VQA v1's 18 candidates, so every
question gets ``NUM_CHOICES`` = 8 (``choices``): the right answer, every other answer of
its type (yes/no: 1 more, colour: 7 more, shape: 2 more), then answers of the other types
drawn at random up to 8, in a random order (``question_choices``). The draws are seeded by
the question id alone, so the candidates are the same on every run and machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.errors import AttendError
from core.prepared import VQA, add_images, write_prepared
from core.vocab import Vocab, tokenize

VAL_FRACTION = 0.1
YES_NO = frozenset({"yes", "no"})
COLORS = frozenset({"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"})
SHAPES = frozenset({"circle", "rectangle", "triangle"})
NUM_CHOICES = 8  # candidates per question: all 8 colours fit, so a colour question offers every colour
CHOICE_SEED = 17  # issue #17; with the question id, it seeds each question's candidates


def question_type(answer: str) -> str:
    """ "yes/no", "color" or "shape", from the answer (easy-VQA has no question types)."""
    if answer in YES_NO:
        return "yes/no"
    if answer in COLORS:
        return "color"
    if answer in SHAPES:
        return "shape"
    raise AttendError(f"easy-vqa: unexpected answer {answer!r} (is the package a newer version?)")


def question_choices(answer: str, answers: list[str], question_id: int) -> list[str]:
    """``NUM_CHOICES`` distinct candidates for a question whose right answer is ``answer``:
    ``answer`` and the other answers of its type, then random answers of other types, up to
    ``NUM_CHOICES``; shuffled. A function of (answer, the answer list, question_id) only."""
    rng = np.random.default_rng([CHOICE_SEED, int(question_id)])
    kind = question_type(answer)
    same = [a for a in answers if a != answer and question_type(a) == kind]
    others = [a for a in answers if question_type(a) != kind]
    picked = [answer] + [same[int(i)] for i in rng.permutation(len(same))]
    picked += [others[int(i)] for i in rng.permutation(len(others))]
    picked = picked[:NUM_CHOICES]
    return [picked[int(i)] for i in rng.permutation(len(picked))]


def prepare_easy_vqa(out_dir: str | os.PathLike) -> dict:
    """Prepare easy-VQA from the installed package into ``out_dir``.

    Question ids are the position in the package's question lists, train first then
    test, so they are unique across the prepared set. Returns a summary: questions and
    images per split, answers, question vocabulary size.
    """
    try:
        import easy_vqa
    except ImportError:
        raise AttendError("easy-VQA needs the `easy-vqa` package (pip install easy-vqa)") from None

    answers = easy_vqa.get_answers()
    answer_index = {a: i for i, a in enumerate(answers)}
    package = {
        "train": (easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()),
        "test": (easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()),
    }

    train_ids = sorted(package["train"][1])
    n_val = int(len(train_ids) * VAL_FRACTION)
    val_ids = set(train_ids[len(train_ids) - n_val :])

    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    images: dict[str, str] = {}
    next_qid = 0
    for pkg_split, ((texts, q_answers, image_ids), paths) in package.items():
        for text, answer, image_id in zip(texts, q_answers, image_ids):
            if image_id not in paths:
                raise AttendError(f"easy-vqa: question {text!r} refers to missing {pkg_split} image {image_id}")
            if answer not in answer_index:
                raise AttendError(f"easy-vqa: answer {answer!r} is not in the answer list")
            key = f"easy-vqa/{pkg_split}/{image_id}.png"
            images[key] = paths[image_id]
            split = "val" if pkg_split == "train" and image_id in val_ids else pkg_split
            out[split].append(
                {
                    "question_id": next_qid,
                    "image_id": int(image_id),
                    "image": key,
                    "question": text,
                    "tokens": tokenize(text),
                    "answers": [answer],
                    "targets": [[answer_index[answer], 1.0]],
                    "answer_type": "yes/no" if answer in YES_NO else "other",
                    "question_type": question_type(answer),
                    "choices": question_choices(answer, list(answers), next_qid),
                }
            )
            next_qid += 1

    question_vocab = Vocab.build((r["tokens"] for r in out["train"]), min_count=1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_prepared(
        out_dir,
        VQA,
        {
            "source": "easy-vqa",
            "metric": "exact",
            "question_vocab": question_vocab.to_dict(),
            "answers": list(answers),
            "splits": out,
        },
    )
    add_images(out_dir, images)
    return {
        "source": "easy-vqa",
        "questions": {s: len(r) for s, r in out.items()},
        "images": {s: len({x["image"] for x in r}) for s, r in out.items()},
        "answers": len(answers),
        "question_vocab_size": len(question_vocab),
        "choices_per_question": NUM_CHOICES,
    }
