"""The character model's commands of `attend`: charlm train, charlm sample, charlm evaluate,
charlm export, charlm cells, and bench charlm.

Argument parsing only; ``register`` adds them to the parser ``apps.cli`` builds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import (
    Groups,
    add_device,
    check_out_folder,
    checkpoint_help,
    finite_float,
    int_at_least,
    log,
    print_json,
    train_config,
)

SHIPPED_HELP = checkpoint_help("charlm") + " (trained on Python's standard library)"


def _corpus(args: argparse.Namespace):
    from charlm.data import load_corpus

    return load_corpus(args.text, args.stdlib, args.max_chars)


# ---------------------------------------------------------------- train, sample, evaluate, export


def cmd_charlm_train(args: argparse.Namespace) -> None:
    from charlm.train import train_charlm

    check_out_folder(args.out)
    if args.export is not None:
        check_out_folder(args.export.parent, "--export")
    corpus = _corpus(args)  # before anything is built: a bad file is one line
    overrides = {
        "cell": args.cell,
        "layers": args.layers,
        "hidden": args.hidden,
        "embed_dim": args.embed,
        "dropout": args.dropout,
    }
    args.workers = 0  # the streams are slices of one tensor in memory: nothing to load
    train = train_config(args)
    result = train_charlm(
        corpus,
        args.out,
        overrides,
        train,
        bptt=args.bptt,
        chars_per_epoch=args.chars_per_epoch,
        val_chars=args.val_chars,
        device=args.device,
        export=args.export,
        fast=not args.plain,
        log=log,
    )
    print_json({k: result[k] for k in ("best_bpc", "checkpoint", "exported") if k in result})


def cmd_charlm_sample(args: argparse.Namespace) -> None:
    from charlm.checkpoint import load_charlm
    from charlm.inference import check_sampling, sample, unknown_in

    check_sampling(args.length, args.temperature, args.top_k)  # before loading the model
    model, vocab = load_charlm(args.checkpoint or "stdlib", device=args.device or "cpu")
    unknown = unknown_in(vocab, args.prime)
    if unknown:
        log(f"characters the model does not know, read as unknown: {''.join(unknown)!r}")
    text = sample(
        model,
        vocab,
        prime=args.prime,
        length=args.length,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        greedy=args.greedy,
    )
    if args.json:
        print(json.dumps({"prime": args.prime, "text": text}))
    else:
        sys.stdout.write(args.prime + text + ("" if text.endswith("\n") else "\n"))


def cmd_charlm_evaluate(args: argparse.Namespace) -> None:
    from charlm.train import evaluate_charlm

    corpus = _corpus(args) if (args.text or args.stdlib) else None
    result = evaluate_charlm(
        args.checkpoint or "stdlib", corpus, max_chars=args.max_eval_chars, device=args.device, log=log
    )
    if args.json:
        print(json.dumps(result))
        return
    print(f"bits per character on {result['chars_scored']:,} held-out characters ({result['held_out_files']} files):")
    for name, bpc in result["bpc"].items():
        print(f"  {name:<10} {bpc:.4f}")
    for note in result.get("notes", []):
        print(f"note: {note}")


def cmd_charlm_export(args: argparse.Namespace) -> None:
    from charlm.checkpoint import KIND, check_charlm
    from core.checkpoint import export_checkpoint, load_checkpoint

    check_out_folder(args.out.parent, "--out")
    check_charlm(args.checkpoint, load_checkpoint(args.checkpoint, KIND))  # refuse a damaged file first
    print_json(export_checkpoint(args.checkpoint, args.out, KIND))


def cmd_charlm_cells(args: argparse.Namespace) -> None:
    from charlm.cells import cells_report, read_cells_text
    from charlm.checkpoint import load_charlm

    check_out_folder(args.out)
    text = read_cells_text(args.text, args.max_chars)  # before loading the model: a bad file is one line
    model, vocab = load_charlm(args.checkpoint or "stdlib", device=args.device or "cpu")
    report = cells_report(
        model, vocab, text, args.out, shown_chars=args.shown_chars, source=str(args.text), start_line=args.start_line
    )
    if args.json:
        print(json.dumps(report))
        return
    print(f"the unit that best tracks each property over {report['chars']:,} characters (Pearson's r):")
    for name, entry in report["properties"].items():
        best = entry["units"][0] if entry["units"] else None
        shown = f"{best['unit']:<16} r = {best['r']:+.3f}" if best else entry["note"]
        print(f"  {name:<14} {shown}")
    print(f"pictures: {args.out / 'cells.html'}")


def cmd_bench_charlm(args: argparse.Namespace) -> None:
    from charlm.bench import bench_charlm

    print_json(
        bench_charlm(
            cell=args.cell,
            layers=args.layers,
            hidden=args.hidden,
            embed_dim=args.embed,
            batch=args.batch_size,
            bptt=args.bptt,
            steps=args.steps,
            sample_chars=args.sample_chars,
            device=args.device or "cpu",
            fast=not args.plain,
        )
    )


# ---------------------------------------------------------------- parser


def add_text_args(p: argparse.ArgumentParser, needed: str) -> None:
    p.add_argument(
        "--text",
        nargs="+",
        type=Path,
        metavar="FILE",
        help=f"text files, or folders (their *.py files), {needed}; about 5%% of the files, chosen by a "
        "hash of their path, are held out (one file: its last 5%%). Example: --text notes.txt src/",
    )
    p.add_argument(
        "--stdlib",
        action="store_true",
        help="the Python standard library's own .py source (no tests, no installed packages), split the same way",
    )
    p.add_argument(
        "--max-chars",
        type=int_at_least(1),
        help="at most this many characters of text in all, whole files chosen by hash (default: all). "
        "Example: --max-chars 4000000",
    )


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm", help="recurrent cell (default lstm)")
    p.add_argument("--layers", type=int_at_least(1), default=2, help="stacked cells (default 2). Example: --layers 3")
    p.add_argument(
        "--hidden", type=int_at_least(1), default=256, help="units per layer (default 256). Example: --hidden 512"
    )
    p.add_argument(
        "--embed", type=int_at_least(1), default=64, help="character embedding size (default 64). Example: --embed 32"
    )


def register(groups: Groups) -> None:
    """Add `attend charlm train|sample|evaluate|export` and `attend bench charlm`."""
    charlm = groups.top.add_parser(
        "charlm",
        help="a character-level language model (Karpathy 2015): train, sample, evaluate",
        description="A character-level RNN trained with truncated backpropagation through time and sampled "
        "one character at a time. Example: attend charlm train --stdlib --out runs/charlm; "
        'attend charlm sample --prime "def " --temperature 0.8',
    )
    commands = charlm.add_subparsers(dest="charlm_command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train",
        help="train on text files or the standard library (truncated BPTT, torchrun-ready)",
        description="Train a character model. B streams (--batch-size) read the training text in chunks of T "
        "characters (--bptt), the state carried from chunk to chunk. Validation: bits per character on the "
        "held-out files each epoch; best.pt is the lowest. Example: attend charlm train --stdlib --out runs/charlm "
        "--hidden 256 --epochs 10",
    )
    add_text_args(p, "to train on")
    p.add_argument("--out", type=Path, required=True, help="run folder: best.pt, last.pt, metrics.jsonl, metrics.png")
    add_model_args(p)
    p.add_argument(
        "--bptt", type=int_at_least(1), default=100, help="T: characters per chunk (default 100). Example: --bptt 200"
    )
    p.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=64,
        help="B: parallel streams per process (default 64). Example: --batch-size 32",
    )
    p.add_argument(
        "--dropout",
        type=finite_float(0.0, 0.99),
        default=0.0,
        help="dropout between layers and before the output (default 0). Example: --dropout 0.2",
    )
    p.add_argument("--lr", type=finite_float(0.0), default=2e-3, help="peak learning rate (default 0.002)")
    p.add_argument("--weight-decay", type=finite_float(0.0), default=0.0, help="Adam's weight decay (default 0)")
    p.add_argument("--grad-clip", type=finite_float(0.0), default=5.0, help="gradient norm limit (default 5; 0: none)")
    p.add_argument("--warmup", type=int_at_least(0), default=100, help="warm-up steps (default 100)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine", help="(default cosine)")
    p.add_argument("--epochs", type=int_at_least(1), default=10, help="epochs (default 10). Example: --epochs 20")
    p.add_argument(
        "--chars-per-epoch",
        type=int_at_least(1),
        default=1_500_000,
        help="characters read per epoch, all processes together (default 1500000); each epoch starts the "
        "streams at new places. Example: --chars-per-epoch 500000",
    )
    p.add_argument(
        "--val-chars",
        type=int_at_least(1),
        default=200_000,
        help="held-out characters scored each epoch, spread over the held-out files (default 200000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the streams' places (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--export", type=Path, help="also write best.pt as a float16 shippable checkpoint here")
    p.add_argument(
        "--plain",
        action="store_true",
        help="train the plain reference model (charlm/model.py) instead of the fused kernels: slower",
    )
    add_device(p)
    p.set_defaults(func=cmd_charlm_train)

    p = commands.add_parser(
        "sample",
        help="write text one character at a time",
        description='Sample text. Example: attend charlm sample --prime "import " --length 300 --temperature 0.7 '
        "--seed 1",
    )
    p.add_argument("--checkpoint", help=SHIPPED_HELP)
    p.add_argument("--prime", default="", help="text to start from, printed first (default: none)")
    p.add_argument("--length", type=int_at_least(0), default=500, help="characters to write (default 500)")
    p.add_argument(
        "--temperature",
        type=finite_float(0.0),
        default=1.0,
        help="divides the logits: low is safe and repetitive, high inventive (default 1; 0: greedy). "
        "Example: --temperature 0.7",
    )
    p.add_argument("--top-k", type=int_at_least(1), help="draw among the K most likely characters only (default: all)")
    p.add_argument("--greedy", action="store_true", help="always the most likely character (temperature 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws: the same seed, the same text (default 0)")
    p.add_argument("--json", action="store_true", help='print {"prime": ..., "text": ...}')
    add_device(p, default="cpu")
    p.set_defaults(func=cmd_charlm_sample)

    p = commands.add_parser(
        "evaluate",
        help="bits per character on held-out files, against unigram and 5-gram baselines",
        description="Bits per character on the held-out files of the model and of two baselines trained on "
        "the same training files (add-one unigram, interpolated Kneser-Ney 5-gram). Example: "
        "attend charlm evaluate --checkpoint runs/charlm/best.pt --stdlib",
    )
    p.add_argument("--checkpoint", help=SHIPPED_HELP)
    add_text_args(p, "to score (default: --stdlib for a model trained on it)")
    p.add_argument(
        "--max-eval-chars",
        type=int_at_least(1),
        default=1_000_000,
        help="held-out characters scored at most, spread over them (default 1000000)",
    )
    p.add_argument("--json", action="store_true", help="one line of JSON")
    add_device(p, default="cpu")
    p.set_defaults(func=cmd_charlm_evaluate)

    p = commands.add_parser(
        "export",
        help="a float16 copy of a checkpoint without the optimizer state (what ships)",
        description="Example: attend charlm export --checkpoint runs/charlm/best.pt --out charlm/weights/stdlib.pt",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a trained checkpoint (best.pt)")
    p.add_argument("--out", type=Path, required=True, help="the file to write")
    p.set_defaults(func=cmd_charlm_export)

    p = commands.add_parser(
        "cells",
        help="find the units that track strings, comments, indentation, line position and brackets",
        description="Interpretable cells (Karpathy et al. 2016): read a text, correlate every unit with "
        "properties of each character, and colour the text by the best unit of each. Writes cells.json, "
        "cells.html and cells.png to --out. Example: attend charlm cells --text /usr/lib/python3.11/json/decoder.py "
        "--out runs/cells",
    )
    p.add_argument("--checkpoint", help=SHIPPED_HELP)
    p.add_argument("--text", type=Path, required=True, help="a UTF-8 text file to read (Python source shows most)")
    p.add_argument("--out", type=Path, required=True, help="folder for cells.json, cells.html and cells.png")
    p.add_argument(
        "--max-chars",
        type=int_at_least(2),
        default=20_000,
        help="characters of the file read, from its start (default 20000)",
    )
    p.add_argument(
        "--shown-chars",
        type=int_at_least(1),
        default=3000,
        help="characters coloured in cells.html (default 3000)",
    )
    p.add_argument(
        "--start-line",
        type=int_at_least(1),
        default=1,
        help="the pictures start at this line of the text read (default 1). Example: --start-line 40",
    )
    p.add_argument("--json", action="store_true", help="print cells.json's content as one line")
    add_device(p, default="cpu")
    p.set_defaults(func=cmd_charlm_cells)

    p = groups.bench.add_parser("charlm", help="character model: training and sampling characters per second")
    add_model_args(p)
    p.add_argument("--batch-size", type=int_at_least(1), default=64, help="B: streams per step (default 64)")
    p.add_argument("--bptt", type=int_at_least(1), default=100, help="T: characters per chunk (default 100)")
    p.add_argument("--steps", type=int_at_least(1), default=5, help="training steps timed (default 5)")
    p.add_argument("--sample-chars", type=int_at_least(1), default=500, help="characters sampled (default 500)")
    p.add_argument("--plain", action="store_true", help="the plain reference model instead of the fused kernels")
    add_device(p, default="cpu")
    p.set_defaults(func=cmd_bench_charlm)
