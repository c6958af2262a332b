"""The shipped models on scenes drawn by other code: a second renderer of the scenes' spec
(tests/scenes_numpy.py: numpy geometry, other star proportions, jittered colours, uniform
noise), checked against the spec by hand, then scored with the shipped captioner."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scenes_numpy import SIZE, coverage, sample_objects, scenes

from data_prep.scenes.measures import caption_correct

SEED, COUNT = 2027, 60


def test_coverage_matches_each_shapes_area():
    box = [50, 60, 40, 40]
    assert coverage("square", box).sum() == pytest.approx(1600, rel=1e-6)
    assert coverage("circle", box).sum() == pytest.approx(np.pi * 400, rel=0.01)
    assert coverage("triangle", box).sum() == pytest.approx(800, rel=0.01)
    # A regular star of outer radius R, inner 0.45 R: 10 triangles of sides R and 0.45 R at 36 degrees.
    width = 40
    outer = width / (2 * np.cos(np.deg2rad(18)))
    star = 10 * 0.5 * outer * 0.45 * outer * np.sin(np.deg2rad(36))
    assert coverage("star", box).sum() == pytest.approx(star, rel=0.02)
    for shape in ("square", "circle", "triangle", "star"):
        ys, xs = np.nonzero(coverage(shape, box))
        assert xs.min() >= 50 and xs.max() <= 89 and ys.min() >= 60 and ys.max() <= 99  # inside its box


def test_layouts_follow_the_spec():
    rng = np.random.default_rng(0)
    for _ in range(200):
        objects = sample_objects(rng)
        assert 1 <= len(objects) <= 4
        assert len({(o["size"], o["color"], o["shape"]) for o in objects}) == len(objects)
        for i, o in enumerate(objects):
            x, y, w, h = o["bbox"]
            assert w == h and 0 <= x and x + w <= SIZE and 0 <= y and y + h <= SIZE
            assert (32 <= w <= 40) if o["size"] == "small" else (60 <= w <= 76)
            for other in objects[i + 1 :]:
                ox, oy, ow, oh = other["bbox"]
                assert max(ox - x - w, x - ox - ow) >= 6 or max(oy - y - h, y - oy - oh) >= 6


@pytest.mark.slow
def test_the_shipped_captioner_on_the_second_renderer():
    from captioner.inference import Captioner

    items = scenes(SEED, COUNT)
    corner = np.concatenate([p[:8, :8].reshape(-1, 3) for _, p in items])
    assert 200 <= corner.mean() <= 250  # a light background
    results = Captioner.load("scenes").caption([Image.fromarray(p) for _, p in items], beam_size=3)
    right = [caption_correct(r.tokens, objects) for r, (objects, _) in zip(results, items)]
    inside = [r.in_domain for r in results]
    print(f"\nsecond renderer, {COUNT} scenes: object accuracy {100 * np.mean(right):.1f}%, in domain {sum(inside)}")
    assert all(inside)  # pictures of the same kind, drawn by other code: in domain
    # Measured with the captioner shipped since 2026-12-04 (coverage, degraded scenes): 95.0% on these 60 scenes
    # (97.8% on 500 of seed 2027), 98.67% on 300 of seed 11, 98.6% on 500 of seed 4242. A floor
    # well under all of them: a model that stops reading colours or shapes fails.
    assert np.mean(right) >= 0.85
