"""The `attend` command: argument parsing only; the work is done by the library.

Each task registers its commands the same way (``cli_data``, ``cli_captioner``, ``cli_vqa``:
``register(groups)``), sharing the options of ``apps.options``; this module builds the parser
from them, adds `attend app`, and runs a command. Every user-facing failure (an ``AttendError``)
becomes one line on stderr, ``attend: error: ...``, and exit status 1; bad arguments exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys

from core.errors import AttendError

from . import cli_captioner, cli_data, cli_vqa
from .options import Groups, int_at_least


def cmd_app(args: argparse.Namespace) -> None:
    from apps.app_logic import streamlit_command

    command = streamlit_command(port=args.port, address=args.address)
    os.execvp(command[0], command)  # the server takes this process over (Ctrl-C stops it)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attend", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def group(name: str, dest: str, metavar: str, help: str) -> argparse._SubParsersAction:
        return top.add_parser(name, help=help).add_subparsers(dest=dest, required=True, metavar=metavar)

    groups = Groups(
        top=top,
        prepare=group("prepare", "dataset", "DATASET", "turn a raw data set into the prepared layout"),
        train=group("train", "model", "MODEL", "train a model on a prepared data folder"),
        evaluate=group("evaluate", "model", "MODEL", "score a checkpoint on a data split (JSON)"),
        bench=group("bench", "what", "WHAT", "speed and memory as JSON"),
    )
    for commands in (cli_data, cli_captioner, cli_vqa):
        commands.register(groups)

    p = top.add_parser("app", help="open the Streamlit app (shipped default models, no set-up)")
    p.add_argument("--port", type=int_at_least(1), help="port to serve on (default: Streamlit's 8501)")
    p.add_argument("--address", help="address to listen on, e.g. 127.0.0.1 (default: all interfaces)")
    p.set_defaults(func=cmd_app)
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
