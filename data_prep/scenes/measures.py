"""The scene measures that judge a captioner on the generated shape scenes.

Pure functions, no torch: captions are lists of tokens (``core.vocab.tokenize``), objects
are dicts as ``world`` describes them, read back from the instances file by ``scene_objects``.

* ``caption_correct`` -- "object accuracy" per scene: the caption names exactly the objects
  present (each ``size colour shape`` matched to a different object, none invented, none
  missing) and every relation between consecutive mentioned objects is true ("and" makes no
  spatial claim, so it is always true).
* ``pointing_hits`` -- for each shape word, does the attention peak inside the named object?
* ``score_scenes`` -- both over a set of scenes, with a breakdown of the errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AttendError
from core.prepared import read_json
from core.vocab import tokenize

from .world import Phrase, parse_caption_full, relation_holds

ERROR_TYPES = (
    "unparsable",
    "wrong_colour",
    "wrong_shape",
    "wrong_size",
    "missing_object",
    "extra_object",
    "wrong_relation",
)


# ---------------------------------------------------------------------------- checking


def _key(obj: Mapping) -> Phrase:
    return (obj["size"], obj["color"], obj["shape"])


def _assign(phrases: Sequence[Phrase], objects: Sequence[Mapping]):
    """Match phrases to objects: exact first, then off by one attribute.

    Returns (match: list[object index | None], kinds: list[error kind | None], unused objects).
    """
    match: list[int | None] = [None] * len(phrases)
    kinds: list[str | None] = [None] * len(phrases)
    free = set(range(len(objects)))
    for p, ph in enumerate(phrases):
        for o in sorted(free):
            if _key(objects[o]) == tuple(ph):
                match[p] = o
                free.discard(o)
                break
    names = ("wrong_size", "wrong_colour", "wrong_shape")
    for p, ph in enumerate(phrases):
        if match[p] is not None:
            continue
        for o in sorted(free):
            diff = [k for k in range(3) if _key(objects[o])[k] != ph[k]]
            if len(diff) == 1:
                match[p], kinds[p] = o, names[diff[0]]
                free.discard(o)
                break
        else:
            kinds[p] = "extra_object"
    return match, kinds, free


def caption_errors(tokens: Sequence[str], objects: Sequence[Mapping]) -> list[str]:
    """Every error of the caption (from ``ERROR_TYPES``, repeated per occurrence); [] iff correct."""
    p = parse_caption_full(tokens)
    errors: list[str] = []
    if not p.ok:
        errors.append("unparsable")
    match, kinds, free = _assign(p.objects, objects)
    errors.extend(k for k in kinds if k is not None)
    errors.extend("missing_object" for _ in free)
    for k, rel in enumerate(p.relations):
        a, b = match[k], match[k + 1]
        if rel is None or a is None or b is None:
            continue  # already counted as unparsable / extra object
        if not relation_holds(rel, objects[a], objects[b]):
            errors.append("wrong_relation")
    return errors


def names_an_object_twice(tokens: Sequence[str]) -> bool:
    """The caption names one (size, colour, shape) twice. A scene's objects differ in at least
    one of the three, so this is always an error: the repetition cross-entropy training leaves."""
    phrases = [tuple(p) for p in parse_caption_full(tokens).objects]
    return len(set(phrases)) < len(phrases)


def caption_correct(tokens: Sequence[str], objects: Sequence[Mapping]) -> bool:
    """The caption names exactly the objects present, and every relation it states is true."""
    p = parse_caption_full(tokens)
    if not p.ok or len(p.objects) != len(objects):
        return False
    keys = [_key(o) for o in objects]
    used: set[int] = set()
    match: list[int] = []
    for ph in p.objects:
        idx = next((i for i, k in enumerate(keys) if k == tuple(ph) and i not in used), None)
        if idx is None:
            return False
        used.add(idx)
        match.append(idx)
    return all(relation_holds(rel, objects[match[k]], objects[match[k + 1]]) for k, rel in enumerate(p.relations))


# ---------------------------------------------------------------------------- pointing


def _grid(g: Any) -> np.ndarray:
    a = np.asarray(g, dtype=np.float64)
    if a.ndim == 1:
        side = int(round(a.size**0.5))
        if side * side != a.size:
            raise ValueError(f"attention of {a.size} values is not a square grid")
        a = a.reshape(side, side)
    if a.ndim != 2:
        raise ValueError(f"attention grid must be h x w, got shape {a.shape}")
    return a


def point_in_object(grid: Any, obj: Mapping, image_size: int | tuple[int, int] = 224) -> bool:
    """Does the peak cell of ``grid`` (tiling the whole image) lie in ``obj``'s box grown by half a cell?"""
    a = _grid(grid)
    h, w = a.shape
    img_w, img_h = (image_size, image_size) if isinstance(image_size, (int, float)) else image_size
    cw, ch = img_w / w, img_h / h
    r, c = divmod(int(np.argmax(a)), w)
    px, py = (c + 0.5) * cw, (r + 0.5) * ch
    x, y, bw, bh = (float(v) for v in obj["bbox"])
    return (x - cw / 2 <= px <= x + bw + cw / 2) and (y - ch / 2 <= py <= y + bh + ch / 2)


def pointing_hits(
    tokens: Sequence[str],
    attention_grids: Sequence[Any],
    objects: Sequence[Mapping],
    image_size: int | tuple[int, int] = 224,
) -> list[bool]:
    """One bool per shape word of the caption: did the attention at that word point at the object?

    ``attention_grids[t]`` is the h x w attention used when emitting ``tokens[t]``. The object is
    the one the phrase names (size, colour, shape); a phrase naming no object is a miss.
    """
    p = parse_caption_full(tokens)
    keys = {_key(o): o for o in objects}
    hits = []
    for ph, t in zip(p.objects, p.shape_positions):
        if t >= len(attention_grids):
            raise ValueError(f"no attention grid for token {t} ({len(attention_grids)} grids for {len(tokens)} tokens)")
        obj = keys.get(tuple(ph))
        hits.append(obj is not None and point_in_object(attention_grids[t], obj, image_size))
    return hits


# ---------------------------------------------------------------------------- scoring


def _as_id(k: Any) -> Any:
    try:
        return int(k)
    except (TypeError, ValueError):
        return k


def _normalise_predictions(predictions: Any) -> dict:
    items: Iterable
    if isinstance(predictions, Mapping):
        items = predictions.items()
    else:
        items = ((p["image_id"], p) for p in predictions)
    out = {}
    for k, v in items:
        attention = None
        if isinstance(v, Mapping):
            attention = v.get("attention")
            v = v["tokens"] if "tokens" in v else v["caption"]
        if isinstance(v, str):
            v = tokenize(v)
        out[_as_id(k)] = (list(v), attention)
    return out


def score_scenes(
    predictions: Any,
    ground_truth: Mapping[Any, Sequence[Mapping]],
    image_size: int | tuple[int, int] = 224,
    max_examples: int = 50,
) -> dict:
    """Object accuracy and pointing accuracy over scenes, with an error breakdown.

    ``predictions``: ``{image_id: tokens | caption str | {"tokens"|"caption", "attention"?}}`` or a
    list of such dicts with ``image_id``. ``ground_truth``: ``{image_id: objects}`` (see
    ``data_prep.scenes.scene_objects``). Every ground-truth scene counts; one with no
    prediction is wrong. Pointing is measured on the predictions that carry attention.
    """
    preds = _normalise_predictions(predictions)
    gt = {_as_id(k): v for k, v in ground_truth.items()}
    n = correct = missing = shape_words = hits = pointed_images = twice = 0
    errors_scenes = {e: 0 for e in ERROR_TYPES}
    errors_total = {e: 0 for e in ERROR_TYPES}
    by_count: dict[int, dict] = {}
    examples = []
    for image_id, objects in gt.items():
        n += 1
        bucket = by_count.setdefault(len(objects), {"images": 0, "correct": 0})
        bucket["images"] += 1
        if image_id not in preds:
            missing += 1
            continue
        tokens, attention = preds[image_id]
        errs = caption_errors(tokens, objects)
        ok = caption_correct(tokens, objects)
        twice += names_an_object_twice(tokens)
        if ok:
            correct += 1
            bucket["correct"] += 1
        else:
            if not errs:  # cannot happen by construction; keep the two checks honest
                errs = ["unparsable"]
            for e in set(errs):
                errors_scenes[e] += 1
            for e in errs:
                errors_total[e] += 1
            if len(examples) < max_examples:
                examples.append(
                    {
                        "image_id": image_id,
                        "caption": " ".join(tokens),
                        "errors": errs,
                        "objects": [" ".join(_key(o)) for o in objects],
                    }
                )
        if attention is not None:
            h = pointing_hits(tokens, attention, objects, image_size)
            pointed_images += 1
            shape_words += len(h)
            hits += sum(h)
    for b in by_count.values():
        b["accuracy"] = b["correct"] / b["images"] if b["images"] else 0.0
    return {
        "object_accuracy": correct / n if n else 0.0,
        "pointing_accuracy": hits / shape_words if shape_words else None,
        "counts": {
            "images": n,
            "correct": correct,
            "missing_predictions": missing,
            "pointing_images": pointed_images,
            "shape_words": shape_words,
            "pointing_hits": hits,
            "named_twice": twice,  # captions that name one object twice (names_an_object_twice)
        },
        "errors": errors_scenes,  # scenes with at least one error of each kind
        "error_occurrences": errors_total,
        "by_object_count": {k: by_count[k] for k in sorted(by_count)},
        "examples": examples,
    }


def scene_objects(instances_json_path: str | os.PathLike) -> dict[int, list[dict]]:
    """Ground truth back from an instances file: ``{image_id: [{shape, color, size, bbox}]}``."""
    return _objects(read_json(instances_json_path, "scene instances file"), instances_json_path)


def _objects(data: Any, name: str | os.PathLike) -> dict[int, list[dict]]:
    try:
        names = {c["id"]: c["name"] for c in data["categories"]}
        out: dict[int, list[dict]] = {int(im["id"]): [] for im in data.get("images", [])}
        for a in sorted(data["annotations"], key=lambda a: a["id"]):
            out.setdefault(int(a["image_id"]), []).append(
                {"shape": names[a["category_id"]], "color": a["color"], "size": a["size"], "bbox": list(a["bbox"])}
            )
    except (KeyError, TypeError) as e:
        raise AttendError(f"{name}: not a scenes instances file (missing {e})") from None
    return out


def split_ground_truth(data_dir: str | os.PathLike, split: str) -> tuple[dict[int, list[dict]], int]:
    """The objects of every scene of a prepared scenes split, and the scenes' side in pixels
    (pointing is measured in their pixels). Read from the instances file ``generate`` wrote."""
    path = Path(data_dir) / "raw" / f"instances_{split}.json"
    if not path.is_file():
        raise AttendError(f"{path}: missing; the scenes measures read each split's instances file")
    data = read_json(path, "scene instances file")
    images = data.get("images") or [{}] if isinstance(data, dict) else [{}]
    return _objects(data, path), int(images[0].get("width", 224))
