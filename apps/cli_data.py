"""The data commands of `attend`: prepare scenes/coco/vqa/easy-vqa, features, bench encoder.

Argument parsing only; ``register`` adds them to the parser ``apps.cli`` builds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.errors import AttendError

from .options import (
    DEFAULT_DATA,
    Groups,
    add_device,
    add_encoder_args,
    check_out_folder,
    encoder_config,
    finite_float,
    int_at_least,
    log,
    print_json,
)

# ---------------------------------------------------------------- domain


def cmd_domain(args: argparse.Namespace) -> None:
    """Fit a checkpoint's domain check on a prepared folder's cached features and write it beside the
    checkpoint (NAME.domain.pt) or to --out. Training records it in the checkpoint itself."""
    from core.checkpoint import load_checkpoint
    from core.domain import fit_from_data, save_domain, sidecar

    if args.task == "captioner":
        from captioner.checkpoint import resolve_checkpoint
    else:
        from vqa.checkpoint import resolve_checkpoint
    path = resolve_checkpoint(args.checkpoint)
    load_checkpoint(path, "captioner" if args.task == "captioner" else "vqa")  # the right kind of file
    stats = fit_from_data(args.data, args.train_split, args.held_out_split, log=log)
    out = args.out or sidecar(path)
    save_domain(out, stats)
    print_json(
        {
            "domain": str(out),
            "images": stats.images,
            "held_out": stats.held_out,
            "threshold": round(stats.threshold, 4),
            "components": int(stats.basis.shape[0]),
            "source": stats.source,
        }
    )


# ---------------------------------------------------------------- prepare


def cmd_prepare_scenes(args: argparse.Namespace) -> None:
    from data_prep.scenes import generate_scenes

    check_out_folder(args.out)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    print_json(
        generate_scenes(
            args.out,
            seed=args.seed,
            counts=counts,
            workers=args.workers,
            vary=args.vary,
            like_pairs=args.like_pairs,
            degrade=args.degrade,
        )
    )


def cmd_prepare_coco(args: argparse.Namespace) -> None:
    from data_prep import coco

    check_out_folder(args.out)
    if args.karpathy:
        if not args.images:
            raise AttendError("--karpathy needs --images (the folder holding train2014/ and val2014/)")
        summary = coco.prepare_karpathy(args.out, args.karpathy, args.images, min_count=args.min_count)
    else:
        if not args.captions:
            raise AttendError("give --karpathy FILE, or --captions SPLIT=CAPTIONS_JSON:IMAGE_DIR ...")
        splits = {}
        for spec in args.captions:
            split, _, rest = spec.partition("=")
            json_path, _, image_dir = rest.partition(":")
            if not (split and json_path and image_dir):
                raise AttendError(f"--captions {spec!r}: expected SPLIT=CAPTIONS_JSON:IMAGE_DIR")
            splits[split] = (Path(json_path), Path(image_dir))
        summary = coco.prepare_coco_captions(args.out, splits, min_count=args.min_count)
    print_json(summary)


def cmd_prepare_vqa(args: argparse.Namespace) -> None:
    from data_prep.vqa_v2 import prepare_vqa

    check_out_folder(args.out)
    splits = {}
    for spec in args.split:
        name, _, rest = spec.partition("=")
        parts = rest.split(":")
        if not name or len(parts) != 3 or not parts[0] or not parts[2]:
            raise AttendError(
                f"--split {spec!r}: expected NAME=QUESTIONS_JSON:ANNOTATIONS_JSON:IMAGE_DIR "
                "(leave ANNOTATIONS_JSON empty for a test split)"
            )
        questions, annotations, images = parts
        splits[name] = (Path(questions), Path(annotations) if annotations else None, Path(images))
    print_json(
        prepare_vqa(args.out, splits, top_k=args.top_k, min_count=args.min_count, image_pattern=args.image_pattern)
    )


def cmd_prepare_easy_vqa(args: argparse.Namespace) -> None:
    from data_prep.easy_vqa import prepare_easy_vqa

    check_out_folder(args.out)
    print_json(prepare_easy_vqa(args.out))


# ---------------------------------------------------------------- features, bench encoder


def cmd_features(args: argparse.Namespace) -> None:
    from core import distributed
    from core.features import write_features

    check_out_folder(args.data, "--data")  # the feature cache is written inside it
    ctx = distributed.init(args.device)
    try:
        summary = write_features(
            args.data,
            encoder_config(args),
            batch_size=args.batch_size,
            workers=args.workers,
            compile=args.compile,
            device=ctx.device,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=ctx.is_main,
            log=log if ctx.is_main else (lambda m: None),
        )
    finally:
        distributed.shutdown()
    if ctx.is_main:
        log(f"skipped {summary['skipped']} unreadable image(s)")
        print_json(summary)


def cmd_bench_encoder(args: argparse.Namespace) -> None:
    from core.bench import bench_encoder

    print_json(bench_encoder(sizes=args.sizes, compile=not args.no_compile, device=args.device or "cpu"))


# ---------------------------------------------------------------- parser


def register(groups: Groups) -> None:
    """Add prepare DATASET, features and bench encoder to `attend`."""
    p = groups.prepare.add_parser("scenes", help="generate the synthetic scenes (no download)")
    p.add_argument("--out", type=Path, default=DEFAULT_DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int_at_least(1), default=2000)
    p.add_argument("--val", type=int_at_least(1), default=200)
    p.add_argument("--test", type=int_at_least(1), default=500)
    p.add_argument("--workers", type=int_at_least(1), default=os.cpu_count() or 1)
    p.add_argument(
        "--vary",
        action="store_true",
        help="draw every choice the spec leaves open anew for each scene (anti-aliasing, outline softness, "
        "noise, exact colours, star and triangle proportions, sub-pixel positions); the objects, captions and "
        "questions stay those of the seed",
    )
    p.add_argument(
        "--like-pairs",
        type=finite_float(0.0, 1.0),
        default=0.0,
        metavar="P",
        help="for training sets: the chance that a scene is drawn again until two of its objects share size and "
        "colour (the pairs a captioner confuses); 0, the default, keeps every scene the seed's",
    )
    p.add_argument(
        "--degrade",
        type=finite_float(0.0, 1.0),
        default=0.0,
        metavar="P",
        help="for training sets: the chance that a scene is saved JPEG-compressed (quality 20-90), blurred, "
        "downscaled or noisy, as pictures that went through a camera or a re-encoding are; 0, the default, "
        "saves every scene as drawn",
    )
    p.set_defaults(func=cmd_prepare_scenes)

    p = groups.prepare.add_parser("coco", help="COCO 2014 caption files, or a Karpathy split file")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--karpathy", type=Path, help="dataset_coco.json (or dataset_flickr8k/30k.json)")
    p.add_argument("--images", type=Path, help="with --karpathy: the folder the split's filepaths are under")
    p.add_argument(
        "--captions",
        nargs="+",
        metavar="SPLIT=JSON:IMAGE_DIR",
        help="e.g. train=annotations/captions_train2014.json:train2014",
    )
    p.add_argument("--min-count", type=int_at_least(1), default=5, help="keep words seen at least this often")
    p.set_defaults(func=cmd_prepare_coco)

    p = groups.prepare.add_parser("vqa", help="VQA v2 questions + annotations (also the scenes' VQA files)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", nargs="+", required=True, metavar="NAME=QUESTIONS:ANNOTATIONS:IMAGE_DIR")
    p.add_argument("--top-k", type=int_at_least(1), default=3000, help="answers kept as classes")
    p.add_argument("--min-count", type=int_at_least(1), default=1)
    p.add_argument("--image-pattern", default="COCO_{data_subtype}_{image_id:012d}.jpg")
    p.set_defaults(func=cmd_prepare_vqa)

    p = groups.prepare.add_parser("easy-vqa", help="the easy-VQA set from the installed easy-vqa package")
    p.add_argument("--out", type=Path, default=Path("data/easy-vqa"))
    p.set_defaults(func=cmd_prepare_easy_vqa)

    p = groups.top.add_parser(
        "domain",
        help="fit a checkpoint's per-image domain check on its training images",
        description="The domain check (core/domain.py) flags images unlike a model's training images. "
        "Training records it in the checkpoint; this fits it for a checkpoint without one (on up to 1,000 "
        "training and 300 held-out images, each also degraded, encoded at 224 px: a few minutes on a CPU) "
        "and writes NAME.domain.pt beside it. Example: attend domain captioner --checkpoint runs/cap/best.pt "
        "--data data/coco",
    )
    p.add_argument("task", choices=("captioner", "vqa"), help="the checkpoint's task")
    p.add_argument("--checkpoint", required=True, help="a checkpoint file or a shipped model's name (e.g. scenes)")
    p.add_argument("--data", type=Path, required=True, help="the prepared folder the model was trained on")
    p.add_argument("--train-split", default="train", help="images the statistics are fitted on (default train)")
    p.add_argument(
        "--held-out-split", default="val", help="training-domain images that set the threshold (default val)"
    )
    p.add_argument("--out", type=Path, help="where to write the statistics (default: NAME.domain.pt beside it)")
    p.set_defaults(func=cmd_domain)

    p = groups.top.add_parser("features", help="encode every image once into the feature cache (resumable)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    add_encoder_args(p)
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--workers", type=int_at_least(0), default=1, help="image-decoding processes")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the encoder (default: on the CPU for 512+ images)",
    )
    add_device(p)
    p.set_defaults(func=cmd_features)

    p = groups.bench.add_parser("encoder", help="encoder ms per image at batch 1 and 32")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    p.add_argument("--no-compile", action="store_true", help="measure eager mode")
    add_device(p, default="cpu")
    p.set_defaults(func=cmd_bench_encoder)
