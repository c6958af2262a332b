"""The VQA commands of `attend`: train vqa, evaluate vqa, bench vqa, ask.

Argument parsing only; ``register`` adds them to the parser ``apps.cli`` builds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.errors import AttendError

from .options import (
    Groups,
    add_checkpoint,
    add_device,
    add_json,
    add_train_args,
    check_out_folder,
    encoder_config,
    int_at_least,
    log,
    model_overrides,
    print_json,
    print_summary,
    train_config,
)

# ---------------------------------------------------------------- train, evaluate, bench


def cmd_train_vqa(args: argparse.Namespace) -> None:
    from vqa.train import train_vqa

    check_out_folder(args.out)
    overrides = model_overrides(args.set)
    if args.glimpses is not None:
        overrides["glimpses"] = args.glimpses
    result = train_vqa(
        args.data,
        args.out,
        overrides,
        train_config(args),
        encoder=encoder_config(args),
        val_limit=args.val_limit,
        select=args.select,
        device=args.device,
        export=args.export,
        log=log,
    )
    # "metric": what "best" is (the validation metric that picked best.pt, --select)
    print_json({k: result[k] for k in ("metric", "best", "checkpoint", "exported") if k in result})


def cmd_evaluate_vqa(args: argparse.Namespace) -> None:
    from vqa.train import evaluate_vqa

    if args.out is not None:
        check_out_folder(args.out)
    summary = evaluate_vqa(
        args.checkpoint,
        args.data,
        split=args.split,
        out=args.out,
        device=args.device,
        batch_size=args.batch_size,
        multiple_choice=args.multiple_choice,
    )
    print_summary(summary, args.json, args.out / f"metrics_{args.split}.json" if args.out else None)


def cmd_bench_vqa(args: argparse.Namespace) -> None:
    from vqa.bench import bench_vqa

    print_json(bench_vqa(checkpoint=args.checkpoint, batch=args.batch, repeats=args.repeats))


# ---------------------------------------------------------------- ask


def _format_choices(mc: dict) -> list[str]:
    """The multiple-choice part of an answer: the chosen candidate, the ranking, the unscorable ones."""
    n = len(mc["ranked"]) + len(mc["unscorable"])
    lines = [f"{mc['choice']}  (chosen of {n} candidates)" if mc["choice"] is not None else mc["note"]]
    lines += [f"  {r['rank']:2d}. {r['probability']:6.1%}  {r['choice']}" for r in mc["ranked"]]
    if mc["unscorable"]:
        lines.append(f"not among the model's answers, so not ranked: {', '.join(mc['unscorable'])}")
    return lines


def _format(result: dict, trained_on: str = "") -> str:
    """A human-readable answer: the answer (the chosen candidate first where choices were given),
    the top-k, unknown words, and any warning about the image. The attention is in --json."""
    from core.domain import notices

    if result.get("withheld"):
        reply = f"no answer: {result['withheld']} (--allow-unknown answers anyway)"
        return "\n".join([reply, *notices(result, trained_on)])
    lines = []
    if "multiple_choice" in result:
        lines += _format_choices(result["multiple_choice"])
        lines.append(f"open-ended answer: {result['answer']}")
    else:
        lines.append(result["answer"])
    lines += [f"  {p:6.1%}  {a}" for a, p in result["top_k"]]
    if result["unknown_words"]:
        lines.append(f"unknown words (ignored): {', '.join(result['unknown_words'])}")
    lines += notices(result, trained_on)
    return "\n".join(lines)


def cmd_ask(args: argparse.Namespace) -> None:
    from vqa.choices import check_choices
    from vqa.inference import Answerer, ask_file

    if args.questions:
        if args.image or args.question:
            raise AttendError("give IMAGE QUESTION, or --questions FILE.jsonl, not both")
        if args.choices is not None:
            raise AttendError('--choices goes with IMAGE QUESTION; in a --questions file give "choices" on each line')
        answerer = Answerer.load(args.checkpoint, device=args.device or "cpu", allow_unknown=args.allow_unknown)
        for result in ask_file(answerer, args.questions, args.top_k):
            print(json.dumps(result), flush=True)  # a long file shows its answers as they come
        return
    if (args.image is None or args.question is None) and args.choices:
        raise AttendError(
            'give IMAGE and QUESTION before --choices: attend ask IMAGE "QUESTION" --choices ANSWER ANSWER ...'
        )
    if args.image is None or args.question is None:
        raise AttendError('give an image and a question: attend ask IMAGE "QUESTION" (or --questions FILE.jsonl)')
    choices = None if args.choices is None else check_choices(args.choices)  # before loading the model
    answerer = Answerer.load(args.checkpoint, device=args.device or "cpu", allow_unknown=args.allow_unknown)
    result = answerer.ask_one(args.image, args.question, top_k=args.top_k, choices=choices)
    print(json.dumps(result) if args.json else _format(result, answerer.checkpoint.get("data", {}).get("source", "")))


# ---------------------------------------------------------------- parser


def register(groups: Groups) -> None:
    """Add train vqa, evaluate vqa, bench vqa and ask to `attend`."""
    p = groups.train.add_parser(
        "vqa",
        help="Show, Ask, Attend and Answer on cached features (torchrun-ready)",
        description="Train the VQA model. --batch-size counts images: each comes with "
        "all its questions (the image side is computed once per image).",
    )
    add_train_args(p, epochs=15, batch_size=16, lr=1e-3)
    p.add_argument("--glimpses", type=int_at_least(1), help="attention glimpses (default 2)")
    p.add_argument("--val-limit", type=int_at_least(1), default=5000, help="validation questions answered per epoch")
    p.add_argument(
        "--select",
        default="accuracy",
        help="validation metric that picks best.pt: accuracy, or type_TYPE for one question type (e.g. type_count)",
    )
    p.add_argument("--export", type=Path, help="also write best.pt as a float16 shippable checkpoint here")
    p.set_defaults(func=cmd_train_vqa)

    p = groups.evaluate.add_parser("vqa", help="VQA accuracy (official or exact match) by answer and question type")
    add_checkpoint(p, "vqa", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument(
        "--out",
        type=Path,
        help="write metrics_SPLIT.json and vqa_SPLIT_results.json here "
        "(and vqa_SPLIT_mc_results.json with --multiple-choice)",
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=64, help="images per batch")
    p.add_argument(
        "--multiple-choice",
        action="store_true",
        help="also score the multiple-choice task (default: off): each question with candidate answers "
        "(VQA v1's 18 `multiple_choices`, the scenes', easy-VQA's) gets the candidate the model ranks first, "
        "scored with the same accuracy; questions without candidates are counted as skipped",
    )
    add_json(p, "the metrics")
    add_device(p)
    p.set_defaults(func=cmd_evaluate_vqa)

    p = groups.bench.add_parser("vqa", help="VQA latency, answers per second and memory")
    add_checkpoint(p, "vqa", default="scenes")
    p.add_argument("--batch", type=int_at_least(1), default=64)
    p.add_argument("--repeats", type=int_at_least(1), default=5)
    p.set_defaults(func=cmd_bench_vqa)

    p = groups.top.add_parser(
        "ask",
        help="answer a question about an image (VQA)",
        description='attend ask IMAGE "QUESTION", or attend ask --questions FILE.jsonl '
        '(one {"image": ..., "question": ...} per line -> one JSON answer per line). '
        "Multiple choice: add candidate answers, ranked by the model "
        '(attend ask bird.jpg "what bird is this?" --choices "a bald eagle" "a sparrow"; '
        'in a --questions file, "choices": [...] on a line).',
        epilog='examples: attend ask scene.png "what colour is the circle?"; '
        'attend ask shapes.png "what color is the shape?" --checkpoint easy-vqa --json',
    )
    p.add_argument("image", nargs="?", help="an image file")
    p.add_argument("question", nargs="?", help="a question in English")
    p.add_argument("--questions", type=Path, metavar="FILE.jsonl", help="many questions, one JSON object per line")
    add_checkpoint(p, "vqa")
    p.add_argument(
        "--choices",
        nargs="+",
        metavar="ANSWER",
        help="candidate answers to choose from (multiple choice; default: none, open-ended), at least 2, "
        'given after IMAGE and QUESTION, e.g. --choices "a bald eagle" "a sparrow" "two". Each is matched to '
        "the model's answers after the official VQA normalisation; those it does not know are listed, not ranked",
    )
    p.add_argument("--top-k", type=int_at_least(1), default=3, help="answers listed, with probabilities (default 3)")
    p.add_argument(
        "--allow-unknown",
        action="store_true",
        help="answer even when the question has a content word the model does not know (default: the answer "
        "is withheld and the reply names the word, since the model would answer another question)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="the whole result as one JSON object on one line: answer, top_k, attention (glimpses x h x w), "
        "in_domain, domain_score, labels (the encoder's ImageNet top 5), withheld",
    )
    add_device(p, default="cpu")
    p.set_defaults(func=cmd_ask)
