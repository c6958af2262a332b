"""A second renderer of the scenes' written spec, independent of data_prep/scenes/generate.py.

The spec (data_prep/scenes/generate.py's docstring and the README): 224 x 224 pictures of 1 to
4 objects, each a distinct (size, colour, shape); circle, square, triangle or star; red,
green, blue, yellow, purple or orange; small (a 32-40 px box) or large (60-76 px); boxes at
least 6 px apart, inside the picture; a light background (each channel 215-245) with a
little noise. What the spec leaves open is decided differently here:

* shapes are rasterised from their geometry with numpy (coverage from 4 x 4 supersampling),
  not drawn with PIL;
* the star is regular, with an inner radius 0.45 of the outer (generate.py: 0.382), as wide
  as its box and centred in it (generate.py stretches it to fill the box);
* the colours are jittered by up to 12 per channel around the named hue, and the noise is
  uniform, not Gaussian.

Used by the tests to score the shipped models on scenes they were never trained on, drawn by
other code.
"""

from __future__ import annotations

import numpy as np

SIZE = 224
HUES = {
    "red": (220, 50, 50),
    "green": (50, 160, 70),
    "blue": (50, 90, 220),
    "yellow": (230, 200, 40),
    "purple": (140, 70, 180),
    "orange": (240, 140, 40),
}
SIDES = {"small": (32, 40), "large": (60, 76)}
SHAPES = ("circle", "square", "triangle", "star")
GAP = 6
SUPER = 4


def _apart(a, b) -> bool:
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    return max(bx - ax - aw, ax - bx - bw) >= GAP or max(by - ay - ah, ay - by - bh) >= GAP


def sample_objects(rng: np.random.Generator) -> list[dict]:
    """1-4 objects of distinct (size, colour, shape), in boxes at least GAP apart."""
    while True:
        count = int(rng.integers(1, 5))
        kinds = [(s, c, sh) for s in SIDES for c in HUES for sh in SHAPES]
        chosen = [kinds[i] for i in rng.permutation(len(kinds))[:count]]
        objects: list[dict] = []
        for size, colour, shape in chosen:
            side = int(rng.integers(SIDES[size][0], SIDES[size][1] + 1))
            for _ in range(100):
                box = [int(rng.integers(0, SIZE - side + 1)), int(rng.integers(0, SIZE - side + 1)), side, side]
                if all(_apart(box, o["bbox"]) for o in objects):
                    objects.append({"shape": shape, "color": colour, "size": size, "bbox": box})
                    break
        if len(objects) == count:
            return objects


def _inside_polygon(px: np.ndarray, py: np.ndarray, polygon: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd rule, vectorised over the sample points."""
    inside = np.zeros(px.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1]):
        crosses = (y0 > py) != (y1 > py)
        at = x0 + (py - y0) * (x1 - x0) / np.where(y1 == y0, 1e-12, y1 - y0)
        inside ^= crosses & (px < at)
    return inside


def _star(cx: float, cy: float, outer: float, inner: float) -> list[tuple[float, float]]:
    angles = np.deg2rad(-90 + 36 * np.arange(10))
    radii = np.where(np.arange(10) % 2 == 0, outer, inner)
    return list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))


def coverage(shape: str, box: list[int]) -> np.ndarray:
    """(SIZE, SIZE) fraction of each pixel the shape covers."""
    x, y, w, h = box
    offsets = (np.arange(SUPER) + 0.5) / SUPER
    px = (np.arange(SIZE)[:, None] + offsets[None, :]).reshape(-1)  # sample x (and y) positions
    sx, sy = np.meshgrid(px, px)  # (SIZE*SUPER, SIZE*SUPER)
    if shape == "square":
        hit = (sx >= x) & (sx < x + w) & (sy >= y) & (sy < y + h)
    elif shape == "circle":
        hit = ((sx - x - w / 2) / (w / 2)) ** 2 + ((sy - y - h / 2) / (h / 2)) ** 2 <= 1
    elif shape == "triangle":
        hit = _inside_polygon(sx, sy, [(x + w / 2, y), (x + w, y + h), (x, y + h)])
    else:  # a regular star as wide as its box, centred in it (its height is 0.95 of its width)
        points = _star(0.0, 0.0, 1.0, 0.45)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        scale = w / (max(xs) - min(xs))
        top = y + (h - scale * (max(ys) - min(ys))) / 2
        polygon = [(x + (px_ - min(xs)) * scale, top + (py_ - min(ys)) * scale) for px_, py_ in points]
        hit = _inside_polygon(sx, sy, polygon)
    return hit.reshape(SIZE, SUPER, SIZE, SUPER).mean((1, 3))


def render(objects: list[dict], rng: np.random.Generator) -> np.ndarray:
    """The picture, (SIZE, SIZE, 3) uint8."""
    background = rng.integers(215, 246, size=3).astype(np.float64)
    picture = np.broadcast_to(background, (SIZE, SIZE, 3)).copy()
    for o in objects:
        colour = np.clip(np.array(HUES[o["color"]], dtype=np.float64) + rng.integers(-12, 13, size=3), 0, 255)
        alpha = coverage(o["shape"], o["bbox"])[..., None]
        picture = picture * (1 - alpha) + colour * alpha
    picture += rng.uniform(-9, 9, size=picture.shape)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def scenes(seed: int, count: int) -> list[tuple[list[dict], np.ndarray]]:
    """``count`` (objects, picture) pairs, a function of ``seed`` only."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        objects = sample_objects(rng)
        out.append((objects, render(objects, rng)))
    return out
