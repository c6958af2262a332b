"""Sampling text from the character model, one character at a time (Karpathy 2015).

The prime text is read first (its state carried, as in training); then each step turns the
model's logits for the next character into a choice: the most likely one (greedy, temperature
0) or a draw from softmax(logits / temperature), optionally among the ``top_k`` most likely
only. Low temperatures give safe, repetitive text; high ones, inventive and broken text. A
seed makes the draws repeatable. Characters of the prime that the vocabulary lacks read as the
unknown character (id 0), as in training.
"""

from __future__ import annotations

import torch

from core.errors import AttendError

from .data import UNKNOWN, CharVocab
from .model import CharLM

START = "\n"  # with no prime, the model starts as after a line break (a file's first line)


def check_sampling(length: int, temperature: float, top_k: int | None) -> None:
    if length < 0:
        raise AttendError(f"--length {length}: must be 0 or more")
    if not temperature >= 0 or temperature == float("inf"):
        raise AttendError(f"--temperature {temperature}: must be a finite number of at least 0 (0: greedy)")
    if top_k is not None and top_k < 1:
        raise AttendError(f"--top-k {top_k}: must be at least 1")


def choose(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """logits (B, V) -> the next ids (B,): argmax at temperature 0, else a draw."""
    if temperature == 0:
        return logits.argmax(-1)  # (B,)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        cutoff = logits.topk(top_k, -1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < cutoff, float("-inf"))
    probs = torch.softmax(logits, -1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


@torch.no_grad()
def sample(
    model: CharLM,
    vocab: CharVocab,
    prime: str = "",
    length: int = 500,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    greedy: bool = False,
) -> str:
    """``length`` characters that follow ``prime`` (the prime itself is not repeated).

    Args:
        temperature: > 0 divides the logits before the softmax; 0 (or ``greedy``) takes the argmax.
        top_k: draw among the k most likely characters only (None: all).
        seed: the draws' seed: the same seed, model and options give the same text.
    """
    check_sampling(length, temperature, top_k)
    if greedy:
        temperature = 0.0
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    ids = vocab.encode(prime or START).to(device)  # (P,)
    state = model.init_state(1, device)
    for x in ids[:-1]:  # the prime but its last character: only the state is needed
        _, state = model.step(x.view(1), state)
    x = ids[-1:]  # (1,)
    out = []
    for _ in range(length):
        logits, state = model.next_logits(x, state)  # (1, V)
        logits[:, 0] = float("-inf")  # never write the unknown character
        x = choose(logits, temperature, top_k, generator)  # (1,)
        out.append(int(x))
    return vocab.decode(out)


def unknown_in(vocab: CharVocab, text: str) -> list[str]:
    """The distinct characters of ``text`` the vocabulary lacks (they read as ``UNKNOWN``)."""
    return sorted({ch for ch in text if ch not in vocab.index or ch == UNKNOWN})
