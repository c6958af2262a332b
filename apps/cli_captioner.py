"""The captioner commands of `attend`: train captioner, evaluate captioner, bench decode, bench train, caption.

Argument parsing only; ``register`` adds them to the parser ``apps.cli`` builds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import AttendError

from .options import (
    DEFAULT_DATA,
    Groups,
    add_captions_per_image,
    add_checkpoint,
    add_device,
    add_int8,
    add_json,
    add_plain,
    add_train_args,
    check_out_folder,
    encoder_config,
    finite_float,
    int_at_least,
    log,
    model_overrides,
    print_json,
    print_summary,
    train_config,
)

# ---------------------------------------------------------------- train, evaluate, caption


# `--recipe scenes`: how the shipped captioner was trained (README, "How the shipped models were
# trained"). Each option takes the recipe's value unless the command line gives it another one.
RECIPES = {
    "scenes": {
        "image_size": 448,
        "mid_level": True,
        "epochs": 5,
        "batch_size": 128,
        "lr": 3e-3,
        "warmup": 100,
        "select": "object_accuracy",
        "val_limit": 500,
        "set": ["attention_query=current", "alpha_c=0"],
    }
}


def apply_recipe(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """``args`` with ``--recipe``'s values wherever an option still holds its default (``defaults``);
    its model options join --set unless --set names them."""
    recipe = RECIPES.get(getattr(args, "recipe", None) or "", {})
    for name, value in recipe.items():
        if name == "set":
            given = {pair.split("=", 1)[0] for pair in args.set or []}
            args.set = [*(args.set or []), *(pair for pair in value if pair.split("=", 1)[0] not in given)]
        elif getattr(args, name) == defaults[name]:
            setattr(args, name, value)
    return args


def cmd_train_captioner(args: argparse.Namespace) -> None:
    from captioner.train import train_captioner

    args = apply_recipe(args, args.defaults)
    if args.scst and args.select == args.defaults["select"]:
        args.select = "cider"  # what SCST optimises, unless --select or --recipe names another
    check_out_folder(args.out)
    overrides = model_overrides(args.set)
    if args.cell:
        overrides["cell"] = args.cell
    if args.no_attention:
        overrides["attention"] = False
    result = train_captioner(
        args.data,
        args.out,
        overrides,
        train_config(args),
        encoder=encoder_config(args),
        val_limit=args.val_limit,
        select=args.select,
        device=args.device,
        export=args.export,
        captions_per_image=args.captions_per_image,
        init=args.init,
        fast=not args.plain,
        scst=args.scst,
        scst_samples=args.scst_samples,
        scst_baseline=args.scst_baseline,
        scst_object_bonus=args.scst_object_bonus,
        log=log,
    )
    # "metric": what "best" is (the validation metric that picked best.pt, --select)
    print_json({k: result[k] for k in ("metric", "best", "checkpoint", "exported") if k in result})


def cmd_evaluate_captioner(args: argparse.Namespace) -> None:
    from captioner.train import evaluate_captioner

    if args.out is not None:
        check_out_folder(args.out)
    summary = evaluate_captioner(
        args.checkpoint,
        args.data,
        split=args.split,
        beam_size=args.beam,
        length_penalty=args.length_penalty,
        out=args.out,
        device=args.device,
        int8=args.int8,
        fast=not args.plain,
    )
    if not args.examples:
        summary.get("scenes", {}).pop("examples", None)
    print_summary(summary, args.json, args.out / f"metrics_{args.split}.json" if args.out else None)


def cmd_caption(args: argparse.Namespace) -> int:
    """Caption every usable image, in order; each unusable one gets its own error line on stderr
    (``attend: error: NAME: reason``) and, with --json, ``{"image": NAME, "error": ...}`` on stdout in
    its place; exit status 1 at the end if any image was unusable."""
    from captioner.inference import Captioner, save_attention
    from core.domain import notices
    from core.images import ImageError

    if not args.images:
        raise AttendError("give at least one image")
    if args.attention_out is not None:
        check_out_folder(args.attention_out, "--attention-out")
    captioner = Captioner.load(args.checkpoint, device=args.device, int8=args.int8, fast=not args.plain)
    results = captioner.caption(
        [str(p) for p in args.images], beam_size=args.beam, batch_size=args.batch_size, errors="return"
    )
    trained_on = captioner.checkpoint.get("data", {}).get("source", "")
    failed = 0
    for i, r in enumerate(results):
        if isinstance(r, ImageError):
            failed += 1
            if args.json:
                print(json.dumps({"image": r.name, "error": str(r)}))
            sys.stdout.flush()  # keep stdout and stderr in input order on a terminal
            print(f"attend: error: {r}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(r.to_json()))
        else:
            print(f"{r.name}\t{r.caption}")
            print("".join(f"  {line}\n" for line in notices(r.to_json(), trained_on)), end="")
        if args.attention_out:
            save_attention(r, args.attention_out / f"{i:04d}_{Path(r.name).stem}_attention.png")
    return 1 if failed else 0


# ---------------------------------------------------------------- bench


def _bench_shapes(args: argparse.Namespace) -> dict:
    """The shapes to measure: the common COCO configuration and the default model's."""
    from captioner.bench import COCO_SHAPE

    shapes = {}
    if args.config in ("coco", "both"):
        shapes["coco"] = COCO_SHAPE
    if args.config in ("default", "both"):
        from captioner.checkpoint import KIND, captioner_config, resolve_checkpoint
        from core.checkpoint import load_checkpoint

        shapes["default"] = captioner_config(load_checkpoint(resolve_checkpoint(None), KIND))
    return shapes


def cmd_bench_decode(args: argparse.Namespace) -> None:
    from captioner.bench import bench_decode

    print_json(
        [
            bench_decode(
                shape,
                steps=args.steps,
                beams=args.beams,
                batches=args.batches,
                device=args.device or "cpu",
                weights=tuple(args.weights),
            )
            | {"config": name}
            for name, shape in _bench_shapes(args).items()
        ]
    )


def cmd_bench_train(args: argparse.Namespace) -> None:
    from captioner.bench import bench_train

    print_json(
        [
            bench_train(
                shape,
                batch=args.batch_size,
                steps=args.steps,
                cache_images=args.cache_images,
                device=args.device or "cpu",
                captions_per_image=args.captions_per_image,
                folder=args.folder and str(Path(args.folder) / name),
                fast=not args.plain,
                scst=scst,
            )
            | {"config": name}
            for name, shape in _bench_shapes(args).items()
            for scst in ((False, True) if args.scst else (False,))
        ]
    )


# ---------------------------------------------------------------- parser


def register(groups: Groups) -> None:
    """Add train captioner, evaluate captioner, bench decode, bench train and caption to `attend`."""
    p = groups.train.add_parser("captioner", help="Show, Attend and Tell on cached features (torchrun-ready)")
    add_train_args(p, epochs=20, batch_size=64, lr=2e-3)
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"])
    p.add_argument("--no-attention", action="store_true", help="the CNN+RNN baseline")
    p.add_argument("--val-limit", type=int_at_least(1), default=500, help="validation images scored per epoch")
    p.add_argument(
        "--select",
        default="bleu4",
        help="validation metric that picks best.pt: bleu1-4, cider, and on scenes object_accuracy, "
        "pointing_accuracy (with --scst the default is cider)",
    )
    p.add_argument(
        "--scst",
        action="store_true",
        help="self-critical training (Rennie et al. 2017) from the --init checkpoint: sampled captions "
        "rewarded by their CIDEr-D against the training references; --batch-size counts sampled captions; "
        "dropout 0 unless --set gives it",
    )
    p.add_argument("--scst-samples", type=int_at_least(1), default=5, help="captions sampled per image with --scst")
    p.add_argument(
        "--scst-baseline",
        choices=["mean", "greedy"],
        default="mean",
        help="what a sample's reward is compared with: the mean of the image's other samples (Luo 2020) "
        "or the reward of the greedy caption (Rennie et al.)",
    )
    p.add_argument(
        "--scst-object-bonus",
        type=finite_float(0.0),
        default=0.0,
        help="scenes only: add this to the reward of a sampled caption that is right about the whole scene "
        "(every object named once, every relation true); CIDEr-D is about 7-8 for a right caption",
    )
    p.add_argument("--export", type=Path, help="also write best.pt as a float16 shippable checkpoint here")
    add_checkpoint(
        p,
        "captioner",
        flag="--init",
        type=Path,
        metavar="CHECKPOINT",
        shipped_default=False,
        what="fine-tune: start from the weights of this captioner checkpoint file",
        note=" (same data vocabulary and features; a fresh optimizer and schedule; --set may change "
        "options such as alpha_c)",
    )
    add_captions_per_image(p)
    add_plain(p)
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="the options the shipped model was trained with, e.g. --recipe scenes: --image-size 448 --mid-level "
        "--epochs 5 --batch-size 128 --lr 3e-3 --select object_accuracy --set attention_query=current alpha_c=0 "
        "(any of them given on the command line wins)",
    )
    p.set_defaults(func=cmd_train_captioner)
    p.set_defaults(defaults={a.dest: a.default for a in p._actions})

    p = groups.evaluate.add_parser("captioner", help="BLEU, COCO metrics, scenes object/pointing accuracy")
    add_checkpoint(p, "captioner", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", default="test")
    p.add_argument("--beam", type=int_at_least(1), default=3)
    p.add_argument("--length-penalty", type=finite_float(), default=0.0)
    p.add_argument("--out", type=Path, help="write metrics_SPLIT.json and captions_SPLIT_results.json here")
    p.add_argument("--examples", action="store_true", help="include example errors in the output")
    add_json(p, "the metrics")
    add_device(p)
    add_int8(p)
    add_plain(p)
    p.set_defaults(func=cmd_evaluate_captioner)

    p = groups.bench.add_parser("decode", help="beam-search ms per image per step (random weights)")
    p.add_argument("--config", choices=["coco", "default", "both"], default="both")
    p.add_argument("--steps", type=int, nargs="+", default=[12, 51])
    p.add_argument("--beams", type=int, nargs="+", default=[3, 5])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument(
        "--weights",
        nargs="+",
        choices=["float32", "int8", "plain"],
        default=["float32", "int8"],
        help="decoder weights to measure (int8: the CPU path of --int8; plain: the reference model)",
    )
    add_device(p, default="cpu")
    p.set_defaults(func=cmd_bench_decode)

    p = groups.bench.add_parser("train", help="training captions per second from cached features, peak memory")
    p.add_argument("--config", choices=["coco", "default", "both"], default="both")
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="captions per batch")
    add_captions_per_image(p)
    p.add_argument(
        "--scst",
        action="store_true",
        help="also measure self-critical steps (5 sampled captions per grid unless --captions-per-image): "
        "one row for cross-entropy, one for SCST",
    )
    p.add_argument("--steps", type=int_at_least(1), default=5)
    p.add_argument(
        "--cache-images",
        type=int_at_least(0),
        default=0,
        help="read batches from a memory-mapped float16 cache of this many random grids",
    )
    p.add_argument(
        "--folder",
        help="where to write that cache, one subfolder per --config, reused by "
        "later runs (default: a temporary folder, removed after)",
    )
    add_device(p, default="cpu")
    add_plain(p)
    p.set_defaults(func=cmd_bench_train)

    p = groups.top.add_parser(
        "caption",
        help="caption images (default model: the shipped scenes captioner)",
        epilog="example: attend caption scene.png photo.jpg --beam 3 --attention-out maps/ "
        "(a warning follows a caption whose image is unlike the training images, or that is flagged)",
    )
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    add_checkpoint(p, "captioner", type=Path, what="a captioner checkpoint file")
    p.add_argument("--beam", type=int_at_least(1), default=3)
    p.add_argument("--batch-size", type=int_at_least(1), default=16)
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image, one line each: caption, tokens, in_domain and domain_score (is the "
        "image like the training images?), flags (length_limit, repeated_word), labels (the encoder's ImageNet "
        "top 5), attention, grid "
        '(an unusable image: {"image": NAME, "error": MESSAGE}, as well as the error line on stderr)',
    )
    p.add_argument("--attention-out", type=Path, metavar="DIR", help="write a PNG per image with every word's map")
    add_device(p)
    add_int8(p)
    add_plain(p)
    p.set_defaults(func=cmd_caption)
