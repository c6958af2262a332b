"""`attend prepare scenes --vary`: the same scenes (objects, captions, questions) drawn with
every free choice of the spec drawn anew, and still within the spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_prep.scenes.generate import BACKGROUND, IMAGE_SIZE, RGB, VARY, make_scene
from tests.cli_helpers import run_cli


def _background_patch(pixels, objects, size=12):
    """A size x size patch at least 3 px from every object's box, or None."""
    for y0 in range(0, 224 - size, size):
        for x0 in range(0, 224 - size, size):
            if all(
                max(o["bbox"][0] - (x0 + size), x0 - (o["bbox"][0] + o["bbox"][2]),
                    o["bbox"][1] - (y0 + size), y0 - (o["bbox"][1] + o["bbox"][3])) >= 3
                for o in objects
            ):  # fmt: skip
                return pixels[y0 : y0 + size, x0 : x0 + size].reshape(-1, 3)
    return None


def test_varied_scenes_keep_the_truth_stay_in_the_spec_and_vary():
    noise, edges = [], []
    for index in range(30):
        objects, plain, captions, questions = make_scene(11, "test", index)
        same, varied, same_captions, same_questions = make_scene(11, "test", index, vary=True)
        assert same == objects and same_captions == captions and same_questions == questions
        assert not np.array_equal(plain, varied)
        px = varied.astype(float)
        for o in objects:
            x, y, side, _ = o["bbox"]
            cx, cy = x + side // 2, y + side // 2 + (side // 6 if o["shape"] in ("triangle", "star") else 0)
            centre = px[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
            assert np.all(np.abs(centre - RGB[o["color"]]) <= VARY["colour_jitter"] + 12), (index, o, centre)
        patch = _background_patch(px, objects)
        if patch is not None:
            mean = patch.mean(0)
            assert np.all((mean > BACKGROUND[0] - 4) & (mean < BACKGROUND[1] + 4)), (index, mean)
            noise.append(patch.std(0).mean())
        # edge softness: the steepest step along the row through the first object's centre
        o = objects[0]
        row = px[o["bbox"][1] + o["bbox"][3] // 2, :, :].mean(1)
        edges.append(np.abs(np.diff(row)).max())
    # The noise's sigma is drawn from VARY's range, not fixed at the default renderer's 6
    assert min(noise) < 4.5 and max(noise) > 7.5, (min(noise), max(noise))
    assert np.ptp(edges) > 30  # aliased sharp edges and blurred soft ones both occur


def test_prepare_scenes_vary_on_the_command_line(tmp_path, capsys):
    plain, varied = tmp_path / "plain", tmp_path / "varied"
    for out, extra in ((plain, []), (varied, ["--vary"])):
        code, out_text, err = run_cli(
            capsys, "prepare", "scenes", "--out", out, "--seed", "3", "--train", "2", "--val", "1", "--test", "1",
            "--workers", "1", *extra,
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out_text)["vary"] is bool(extra)
    for name in ("captions_train.json", "questions_train.json", "instances_test.json"):
        assert (plain / "raw" / name).read_bytes() == (varied / "raw" / name).read_bytes()
    image = sorted((plain / "images" / "train").glob("*.png"))[0]
    again = varied / "images" / "train" / image.name
    assert not np.array_equal(np.asarray(Image.open(image)), np.asarray(Image.open(again)))


def test_like_pairs_redraws_scenes_to_hold_two_objects_of_one_size_and_colour():
    from data_prep.scenes.generate import has_like_pair
    from data_prep.scenes.world import describe

    assert has_like_pair([{"size": "small", "color": "red"}, {"size": "small", "color": "red"}])
    assert not has_like_pair([{"size": "small", "color": "red"}, {"size": "large", "color": "red"}])
    natural = paired = changed = 0
    for index in range(60):
        seed_scene = make_scene(7, "train", index)
        every = make_scene(7, "train", index, like_pairs=1.0)
        assert make_scene(7, "train", index, like_pairs=0.0)[0] == seed_scene[0]
        assert make_scene(7, "train", index, like_pairs=1.0)[0] == every[0]  # deterministic
        objects, _, captions, _ = every
        assert has_like_pair(objects) and 2 <= len(objects) <= 4
        assert captions == describe(objects)  # the captions tell the scene that was drawn
        if has_like_pair(seed_scene[0]):
            natural += 1
            assert objects == seed_scene[0]  # a scene that holds a pair already is the seed's
        changed += objects != seed_scene[0]
        paired += has_like_pair(make_scene(7, "train", index, like_pairs=0.5)[0])
    assert 0 < natural < 20 and changed == 60 - natural
    assert natural < paired < 60


def test_like_pairs_on_the_command_line(tmp_path, capsys):
    code, out_text, err = run_cli(
        capsys, "prepare", "scenes", "--out", tmp_path / "p", "--seed", "3", "--train", "4", "--val", "1",
        "--test", "1", "--workers", "1", "--like-pairs", "1",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out_text)["like_pairs"] == 1.0
    instances = json.loads((tmp_path / "p" / "raw" / "instances_train.json").read_text())
    keys: dict = {}
    for a in instances["annotations"]:
        keys.setdefault(a["image_id"], []).append((a["size"], a["color"]))
    assert len(keys) == 4 and all(len(set(k)) < len(k) for k in keys.values())


def test_degrade_changes_the_pixels_of_some_scenes_and_nothing_else():
    changed = 0
    for index in range(40):
        plain = make_scene(5, "train", index, vary=True)
        every = make_scene(5, "train", index, vary=True, degrade=1.0)
        assert [every[0], every[2], every[3]] == [plain[0], plain[2], plain[3]]  # the same scene
        assert every[1].shape == plain[1].shape and every[1].dtype == np.uint8  # at its size
        assert np.array_equal(make_scene(5, "train", index, vary=True, degrade=1.0)[1], every[1])  # deterministic
        assert np.array_equal(make_scene(5, "train", index, vary=True, degrade=0.0)[1], plain[1])
        assert not np.array_equal(every[1], plain[1])
        # a degradation keeps the picture: on average within 25 levels of the drawn one
        assert np.abs(every[1].astype(int) - plain[1].astype(int)).mean() < 25
        changed += not np.array_equal(make_scene(5, "train", index, vary=True, degrade=0.5)[1], plain[1])
    assert 8 < changed < 32


def test_degrade_on_the_command_line(tmp_path, capsys):
    code, out_text, err = run_cli(
        capsys, "prepare", "scenes", "--out", tmp_path / "d", "--seed", "3", "--train", "3", "--val", "1",
        "--test", "1", "--workers", "1", "--degrade", "1",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out_text)["degrade"] == 1.0
    image = sorted((tmp_path / "d" / "images" / "train").glob("*.png"))[0]
    assert Image.open(image).size == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("option", ["--like-pairs", "--degrade"])
@pytest.mark.parametrize("bad", ["1.5", "2", "-0.1", "-1", "nan", "inf"])
def test_a_chance_outside_0_to_1_is_a_usage_error_and_writes_nothing(tmp_path, capsys, option, bad):
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, "prepare", "scenes", "--out", tmp_path / "q", option, bad)
    assert stop.value.code == 2
    assert not (tmp_path / "q").exists()
