"""attend's Python API in one place::

    import attend

    captioner = attend.Captioner.load()  # the shipped scenes model, a shipped name, or a checkpoint path
    result = captioner.caption("scene.png")[0]  # one image or a list: paths, bytes, files, PIL images
    result.caption, result.attention, result.in_domain, result.flags, result.labels

    answerer = attend.Answerer.load("easy-vqa")
    answerer.ask_one("shape.png", "what color is the shape?")["answer"]

    model, vocab = attend.load_charlm("stdlib")
    attend.sample(model, vocab, prime="def ", length=200, temperature=0.8, seed=1)

The same objects live in their task packages (``captioner.inference``, ``vqa.inference``,
``charlm``); this package only gathers them.
"""

from captioner.inference import Captioner, CaptionResult, save_attention
from charlm.checkpoint import load_charlm
from charlm.inference import sample
from core.errors import AttendError
from vqa.inference import Answerer

__all__ = ["Answerer", "AttendError", "CaptionResult", "Captioner", "load_charlm", "sample", "save_attention"]
