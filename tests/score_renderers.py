"""Score captioners on the same kind of scenes drawn three ways: the project's renderer, its
varied rendering (`attend prepare scenes --vary`) and the independent second renderer
(``scenes_numpy``). Not a test: the README's commands run it.

    .venv/bin/python tests/score_renderers.py scenes runs/x/best.pt --seed 11 --count 300

prints one JSON line per checkpoint and renderer: object accuracy (overall and by object
count), pointing accuracy and the captions that name an object twice, beam 3.
``--changes jpeg75 blur1 tint`` scores changed copies of the drawn scenes instead, one line
each: saved as JPEG at that quality, blurred with that radius, or tinted warm (red +6%, blue
-6%).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scenes_numpy import scenes  # noqa: E402

from captioner.inference import Captioner  # noqa: E402
from core.domain import jpeg_copy  # noqa: E402
from data_prep.scenes import make_scene  # noqa: E402
from data_prep.scenes.measures import score_scenes  # noqa: E402


def drawn(renderer: str, seed: int, count: int):
    """[(objects, pixels)] of ``count`` scenes of ``seed`` by ``renderer``."""
    if renderer == "second":
        return scenes(seed, count)
    return [make_scene(seed, "test", i, vary=renderer == "varied")[:2] for i in range(count)]


def changed(pixels: np.ndarray, change: str) -> np.ndarray:
    """``pixels`` after ``change``: ``jpegQ`` (saved as JPEG at quality Q), ``blurR`` (a Gaussian
    blur of radius R) or ``tint`` (warm: red up 6%, blue down 6%)."""
    image = Image.fromarray(pixels)
    if change.startswith("jpeg"):
        return np.asarray(jpeg_copy(image, int(change[4:])))
    if change.startswith("blur"):
        return np.asarray(image.filter(ImageFilter.GaussianBlur(float(change[4:]))))
    if change == "tint":
        return (pixels.astype(np.float32) * np.array([1.06, 1.0, 0.94])).clip(0, 255).astype(np.uint8)
    raise SystemExit(f"unknown change {change!r}: jpegQ, blurR or tint")


def score(captioner: Captioner, items, beam: int) -> dict:
    results = captioner.caption([Image.fromarray(p) for _, p in items], beam_size=beam)
    predictions = {
        i: {"tokens": r.tokens, "attention": None if r.attention is None else r.attention.tolist()}
        for i, r in enumerate(results)
    }
    truth = {i: objects for i, (objects, _) in enumerate(items)}
    s = score_scenes(predictions, truth, image_size=items[0][1].shape[0])
    return {
        "object_accuracy": round(100 * s["object_accuracy"], 2),
        "by_object_count": {k: round(100 * v["accuracy"], 1) for k, v in s["by_object_count"].items()},
        "pointing_accuracy": None if s["pointing_accuracy"] is None else round(100 * s["pointing_accuracy"], 2),
        "named_twice": s["counts"]["named_twice"],
        "in_domain": sum(r.in_domain for r in results if r.in_domain is not None),
        "scenes": len(items),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="captioner checkpoints or shipped names")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--renderers", nargs="+", default=["main", "varied", "second"])
    parser.add_argument("--changes", nargs="+", default=[], help="jpegQ, blurR or tint: score changed copies")
    args = parser.parse_args()
    items = {r: drawn(r, args.seed, args.count) for r in args.renderers}
    for checkpoint in args.checkpoints:
        captioner = Captioner.load(checkpoint)
        for renderer, scenes_drawn in items.items():
            for change in args.changes or [None]:
                these = scenes_drawn if change is None else [(o, changed(p, change)) for o, p in scenes_drawn]
                row = {
                    "checkpoint": checkpoint,
                    "renderer": renderer,
                    "seed": args.seed,
                    **({} if change is None else {"change": change}),
                    **score(captioner, these, args.beam),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
