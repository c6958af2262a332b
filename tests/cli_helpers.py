"""Helpers several test files share: run `attend` in this process, read its one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apps.cli import main


def quiet(_message: str) -> None:
    """A ``log`` that prints nothing."""


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``attend ARGV`` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    """The single line of stderr of a run that failed as a user error, without a traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("attend: error:"), err
    assert "Traceback" not in err
    return lines[0]


def cli_error(capsys, *argv) -> str:
    """Run ``attend ARGV``; it must fail with one error line, nothing on stdout, no traceback."""
    code, out, err = run_cli(capsys, *argv)
    assert out == "", (code, out, err)
    return one_line_error(code, err)


def npy_data_offset(npy: Path) -> int:
    """Where a .npy file's array data starts (after its header)."""
    with open(npy, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def caption_lines(out: str) -> list[str]:
    """The ``NAME<TAB>CAPTION`` lines of `attend caption`'s human output, without the indented
    warnings that may follow a caption (out of domain, flags, the encoder's labels)."""
    return [line for line in out.splitlines() if not line.startswith("  ")]
