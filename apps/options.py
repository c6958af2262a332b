"""The options `attend`'s commands share, defined once, and the helpers that turn them into library calls.

The command modules (``cli_data``, ``cli_captioner``, ``cli_vqa``) import this module and the
library only; ``apps.cli`` builds the parser from them. Nothing here imports torch, so
``attend --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import AttendError

DEFAULT_DATA = Path("data/scenes")

# The shipped models by name, (default first), for the help texts; tests/test_cli.py checks them
# against captioner.checkpoint.SHIPPED, vqa.checkpoint.SHIPPED and charlm.checkpoint.SHIPPED
# (importing those here would import torch just to print --help).
SHIPPED = {"captioner": ("scenes",), "vqa": ("scenes", "easy-vqa"), "charlm": ("stdlib",)}

INT8_HELP = "decode with int8 weights in the per-step layers (CPU only; faster, captions can differ slightly)"
PLAIN_HELP = "run the plain reference model (captioner/model.py) instead of the fast path: the same numbers, slower"


@dataclass
class Groups:
    """The subparser groups every command module registers into: ``attend COMMAND``,
    ``attend prepare DATASET``, ``attend train MODEL``, ``attend evaluate MODEL``, ``attend bench WHAT``."""

    top: argparse._SubParsersAction
    prepare: argparse._SubParsersAction
    train: argparse._SubParsersAction
    evaluate: argparse._SubParsersAction
    bench: argparse._SubParsersAction


# ---------------------------------------------------------------- output


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def summary_rows(obj: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested result as (dotted name, value) rows; a list of records shows as its length."""
    rows: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += summary_rows(value, name + ".")
        elif isinstance(value, list) and value and isinstance(value[0], (dict, list)):
            rows.append((name, f"{len(value)} entries (in --json)"))
        elif isinstance(value, list):
            rows.append((name, ", ".join(map(str, value))))
        else:
            rows.append((name, value))
    return rows


def print_summary(summary: dict, as_json: bool, out: Path | None = None) -> None:
    """A command's result: one JSON line with ``as_json``, else a two-column table, with the file the
    whole result went to (``out``/metrics_SPLIT.json) named last."""
    if as_json:
        print(json.dumps(summary))
        return
    rows = summary_rows(summary)
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown}")
    if out is not None:
        print(f"(the whole result, as JSON: {out})")


def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on one line")


def log(message: str) -> None:
    """Progress for people goes to stderr; stdout stays the command's result."""
    print(message, file=sys.stderr)


# ---------------------------------------------------------------- value types


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (a bad value is argparse's usage error, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def finite_float(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number (no nan, no inf) within ``low``..``high`` inclusive, where
    given (a bad value is argparse's usage error, exit 2)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    return parse


def model_overrides(pairs: list[str] | None) -> dict:
    """--set name=value pairs -> a dict of typed values (ints, floats, booleans, strings)."""
    overrides = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep:
            raise AttendError(f"--set {pair!r}: expected NAME=VALUE")
        value = json.loads(text) if text in ("true", "false") else text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                pass
        overrides[name.replace("-", "_")] = value
    return overrides


def check_out_folder(path: Path, flag: str = "--out") -> None:
    """Refuse, in one line and before any work, an output folder that cannot be made or written:
    ``path`` (or the nearest part of it that exists) is a file, or is not writable. Creates nothing."""
    path = Path(path)
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        if existing == path:
            raise AttendError(f"{flag} {path}: is a file, not a folder")
        raise AttendError(f"{flag} {path}: cannot make this folder: {existing} is a file, not a folder")
    if not existing.exists():  # a dangling link on the way
        raise AttendError(f"{flag} {path}: cannot make this folder: {existing} is a broken link")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "folder is not writable" if existing == path else f"cannot make this folder: {existing} is not writable"
        raise AttendError(f"{flag} {path}: {what}")


# ---------------------------------------------------------------- shared options


def checkpoint_help(task: str, what: str = "a checkpoint file", shipped_default: bool = True) -> str:
    """``what``, then the shipped models' names, the first marked as the default when ``shipped_default``."""
    first, *others = SHIPPED[task]
    names = " or ".join([f"{first} (default)" if shipped_default else first, *others])
    return f"{what}, or a shipped {'VQA' if task == 'vqa' else task} model: {names}"


def add_checkpoint(
    p: argparse.ArgumentParser,
    task: str,
    flag: str = "--checkpoint",
    what: str = "a checkpoint file",
    shipped_default: bool = True,
    note: str = "",
    **kwargs: Any,
) -> None:
    """``--checkpoint`` (or ``--init``): a path or a shipped model's name. ``kwargs`` go to add_argument:
    the captioner's commands parse it as a Path, as they always have; the VQA ones keep the text."""
    shipped_default = shipped_default and not kwargs.get("required")
    p.add_argument(flag, help=checkpoint_help(task, what, shipped_default) + note, **kwargs)


def add_device(p: argparse.ArgumentParser, default: str = "cuda when present") -> None:
    """``--device``; ``apps.cli.main`` checks it once for every command (``core.distributed.check_device``)."""
    p.add_argument("--device", help=f"cpu, cuda or cuda:N (default: {default})")


def add_int8(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", action="store_true", help=INT8_HELP)


def add_plain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain", action="store_true", help=PLAIN_HELP)


def add_captions_per_image(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--captions-per-image",
        type=int_at_least(0),
        default=0,
        metavar="K",
        help="batch K captions of each image together, its grid read and projected once "
        "(--batch-size still counts captions); 0 (default): every caption on its own",
    )


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="efficientnet-lite0", choices=["efficientnet-lite0", "resnet50", "resnet101"])
    p.add_argument("--image-size", type=int_at_least(32), default=224, help="input side in pixels (224 -> 7x7 grid)")
    p.add_argument("--encoder-weights", help="a local state_dict file (needed for ResNets)")
    p.add_argument(
        "--mid-level",
        action="store_true",
        help="append a middle stage's pooled features to each cell (keeps colour; README)",
    )


def add_train_args(p: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float) -> None:
    """What every `attend train MODEL` takes: data, run folder, optimisation, device, --set, encoder."""
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl, metrics.png")
    p.add_argument("--epochs", type=int_at_least(1), default=epochs)
    p.add_argument("--batch-size", type=int_at_least(1), default=batch_size)
    p.add_argument("--lr", type=finite_float(0.0), default=lr, help=f"peak learning rate (default {lr:g})")
    p.add_argument("--weight-decay", type=finite_float(0.0), default=0.0)
    p.add_argument("--grad-clip", type=finite_float(0.0), default=5.0, help="gradient norm limit (0: no clipping)")
    p.add_argument("--warmup", type=int_at_least(0), default=100, help="warm-up steps")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int_at_least(0), default=0, help="data-loading processes")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    add_device(p)
    p.add_argument("--set", nargs="+", metavar="NAME=VALUE", help="model options, e.g. hidden_dim=512 alpha_c=0.5")
    add_encoder_args(p)


# ---------------------------------------------------------------- options -> library configs


def train_config(args: argparse.Namespace):
    """The ``core.training.TrainConfig`` of ``add_train_args``'s options."""
    from core.training import TrainConfig

    return TrainConfig(
        out_dir=str(args.out),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        warmup_steps=args.warmup,
        schedule=args.schedule,
        seed=args.seed,
        workers=args.workers,
        resume=args.resume,
    )


def encoder_config(args: argparse.Namespace):
    """The ``core.encoder.EncoderConfig`` of ``add_encoder_args``'s options."""
    from core.encoder import EncoderConfig

    return EncoderConfig(
        backbone=args.encoder, image_size=args.image_size, weights=args.encoder_weights, mid_level=args.mid_level
    )


# ---------------------------------------------------------------- help for every option

# What an option means wherever it appears (by argparse dest), for the options whose own
# add_argument gave no help. Per-command meanings are keyed (command path, dest).
OPTION_HELP = {
    "data": "the prepared data folder, from `attend prepare`",
    "out": "the output folder (created; must not be a file)",
    "seed": "random seed: the same seed gives the same result",
    "epochs": "passes over the training data",
    "batch_size": "examples per batch",
    "weight_decay": "Adam's decoupled weight decay",
    "schedule": "learning-rate schedule after the warm-up",
    "encoder": "the pretrained CNN (ResNets need --encoder-weights)",
    "cell": "the recurrent cell of the decoder (default: the config's, LSTM)",
    "split": "the data split to score (train, val or test)",
    "beam": "beam width of the search (1: greedy)",
    "length_penalty": "GNMT length normalisation exponent (0: none; 0.6-1 favours longer captions)",
    "images": "image files (JPEG, PNG, WebP, ...)",
    "train": "scenes in the train split",
    "val": "scenes in the val split",
    "test": "scenes in the test split",
    "workers": "processes drawing scenes (0: this one)",
    "min_count": "keep question words seen at least this often",
    "image_pattern": "the image file name of a question's image_id, a Python format string",
    "sizes": "input sides to time, in pixels",
    "config": "which model size to time: the COCO configuration, the shipped default, or both",
    "steps": "decoding steps (words) to time, or training steps",
    "beams": "beam widths to time",
    "batches": "batch sizes (images) to time",
    "batch": "questions per batch",
    "repeats": "timed repeats (the median is reported)",
}
COMMAND_HELP = {
    (("prepare", "vqa"), "split"): "one split each: NAME=QUESTIONS_JSON:ANNOTATIONS_JSON:IMAGE_DIR",
    (("bench", "train"), "steps"): "training steps timed",
}


def document_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Give every option of every command a help text (``OPTION_HELP``) and show its default
    (argparse's %(default)s) where the text does not already name one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                document_options(sub, (*path, name))
            continue
        if action.dest in ("help", "func", "defaults") or action.help == argparse.SUPPRESS:
            continue
        if action.help is None:
            action.help = COMMAND_HELP.get((path, action.dest)) or OPTION_HELP.get(action.dest)
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if action.help and "default" not in action.help and not no_default:
            action.help += " (default: %(default)s)"
