"""The embedded default data set: synthetic shape scenes with captions and VQA questions.

``generate_scenes(out_dir, seed, {"train": 2000, "val": 200, "test": 500})`` draws 224x224
PNG scenes of 1 to 4 objects (circle, square, triangle, star; six colours; small or large)
and writes, in out_dir/raw/, the same files the real data sets ship:

* ``captions_{split}.json``  -- COCO captions format, 5 reference captions per image;
* ``instances_{split}.json`` -- COCO instances format, one box per object, with added
  ``color`` and ``size`` fields (the ground truth the scene metrics use);
* ``questions_{split}.json`` / ``annotations_{split}.json`` -- VQA v2 format, 10 identical
  answers per question (the truth is known); every question also has VQA v1's
  ``multiple_choices``, 18 candidate answers for the multiple-choice task (``question_choices``).

Then, with ``prepare=True``, it runs the COCO and VQA v2 preparers on those files, so the
scenes reach the prepared layout (``core/prepared.py``) through the same code as the
real data sets.

Everything is a function of ``(seed, split, index)``: each image has its own random
generator, so the files are byte-identical whatever the number of worker processes. The
multiple-choice candidates come from a second, separate generator per image
(``choice_rng``), so adding them left every image, caption, question and answer of a seed
exactly as it was.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.errors import AttendError
from core.prepared import atomic_write_json

from .world import COLOURS, SHAPES, SIZES, article, centre, describe

IMAGE_SIZE = 224
RGB = {
    "red": (220, 50, 50),
    "green": (50, 160, 70),
    "blue": (50, 90, 220),
    "yellow": (230, 200, 40),
    "purple": (140, 70, 180),
    "orange": (240, 140, 40),
}
assert tuple(RGB) == COLOURS
SIDE = {"small": (32, 40), "large": (60, 76)}  # inclusive bounding-box side ranges, px
assert tuple(SIDE) == SIZES
CATEGORY_ID = {shape: i + 1 for i, shape in enumerate(SHAPES)}
BACKGROUND = (215, 245)  # each channel uniform in this range (inclusive)
NOISE_SIGMA = 6.0
MIN_GAP = 6  # px between bounding boxes
SPATIAL_MARGIN = 12  # px along the asked axis for a spatial question to be unambiguous
MAX_OBJECTS = 4
SPLIT_ORDER = ("train", "val", "test")
QUESTION_TYPES = ("colour", "shape", "count", "existence", "spatial")
_SCALE = 2  # draw at 2x and downsample: anti-aliased edges

# ------------------------------------------------------------------------------ geometry


def _star_unit(inner: float = 0.382) -> list[tuple[float, float]]:
    """A five-pointed star pointing up, stretched to fill the unit square."""
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else inner
        a = np.deg2rad(-90 + 36 * k)
        pts.append((r * np.cos(a), r * np.sin(a)))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return [((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)) for x, y in pts]


_STAR = _star_unit()
STAR_INNER = 0.382  # the inner radius of the default renderer's star (a regular star's)


def _polygon_area(pts: Sequence[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, [*pts[1:], pts[0]])))


_STAR_AREA = _polygon_area(_STAR)


def _area(shape: str, s: int) -> float:
    return round({"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "star": _STAR_AREA}[shape] * s * s, 2)


def _separated(a: Sequence[int], b: Sequence[int]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    gap_x = max(bx - (ax + aw), ax - (bx + bw))
    gap_y = max(by - (ay + ah), ay - (by + bh))
    return gap_x >= MIN_GAP or gap_y >= MIN_GAP


def _sample_objects(rng: np.random.Generator) -> list[dict]:
    """1..4 objects with distinct (size, colour, shape), inside the image, >= MIN_GAP apart."""
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    while True:
        triples = [(s, c, sh) for s in SIZES for c in COLOURS for sh in SHAPES]
        picks = rng.choice(len(triples), size=n, replace=False)
        objects: list[dict] = []
        placed = True
        for p in picks:
            size, colour, shape = triples[int(p)]
            lo, hi = SIDE[size]
            side = int(rng.integers(lo, hi + 1))
            for _ in range(200):
                x = int(rng.integers(0, IMAGE_SIZE - side + 1))
                y = int(rng.integers(0, IMAGE_SIZE - side + 1))
                box = [x, y, side, side]
                if all(_separated(box, o["bbox"]) for o in objects):
                    objects.append({"shape": shape, "color": colour, "size": size, "bbox": box})
                    break
            else:
                placed = False
                break
        if placed:
            return objects


def _draw(objects: Sequence[Mapping], bg: tuple, scale: int, star, place) -> Image.Image:
    """The objects on a plain ``bg`` background, drawn at ``scale`` times the picture's size.
    ``place(o)`` -> the object's sub-pixel offset (dx, dy), its colour and its triangle's apex
    (a fraction of the width), asked in the objects' order."""
    img = Image.new("RGB", (IMAGE_SIZE * scale, IMAGE_SIZE * scale), bg)
    draw = ImageDraw.Draw(img)
    for o in objects:
        (dx, dy), fill, apex = place(o)
        x, y = (o["bbox"][0] + dx) * scale, (o["bbox"][1] + dy) * scale
        w, h = o["bbox"][2] * scale - 1, o["bbox"][3] * scale - 1  # the box's last pixel lies at x + w
        if o["shape"] == "square":
            draw.rectangle([x, y, x + w, y + h], fill=fill)
        elif o["shape"] == "circle":
            draw.ellipse([x, y, x + w, y + h], fill=fill)
        elif o["shape"] == "triangle":
            draw.polygon([(x + w * apex, y), (x + w, y + h), (x, y + h)], fill=fill)
        elif o["shape"] == "star":
            draw.polygon([(x + u * w, y + v * h) for u, v in star], fill=fill)
        else:  # pragma: no cover
            raise ValueError(o["shape"])
    return img


def _render(objects: Sequence[Mapping], rng: np.random.Generator) -> np.ndarray:
    bg = tuple(int(v) for v in rng.integers(BACKGROUND[0], BACKGROUND[1] + 1, size=3))
    img = _draw(objects, bg, _SCALE, _STAR, lambda o: ((0, 0), RGB[o["color"]], 0.5))
    small = np.asarray(img.reduce(_SCALE), dtype=np.float32)
    noisy = small + rng.standard_normal(small.shape, dtype=np.float32) * NOISE_SIGMA
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# What ``vary=True`` draws for each scene: everything the spec leaves open. Ranges, each uniform.
VARY = {
    "supersampling": (1, 4),  # 1: aliased edges; 2-4: anti-aliased (the default renderer: 2)
    "blur": (0.0, 0.8),  # px, Gaussian: outline softness (default: none)
    "noise_sigma": (2.0, 10.0),  # the default renderer: 6
    "colour_jitter": 10,  # +- per channel of each object's colour (default: exact)
    "star_inner": (0.33, 0.5),  # inner radius of the star (default: 0.382)
    "apex_shift": (-0.15, 0.15),  # of the width: the triangle's apex off-centre (default: centred)
    "subpixel": (0.0, 1.0),  # px: each object's drawn position shifted within its pixel
}


def vary_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The draws of the varied rendering of a scene: a stream of its own, so that a scene's
    objects, captions and questions are the same with and without ``vary``."""
    return np.random.default_rng([int(seed), _split_code(split), int(index), 1])


def _render_varied(objects: Sequence[Mapping], rng: np.random.Generator) -> np.ndarray:
    """The scene drawn with every free choice of the spec drawn anew (``VARY``)."""
    bg = tuple(int(v) for v in rng.integers(BACKGROUND[0], BACKGROUND[1] + 1, size=3))
    scale = int(rng.integers(VARY["supersampling"][0], VARY["supersampling"][1] + 1))
    star = _star_unit(float(rng.uniform(*VARY["star_inner"])))
    jitter = VARY["colour_jitter"]

    def place(o):
        offset = rng.uniform(*VARY["subpixel"], size=2)
        fill = tuple(int(np.clip(c + rng.integers(-jitter, jitter + 1), 0, 255)) for c in RGB[o["color"]])
        apex = 0.5 + rng.uniform(*VARY["apex_shift"]) if o["shape"] == "triangle" else 0.5
        return offset, fill, apex

    small = _draw(objects, bg, scale, star, place)
    small = small.reduce(scale) if scale > 1 else small
    blur = float(rng.uniform(*VARY["blur"]))
    if blur > 0.05:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(small, dtype=np.float32)
    noisy = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * float(rng.uniform(*VARY["noise_sigma"]))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ questions


def _count(objects, **attrs) -> int:
    return sum(all(o[k] == v for k, v in attrs.items()) for o in objects)


def _q_colour(objects, rng):
    options = []
    for o in objects:
        if _count(objects, size=o["size"], shape=o["shape"]) == 1:
            options.append((f"what colour is the {o['size']} {o['shape']}?", o["color"]))
        if _count(objects, shape=o["shape"]) == 1:
            options.append((f"what colour is the {o['shape']}?", o["color"]))
    if not options:
        return None
    q, a = options[int(rng.integers(len(options)))]
    return q, a, "other"


def _q_shape(objects, rng):
    options = []
    for o in objects:
        if _count(objects, size=o["size"], color=o["color"]) == 1:
            options.append((f"what shape is the {o['size']} {o['color']} object?", o["shape"]))
        if _count(objects, color=o["color"]) == 1:
            options.append((f"what shape is the {o['color']} object?", o["shape"]))
    if not options:
        return None
    q, a = options[int(rng.integers(len(options)))]
    return q, a, "other"


def _pick(rng, present: Sequence[str], every: Sequence[str]) -> str:
    """Half the time something present, otherwise anything (so zeros appear too)."""
    pool = present if (present and rng.random() < 0.5) else every
    return pool[int(rng.integers(len(pool)))]


def _q_count(objects, rng):
    form = rng.random()
    if form < 0.4:
        shape = _pick(rng, sorted({o["shape"] for o in objects}), SHAPES)
        return f"how many {shape}s are there?", str(_count(objects, shape=shape)), "number"
    if form < 0.8:
        colour = _pick(rng, sorted({o["color"] for o in objects}), COLOURS)
        return f"how many {colour} objects are there?", str(_count(objects, color=colour)), "number"
    return "how many objects are there?", str(len(objects)), "number"


def _q_existence(objects, rng):
    want_yes = rng.random() < 0.5
    with_colour = rng.random() < 0.6
    if not with_colour and not want_yes and len({o["shape"] for o in objects}) == len(SHAPES):
        with_colour = True  # every shape is present: "is there a <shape>?" cannot be "no"
    if with_colour:
        present = sorted({(o["color"], o["shape"]) for o in objects})
        pool = present if want_yes else [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        colour, shape = pool[int(rng.integers(len(pool)))]
        words = f"{colour} {shape}"
    else:
        present = sorted({o["shape"] for o in objects})
        pool = present if want_yes else [s for s in SHAPES if s not in present]
        words = pool[int(rng.integers(len(pool)))]
    return f"is there {article(words)} {words}?", "yes" if want_yes else "no", "yes/no"


def _q_spatial(objects, rng):
    refs = [o for o in objects if _count(objects, color=o["color"], shape=o["shape"]) == 1]
    forms = []
    for axis, word in ((0, "left of"), (1, "above")):
        pairs = [
            (a, b)
            for a in refs
            for b in refs
            if a is not b and abs(centre(a)[axis] - centre(b)[axis]) >= SPATIAL_MARGIN
        ]
        if pairs:
            forms.append(("yesno", axis, word, pairs))
    what = []
    for b in refs:
        bx = centre(b)[0]
        left = [o for o in objects if o is not b and centre(o)[0] < bx]
        if len(left) == 1 and bx - centre(left[0])[0] >= SPATIAL_MARGIN:
            what.append((b, left[0]))
    if what:
        forms.append(("what", None, None, what))
    if not forms:
        return None
    kind, axis, word, items = forms[int(rng.integers(len(forms)))]
    if kind == "what":
        b, a = items[int(rng.integers(len(items)))]
        return f"what shape is left of the {b['color']} {b['shape']}?", a["shape"], "other"
    want_yes = rng.random() < 0.5
    pool = [(a, b) for a, b in items if (centre(a)[axis] < centre(b)[axis]) == want_yes]
    a, b = pool[int(rng.integers(len(pool)))]  # (a, b) and (b, a) are both in items: never empty
    return (
        f"is the {a['color']} {a['shape']} {word} the {b['color']} {b['shape']}?",
        "yes" if want_yes else "no",
        "yes/no",
    )


_MAKERS = {"colour": _q_colour, "shape": _q_shape, "count": _q_count, "existence": _q_existence, "spatial": _q_spatial}


def _questions(objects, rng) -> list[tuple[str, str, str, str]]:
    """6-8 distinct questions, types cycled through shuffled rounds so they stay balanced."""
    want = int(rng.integers(6, 9))
    out: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for _round in range(6):
        for t in rng.permutation(len(QUESTION_TYPES)):
            qtype = QUESTION_TYPES[int(t)]
            for _try in range(3):
                made = _MAKERS[qtype](objects, rng)
                if made is None:
                    break
                if made[0] not in seen:
                    seen.add(made[0])
                    out.append((qtype, *made))
                    break
            if len(out) == want:
                return out
    return out


# ------------------------------------------------------------------------------ multiple choice

NUM_CHOICES = 18  # as VQA v1's multiple-choice task
PLAUSIBLE_CHOICES = 3  # VQA v1: 3 plausible answers (given by people who saw the question, not the image)
NUMBERS = ("0", "1", "2", "3", "4")  # every count a scene can have
# Answers of the same kind that no scene has: wrong but plausible-sounding candidates (and,
# like many of VQA v1's candidates, outside the trained model's answer list).
_KINDS = (
    (COLOURS, ("pink", "white", "black", "brown", "gray")),
    (SHAPES, ("rectangle", "hexagon", "oval", "diamond", "heart")),
    (NUMBERS, ("5", "6", "7", "8")),
    (("yes", "no"), ()),
)
# VQA v1: the 10 most popular answers of the data set. These are the scenes' 10 most frequent
# answers, measured on 400 train scenes of seed 1 (2,802 questions), most frequent first.
POPULAR_ANSWERS = ("no", "yes", "1", "triangle", "square", "circle", "star", "0", "orange", "purple")
ALL_ANSWERS = tuple(a for world, extra in _KINDS for a in (*world, *extra))  # the random candidates' pool
assert len(set(ALL_ANSWERS)) == len(ALL_ANSWERS) >= NUM_CHOICES


def choice_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene ``index``'s multiple-choice candidates: a stream apart from
    ``scene_rng``'s (one more seed word), so the candidates change nothing else."""
    return np.random.default_rng([int(seed), _split_code(split), int(index), _CHOICES_CODE])


def _choices(answer: str, rng: np.random.Generator) -> list[str]:
    """18 distinct candidates, the right answer among them once, in VQA v1's recipe: the right
    answer, 3 plausible answers of the same kind (colour, shape, number, yes/no; fewer when the
    kind has fewer), the 10 popular answers, then random answers of any kind up to 18; shuffled."""
    kind = next(world + extra for world, extra in _KINDS if answer in world)
    same = [a for a in kind if a != answer]
    plausible = [same[int(i)] for i in rng.permutation(len(same))[:PLAUSIBLE_CHOICES]]
    picked = list(dict.fromkeys([answer, *plausible, *POPULAR_ANSWERS]))
    for i in rng.permutation(len(ALL_ANSWERS)):
        if len(picked) == NUM_CHOICES:
            break
        if ALL_ANSWERS[int(i)] not in picked:
            picked.append(ALL_ANSWERS[int(i)])
    return [picked[int(i)] for i in rng.permutation(len(picked))]


def question_choices(seed: int, split: str, index: int, answers: Sequence[str]) -> list[list[str]]:
    """The 18 multiple-choice candidates of each question of scene ``index`` (its ``answers`` in order)."""
    rng = choice_rng(seed, split, index)
    return [_choices(answer, rng) for answer in answers]


# ------------------------------------------------------------------------------ one scene


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode())


_CHOICES_CODE = zlib.crc32(b"multiple choice")


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _split_code(split), int(index)])


def like_pairs_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The draws that make a scene hold a like pair (``like_pairs``): a stream of its own, so
    that scenes left as they are stay the seed's."""
    return np.random.default_rng([int(seed), _split_code(split), int(index), 2])


def degrade_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The draws of a scene's degradation (``degrade``): a stream of its own, like the others."""
    return np.random.default_rng([int(seed), _split_code(split), int(index), 3])


def _degraded(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` through one ordinary degradation (``core.domain.degrade``: JPEG, blur, a
    downscale, noise), brought back to their size so that boxes and file records still hold."""
    import random

    from core.domain import degrade

    height, width = pixels.shape[:2]
    image = degrade(Image.fromarray(pixels), random.Random(int(rng.integers(2**32))))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def has_like_pair(objects: Sequence[Mapping]) -> bool:
    """Whether two of the objects share size and colour (they then differ only in shape)."""
    keys = [(o["size"], o["color"]) for o in objects]
    return len(set(keys)) < len(keys)


def make_scene(
    seed: int, split: str, index: int, vary: bool = False, like_pairs: float = 0.0, degrade: float = 0.0
) -> tuple[list[dict], np.ndarray, list[str], list]:
    """(objects, HxWx3 uint8 pixels, 5 captions, questions) of scene ``index`` of ``split``.
    ``vary``: the same scene drawn with the spec's free choices drawn anew (``VARY``).
    ``like_pairs``: the chance that a scene without a like pair (``has_like_pair``) has its
    objects drawn again until it holds one; 0 keeps every scene the seed's.
    ``degrade``: the chance that the drawn pixels pass through one ordinary degradation
    (``_degraded``: a JPEG re-encoding, a blur, a downscale or noise); the scene is the same."""
    rng = scene_rng(seed, split, index)
    objects = _sample_objects(rng)
    if like_pairs > 0 and not has_like_pair(objects):
        pairs = like_pairs_rng(seed, split, index)
        if pairs.random() < like_pairs:
            while not has_like_pair(objects):
                objects = _sample_objects(pairs)
    pixels = _render(objects, rng)
    captions = describe(objects)
    questions = _questions(objects, rng)
    if vary:
        pixels = _render_varied(objects, vary_rng(seed, split, index))
    if degrade > 0:
        draws = degrade_rng(seed, split, index)
        if draws.random() < degrade:
            pixels = _degraded(pixels, draws)
    return objects, pixels, captions, questions


def _work(task: tuple[int, str, int, str, bool, float, float]) -> tuple[list[dict], list[str], list]:
    seed, split, index, path, vary, like_pairs, degrade = task
    objects, pixels, captions, questions = make_scene(seed, split, index, vary, like_pairs, degrade)
    buf = io.BytesIO()  # encode in memory, write once: many small writes are slow on some disks
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=3)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return objects, captions, questions


# ------------------------------------------------------------------------------ data set


def _ordered_splits(counts: Mapping[str, int]) -> list[str]:
    return [s for s in SPLIT_ORDER if s in counts] + [s for s in counts if s not in SPLIT_ORDER]


def _info(seed: int, split: str) -> dict:
    return {
        "description": f"attend synthetic shape scenes, seed {seed}, split {split}",
        "version": "1.0",
        "year": 2025,
        "contributor": "attend data_prep.scenes",
        "date_created": "2025-01-01",
    }


_LICENSE = {"id": 1, "name": "generated by attend (MIT)", "url": ""}


def generate_scenes(
    out_dir: str | os.PathLike,
    seed: int,
    counts: Mapping[str, int],
    workers: int = 2,
    prepare: bool = True,
    vary: bool = False,
    like_pairs: float = 0.0,
    degrade: float = 0.0,
) -> dict:
    """Generate the scenes, their raw COCO/VQA v2 files, and (``prepare``) the prepared layout.
    ``vary``: draw every free choice of the spec anew for each scene (``VARY``); the objects,
    captions and questions are those of the same seed without it.
    ``like_pairs``: in [0, 1], the chance that a scene is redrawn to hold two objects of the
    same size and colour (``make_scene``); a training option, for the pairs captioners confuse.
    ``degrade``: in [0, 1], the chance that a scene is saved JPEG-compressed, blurred, downscaled
    or noisy (``make_scene``); a training option, for pictures that went through a camera or a
    re-encoding.

    Returns ``{"images": {split: n}, "questions": {split: n}, "seconds": float, ...}``.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if int(seed) < 0:
        raise AttendError(f"scene seed must be >= 0, got {seed}")
    if not 0.0 <= float(like_pairs) <= 1.0:
        raise AttendError(f"--like-pairs must be in [0, 1], got {like_pairs}")
    if not 0.0 <= float(degrade) <= 1.0:
        raise AttendError(f"--degrade must be in [0, 1], got {degrade}")
    splits = _ordered_splits(counts)
    for s in splits:
        if int(counts[s]) < 0:
            raise AttendError(f"scene count for split {s!r} must be >= 0, got {counts[s]}")
        if not s or "/" in s or s.startswith("."):
            raise AttendError(f"bad split name {s!r}")
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    tasks, ids = [], []
    next_id = 0
    for s in splits:
        folder = out_dir / "images" / s
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(int(counts[s])):
            tasks.append(
                (int(seed), s, i, str(folder / f"{next_id:012d}.png"), bool(vary), float(like_pairs), float(degrade))
            )
            ids.append(next_id)
            next_id += 1

    workers = max(1, int(workers))
    if workers == 1 or len(tasks) < 2:
        results = [_work(t) for t in tasks]
    else:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else None)
        chunk = max(1, min(32, len(tasks) // (workers * 8)))
        with ctx.Pool(workers) as pool:
            results = list(pool.imap(_work, tasks, chunksize=chunk))

    summary: dict[str, Any] = {
        "out_dir": str(out_dir),
        "seed": int(seed),
        "vary": bool(vary),
        "like_pairs": float(like_pairs),
        "degrade": float(degrade),
        "images": {},
        "questions": {},
    }
    k = 0
    for s in splits:
        n = int(counts[s])
        split_ids, split_results = ids[k : k + n], results[k : k + n]
        k += n
        images, caps, inst, questions, answers = [], [], [], [], []
        for index, (image_id, (objects, captions, qs)) in enumerate(zip(split_ids, split_results)):
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{image_id:012d}.png",
                    "width": IMAGE_SIZE,
                    "height": IMAGE_SIZE,
                    "license": 1,
                }
            )
            for j, c in enumerate(captions):
                caps.append({"id": image_id * 10 + j, "image_id": image_id, "caption": c})
            for j, o in enumerate(objects):
                inst.append(
                    {
                        "id": image_id * 10 + j,
                        "image_id": image_id,
                        "category_id": CATEGORY_ID[o["shape"]],
                        "bbox": list(o["bbox"]),
                        "area": _area(o["shape"], o["bbox"][2]),
                        "iscrowd": 0,
                        "color": o["color"],
                        "size": o["size"],
                    }
                )
            choices = question_choices(seed, s, index, [a for _, _, a, _ in qs])
            for j, ((qtype, q, a, atype), candidates) in enumerate(zip(qs, choices)):
                qid = image_id * 100 + j
                questions.append(
                    {"image_id": image_id, "question": q, "question_id": qid, "multiple_choices": candidates}
                )
                answers.append(
                    {
                        "question_type": qtype,
                        "multiple_choice_answer": a,
                        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": m} for m in range(1, 11)],
                        "image_id": image_id,
                        "answer_type": atype,
                        "question_id": qid,
                    }
                )
        info = _info(seed, s)
        atomic_write_json(
            raw / f"captions_{s}.json", {"info": info, "licenses": [_LICENSE], "images": images, "annotations": caps}
        )
        atomic_write_json(
            raw / f"instances_{s}.json",
            {
                "info": info,
                "licenses": [_LICENSE],
                "images": images,
                "annotations": inst,
                "categories": [{"id": CATEGORY_ID[sh], "name": sh, "supercategory": "shape"} for sh in SHAPES],
            },
        )
        atomic_write_json(
            raw / f"questions_{s}.json",
            {
                "info": info,
                "task_type": "Open-Ended",
                "data_type": "scenes",
                "license": _LICENSE,
                "data_subtype": s,
                "questions": questions,
            },
        )
        atomic_write_json(
            raw / f"annotations_{s}.json",
            {"info": info, "license": _LICENSE, "data_type": "scenes", "data_subtype": s, "annotations": answers},
        )
        summary["images"][s] = n
        summary["questions"][s] = len(questions)

    summary["prepared"] = False
    if prepare:
        from data_prep.coco import prepare_coco_captions
        from data_prep.vqa_v2 import prepare_vqa

        prepare_coco_captions(
            out_dir,
            {s: (str(raw / f"captions_{s}.json"), str(out_dir / "images" / s)) for s in splits},
            min_count=1,
            source="scenes",
        )
        prepare_vqa(
            out_dir,
            {
                s: (str(raw / f"questions_{s}.json"), str(raw / f"annotations_{s}.json"), str(out_dir / "images" / s))
                for s in splits
            },
            top_k=1000,
            image_pattern="{image_id:012d}.png",
            source="scenes",
        )
        summary["prepared"] = True
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
