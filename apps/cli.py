"""The `attend` command: argument parsing only; the work is done by the library.

Each task registers its commands the same way (``cli_data``, ``cli_captioner``, ``cli_vqa``, ``cli_charlm``:
``register(groups)``), sharing the options of ``apps.options``; this module builds the parser
from them, adds `attend app`, and runs a command. Every user-facing failure (an ``AttendError``,
or an ``OSError`` about a named file) becomes one line on stderr, ``attend: error: ...``, and exit
status 1; bad arguments exit 2 (argparse). A command may also return 1 itself after printing its
own error lines (`attend caption` with some unusable images: the others are still captioned).

``--device`` is checked here, once, for every command that takes it (``core.distributed.check_device``).

A closed output pipe (``attend caption --json | head -1``) ends the command quietly with exit
status 141, what the shell reports for a program that SIGPIPE stopped (128 + 13): no traceback,
no "Exception ignored" message; stdout is pointed at /dev/null so that the interpreter's last
flush cannot fail again.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from core.errors import AttendError

from . import cli_captioner, cli_charlm, cli_data, cli_vqa
from .options import Groups, document_options, int_at_least


def cmd_app(args: argparse.Namespace) -> None:
    from apps.app_logic import streamlit_command

    command = streamlit_command(port=args.port, address=args.host)
    os.execvp(command[0], command)  # the server takes this process over (Ctrl-C stops it)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attend",
        description="Show, Attend and Tell captions and CNN+LSTM visual question answering, with the\n"
        "attention behind every word and answer. The shipped models know generated scenes of coloured\n"
        "shapes; every caption and answer says when an image is unlike them.",
        epilog="examples:\n"
        "  attend caption scene.png --json          caption, attention, domain check, ImageNet labels\n"
        '  attend ask scene.png "what colour is the circle?"\n'
        "  attend app                               the app on http://localhost:8501\n"
        "  attend COMMAND --help                    a command's options, defaults and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    for commands in (cli_data, cli_captioner, cli_vqa, cli_charlm):
        commands.register(groups)

    p = top.add_parser("app", help="open the Streamlit app (shipped default models, no set-up)")
    p.add_argument("--port", type=int_at_least(1), help="port to serve on (default: Streamlit's 8501)")
    p.add_argument(
        "--host",
        "--address",
        dest="host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to listen on (default: 127.0.0.1, this computer only; 0.0.0.0: every interface). "
        "The browser only lets the app use the camera over https or on localhost",
    )
    p.set_defaults(func=cmd_app)
    document_options(parser)
    return parser


BROKEN_PIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a tool stopped by a closed pipe
# OSErrors that are about the machine, not the code, even when they name no file (a full disk
# while writing a checkpoint): one line like those that name a file.
_ENVIRONMENT_ERRNOS = {
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO") if hasattr(errno, name)
}


def _os_error_line(e: OSError) -> str:
    """``path: reason`` of an OSError about a file, on one line."""
    reason = (e.strerror or os.strerror(e.errno)) if e.errno else str(e)
    if e.filename is not None:
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        reason = f"{os.fsdecode(where)}: {reason}"
    return " ".join(reason.split())


def _quiet_stdout() -> None:
    """After a closed pipe: send whatever is still buffered for stdout to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (captured in a test): nothing will flush to the pipe


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "device", None) is not None:
            from core.distributed import check_device

            args.device = check_device(args.device)
        status = args.func(args) or 0
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE_STATUS
    except AttendError as e:
        print(f"attend: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.filename is None and e.errno not in _ENVIRONMENT_ERRNOS:
            raise  # not about a file the user named nor the machine: a bug, keep the traceback
        print(f"attend: error: {_os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("attend: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
