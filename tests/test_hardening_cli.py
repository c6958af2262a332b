"""The command line's rough edges, each once a traceback, a hang or a wrong result:

1. one bad image in `attend caption` no longer costs the good ones their captions;
2. an unusable output folder, a non-finite or negative --lr, an unknown or absent --device and a
   closed output pipe each end in one line (or quietly, for the pipe), never a traceback;
3. image paths that are not regular files (a FIFO, a device, a socket, a folder) are refused
   without being opened, and files, bytes and streams are capped before they are read;
4. `attend app` listens on 127.0.0.1 unless told otherwise (--host, or --address as before).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from apps import cli
from apps.cli import BROKEN_PIPE_STATUS, build_parser, main
from captioner.inference import Captioner, CaptionResult
from core import images
from core.distributed import available_devices, check_device
from core.errors import AttendError
from core.images import MAX_FILE_BYTES, ImageError, load_image

from cli_helpers import caption_lines, cli_error, run_cli

ATTEND = Path(sys.executable).parent / "attend"  # the installed console script of this venv
HAS_CUDA = torch.cuda.is_available()


def _usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and err.startswith("usage: attend"), err
    return err.splitlines()[-1]


@pytest.fixture
def good_images(scenes_dir) -> list[Path]:
    return sorted((scenes_dir / "images" / "train").glob("*.png"))[:3]


@pytest.fixture
def not_an_image(tmp_path) -> Path:
    path = tmp_path / "bad.jpg"
    path.write_text("this is not a picture\n")
    return path


# ---------------------------------------------------------------- 1. a mixed batch


def test_caption_errors_return_keeps_the_good_results_in_place(tiny_captioner, good_images, not_an_image):
    captioner = Captioner.load(tiny_captioner, device="cpu")
    alone = captioner.caption([str(p) for p in good_images], beam_size=2)
    mixed = [str(good_images[0]), str(not_an_image), str(good_images[1]), str(good_images[2])]
    # batch_size 2: the bad image must not shift which image a caption lands on across batches
    results = captioner.caption(mixed, beam_size=2, batch_size=2, errors="return")
    assert [type(r) for r in results] == [CaptionResult, ImageError, CaptionResult, CaptionResult]
    assert results[1].name == str(not_an_image) and "not an image file" in str(results[1])
    for got, want in zip([results[0], *results[2:]], alone):
        assert (got.name, got.tokens) == (want.name, want.tokens)
    # The default is unchanged: the first bad image raises, before any work.
    with pytest.raises(ImageError, match="not an image file"):
        captioner.caption(mixed, beam_size=2)
    with pytest.raises(ValueError, match="errors must be"):
        captioner.caption(mixed, errors="ignore")


def test_caption_cli_json_mixed_batch(tiny_captioner, good_images, not_an_image, tmp_path, capsys):
    maps = tmp_path / "maps"
    code, out, err = run_cli(
        capsys,
        "caption",
        good_images[0],
        not_an_image,
        good_images[1],
        "--checkpoint",
        tiny_captioner,
        "--json",
        "--beam",
        "2",
        "--attention-out",
        maps,
    )
    assert code == 1 and "Traceback" not in err
    printed = [json.loads(line) for line in out.splitlines()]
    assert [p["image"] for p in printed] == [str(good_images[0]), str(not_an_image), str(good_images[1])]
    assert printed[1] == {
        "image": str(not_an_image),
        "error": f"{not_an_image}: not an image file (cannot identify format)",
    }
    assert printed[0]["tokens"] and printed[2]["tokens"] and "error" not in printed[0]
    assert err.splitlines() == [f"attend: error: {printed[1]['error']}"]
    # the attention sheets keep each image's position in the command line
    assert sorted(p.name for p in maps.iterdir()) == [
        f"0000_{good_images[0].stem}_attention.png",
        f"0002_{good_images[1].stem}_attention.png",
    ]


def test_caption_cli_all_good_still_exits_0(tiny_captioner, good_images, capsys):
    code, out, err = run_cli(capsys, "caption", *good_images[:2], "--checkpoint", tiny_captioner, "--beam", "2")
    assert code == 0 and err == "" and len(caption_lines(out)) == 2


# ---------------------------------------------------------------- 2. output folders


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "taken.txt"
    path.write_text("a file\n")
    return path


def test_attention_out_naming_a_file_or_a_path_under_one(tiny_captioner, good_images, a_file, capsys):
    line = cli_error(capsys, "caption", good_images[0], "--checkpoint", tiny_captioner, "--attention-out", a_file)
    assert line == f"attend: error: --attention-out {a_file}: is a file, not a folder"
    under = a_file / "maps"
    line = cli_error(capsys, "caption", good_images[0], "--checkpoint", tiny_captioner, "--attention-out", under)
    assert line == f"attend: error: --attention-out {under}: cannot make this folder: {a_file} is a file, not a folder"


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "scenes", "--train", "1", "--val", "1", "--test", "1", "--workers", "1"],
        ["prepare", "easy-vqa"],
        ["prepare", "coco", "--captions", "train=c.json:images"],
        ["prepare", "vqa", "--split", "train=q.json:a.json:images"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
@pytest.mark.parametrize("where", ["/dev/null/x", "file", "under-file"])
def test_prepare_out_that_cannot_be_a_folder(capsys, a_file, argv, where):
    out = {"/dev/null/x": Path("/dev/null/x"), "file": a_file, "under-file": a_file / "a" / "b"}[where]
    line = cli_error(capsys, *argv, "--out", out)
    assert line.startswith(f"attend: error: --out {out}: ") and "is a file, not a folder" in line
    assert a_file.read_text() == "a file\n"


def test_features_data_folder_that_is_a_file(capsys, a_file):
    line = cli_error(capsys, "features", "--data", a_file, "--no-compile")
    assert line == f"attend: error: --data {a_file}: is a file, not a folder"


def test_an_unwritable_out_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """As root every folder is writable, so the refusal is simulated where the check looks."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    line = cli_error(capsys, "prepare", "easy-vqa", "--out", locked)
    assert line == f"attend: error: --out {locked}: folder is not writable"
    line = cli_error(capsys, "prepare", "easy-vqa", "--out", locked / "new")
    assert line == f"attend: error: --out {locked / 'new'}: cannot make this folder: {locked} is not writable"
    assert list(locked.iterdir()) == []


def test_oserror_naming_a_file_is_one_line(capsys, monkeypatch, tmp_path):
    """A write that fails deep in the library (a full disk, a read-only mount) is the machine's
    fault, not a bug: one line, exit 1."""
    from apps import cli_data

    def full_disk(args):
        raise OSError(28, "No space left on device", str(tmp_path / "x.json"))

    monkeypatch.setattr(cli_data, "cmd_prepare_easy_vqa", full_disk)
    line = cli_error(capsys, "prepare", "easy-vqa", "--out", tmp_path)
    assert line == f"attend: error: {tmp_path / 'x.json'}: No space left on device"


# ---------------------------------------------------------------- 2. numbers


@pytest.mark.parametrize("model", ["captioner", "vqa"])
@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--lr", "nan", "expected a finite number, got 'nan'"),
        ("--lr", "inf", "expected a finite number, got 'inf'"),
        ("--lr", "-inf", "expected a finite number, got '-inf'"),
        ("--lr", "-1", "must be at least 0, got -1"),
        ("--lr", "fast", "expected a number, got 'fast'"),
        ("--weight-decay", "nan", "expected a finite number"),
        ("--weight-decay", "-0.1", "must be at least 0, got -0.1"),
        ("--grad-clip", "nan", "expected a finite number"),
        ("--grad-clip", "-5", "must be at least 0, got -5"),
    ],
)
def test_training_numbers_must_be_finite_and_in_range(capsys, tmp_path, model, flag, value, message):
    line = _usage_error(capsys, "train", model, "--out", tmp_path / "run", f"{flag}={value}")
    assert f"argument {flag}: {message}" in line
    assert not (tmp_path / "run").exists()


def test_length_penalty_must_be_finite(capsys):
    line = _usage_error(capsys, "evaluate", "captioner", "--checkpoint", "c.pt", "--length-penalty", "nan")
    assert "argument --length-penalty: expected a finite number" in line


def test_valid_training_numbers_still_parse():
    args = build_parser().parse_args(
        ["train", "captioner", "--out", "r", "--lr", "0", "--weight-decay", "1e-4", "--grad-clip", "0"]
    )
    assert (args.lr, args.weight_decay, args.grad_clip) == (0.0, 1e-4, 0.0)
    assert build_parser().parse_args(["train", "vqa", "--out", "r"]).lr == 1e-3  # defaults untouched


# ---------------------------------------------------------------- 2. --device

# Enough of each command that takes --device to reach the device check; the test below keeps
# this table complete.
DEVICE_COMMANDS = {
    ("features",): ["features"],
    ("train", "captioner"): ["train", "captioner", "--out", "run"],
    ("train", "vqa"): ["train", "vqa", "--out", "run"],
    ("evaluate", "captioner"): ["evaluate", "captioner", "--checkpoint", "c.pt"],
    ("evaluate", "vqa"): ["evaluate", "vqa", "--checkpoint", "c.pt", "--data", "d"],
    ("bench", "encoder"): ["bench", "encoder"],
    ("bench", "decode"): ["bench", "decode"],
    ("bench", "train"): ["bench", "train"],
    ("bench", "charlm"): ["bench", "charlm"],
    ("charlm", "train"): ["charlm", "train", "--stdlib", "--out", "run"],
    ("charlm", "sample"): ["charlm", "sample"],
    ("charlm", "evaluate"): ["charlm", "evaluate"],
    ("charlm", "cells"): ["charlm", "cells", "--text", "t.py", "--out", "cells"],
    ("caption",): ["caption", "x.png"],
    ("ask",): ["ask", "x.png", "what colour is it?"],
}


def _commands(parser: argparse.ArgumentParser, prefix: tuple = ()) -> dict[tuple, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, (*prefix, name)) or {(*prefix, name): sub})
    return found


def test_the_device_table_lists_every_command_that_takes_device():
    takes = {
        path for path, p in _commands(build_parser()).items() if any("--device" in a.option_strings for a in p._actions)
    }
    assert takes == set(DEVICE_COMMANDS)


@pytest.mark.parametrize("path", list(DEVICE_COMMANDS), ids=" ".join)
def test_bogus_device_is_one_line_for_every_command(capsys, tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, *DEVICE_COMMANDS[path], "--device", "bogus")
    assert line == (
        "attend: error: --device 'bogus': not a device (use cpu, cuda or cuda:N; "
        f"available here: {', '.join(available_devices())})"
    )
    assert list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("path", list(DEVICE_COMMANDS), ids=" ".join)
def test_cuda_without_a_gpu_is_one_line_for_every_command(capsys, tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, *DEVICE_COMMANDS[path], "--device", "cuda")
    assert line == "attend: error: --device cuda: no CUDA GPU on this machine (available here: cpu)"


def test_check_device_says_what_there_is(monkeypatch):
    assert check_device(None) is None
    assert check_device("cpu") == "cpu"
    assert available_devices()[0] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert available_devices()[:3] == ["cpu", "cuda:0", "cuda:1"]
    assert check_device("cuda") == "cuda" and check_device("cuda:1") == "cuda:1"
    with pytest.raises(AttendError, match=r"^--device cuda:2: no such GPU \(available here: cpu, cuda:0, cuda:1"):
        check_device("cuda:2")
    with pytest.raises(AttendError, match="^--device meta: not available on this machine"):
        check_device("meta")
    with pytest.raises(AttendError, match="^--device '': not a device"):
        check_device("")


# ---------------------------------------------------------------- 2. a closed pipe


def _closed_pipe(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the installed `attend` with its stdout a pipe that is already closed when it first
    writes (the reader left at once, as `| head -1` does after its line): deterministic, unlike a
    real `head`, which may still be reading when a short output is written."""
    proc = subprocess.Popen([str(ATTEND), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, text=True)
    proc.stdout.close()
    try:
        err = proc.stderr.read()
        proc.wait(timeout=300)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def _assert_quiet_pipe_end(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == BROKEN_PIPE_STATUS, result
    assert result.stderr == "", result.stderr  # no traceback, no "Exception ignored ..."


def test_closed_pipe_caption_json(tiny_captioner, good_images, tmp_path):
    argv = ["caption", *map(str, good_images), "--checkpoint", str(tiny_captioner), "--json", "--beam", "1"]
    _assert_quiet_pipe_end(_closed_pipe(argv, tmp_path))


def test_closed_pipe_bench(tmp_path):
    _assert_quiet_pipe_end(_closed_pipe(["bench", "encoder", "--sizes", "32", "--no-compile"], tmp_path))


def test_closed_pipe_ask_questions_and_a_real_head(good_images, tmp_path):
    from vqa.checkpoint import SHIPPED

    if not SHIPPED["scenes"].is_file():
        pytest.skip("shipped VQA model missing")
    questions = tmp_path / "q.jsonl"
    lines = [json.dumps({"image": str(p), "question": "what colour is the circle?"}) for p in good_images] * 50
    questions.write_text("\n".join(lines) + "\n")
    _assert_quiet_pipe_end(_closed_pipe(["ask", "--questions", str(questions), "--top-k", "1"], tmp_path))
    # and through a real `head -1` (150 answers of ~1 KB each: more than a pipe holds)
    script = f'"{ATTEND}" ask --questions "{questions}" --top-k 1 | head -1; echo "status ${{PIPESTATUS[0]}}" >&2'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert json.loads(result.stdout)["line"] == 1
    assert result.stderr.splitlines()[-1] in ("status 0", f"status {BROKEN_PIPE_STATUS}")
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


# ---------------------------------------------------------------- 3. what an image path may be


def _refused_quickly(source, timeout: float = 10.0) -> ImageError:
    """load_image(source) must raise ImageError within ``timeout`` s (a FIFO must never be opened:
    that waits for a writer). A hang fails the test instead of hanging the suite."""
    outcome: list = []

    def attempt():
        try:
            load_image(source)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - reported below
            outcome.append(e)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        if isinstance(source, (str, Path)) and Path(source).is_fifo():
            fd = os.open(source, os.O_WRONLY | os.O_NONBLOCK)  # a writer: the blocked open returns
            os.close(fd)
            worker.join(5)
        pytest.fail(f"load_image({source!r}) blocked for {timeout} s")
    assert outcome and isinstance(outcome[0], ImageError), outcome
    return outcome[0]


@pytest.fixture
def fifo(tmp_path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_fifo_is_refused_without_blocking(fifo, tmp_path):
    assert str(_refused_quickly(fifo)) == f"{fifo}: is a pipe (FIFO), not a regular file"
    link = tmp_path / "link.png"
    link.symlink_to(fifo)
    assert str(_refused_quickly(link)) == f"{link}: is a pipe (FIFO), not a regular file"


def test_fifo_in_attend_caption_is_one_line(tiny_captioner, fifo, capsys):
    outcome: list = []
    worker = threading.Thread(
        target=lambda: outcome.append(run_cli(capsys, "caption", fifo, "--checkpoint", tiny_captioner)), daemon=True
    )
    worker.start()
    worker.join(60)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("attend caption blocked on a FIFO")
    code, out, err = outcome[0]
    assert (code, out, err) == (1, "", f"attend: error: {fifo}: is a pipe (FIFO), not a regular file\n")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_without_reading():
    assert str(_refused_quickly("/dev/zero")) == "/dev/zero: is a character device, not a regular file"


def test_socket_and_directory_are_refused(tmp_path):
    assert str(_refused_quickly(tmp_path)) == f"{tmp_path}: is a directory, not an image file"
    if not hasattr(socket, "AF_UNIX"):
        return
    path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        assert str(_refused_quickly(path)) == f"{path}: is a socket, not a regular file"
    finally:
        server.close()


@pytest.mark.parametrize("size", [MAX_FILE_BYTES + 1, 4 * 2**30])
def test_file_over_the_cap_is_refused_before_reading(tmp_path, size):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no disk used
    start = time.perf_counter()
    error = _refused_quickly(path)
    assert time.perf_counter() - start < 2.0  # nothing was read
    shown = f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"
    assert str(error) == f"{path}: file too large ({shown}; limit is 256 MiB per image)"


def test_the_cap_is_documented_and_far_above_a_real_photo():
    assert MAX_FILE_BYTES >= 64 * 2**20
    assert MAX_FILE_BYTES >= images.MAX_PIXELS * 3  # an uncompressed RGB picture at the pixel limit fits


@pytest.fixture
def small_png(tmp_path) -> tuple[Path, bytes]:
    path = tmp_path / "small.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path, path.read_bytes()


def test_the_cap_is_inclusive_for_paths_bytes_and_streams(small_png, monkeypatch):
    path, data = small_png
    monkeypatch.setattr(images, "MAX_FILE_BYTES", len(data))
    for source in (path, data, bytearray(data), memoryview(data)):
        assert load_image(source).size == (8, 8)
    with open(path, "rb") as f:
        assert load_image(f).size == (8, 8)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", len(data) - 1)
    limit = f"limit is {len(data) - 1} bytes per image"
    with pytest.raises(ImageError, match=rf"^{re.escape(str(path))}: file too large \({len(data)} bytes; {limit}\)$"):
        load_image(path)
    with pytest.raises(ImageError, match=r"^<bytes>: file too large"):
        load_image(data)
    with pytest.raises(ImageError, match=r"^<bytes>: file too large"):
        load_image(memoryview(data))
    with open(path, "rb") as f, pytest.raises(ImageError, match=r"file too large \(more than the limit of") as info:
        load_image(f)
    assert info.value.name == str(path)


class Endless:
    """A binary stream that never ends (a socket, /dev/urandom through a wrapper): records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise MemoryError("read() of an endless stream")
        self.asked.append(n)
        return b"\0" * n


def test_an_endless_stream_is_read_only_up_to_the_cap(monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    stream = Endless()
    with pytest.raises(ImageError, match=r"^<file>: file too large \(more than the limit of 1000 bytes per image\)$"):
        load_image(stream)
    assert stream.asked == [1001]


def test_uploads_keep_working_and_are_capped(small_png, monkeypatch):
    import io

    _, data = small_png
    upload = io.BytesIO(data)
    upload.read()  # Streamlit's UploadedFile after a rerun: read() would give nothing
    assert load_image(upload).size == (8, 8)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", len(data) - 1)
    with pytest.raises(ImageError, match=rf"file too large \({len(data)} bytes;"):
        load_image(io.BytesIO(data))


# ---------------------------------------------------------------- 4. attend app


@pytest.fixture
def served(monkeypatch) -> list[list[str]]:
    """The command `attend app` would run, instead of running it."""
    commands: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execvp", lambda file, args: commands.append(list(args)))
    return commands


def _address(command: list[str]) -> str:
    return command[command.index("--server.address") + 1]


def test_app_listens_on_the_loopback_by_default(served):
    assert main(["app"]) == 0
    assert _address(served[-1]) == "127.0.0.1"


def test_app_host_and_the_old_address_flag(served):
    assert main(["app", "--host", "0.0.0.0", "--port", "8600"]) == 0
    assert _address(served[-1]) == "0.0.0.0" and "8600" in served[-1]
    assert main(["app", "--address", "192.168.1.5"]) == 0
    assert _address(served[-1]) == "192.168.1.5"


def test_app_help_says_the_camera_needs_https_or_localhost(capsys):
    with pytest.raises(SystemExit):
        main(["app", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--host ADDRESS, --address ADDRESS" in out
    assert "default: 127.0.0.1" in out and "https" in out and "localhost" in out
