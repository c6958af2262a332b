"""The recurrent cells the lecture compares, shared by every task that recurs.

The captioner's decoder and the character-level language model both step one of these
cells by hand (one ``step`` each, so attention or tracing can sit between the steps):

    rnn:   h_t = tanh(W x_t + U h_{t-1} + b)                  (Elman)
    gru:   h_t = (1 - z) * n + z * h_{t-1}                    (Cho et al. 2014)
    lstm:  h_t, c_t = o * tanh(c_t), f * c_{t-1} + i * g      (Hochreiter & Schmidhuber 1997)

Only the LSTM has a memory cell ``c``; for the others it is ``None``.
"""

from __future__ import annotations

import torch
from torch import nn

CELLS = ("lstm", "gru", "rnn")


def make_cell(kind: str, input_dim: int, hidden_dim: int) -> nn.Module:
    """An ``nn.LSTMCell``, ``nn.GRUCell`` or ``nn.RNNCell`` (tanh) of the given sizes."""
    if kind not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {kind!r}")
    return {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[kind](input_dim, hidden_dim)


def run_cell(
    cell: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of ``cell`` on x (N, I) from h (N, H) and, for the LSTM, c (N, H): the new h and c (or None)."""
    if isinstance(cell, nn.LSTMCell):
        return cell(x, (h, c))
    return cell(x, h), None
