"""The generated shape scenes and their measures (data_prep/scenes/)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.vocab import tokenize
from data_prep import scenes
from data_prep.scenes import (
    RGB,
    SIDE,
    caption_correct,
    caption_errors,
    describe,
    generate_scenes,
    make_scene,
    parse_caption,
    parse_caption_full,
    pointing_hits,
    scene_objects,
    score_scenes,
)

COUNTS = {"train": 24, "val": 8, "test": 8}
SPLITS = ("train", "val", "test")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes_a")
    summary = generate_scenes(out, 7, COUNTS, workers=2, prepare=False)
    return out, summary


@pytest.fixture(scope="module")
def truth(data):
    out, _ = data
    gt = {}
    for s in SPLITS:
        gt.update(scene_objects(out / "raw" / f"instances_{s}.json"))
    return gt


def _load(out: Path, name: str, split: str) -> dict:
    return json.loads((out / "raw" / f"{name}_{split}.json").read_text())


def _centre(o):
    x, y, w, h = o["bbox"]
    return x + w / 2, y + h / 2


# ----------------------------------------------------------------------------- determinism


def test_summary_and_files(data):
    out, summary = data
    assert summary["images"] == COUNTS
    assert summary["seconds"] > 0 and summary["prepared"] is False
    for s in SPLITS:
        assert summary["questions"][s] == len(_load(out, "questions", s)["questions"])
        for name in ("captions", "instances", "questions", "annotations"):
            assert (out / "raw" / f"{name}_{s}.json").is_file()
    assert len(list((out / "images").rglob("*.png"))) == sum(COUNTS.values())


def test_same_seed_identical_whatever_workers_other_seed_differs(data, tmp_path):
    out, _ = data
    one = tmp_path / "one"
    generate_scenes(one, 7, COUNTS, workers=1, prepare=False)
    a, b = _files(out), _files(one)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]
    other = tmp_path / "other"
    generate_scenes(other, 8, COUNTS, workers=1, prepare=False)
    c = _files(other)
    assert c.keys() == a.keys()
    differing = [k for k in a if a[k] != c[k]]
    assert len(differing) > len(a) // 2


def test_scene_depends_only_on_seed_split_index():
    o1, p1, c1, q1 = make_scene(3, "val", 5)
    o2, p2, c2, q2 = make_scene(3, "val", 5)
    assert o1 == o2 and c1 == c2 and q1 == q2 and np.array_equal(p1, p2)
    o3, p3, *_ = make_scene(3, "test", 5)
    assert not np.array_equal(p1, p3)


# ----------------------------------------------------------------------------- formats


def test_pycocotools_reads_captions_and_instances(data):
    from pycocotools.coco import COCO

    out, _ = data
    for s in SPLITS:
        with contextlib.redirect_stdout(io.StringIO()):
            caps = COCO(str(out / "raw" / f"captions_{s}.json"))
            inst = COCO(str(out / "raw" / f"instances_{s}.json"))
        assert len(caps.getImgIds()) == COUNTS[s]
        for image_id in caps.getImgIds():
            assert len(caps.getAnnIds(imgIds=image_id)) == 5
            n = len(inst.getAnnIds(imgIds=image_id))
            assert 1 <= n <= 4
            img = caps.loadImgs(image_id)[0]
            assert img["file_name"] == f"{image_id:012d}.png"
            assert (img["width"], img["height"]) == (224, 224)
            assert (out / "images" / s / img["file_name"]).is_file()
        assert sorted(c["name"] for c in inst.loadCats(inst.getCatIds())) == ["circle", "square", "star", "triangle"]
        assert all(c["supercategory"] == "shape" for c in inst.loadCats(inst.getCatIds()))
        for a in inst.loadAnns(inst.getAnnIds()):
            assert a["iscrowd"] == 0 and a["area"] > 0 and a["color"] in RGB and a["size"] in SIDE


def test_ids_unique_and_consecutive_across_splits(data):
    out, _ = data
    image_ids, question_ids, expected = [], [], 0
    for s in SPLITS:
        ids = [im["id"] for im in _load(out, "captions", s)["images"]]
        assert ids == list(range(expected, expected + COUNTS[s]))
        expected += COUNTS[s]
        image_ids += ids
        question_ids += [q["question_id"] for q in _load(out, "questions", s)["questions"]]
    assert len(set(image_ids)) == len(image_ids)
    assert len(set(question_ids)) == len(question_ids)


def test_vqa_files_in_v2_format(data):
    out, _ = data
    for s in SPLITS:
        q = _load(out, "questions", s)
        a = _load(out, "annotations", s)
        assert q["task_type"] == "Open-Ended" and q["data_type"] == "scenes" and q["data_subtype"] == s
        assert {"info", "license"} <= q.keys() and {"info", "license", "data_type"} <= a.keys()
        assert a["data_subtype"] == s
        by_id = {x["question_id"]: x for x in a["annotations"]}
        assert set(by_id) == {x["question_id"] for x in q["questions"]}
        per_image = Counter(x["image_id"] for x in q["questions"])
        assert all(6 <= n <= 8 for n in per_image.values())
        for x in q["questions"]:
            ann = by_id[x["question_id"]]
            assert ann["image_id"] == x["image_id"]
            assert [y["answer_id"] for y in ann["answers"]] == list(range(1, 11))
            assert {y["answer"] for y in ann["answers"]} == {ann["multiple_choice_answer"]}
            assert {y["answer_confidence"] for y in ann["answers"]} == {"yes"}
            assert ann["question_type"] in scenes.QUESTION_TYPES
            assert ann["answer_type"] in ("yes/no", "number", "other")


# ----------------------------------------------------------------------------- the scenes


def test_objects_inside_apart_sized_and_unique(truth):
    for image_id, objects in truth.items():
        assert 1 <= len(objects) <= 4
        assert len({(o["size"], o["color"], o["shape"]) for o in objects}) == len(objects)
        for o in objects:
            x, y, w, h = o["bbox"]
            assert w == h and SIDE[o["size"]][0] <= w <= SIDE[o["size"]][1]
            assert x >= 0 and y >= 0 and x + w <= 224 and y + h <= 224
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                ax, ay, aw, ah = a["bbox"]
                bx, by, bw, bh = b["bbox"]
                gap_x = max(bx - (ax + aw), ax - (bx + bw))
                gap_y = max(by - (ay + ah), ay - (by + bh))
                assert max(gap_x, gap_y) >= 6, (image_id, a, b)


def test_pixels_object_colours_background_and_noise(data, truth):
    out, _ = data
    split_of = {}
    for s in SPLITS:
        for im in _load(out, "captions", s)["images"]:
            split_of[im["id"]] = s
    noise_stds = []
    for image_id, objects in truth.items():
        px = np.asarray(Image.open(out / "images" / split_of[image_id] / f"{image_id:012d}.png"), dtype=float)
        assert px.shape == (224, 224, 3)
        for o in objects:
            cx, cy = (int(v) for v in _centre(o))
            want = np.array(RGB[o["color"]], dtype=float)
            assert np.all(np.abs(px[cy, cx] - want) <= 30), (image_id, o, px[cy, cx])
            patch = px[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
            assert np.all(np.abs(patch - want) <= 8), (image_id, o, patch)
        # an 12x12 patch of background far from every object: light, tinted, noisy with sigma ~6
        for y0 in range(0, 212, 12):
            for x0 in range(0, 212, 12):
                if all(
                    max(
                        o["bbox"][0] - (x0 + 12),
                        x0 - (o["bbox"][0] + o["bbox"][2]),
                        o["bbox"][1] - (y0 + 12),
                        y0 - (o["bbox"][1] + o["bbox"][3]),
                    )
                    >= 2
                    for o in objects
                ):
                    patch = px[y0 : y0 + 12, x0 : x0 + 12]
                    mean = patch.reshape(-1, 3).mean(0)
                    assert np.all((mean > 210) & (mean < 250)), (image_id, mean)
                    noise_stds.append(patch.reshape(-1, 3).std(0).mean())
                    break
            else:
                continue
            break
    assert 5.0 < float(np.mean(noise_stds)) < 7.0


# ----------------------------------------------------------------------------- captions


def test_every_reference_parses_and_is_correct(data, truth):
    out, _ = data
    for s in SPLITS:
        per_image: dict[int, list[str]] = {}
        for a in _load(out, "captions", s)["annotations"]:
            per_image.setdefault(a["image_id"], []).append(a["caption"])
        for image_id, caps in per_image.items():
            objects = truth[image_id]
            assert len(caps) == 5 and len(set(caps)) >= 4
            for c in caps:
                assert c == c.lower() and not c.endswith(".")
                tokens = tokenize(c)
                p = parse_caption_full(tokens)
                assert p.ok, (c, p.problems)
                assert len(p.objects) == len(objects)
                assert caption_correct(tokens, objects), c
                assert caption_errors(tokens, objects) == []
            # reference 0 names the objects left to right
            mentioned, _ = parse_caption(tokenize(caps[0]))
            ltr = sorted(objects, key=_centre)
            assert mentioned == [(o["size"], o["color"], o["shape"]) for o in ltr]


def test_grammar_of_each_reference():
    objects = [
        {"shape": "circle", "color": "red", "size": "large", "bbox": [10, 100, 64, 64]},  # c (42, 132)
        {"shape": "star", "color": "blue", "size": "small", "bbox": [120, 20, 36, 36]},  # c (138, 38)
        {"shape": "square", "color": "orange", "size": "small", "bbox": [130, 150, 36, 36]},  # c (148, 168)
    ]
    assert describe(objects) == [
        "a large red circle left of a small blue star above a small orange square",
        "there is a large red circle left of a small blue star above a small orange square",
        "a small orange square below a small blue star right of a large red circle",
        "a large red circle to the left of a small blue star above a small orange square",
        "there is a small orange square below a small blue star right of a large red circle",
    ]
    one = describe(objects[:1])
    assert one[0] == "a large red circle" and one[1] == "there is a large red circle"
    assert "a large red circle in the picture" in one


# ----------------------------------------------------------------------------- the checker

SCENE = [
    {"shape": "circle", "color": "red", "size": "large", "bbox": [10, 100, 64, 64]},  # c (42, 132)
    {"shape": "star", "color": "blue", "size": "small", "bbox": [120, 20, 36, 36]},  # c (138, 38)
    {"shape": "square", "color": "green", "size": "small", "bbox": [130, 150, 36, 36]},  # c (148, 168)
]
RIGHT = "a large red circle left of a small blue star above a small green square"


@pytest.mark.parametrize(
    "caption",
    [
        RIGHT,
        "there is " + RIGHT,
        RIGHT + " in the picture",
        "a large red circle to the left of a small blue star above a small green square",
        "a small green square below a small blue star to the right of a large red circle",
        "a small green square below a small blue star right of a large red circle",
        "a large red circle and a small blue star and a small green square",  # "and" claims nothing
        "<start> " + RIGHT + " <end>",
    ],
)
def test_right_captions(caption):
    tokens = caption.split() if "<" in caption else tokenize(caption)
    assert caption_correct(tokens, SCENE), caption_errors(tokens, SCENE)
    assert caption_errors(tokens, SCENE) == []


@pytest.mark.parametrize(
    "caption, error",
    [
        ("a large green circle left of a small blue star above a small green square", "wrong_colour"),
        ("a large red triangle left of a small blue star above a small green square", "wrong_shape"),
        ("a small red circle left of a small blue star above a small green square", "wrong_size"),
        ("a large red circle left of a small blue star below a small green square", "wrong_relation"),
        ("a large red circle right of a small blue star above a small green square", "wrong_relation"),
        ("a small blue star left of a large red circle above a small green square", "wrong_relation"),
        ("a large red circle left of a small blue star", "missing_object"),
        (RIGHT + " left of a small purple triangle", "extra_object"),
        (
            "a large red circle left of a small blue star above a small green square above a small blue star",
            "extra_object",
        ),
        ("a large red circle left of a small blue dog above a small green square", "unparsable"),
        ("a large red circle a small blue star above a small green square", "unparsable"),
        ("a large red circle left of a blue star above a small green square", "unparsable"),
        (RIGHT + " left of", "unparsable"),
        ("", "unparsable"),
    ],
)
def test_wrong_captions(caption, error):
    tokens = tokenize(caption)
    assert not caption_correct(tokens, SCENE)
    assert error in caption_errors(tokens, SCENE)


def test_parse_caption_is_tolerant():
    objects, relations = parse_caption(tokenize("there is a large red circle to the right of a small blue star"))
    assert objects == [("large", "red", "circle"), ("small", "blue", "star")]
    assert relations == ["right of"]
    objects, relations = parse_caption("a large red circle zzz a small blue star below".split())
    assert objects == [("large", "red", "circle"), ("small", "blue", "star")]
    assert relations == [None]
    assert not parse_caption_full("a large red circle zzz".split()).ok
    assert parse_caption_full("a large red circle left of a small blue star".split()).shape_positions == [3, 9]


# ----------------------------------------------------------------------------- pointing


def _one_hot(h, w, r, c):
    g = np.zeros((h, w))
    g[r, c] = 1.0
    return g


def test_pointing_hits_one_hot_grids():
    objects = [
        {"shape": "circle", "color": "red", "size": "large", "bbox": [64, 64, 64, 64]},
        {"shape": "star", "color": "blue", "size": "small", "bbox": [160, 160, 36, 36]},
    ]
    tokens = "a large red circle left of a small blue star".split()  # shapes at 3 and 9
    far = _one_hot(7, 7, 0, 0)
    grids = [far] * 10
    # 7x7 over 224 px: 32-px cells; circle covers cells 2..3, star's box spans 160..196 (cells 5..6)
    grids[3] = _one_hot(7, 7, 2, 3)
    grids[9] = _one_hot(7, 7, 5, 5)
    assert pointing_hits(tokens, grids, objects) == [True, True]
    grids[3] = far
    grids[9] = _one_hot(7, 7, 2, 2)  # attention on the circle while saying "star"
    assert pointing_hits(tokens, grids, objects) == [False, False]
    # nested lists and flattened grids work too
    assert pointing_hits(tokens, [g.ravel().tolist() for g in grids], objects) == [False, False]
    # a phrase that names no object is a miss, wherever the attention is
    wrong = "a large green circle".split()
    assert pointing_hits(wrong, [_one_hot(7, 7, 2, 2)] * 4, objects) == [False]


def test_pointing_half_cell_boundary():
    # box 64..96 is exactly cell 2 of a 7x7 grid; grown by half a cell it spans 48..112, so the
    # neighbouring cells' centres (48 and 112) lie on its edge (a hit), two cells away is a miss
    obj = [{"shape": "square", "color": "red", "size": "small", "bbox": [64, 64, 32, 32]}]
    tokens = "a small red square".split()

    def hit(r, c):
        return pointing_hits(tokens, [None, None, None, _one_hot(7, 7, r, c)], obj)[0]

    assert hit(2, 2) and hit(1, 2) and hit(3, 3) and hit(1, 1)
    assert not hit(0, 2) and not hit(2, 4) and not hit(4, 4) and not hit(2, 0)

    # 14x14 grid (16-px cells): the box is cells 4..5, grown to 56..104: cell 3 (56) hits, 2 (40) not
    def hit14(r, c):
        return pointing_hits(tokens, [None, None, None, _one_hot(14, 14, r, c)], obj)[0]

    assert hit14(3, 4) and hit14(6, 6) and not hit14(2, 4) and not hit14(4, 7)


# ----------------------------------------------------------------------------- scoring


def test_score_scenes_breakdown():
    other = [{"shape": "triangle", "color": "yellow", "size": "small", "bbox": [20, 20, 36, 36]}]
    gt = {1: SCENE, 2: other, 3: SCENE, 4: other}
    grid_star = _one_hot(7, 7, 1, 4)  # star box 120..156 x 20..56 -> cell (1, 4) centre (144, 48)
    preds = {
        "1": {"tokens": tokenize(RIGHT), "attention": [grid_star] * 15},
        2: "a small yellow triangle",
        3: "a large red circle left of a small blue star below a small green square",
        # 4 missing
    }
    r = score_scenes(preds, gt)
    assert r["object_accuracy"] == pytest.approx(0.5)
    assert r["counts"]["images"] == 4 and r["counts"]["correct"] == 2
    assert r["counts"]["missing_predictions"] == 1
    assert r["errors"]["wrong_relation"] == 1 and r["errors"]["wrong_colour"] == 0
    assert r["counts"]["shape_words"] == 3 and r["counts"]["pointing_hits"] == 1
    assert r["pointing_accuracy"] == pytest.approx(1 / 3)
    assert r["by_object_count"][3] == {"images": 2, "correct": 1, "accuracy": 0.5}
    assert r["examples"][0]["image_id"] == 3
    assert r["counts"]["named_twice"] == 0
    # list form
    r2 = score_scenes([{"image_id": 2, "caption": "there is a small yellow triangle"}], {2: other})
    assert r2["object_accuracy"] == 1.0 and r2["pointing_accuracy"] is None
    # the example of repetition: one object named twice, another left out
    twice = "a small blue circle above a large green square below a small blue circle"
    r3 = score_scenes({1: twice, 2: "a small yellow triangle left of a small yellow triangle"}, {1: SCENE, 2: other})
    assert r3["counts"]["named_twice"] == 2 and r3["object_accuracy"] == 0


def test_references_score_perfectly(data, truth):
    out, _ = data
    caps = _load(out, "captions", "val")["annotations"]
    first = {}
    for a in caps:
        first.setdefault(a["image_id"], a["caption"])
    gt = {k: truth[k] for k in first}
    assert score_scenes(first, gt)["object_accuracy"] == 1.0


# ----------------------------------------------------------------------------- questions


def _answer(question: str, objects: list[dict]) -> tuple[str, str, str]:
    """Recompute (answer, question_type, answer_type) from the instances alone."""

    def one(objs):
        assert len(objs) == 1, (question, objects)
        return objs[0]

    def find(**kw):
        return [o for o in objects if all(v is None or o[k] == v for k, v in kw.items())]

    if m := re.fullmatch(r"what colour is the (?:(small|large) )?(\w+)\?", question):
        return one(find(size=m[1], shape=m[2]))["color"], "colour", "other"
    if m := re.fullmatch(r"what shape is the (?:(small|large) )?(\w+) object\?", question):
        return one(find(size=m[1], color=m[2]))["shape"], "shape", "other"
    if question == "how many objects are there?":
        return str(len(objects)), "count", "number"
    if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
        assert m[1] in RGB
        return str(len(find(color=m[1]))), "count", "number"
    if m := re.fullmatch(r"how many (\w+)s are there\?", question):
        return str(len(find(shape=m[1]))), "count", "number"
    if m := re.fullmatch(r"is there (an?) (?:(\w+) )?(\w+)\?", question):
        assert m[1] == ("an" if (m[2] or m[3])[0] in "aeiou" else "a")
        return ("yes" if find(color=m[2], shape=m[3]) else "no"), "existence", "yes/no"
    if m := re.fullmatch(r"is the (\w+) (\w+) (left of|above) the (\w+) (\w+)\?", question):
        a, b = one(find(color=m[1], shape=m[2])), one(find(color=m[4], shape=m[5]))
        axis = 0 if m[3] == "left of" else 1
        d = _centre(b)[axis] - _centre(a)[axis]
        assert abs(d) >= 12, question
        return ("yes" if d > 0 else "no"), "spatial", "yes/no"
    if m := re.fullmatch(r"what shape is left of the (\w+) (\w+)\?", question):
        b = one(find(color=m[1], shape=m[2]))
        left = [o for o in objects if o is not b and _centre(o)[0] < _centre(b)[0]]
        assert _centre(b)[0] - _centre(one(left))[0] >= 12
        return one(left)["shape"], "spatial", "other"
    raise AssertionError(f"unknown question form: {question}")


def test_answers_agree_with_instances_and_are_balanced(data, truth):
    out, _ = data
    types, yes_no, count_answers = Counter(), Counter(), Counter()
    for s in SPLITS:
        q = _load(out, "questions", s)["questions"]
        anns = {a["question_id"]: a for a in _load(out, "annotations", s)["annotations"]}
        per_image = {}
        for x in q:
            a = anns[x["question_id"]]
            assert _answer(x["question"], truth[x["image_id"]]) == (
                a["multiple_choice_answer"],
                a["question_type"],
                a["answer_type"],
            ), x
            per_image.setdefault(x["image_id"], []).append(x["question"])
            types[a["question_type"]] += 1
            if a["answer_type"] == "yes/no":
                yes_no[a["multiple_choice_answer"]] += 1
            if a["answer_type"] == "number":
                count_answers[a["multiple_choice_answer"]] += 1
        assert all(len(set(v)) == len(v) for v in per_image.values())  # no repeats within an image
    assert set(types) == set(scenes.QUESTION_TYPES)
    assert min(types.values()) >= 0.08 * sum(types.values())
    assert 0.35 <= yes_no["yes"] / (yes_no["yes"] + yes_no["no"]) <= 0.65
    assert count_answers["0"] > 0 and len(count_answers) >= 3


# ----------------------------------------------------------------------------- prepared layout


@pytest.mark.skipif(
    importlib.util.find_spec("data_prep.coco") is None or importlib.util.find_spec("data_prep.vqa_v2") is None,
    reason="COCO / VQA v2 preparers not present",
)
def test_prepare_writes_the_prepared_layout(tmp_path):
    from core.prepared import CAPTIONS, IMAGES, VQA, image_paths, read_prepared

    summary = generate_scenes(tmp_path, 1, {"train": 12, "val": 4}, workers=2, prepare=True)
    assert summary["prepared"] is True
    caps = read_prepared(tmp_path, CAPTIONS)
    vqa = read_prepared(tmp_path, VQA)
    read_prepared(tmp_path, IMAGES)
    assert caps["source"] == "scenes" and vqa["source"] == "scenes"
    assert [len(caps["splits"][s]) for s in ("train", "val")] == [12, 4]
    assert sum(len(v) for v in vqa["splits"].values()) == sum(summary["questions"].values())
    paths = image_paths(tmp_path)
    for rec in caps["splits"]["val"]:
        assert paths[rec["image"]].is_file() and len(rec["captions"]) == 5
    for rec in vqa["splits"]["train"]:
        assert paths[rec["image"]].is_file()
