"""The VQA commands of `attend`: train vqa, evaluate vqa, bench vqa, ask. Argument parsing only.

``apps.cli.build_parser`` calls ``register`` with its subparser groups.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import AttendError

from .cli import _add_train_args, _encoder_config, _int_at_least, _model_overrides, _print_json, _train_config

BATCH_LINES = 64  # questions answered together in the --questions form


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------- train, evaluate, bench

def cmd_train_vqa(args) -> None:
    from vqa.train import train_vqa

    overrides = _model_overrides(args.set)
    if args.glimpses is not None:
        overrides["glimpses"] = args.glimpses
    result = train_vqa(args.data, args.out, overrides, _train_config(args), encoder=_encoder_config(args),
                       val_limit=args.val_limit, device=args.device, export=args.export, log=_log)
    _print_json({k: result[k] for k in ("best", "checkpoint", "exported") if k in result})


def cmd_evaluate_vqa(args) -> None:
    from vqa.train import evaluate_vqa

    _print_json(evaluate_vqa(args.checkpoint, args.data, split=args.split, out=args.out, device=args.device,
                             batch_size=args.batch_size))


def cmd_bench_vqa(args) -> None:
    from vqa.bench import bench_vqa

    _print_json(bench_vqa(checkpoint=args.checkpoint, batch=args.batch, repeats=args.repeats))


# ---------------------------------------------------------------- ask

def _format(result: dict) -> str:
    """A human-readable answer: the answer, the top-k, unknown words, the attention grids."""
    lines = [result["answer"]]
    lines += [f"  {p:6.1%}  {a}" for a, p in result["top_k"]]
    if result["unknown_words"]:
        lines.append(f"unknown words (ignored): {', '.join(result['unknown_words'])}")
    h, w = result["grid"]
    for g, glimpse in enumerate(result["attention"]):
        lines.append(f"attention, glimpse {g + 1} ({h}x{w}, rows top to bottom):")
        lines += ["  " + " ".join(f"{v:.2f}" for v in row) for row in glimpse]
    return "\n".join(lines)


def _read_lines(path: Path):
    """(line number, image, question) or (line number, error) for each non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AttendError(f"{path}: questions file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AttendError(f"{path}: cannot read questions file ({type(e).__name__})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            yield n, None, None, f"line {n}: not valid JSON"
            continue
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) \
                or not isinstance(item.get("question"), str):
            yield n, None, None, f'line {n}: expected {{"image": PATH, "question": TEXT}}'
            continue
        image = Path(item["image"])
        if not image.is_absolute() and not image.exists() and (path.parent / image).exists():
            image = path.parent / image  # relative to the questions file when not to the cwd
        yield n, str(image), item["question"], None


def _ask_batch(answerer, path: Path, top_k: int) -> None:
    def flush(batch):
        good = [(n, img, q) for n, img, q, err in batch if err is None]
        answers = iter(answerer.ask([img for _, img, _ in good], [q for _, _, q in good], top_k=top_k))
        for n, img, q, err in batch:
            out = {"line": n, "error": err} if err else {"line": n, "image": img, **next(answers)}
            print(json.dumps(out), flush=True)

    batch = []
    for item in _read_lines(path):
        batch.append(item)
        if len(batch) == BATCH_LINES:
            flush(batch)
            batch = []
    if batch:
        flush(batch)


def cmd_ask(args) -> None:
    from vqa.inference import Answerer

    if args.questions:
        if args.image or args.question:
            raise AttendError("give IMAGE QUESTION, or --questions FILE.jsonl, not both")
        answerer = Answerer.load(args.checkpoint, device=args.device or "cpu")
        _ask_batch(answerer, args.questions, args.top_k)
        return
    if args.image is None or args.question is None:
        raise AttendError('give an image and a question: attend ask IMAGE "QUESTION" '
                          "(or --questions FILE.jsonl)")
    answerer = Answerer.load(args.checkpoint, device=args.device or "cpu")
    result = answerer.ask_one(args.image, args.question, top_k=args.top_k)
    print(json.dumps(result, indent=2) if args.json else _format(result))


# ---------------------------------------------------------------- parser

def register(sub, train_sub, evaluate_sub, bench_sub) -> None:
    """Add the VQA commands to `attend`'s subparser groups."""
    checkpoint_help = "a checkpoint file, or a shipped model: scenes (default) or easy-vqa"

    p = train_sub.add_parser("vqa", help="Show, Ask, Attend and Answer on cached features (torchrun-ready)",
                             description="Train the VQA model. --batch-size counts images: each comes with "
                                         "all its questions (the image side is computed once per image).")
    _add_train_args(p, epochs=15, batch_size=16, lr=1e-3)
    p.add_argument("--glimpses", type=_int_at_least(1), help="attention glimpses (default 2)")
    p.add_argument("--val-limit", type=_int_at_least(1), default=5000, help="validation questions answered per epoch")
    p.add_argument("--export", type=Path, help="also write best.pt as a float16 shippable checkpoint here")
    p.set_defaults(func=cmd_train_vqa)

    p = evaluate_sub.add_parser("vqa", help="VQA accuracy (official or exact match) by answer and question type")
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, help="write metrics_SPLIT.json and vqa_SPLIT_results.json here")
    p.add_argument("--batch-size", type=_int_at_least(1), default=64, help="images per batch")
    p.add_argument("--device")
    p.set_defaults(func=cmd_evaluate_vqa)

    p = bench_sub.add_parser("vqa", help="VQA latency, answers per second and memory")
    p.add_argument("--checkpoint", default="scenes", help=checkpoint_help)
    p.add_argument("--batch", type=_int_at_least(1), default=64)
    p.add_argument("--repeats", type=_int_at_least(1), default=5)
    p.set_defaults(func=cmd_bench_vqa)

    p = sub.add_parser("ask", help="answer a question about an image (VQA)",
                       description='attend ask IMAGE "QUESTION", or attend ask --questions FILE.jsonl '
                                   '(one {"image": ..., "question": ...} per line -> one JSON answer per line)')
    p.add_argument("image", nargs="?", help="an image file")
    p.add_argument("question", nargs="?", help="a question in English")
    p.add_argument("--questions", type=Path, metavar="FILE.jsonl", help="many questions, one JSON object per line")
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)
    p.add_argument("--top-k", type=_int_at_least(1), default=3)
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--device")
    p.set_defaults(func=cmd_ask)
