"""The `attend` command: argument parsing only; the work is done by the library.

Every user-facing failure (an ``AttendError``) becomes one line on stderr,
``attend: error: ...``, and exit status 1; bad arguments exit 2 (argparse).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core.errors import AttendError

DEFAULT_DATA = Path("data/scenes")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


# ---------------------------------------------------------------- prepare

def cmd_prepare_scenes(args) -> None:
    from data_prep.scenes import generate_scenes

    counts = {"train": args.train, "val": args.val, "test": args.test}
    _print_json(generate_scenes(args.out, seed=args.seed, counts=counts, workers=args.workers))


def cmd_prepare_coco(args) -> None:
    from data_prep import coco

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
    _print_json(summary)


def cmd_prepare_vqa(args) -> None:
    from data_prep.vqa_v2 import prepare_vqa

    splits = {}
    for spec in args.split:
        name, _, rest = spec.partition("=")
        parts = rest.split(":")
        if not name or len(parts) != 3 or not parts[0] or not parts[2]:
            raise AttendError(f"--split {spec!r}: expected NAME=QUESTIONS_JSON:ANNOTATIONS_JSON:IMAGE_DIR "
                              "(leave ANNOTATIONS_JSON empty for a test split)")
        questions, annotations, images = parts
        splits[name] = (Path(questions), Path(annotations) if annotations else None, Path(images))
    _print_json(prepare_vqa(args.out, splits, top_k=args.top_k, min_count=args.min_count,
                            image_pattern=args.image_pattern))


def cmd_prepare_easy_vqa(args) -> None:
    from data_prep.easy_vqa import prepare_easy_vqa

    _print_json(prepare_easy_vqa(args.out))


# ---------------------------------------------------------------- features, bench

def _encoder_config(args):
    from core.encoder import EncoderConfig

    return EncoderConfig(backbone=args.encoder, image_size=args.image_size, weights=args.encoder_weights,
                         mid_level=args.mid_level)


def cmd_features(args) -> None:
    from core import distributed
    from core.features import write_features

    ctx = distributed.init(args.device)
    try:
        log = (lambda m: print(m, file=sys.stderr)) if ctx.is_main else (lambda m: None)
        summary = write_features(args.data, _encoder_config(args), batch_size=args.batch_size,
                                 workers=args.workers, compile=args.compile, device=ctx.device,
                                 rank=ctx.rank, world_size=ctx.world_size, progress=ctx.is_main, log=log)
    finally:
        distributed.shutdown()
    if ctx.is_main:
        print(f"skipped {summary['skipped']} unreadable image(s)", file=sys.stderr)
        _print_json(summary)


def cmd_bench_encoder(args) -> None:
    from core.bench import bench_encoder

    _print_json(bench_encoder(sizes=args.sizes, compile=not args.no_compile, device=args.device or "cpu"))


def _bench_shapes(args) -> dict:
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


def cmd_bench_decode(args) -> None:
    from captioner.bench import bench_decode

    _print_json([bench_decode(shape, steps=args.steps, beams=args.beams, batches=args.batches,
                              device=args.device or "cpu", weights=tuple(args.weights)) | {"config": name}
                 for name, shape in _bench_shapes(args).items()])


def cmd_bench_train(args) -> None:
    from captioner.bench import bench_train

    _print_json([bench_train(shape, batch=args.batch_size, steps=args.steps, cache_images=args.cache_images,
                             device=args.device or "cpu", captions_per_image=args.captions_per_image,
                             folder=args.folder and str(Path(args.folder) / name)) | {"config": name}
                 for name, shape in _bench_shapes(args).items()])


# ---------------------------------------------------------------- train, evaluate

def _train_config(args):
    from core.training import TrainConfig

    return TrainConfig(out_dir=str(args.out), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, grad_clip=args.grad_clip, warmup_steps=args.warmup,
                       schedule=args.schedule, seed=args.seed, workers=args.workers, resume=args.resume)


def _model_overrides(pairs: list[str]) -> dict:
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


def cmd_train_captioner(args) -> None:
    from captioner.train import train_captioner

    overrides = _model_overrides(args.set)
    if args.cell:
        overrides["cell"] = args.cell
    if args.no_attention:
        overrides["attention"] = False
    result = train_captioner(args.data, args.out, overrides, _train_config(args), encoder=_encoder_config(args),
                             val_limit=args.val_limit, select=args.select, device=args.device,
                             export=args.export, captions_per_image=args.captions_per_image, init=args.init,
                             log=lambda m: print(m, file=sys.stderr))
    _print_json({k: result[k] for k in ("best", "checkpoint", "exported") if k in result})


def cmd_evaluate_captioner(args) -> None:
    from captioner.train import evaluate_captioner

    summary = evaluate_captioner(args.checkpoint, args.data, split=args.split, beam_size=args.beam,
                                 length_penalty=args.length_penalty, out=args.out, device=args.device,
                                 int8=args.int8)
    summary.get("scenes", {}).pop("examples", None) if not args.examples else None
    _print_json(summary)


def cmd_caption(args) -> None:
    from captioner.inference import Captioner
    from core.overlay import overlay_sheet
    from core.prepared import atomic_write_bytes

    if not args.images:
        raise AttendError("give at least one image")
    captioner = Captioner.load(args.checkpoint, device=args.device, int8=args.int8)
    results = captioner.caption([str(p) for p in args.images], beam_size=args.beam, batch_size=args.batch_size)
    for i, r in enumerate(results):
        if args.json:
            print(json.dumps(r.to_json()))
        else:
            print(f"{r.name}\t{r.caption}")
        if args.attention_out and r.attention is not None:
            import io

            buffer = io.BytesIO()
            overlay_sheet(r.image, r.tokens, r.attention).save(buffer, format="PNG")
            target = args.attention_out / f"{i:04d}_{Path(r.name).stem}_attention.png"
            atomic_write_bytes(target, buffer.getvalue())


# ---------------------------------------------------------------- app

def cmd_app(args) -> None:
    from apps.app_logic import streamlit_command

    command = streamlit_command(port=args.port, address=args.address)
    os.execvp(command[0], command)  # the server takes this process over (Ctrl-C stops it)


# ---------------------------------------------------------------- parser

def _add_captions_per_image(p: argparse.ArgumentParser) -> None:
    p.add_argument("--captions-per-image", type=_int_at_least(0), default=0, metavar="K",
                   help="batch K captions of each image together, its grid read and projected once "
                   "(--batch-size still counts captions); 0 (default): every caption on its own")


def _add_train_args(p: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl, metrics.png")
    p.add_argument("--epochs", type=_int_at_least(1), default=epochs)
    p.add_argument("--batch-size", type=_int_at_least(1), default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--warmup", type=_int_at_least(0), default=100, help="warm-up steps")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_int_at_least(0), default=0, help="data-loading processes")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--set", nargs="+", metavar="NAME=VALUE", help="model options, e.g. hidden_dim=512 alpha_c=0.5")
    _add_encoder_args(p)


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="efficientnet-lite0", choices=["efficientnet-lite0", "resnet50", "resnet101"])
    p.add_argument("--image-size", type=_int_at_least(32), default=224, help="input side in pixels (224 -> 7x7 grid)")
    p.add_argument("--encoder-weights", help="a local state_dict file (needed for ResNets)")
    p.add_argument("--mid-level", action="store_true",
                   help="append a middle stage's pooled features to each cell (keeps colour; README)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attend", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prep = sub.add_parser("prepare", help="turn a raw data set into the prepared layout")
    psub = prep.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    p = psub.add_parser("scenes", help="generate the synthetic scenes (no download)")
    p.add_argument("--out", type=Path, default=DEFAULT_DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=_int_at_least(1), default=2000)
    p.add_argument("--val", type=_int_at_least(1), default=200)
    p.add_argument("--test", type=_int_at_least(1), default=500)
    p.add_argument("--workers", type=_int_at_least(1), default=os.cpu_count() or 1)
    p.set_defaults(func=cmd_prepare_scenes)

    p = psub.add_parser("coco", help="COCO 2014 caption files, or a Karpathy split file")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--karpathy", type=Path, help="dataset_coco.json (or dataset_flickr8k/30k.json)")
    p.add_argument("--images", type=Path, help="with --karpathy: the folder the split's filepaths are under")
    p.add_argument("--captions", nargs="+", metavar="SPLIT=JSON:IMAGE_DIR",
                   help="e.g. train=annotations/captions_train2014.json:train2014")
    p.add_argument("--min-count", type=_int_at_least(1), default=5, help="keep words seen at least this often")
    p.set_defaults(func=cmd_prepare_coco)

    p = psub.add_parser("vqa", help="VQA v2 questions + annotations (also the scenes' VQA files)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", nargs="+", required=True, metavar="NAME=QUESTIONS:ANNOTATIONS:IMAGE_DIR")
    p.add_argument("--top-k", type=_int_at_least(1), default=3000, help="answers kept as classes")
    p.add_argument("--min-count", type=_int_at_least(1), default=1)
    p.add_argument("--image-pattern", default="COCO_{data_subtype}_{image_id:012d}.jpg")
    p.set_defaults(func=cmd_prepare_vqa)

    p = psub.add_parser("easy-vqa", help="the easy-VQA set from the installed easy-vqa package")
    p.add_argument("--out", type=Path, default=Path("data/easy-vqa"))
    p.set_defaults(func=cmd_prepare_easy_vqa)

    p = sub.add_parser("features", help="encode every image once into the feature cache (resumable)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    _add_encoder_args(p)
    p.add_argument("--batch-size", type=_int_at_least(1), default=32)
    p.add_argument("--workers", type=_int_at_least(0), default=1, help="image-decoding processes")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the encoder (default: on the CPU for 512+ images)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=cmd_features)

    train = sub.add_parser("train", help="train a model on a prepared data folder")
    tsub = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    p = tsub.add_parser("captioner", help="Show, Attend and Tell on cached features (torchrun-ready)")
    _add_train_args(p, epochs=20, batch_size=64, lr=2e-3)
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"])
    p.add_argument("--no-attention", action="store_true", help="the CNN+RNN baseline")
    p.add_argument("--val-limit", type=_int_at_least(1), default=500, help="validation images scored per epoch")
    p.add_argument("--select", default="bleu4", help="validation metric that picks best.pt")
    p.add_argument("--export", type=Path, help="also write best.pt as a float16 shippable checkpoint here")
    p.add_argument("--init", type=Path, metavar="CHECKPOINT",
                   help="fine-tune: start from this captioner's weights (same data vocabulary and features; "
                   "a fresh optimizer and schedule; --set may change options such as alpha_c)")
    _add_captions_per_image(p)
    p.set_defaults(func=cmd_train_captioner)

    p = sub.add_parser("caption", help="caption images (default model: the shipped scenes captioner)")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    p.add_argument("--checkpoint", type=Path, help="a captioner checkpoint (default: the shipped model)")
    p.add_argument("--beam", type=_int_at_least(1), default=3)
    p.add_argument("--batch-size", type=_int_at_least(1), default=16)
    p.add_argument("--json", action="store_true", help="one JSON object per image: caption, tokens, attention, grid")
    p.add_argument("--attention-out", type=Path, metavar="DIR", help="write a PNG per image with every word's map")
    p.add_argument("--device")
    p.add_argument("--int8", action="store_true",
                   help="decode with int8 weights in the per-step layers (CPU only; faster, captions can differ slightly)")
    p.set_defaults(func=cmd_caption)

    evaluate = sub.add_parser("evaluate", help="score a checkpoint on a data split (JSON)")
    esub = evaluate.add_subparsers(dest="model", required=True, metavar="MODEL")
    p = esub.add_parser("captioner", help="BLEU, COCO metrics, scenes object/pointing accuracy")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", default="test")
    p.add_argument("--beam", type=_int_at_least(1), default=3)
    p.add_argument("--length-penalty", type=float, default=0.0)
    p.add_argument("--out", type=Path, help="write metrics_SPLIT.json and captions_SPLIT_results.json here")
    p.add_argument("--examples", action="store_true", help="include example errors in the output")
    p.add_argument("--device")
    p.add_argument("--int8", action="store_true",
                   help="decode with int8 weights in the per-step layers (CPU only; faster, captions can differ slightly)")
    p.set_defaults(func=cmd_evaluate_captioner)

    bench = sub.add_parser("bench", help="speed and memory as JSON")
    bsub = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = bsub.add_parser("encoder", help="encoder ms per image at batch 1 and 32")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    p.add_argument("--no-compile", action="store_true", help="measure eager mode")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_bench_encoder)

    p = bsub.add_parser("decode", help="beam-search ms per image per step (random weights)")
    p.add_argument("--config", choices=["coco", "default", "both"], default="both")
    p.add_argument("--steps", type=int, nargs="+", default=[12, 51])
    p.add_argument("--beams", type=int, nargs="+", default=[3, 5])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--weights", nargs="+", choices=["float32", "int8"], default=["float32", "int8"],
                   help="decoder weights to measure (int8: the CPU path of --int8)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_bench_decode)

    p = bsub.add_parser("train", help="training captions per second from cached features, peak memory")
    p.add_argument("--config", choices=["coco", "default", "both"], default="both")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32, help="captions per batch")
    _add_captions_per_image(p)
    p.add_argument("--steps", type=_int_at_least(1), default=5)
    p.add_argument("--cache-images", type=_int_at_least(0), default=0,
                   help="read batches from a memory-mapped float16 cache of this many random grids")
    p.add_argument("--folder", help="where to write that cache, one subfolder per --config, reused by "
                   "later runs (default: a temporary folder, removed after)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_bench_train)

    p = sub.add_parser("app", help="open the Streamlit app (shipped default models, no set-up)")
    p.add_argument("--port", type=_int_at_least(1), help="port to serve on (default: Streamlit's 8501)")
    p.add_argument("--address", help="address to listen on, e.g. 127.0.0.1 (default: all interfaces)")
    p.set_defaults(func=cmd_app)

    from apps.cli_vqa import register as register_vqa  # train/evaluate/bench vqa and ask

    register_vqa(sub, tsub, esub, bsub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except AttendError as e:
        print(f"attend: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("attend: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
