"""The scenes' world: what a scene may hold, where things are, and how its captions are
written and read.

Vocabulary: 1 to 4 objects, each a ``size colour shape`` (2 x 6 x 4, all distinct). Objects
are dicts ``{"shape", "color", "size", "bbox": [x, y, w, h]}``, as the generator draws them
and ``measures.scene_objects`` reads them back from the instances file.

Captions are of one small grammar, written by ``describe`` and read by ``parse_caption_full``::

    [there is] PHRASE (RELATION PHRASE)* [in the picture]
    PHRASE   = a|an SIZE COLOUR SHAPE
    RELATION = left of | to the left of | right of | to the right of | above | below | and

A relation is judged by box centres (``relation_holds``); the generator writes the one
that holds along the axis where the two centres are further apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SIZES = ("small", "large")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star")
ARTICLES = ("a", "an")

# token sequences -> normalised relation; longest first so "to the left of" wins
RELATIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("to", "the", "left", "of"), "left of"),
    (("to", "the", "right", "of"), "right of"),
    (("left", "of"), "left of"),
    (("right", "of"), "right of"),
    (("above",), "above"),
    (("below",), "below"),
    (("and",), "and"),
)
FILLERS: tuple[tuple[str, ...], ...] = (
    ("there", "is"),
    ("there", "are"),
    ("in", "the", "picture"),
    ("in", "the", "image"),
)
_IGNORED = {"<start>", "<end>", "<pad>"}

Phrase = tuple  # (size | None, colour | None, shape)


# ---------------------------------------------------------------------------- geometry


def centre(obj: Mapping) -> tuple[float, float]:
    """The centre (x, y) of an object's box, in pixels."""
    x, y, w, h = (float(v) for v in obj["bbox"])
    return x + w / 2, y + h / 2


def left_to_right(objects: Sequence[Mapping]) -> list[Mapping]:
    return sorted(objects, key=lambda o: centre(o))


def relation_holds(relation: str | None, a: Mapping, b: Mapping) -> bool:
    """Is ``a RELATION b`` true of the two objects (by box centres)?"""
    (ax, ay), (bx, by) = centre(a), centre(b)
    if relation == "left of":
        return ax < bx
    if relation == "right of":
        return ax > bx
    if relation == "above":
        return ay < by
    if relation == "below":
        return ay > by
    if relation == "and":
        return True
    return False


# ---------------------------------------------------------------------------- writing captions


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def phrase(obj: Mapping) -> str:
    words = f"{obj['size']} {obj['color']} {obj['shape']}"
    return f"{article(words)} {words}"


def _relation(a: Mapping, b: Mapping, horizontal: str) -> str:
    (ax, ay), (bx, by) = centre(a), centre(b)
    if abs(by - ay) > abs(bx - ax):
        return "above" if ay < by else "below"
    return horizontal


def _chain(ordered: Sequence[Mapping], horizontal: str) -> str:
    parts = [phrase(ordered[0])]
    for a, b in zip(ordered, ordered[1:]):
        parts += [_relation(a, b, horizontal), phrase(b)]
    return " ".join(parts)


def describe(objects: Sequence[Mapping]) -> list[str]:
    """The 5 reference captions; reference 0 is the canonical left-to-right one."""
    ltr = left_to_right(objects)
    canonical = _chain(ltr, "left of")
    if len(ltr) == 1:
        return [
            canonical,
            f"there is {canonical}",
            f"{canonical} in the picture",
            f"there is {canonical} in the picture",
            f"in the picture there is {canonical}",
        ]
    rtl = _chain(ltr[::-1], "right of")
    return [canonical, f"there is {canonical}", rtl, _chain(ltr, "to the left of"), f"there is {rtl}"]


# ---------------------------------------------------------------------------- reading captions


@dataclass
class ParsedCaption:
    objects: list[Phrase] = field(default_factory=list)
    relations: list[str | None] = field(default_factory=list)  # len(objects) - 1 entries
    shape_positions: list[int] = field(default_factory=list)  # token index of each shape word
    ok: bool = True
    problems: list[str] = field(default_factory=list)


def _match(tokens: Sequence[str], i: int, seq: Sequence[str]) -> bool:
    return tuple(tokens[i : i + len(seq)]) == tuple(seq)


def parse_caption_full(tokens: Sequence[str]) -> ParsedCaption:
    """Parse a caption, keeping going past junk; ``ok`` is False when anything did not fit."""
    toks = [str(t) for t in tokens]
    out = ParsedCaption()
    pending: str | None = None  # relation seen since the last phrase
    seen_rel = False
    i, n = 0, len(toks)

    def fail(msg: str) -> None:
        out.ok = False
        out.problems.append(msg)

    while i < n:
        tok = toks[i]
        if tok in _IGNORED:
            i += 1
            continue
        filler = next((f for f in FILLERS if _match(toks, i, f)), None)
        if filler is not None:
            i += len(filler)
            continue
        rel = next(((seq, r) for seq, r in RELATIONS if _match(toks, i, seq)), None)
        if rel is not None:
            if not out.objects:
                fail(f"relation {rel[1]!r} before any object")
            elif seen_rel:
                fail(f"two relations in a row ({pending!r}, {rel[1]!r})")
            pending, seen_rel = rel[1], True
            i += len(rel[0])
            continue
        # a phrase: [article] [size] [colour] shape
        j = i
        if toks[j] in ARTICLES:
            j += 1
        attrs: list[str] = []
        while j < n and (toks[j] in SIZES or toks[j] in COLOURS):
            attrs.append(toks[j])
            j += 1
        if j < n and toks[j] in SHAPES:
            sizes = [a for a in attrs if a in SIZES]
            colours = [a for a in attrs if a in COLOURS]
            size = sizes[0] if len(sizes) == 1 else None
            colour = colours[0] if len(colours) == 1 else None
            if attrs != [a for a in (size, colour) if a is not None] or size is None or colour is None:
                fail(f"phrase {' '.join(toks[i : j + 1])!r} is not 'size colour shape'")
            if out.objects:
                if not seen_rel:
                    fail(f"no relation before {' '.join(toks[i : j + 1])!r}")
                out.relations.append(pending if seen_rel else None)
            elif seen_rel:
                pass  # already reported
            out.objects.append((size, colour, toks[j]))
            out.shape_positions.append(j)
            pending, seen_rel = None, False
            i = j + 1
            continue
        fail(f"unexpected word {tok!r} at {i}")
        if out.objects and seen_rel:
            pending = None  # junk after a relation: the relation no longer applies cleanly
        i = i + 1 if j == i else j  # skip the junk word (or the article/attributes without a shape)
    if seen_rel:
        fail("caption ends with a relation")
    if not out.objects:
        fail("no object named")
    return out


def parse_caption(tokens: Sequence[str]) -> tuple[list[Phrase], list[str | None]]:
    """Objects ``(size, colour, shape)`` and the relations between consecutive ones.

    Tolerant of junk: returns what it can (a missing attribute is ``None``, a relation that
    could not be read is ``None``). Use ``parse_caption_full(...).ok`` to know whether the
    whole caption fitted the grammar.
    """
    p = parse_caption_full(tokens)
    return p.objects, p.relations
