"""The generated shape scenes, in one place: the data set that needs no download.

* ``world``    -- what a scene may hold (sizes, colours, shapes), the relations between
  objects, and the caption grammar both ways (``describe`` writes, ``parse_caption_full`` reads);
* ``generate`` -- draws the scenes and writes them as COCO captions / instances and VQA v2
  files, then prepares them like the real data sets;
* ``measures`` -- judges captions against the scene's objects: object accuracy (relations
  included), pointing accuracy of the attention, and the ground truth from the instances file.
"""

from .generate import IMAGE_SIZE, QUESTION_TYPES, RGB, SIDE, generate_scenes, make_scene
from .measures import caption_correct, caption_errors, pointing_hits, scene_objects, score_scenes
from .world import COLOURS, SHAPES, SIZES, describe, parse_caption, parse_caption_full

__all__ = [
    "COLOURS",
    "IMAGE_SIZE",
    "QUESTION_TYPES",
    "RGB",
    "SHAPES",
    "SIDE",
    "SIZES",
    "caption_correct",
    "caption_errors",
    "describe",
    "generate_scenes",
    "make_scene",
    "parse_caption",
    "parse_caption_full",
    "pointing_hits",
    "scene_objects",
    "score_scenes",
]
