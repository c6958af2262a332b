"""`attend bench charlm`: training and sampling characters per second, as JSON, with random
weights and random text (speed does not depend on what the weights hold)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from core.bench import peak_rss_mb, timed
from core.training import make_optimizer

from .fast import TrainingCharLM
from .model import CharLM, CharLMConfig, detach_state


def bench_charlm(
    cell: str = "lstm",
    layers: int = 2,
    hidden: int = 256,
    embed_dim: int = 64,
    vocab_size: int = 100,
    batch: int = 64,
    bptt: int = 100,
    steps: int = 5,
    sample_chars: int = 500,
    device: str = "cpu",
    fast: bool = True,
) -> dict:
    """Training characters per second (one truncated-BPTT step of ``batch`` streams x ``bptt``
    characters: forward, loss, backward, clipping, Adam; the fused kernels or, ``fast=False``,
    the plain model) and sampling characters per second (one stream, one character per step)."""
    torch.manual_seed(0)
    config = CharLMConfig(vocab_size=vocab_size, cell=cell, layers=layers, hidden=hidden, embed_dim=embed_dim)
    model = (TrainingCharLM if fast else CharLM)(config).to(device).train()
    optimizer = make_optimizer(model.parameters(), lr=1e-4)  # as `attend charlm train` makes it
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (batch, bptt + 1), generator=generator).to(device)  # (B, T + 1)
    state = [None]

    def train_step():
        logits, new_state, _ = model(ids[:, :-1], state[0])  # (B, T, V)
        state[0] = detach_state(new_state)
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    train_seconds = timed(train_step, repeats=steps, warmup=1)

    model.eval()
    x = torch.ones(1, dtype=torch.long, device=device)

    @torch.no_grad()
    def sample_run():
        h, y = model.init_state(1, device), x
        for _ in range(sample_chars):
            logits, h = model.next_logits(y, h)  # (1, V)
            y = torch.multinomial(torch.softmax(logits, -1), 1, generator=None).squeeze(1)  # (1,)

    start = time.perf_counter()
    sample_run()
    sample_seconds = time.perf_counter() - start
    return {
        "bench": "charlm",
        "config": {"cell": cell, "layers": layers, "hidden": hidden, "embed_dim": embed_dim, "vocab_size": vocab_size},
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": device,
        "threads": torch.get_num_threads(),
        "path": "fast" if fast else "plain",
        "batch": batch,
        "bptt": bptt,
        "train_chars_per_s": round(batch * bptt / train_seconds, 1),
        "ms_per_train_step": round(1000 * train_seconds, 1),
        "sample_chars_per_s": round(sample_chars / sample_seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
