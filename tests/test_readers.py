"""The raw-data readers, on small fixtures written in exactly the official formats."""

import json
from pathlib import Path

import pytest

from core.errors import AttendError
from core.prepared import CAPTIONS, VQA, image_paths, read_prepared
from core.vocab import SPECIALS, tokenize
from data_prep.coco import prepare_coco_captions, prepare_karpathy
from data_prep.easy_vqa import prepare_easy_vqa
from data_prep.vqa_v2 import prepare_vqa
from vqa.metrics import vqa_accuracy


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# --------------------------------------------------------------------------- COCO 2014

COCO_INFO = {
    "description": "COCO 2014 Dataset",
    "url": "http://cocodataset.org",
    "version": "1.0",
    "year": 2014,
    "contributor": "COCO Consortium",
    "date_created": "2017/09/01",
}
COCO_LICENSES = [
    {
        "url": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
        "id": 1,
        "name": "Attribution-NonCommercial-ShareAlike License",
    }
]


def coco_image(image_id: int, subset: str) -> dict:
    name = f"COCO_{subset}_{image_id:012d}.jpg"
    return {
        "license": 1,
        "file_name": name,
        "coco_url": f"http://images.cocodataset.org/{subset}/{name}",
        "height": 480,
        "width": 640,
        "date_captured": "2013-11-14 16:28:13",
        "flickr_url": "http://farm3.staticflickr.com/x.jpg",
        "id": image_id,
    }


def coco_captions_file(path: Path, subset: str, images: list[int], captions: list[tuple[int, str]]) -> Path:
    return write_json(
        path,
        {
            "info": COCO_INFO,
            "licenses": COCO_LICENSES,
            "images": [coco_image(i, subset) for i in images],
            "annotations": [{"image_id": i, "id": 100 + n, "caption": c} for n, (i, c) in enumerate(captions)],
        },
    )


@pytest.fixture
def coco_files(tmp_path):
    train = coco_captions_file(
        tmp_path / "annotations/captions_train2014.json",
        "train2014",
        [25, 9, 30],
        [  # image 30 has no caption
            (9, "A dog runs on the grass."),
            (25, "Two dogs play."),
            (9, "A brown dog is running.\n"),
            (25, "A dog and a cat"),
            (25, "!!!"),  # no words: dropped
        ],
    )
    val = coco_captions_file(tmp_path / "annotations/captions_val2014.json", "val2014", [42], [(42, "A zebra!")])
    (tmp_path / "train2014").mkdir()
    (tmp_path / "val2014").mkdir()
    return {"train": (train, tmp_path / "train2014"), "val": (val, tmp_path / "val2014")}


def test_coco_captions(tmp_path, coco_files):
    out = tmp_path / "prepared"
    summary = prepare_coco_captions(out, coco_files, min_count=2)
    assert summary["images"] == {"train": 2, "val": 1}
    assert summary["captions"] == {"train": 4, "val": 1}
    assert summary["images_without_captions"] == {"train": 1, "val": 0}

    data = read_prepared(out, CAPTIONS)
    assert data["source"] == "coco"
    # train counts: a 4, dog 3, every other word once -> only "a" and "dog" reach 2;
    # "zebra" (val only) never counts.
    assert data["vocab"]["itos"] == [*SPECIALS, "a", "dog"]
    assert data["splits"]["train"] == [
        {
            "image": "train2014/COCO_train2014_000000000009.jpg",
            "image_id": 9,
            "captions": ["A dog runs on the grass.", "A brown dog is running."],
            "tokens": [["a", "dog", "runs", "on", "the", "grass"], ["a", "brown", "dog", "is", "running"]],
        },
        {
            "image": "train2014/COCO_train2014_000000000025.jpg",
            "image_id": 25,
            "captions": ["Two dogs play.", "A dog and a cat"],
            "tokens": [["two", "dogs", "play"], ["a", "dog", "and", "a", "cat"]],
        },
    ]
    assert data["splits"]["val"] == [
        {
            "image": "val2014/COCO_val2014_000000000042.jpg",
            "image_id": 42,
            "captions": ["A zebra!"],
            "tokens": [["a", "zebra"]],
        }
    ]

    paths = image_paths(out)
    assert paths == {
        "train2014/COCO_train2014_000000000009.jpg": (tmp_path / "train2014/COCO_train2014_000000000009.jpg").resolve(),
        "train2014/COCO_train2014_000000000025.jpg": (tmp_path / "train2014/COCO_train2014_000000000025.jpg").resolve(),
        "val2014/COCO_val2014_000000000042.jpg": (tmp_path / "val2014/COCO_val2014_000000000042.jpg").resolve(),
    }


def test_coco_vocab_threshold_one_orders_by_count_then_alphabet(tmp_path, coco_files):
    prepare_coco_captions(tmp_path / "p", coco_files, min_count=1)
    itos = read_prepared(tmp_path / "p", CAPTIONS)["vocab"]["itos"]
    assert itos == [
        *SPECIALS,
        "a",
        "dog",
        "and",
        "brown",
        "cat",
        "dogs",
        "grass",
        "is",
        "on",
        "play",
        "running",
        "runs",
        "the",
        "two",
    ]


def test_coco_errors(tmp_path, coco_files):
    train_json, folder = coco_files["train"]
    with pytest.raises(AttendError, match="not found"):
        prepare_coco_captions(tmp_path / "p", {"train": (tmp_path / "nope.json", folder)})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AttendError, match="not a valid JSON"):
        prepare_coco_captions(tmp_path / "p", {"train": (bad, folder)})
    keyless = write_json(tmp_path / "keyless.json", {"info": {}, "images": []})
    with pytest.raises(AttendError, match="not a COCO captions file"):
        prepare_coco_captions(tmp_path / "p", {"train": (keyless, folder)})
    empty = coco_captions_file(tmp_path / "empty.json", "train2014", [], [])
    with pytest.raises(AttendError, match="no captioned images"):
        prepare_coco_captions(tmp_path / "p", {"train": (empty, folder)})
    with pytest.raises(AttendError, match="image folder"):
        prepare_coco_captions(tmp_path / "p", {"train": (train_json, tmp_path / "missing")})
    with pytest.raises(AttendError, match="'train' split"):
        prepare_coco_captions(tmp_path / "p", {"val": coco_files["val"]})


# --------------------------------------------------------------------------- Karpathy


def karpathy_image(imgid, cocoid, split, raws, filepath="val2014"):
    sentences = [
        {
            "tokens": [w.strip(".,'") for w in raw.lower().split()],  # Karpathy-style
            "raw": raw,
            "imgid": imgid,
            "sentid": 10 * imgid + n,
        }
        for n, raw in enumerate(raws)
    ]
    img = {
        "filepath": filepath,
        "sentids": [s["sentid"] for s in sentences],
        "filename": f"COCO_{filepath}_{cocoid:012d}.jpg",
        "imgid": imgid,
        "split": split,
        "sentences": sentences,
        "cocoid": cocoid,
    }
    return img


def test_karpathy_coco(tmp_path):
    dataset = write_json(
        tmp_path / "dataset_coco.json",
        {
            "dataset": "coco",
            "images": [
                karpathy_image(0, 391895, "test", ["A man rides a bike."]),
                karpathy_image(1, 522418, "restval", ["A woman's hat is red."], filepath="train2014"),
                karpathy_image(2, 184613, "train", ["A man with a hat.", "A man"]),
                karpathy_image(3, 318219, "val", ["A dog."]),
            ],
        },
    )
    root = tmp_path / "coco"
    root.mkdir()
    summary = prepare_karpathy(tmp_path / "p", dataset, root, min_count=2)
    assert summary["images"] == {"train": 2, "val": 1, "test": 1}
    data = read_prepared(tmp_path / "p", CAPTIONS)
    assert data["source"] == "karpathy-coco"
    # restval is merged into train; records sorted by image id
    assert data["splits"]["train"] == [
        {
            "image": "val2014/COCO_val2014_000000184613.jpg",
            "image_id": 184613,
            "captions": ["A man with a hat.", "A man"],
            "tokens": [["a", "man", "with", "a", "hat"], ["a", "man"]],
        },
        {
            "image": "train2014/COCO_train2014_000000522418.jpg",
            "image_id": 522418,
            "captions": ["A woman's hat is red."],
            # re-tokenized from raw with our tokenizer: "woman's" (the file says "womans")
            "tokens": [["a", "woman's", "hat", "is", "red"]],
        },
    ]
    assert [r["image_id"] for r in data["splits"]["val"]] == [318219]
    assert [r["image_id"] for r in data["splits"]["test"]] == [391895]
    # train counts: a 4, man 2, hat 2; val/test words ("bike", "dog") never count
    assert data["vocab"]["itos"] == [*SPECIALS, "a", "hat", "man"]
    assert (
        image_paths(tmp_path / "p")["train2014/COCO_train2014_000000522418.jpg"]
        == (root / "train2014/COCO_train2014_000000522418.jpg").resolve()
    )


def test_karpathy_flickr_without_filepath_or_cocoid(tmp_path):
    images = []
    for imgid, split in enumerate(["train", "train", "val", "test"]):
        img = karpathy_image(imgid, 0, split, [f"Picture number {imgid}."])
        del img["filepath"], img["cocoid"]
        img["filename"] = f"{1000 + imgid}_abc.jpg"
        images.append(img)
    dataset = write_json(tmp_path / "dataset_flickr8k.json", {"dataset": "flickr8k", "images": images})
    root = tmp_path / "Flicker8k_Dataset"
    root.mkdir()
    prepare_karpathy(tmp_path / "p", dataset, root)
    data = read_prepared(tmp_path / "p", CAPTIONS)
    assert data["source"] == "karpathy-flickr8k"
    assert [(r["image"], r["image_id"]) for r in data["splits"]["train"]] == [("1000_abc.jpg", 0), ("1001_abc.jpg", 1)]
    assert image_paths(tmp_path / "p")["1003_abc.jpg"] == (root / "1003_abc.jpg").resolve()
    # min_count=5 default: no word is seen 5 times in train
    assert data["vocab"]["itos"] == list(SPECIALS)


def test_karpathy_errors(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(AttendError, match="not found"):
        prepare_karpathy(tmp_path / "p", tmp_path / "dataset_coco.json", root)
    not_karpathy = write_json(tmp_path / "x.json", {"annotations": []})
    with pytest.raises(AttendError, match="not a Karpathy split file"):
        prepare_karpathy(tmp_path / "p", not_karpathy, root)
    no_test = write_json(
        tmp_path / "dataset_coco.json",
        {"images": [karpathy_image(0, 1, "train", ["a cat"]), karpathy_image(1, 2, "val", ["a dog"])]},
    )
    with pytest.raises(AttendError, match="split 'test' is empty") as e:
        prepare_karpathy(tmp_path / "p", no_test, root)
    assert "\n" not in str(e.value)
    odd_split = write_json(tmp_path / "odd.json", {"images": [karpathy_image(0, 1, "dev", ["a"])]})
    with pytest.raises(AttendError, match="unknown split 'dev'"):
        prepare_karpathy(tmp_path / "p", odd_split, root)


# --------------------------------------------------------------------------- VQA v2

VQA_INFO = {
    "description": "This is v2.0 of the VQA dataset.",
    "url": "http://visualqa.org",
    "version": "2.0",
    "year": 2017,
    "contributor": "VQA Team",
    "date_created": "2017-04-26 17:07:13",
}
VQA_LICENSE = {
    "url": "http://creativecommons.org/licenses/by/4.0/",
    "name": "Creative Commons Attribution 4.0 International License",
}


def vqa_questions_file(path, data_subtype, questions):
    """questions: [(question_id, image_id, text)]"""
    return write_json(
        path,
        {
            "info": VQA_INFO,
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "license": VQA_LICENSE,
            "data_subtype": data_subtype,
            "questions": [{"image_id": i, "question": t, "question_id": q} for q, i, t in questions],
        },
    )


def vqa_annotations_file(path, data_subtype, annotations):
    """annotations: [(question_id, image_id, question_type, answer_type, mc, [10 answers])]"""
    return write_json(
        path,
        {
            "info": VQA_INFO,
            "license": VQA_LICENSE,
            "data_type": "mscoco",
            "data_subtype": data_subtype,
            "annotations": [
                {
                    "question_type": qt,
                    "multiple_choice_answer": mc,
                    "answers": [
                        {"answer": a, "answer_confidence": ["yes", "maybe", "no"][n % 3], "answer_id": n + 1}
                        for n, a in enumerate(answers)
                    ],
                    "image_id": i,
                    "answer_type": at,
                    "question_id": q,
                }
                for q, i, qt, at, mc, answers in annotations
            ],
        },
    )


TRAIN_QA = [
    # qid, image, question, question_type, answer_type, multiple_choice_answer, 10 answers
    (
        10,
        1,
        "What color is the dog?",
        "what color is the",
        "other",
        "blue",
        ["blue"] * 4 + ["red"] * 3 + ["green"] + ["yellow"] * 2,
    ),
    (11, 1, "Is the dog sleeping?", "is the", "yes/no", "yes", ["yes"] * 10),
    (12, 1, "How many dogs?", "how many", "number", "Two", ["2"] * 6 + ["3"] * 3 + ["two"]),
    (13, 2, "Is it sunny?", "is it", "yes/no", "no", ["yes"] + ["no"] * 9),
    (14, 2, "Is it raining?", "is it", "yes/no", "no", ["yes"] * 2 + ["no"] * 8),
    (15, 2, "What color is the car?", "what color is the", "other", "red", ["red"] * 8 + ["yellow"] * 2),
    (16, 3, "Is this a photo?", "is this", "yes/no", "yes", ["yes"] * 10),
]
VAL_QA = [
    (20, 5, "What is this?", "what is this", "other", "dog", ["dog"] * 10),
    (21, 5, "Is it a dog?", "is it", "yes/no", "no", ["yes"] * 3 + ["no"] * 7),
]


@pytest.fixture
def vqa_files(tmp_path):
    def split(subset, qa, with_annotations=True, folder=None):
        q = vqa_questions_file(
            tmp_path / f"v2_OpenEnded_mscoco_{subset}_questions.json",
            subset,
            [(qid, img, text) for qid, img, text, *_ in qa],
        )
        a = None
        if with_annotations:
            a = vqa_annotations_file(
                tmp_path / f"v2_mscoco_{subset}_annotations.json",
                subset,
                [(qid, img, qt, at, mc, ans) for qid, img, _, qt, at, mc, ans in qa],
            )
        images = tmp_path / (folder or subset)
        images.mkdir(exist_ok=True)
        return (q, a, images)

    return {
        "train": split("train2014", TRAIN_QA),
        "val": split("val2014", VAL_QA),
        "test-dev": split(
            "test-dev2015", [(30, 77, "Why?", "", "", "", [])], with_annotations=False, folder="test2015"
        ),
    }


def test_vqa_v2(tmp_path, vqa_files):
    out = tmp_path / "p"
    summary = prepare_vqa(out, vqa_files, min_count=2)
    data = read_prepared(out, VQA)
    assert data["source"] == "vqa-v2" and data["metric"] == "vqa"
    # normalized mc answers: no 2, yes 2 (tie -> alphabetical), then 2 ("Two"), blue, red
    assert data["answers"] == ["no", "yes", "2", "blue", "red"]
    # train question words: is 6, the 3, then color/dog/it/what 2 each
    assert data["question_vocab"]["itos"] == [*SPECIALS, "is", "the", "color", "dog", "it", "what"]

    train = {r["question_id"]: r for r in data["splits"]["train"]}
    assert list(train) == [10, 11, 12, 13, 14, 15, 16]
    # soft scores by hand: k matches of 10 -> min(1, 0.3k)
    assert train[10]["targets"] == [[3, 1.0], [4, 0.9]]  # blue x4, red x3 (green/yellow not kept)
    assert train[11]["targets"] == [[1, 1.0]]  # yes x10
    assert train[12]["targets"] == [[2, 1.0]]  # "2" x6 ("3", "two" not kept)
    assert train[13]["targets"] == [[0, 1.0], [1, 0.3]]  # no x9, yes x1
    assert train[14]["targets"] == [[0, 1.0], [1, 0.6]]  # no x8, yes x2
    assert train[15]["targets"] == [[4, 1.0]]
    for r in train.values():  # the stored score is the metric itself
        for i, s in r["targets"]:
            assert s == vqa_accuracy(data["answers"][i], r["answers"])
    assert train[10] == {
        "question_id": 10,
        "image_id": 1,
        "image": "train2014/COCO_train2014_000000000001.jpg",
        "question": "What color is the dog?",
        "tokens": ["what", "color", "is", "the", "dog"],
        "answers": ["blue"] * 4 + ["red"] * 3 + ["green"] + ["yellow"] * 2,
        "targets": [[3, 1.0], [4, 0.9]],
        "answer_type": "other",
        "question_type": "what color is the",
    }

    val = data["splits"]["val"]
    assert [r["targets"] for r in val] == [[], [[0, 1.0], [1, 0.9]]]
    assert val[0]["image"] == "val2014/COCO_val2014_000000000005.jpg"

    (test,) = data["splits"]["test-dev"]
    assert test == {
        "question_id": 30,
        "image_id": 77,
        "image": "test2015/COCO_test2015_000000000077.jpg",
        "question": "Why?",
        "tokens": ["why"],
        "answers": [],
        "targets": [],
        "answer_type": "",
        "question_type": "",
    }

    paths = image_paths(out)
    assert sorted(paths) == [
        "test2015/COCO_test2015_000000000077.jpg",
        "train2014/COCO_train2014_000000000001.jpg",
        "train2014/COCO_train2014_000000000002.jpg",
        "train2014/COCO_train2014_000000000003.jpg",
        "val2014/COCO_val2014_000000000005.jpg",
    ]
    assert (
        paths["val2014/COCO_val2014_000000000005.jpg"] == (tmp_path / "val2014/COCO_val2014_000000000005.jpg").resolve()
    )
    assert summary["questions"] == {"train": 7, "val": 2, "test-dev": 1}
    assert summary["answers"] == 5
    assert summary["train_questions_with_target"] == 7


def test_vqa_v2_top_k_cuts_the_answer_list(tmp_path, vqa_files):
    summary = prepare_vqa(tmp_path / "p", vqa_files, top_k=2)
    data = read_prepared(tmp_path / "p", VQA)
    assert data["answers"] == ["no", "yes"]
    train = {r["question_id"]: r for r in data["splits"]["train"]}
    assert train[10]["targets"] == [] and train[12]["targets"] == []
    assert train[13]["targets"] == [[0, 1.0], [1, 0.3]]
    assert summary["train_questions_with_target"] == 4
    assert summary["train_answer_coverage"] == round(4 / 7, 4)


def test_vqa_v2_errors(tmp_path, vqa_files):
    q, a, images = vqa_files["train"]

    def run(**split):
        return prepare_vqa(tmp_path / "p", split)

    with pytest.raises(AttendError, match="not found"):
        run(train=(tmp_path / "missing.json", a, images))
    no_subtype = write_json(
        tmp_path / "q.json", {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "questions": []}
    )
    with pytest.raises(AttendError, match=r"q\.json: not a VQA questions file") as e:
        run(train=(no_subtype, a, images))
    assert "\n" not in str(e.value)
    nine = json.loads(a.read_text())
    nine["annotations"][0]["answers"] = nine["annotations"][0]["answers"][:9]
    nine_path = write_json(tmp_path / "nine.json", nine)
    with pytest.raises(AttendError, match=r"nine\.json: annotation #0 .*10 answers"):
        run(train=(q, nine_path, images))
    with pytest.raises(AttendError, match="annotations are for 'val2014'"):
        run(train=(q, vqa_files["val"][1], images))
    short = json.loads(a.read_text())
    del short["annotations"][0]
    short_path = write_json(tmp_path / "short.json", short)
    with pytest.raises(AttendError, match=r"annotations do not match .*\(1 questions without"):
        run(train=(q, short_path, images))
    with pytest.raises(AttendError, match="'train' split with annotations"):
        run(val=vqa_files["val"])
    empty = vqa_questions_file(tmp_path / "empty.json", "train2014", [])
    with pytest.raises(AttendError, match="no questions"):
        run(train=(empty, None, images))


# --------------------------------------------------------------------------- easy-VQA


def test_easy_vqa_from_the_installed_package(tmp_path):
    summary = prepare_easy_vqa(tmp_path / "p")
    data = read_prepared(tmp_path / "p", VQA)
    assert data["metric"] == "exact" and data["source"] == "easy-vqa"
    assert data["answers"] == [
        "circle",
        "green",
        "red",
        "gray",
        "yes",
        "teal",
        "black",
        "rectangle",
        "yellow",
        "triangle",
        "brown",
        "blue",
        "no",
    ]
    splits = data["splits"]
    assert len(splits["train"]) + len(splits["val"]) == 38_575
    assert len(splits["test"]) == 9_673
    assert summary["images"] == {"train": 3600, "val": 400, "test": 1000}

    # val is carved out by image: the last 10% of train image ids, never shared with train
    train_images = {r["image"] for r in splits["train"]}
    val_images = {r["image"] for r in splits["val"]}
    assert not train_images & val_images
    assert {r["image_id"] for r in splits["val"]} == set(range(3600, 4000))

    ids = [r["question_id"] for s in splits.values() for r in s]
    assert len(set(ids)) == len(ids)
    for r in splits["train"][:200] + splits["test"][:200]:
        (answer,) = r["answers"]
        assert r["targets"] == [[data["answers"].index(answer), 1.0]]
        assert r["tokens"] == tokenize(r["question"])
        expected_type = (
            "yes/no"
            if answer in ("yes", "no")
            else "shape"
            if answer in ("circle", "rectangle", "triangle")
            else "color"
        )
        assert r["question_type"] == expected_type
        assert r["answer_type"] == ("yes/no" if answer in ("yes", "no") else "other")

    paths = image_paths(tmp_path / "p")
    assert len(paths) == 5000
    first_test = splits["test"][0]
    assert first_test["image"] == f"easy-vqa/test/{first_test['image_id']}.png"
    assert paths[first_test["image"]].is_file()
    assert paths[first_test["image"]].is_absolute()
    # the question vocabulary comes from train only and is tiny
    assert data["question_vocab"]["itos"][:4] == list(SPECIALS)
    assert set(data["question_vocab"]["itos"][4:]) >= {"what", "color", "shape", "is"}
