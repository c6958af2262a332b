"""One process or many under torchrun: the environment torchrun sets decides.

gloo on the CPU, nccl on CUDA; rank 0 is the one that writes files and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import AttendError


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def available_devices() -> list[str]:
    """The devices this machine can run on, as ``--device`` spells them: cpu, then cuda:0 ... cuda:N-1
    (``cuda`` means the current one), then mps on Apple silicon."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def check_device(device: str | torch.device | None) -> str | None:
    """``device`` as given if this machine has it (None stays None: the command's default);
    otherwise an ``AttendError`` saying what is available. Every command's ``--device`` goes
    through here once, before any work, so ``--device bogus`` or ``--device cuda`` on a machine
    without a GPU is one line, not a traceback from deep inside torch."""
    if device is None:
        return None
    text = str(device).strip()
    have = available_devices()
    listing = ", ".join(have)
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise AttendError(
            f"--device {text!r}: not a device (use cpu, cuda or cuda:N; available here: {listing})"
        ) from None
    if parsed.type == "cpu":
        return text
    if parsed.type == "cuda":
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            raise AttendError(f"--device {text}: no CUDA GPU on this machine (available here: {listing})")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise AttendError(f"--device {text}: no such GPU (available here: {listing})")
        return text
    if parsed.type == "mps" and "mps" in have:
        return text
    raise AttendError(f"--device {text}: not available on this machine (available here: {listing})")


def init(device: str | None = None) -> Context:
    """Join the torchrun process group if there is one, and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world_size, local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
