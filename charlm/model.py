"""A character-level language model (Karpathy, "The Unreasonable Effectiveness of Recurrent
Neural Networks", 2015; Karpathy, Johnson & Fei-Fei, "Visualizing and Understanding
Recurrent Networks", 2016): a stack of recurrent cells reads one character per step and
predicts the next.

Legend: B streams (batch), T characters per chunk, E embedding, H hidden units per layer,
L layers, V characters in the vocabulary, U traced units (L * H, twice that for the LSTM).

    x (B, T) --embedding--> (B, T, E)
    step t, layer l:  h^l_t, c^l_t = cell_l(h^{l-1}_t, h^l_{t-1}, c^l_{t-1})    (h^0_t = E x_t)
    next character:   p(x_{t+1}) = softmax(W_o dropout(h^L_t) + b_o)

Truncated backpropagation through time (Williams & Peng 1990) is the training code's job: it
feeds chunks of T characters, carries ``state`` from one chunk to the next and detaches it, so
gradients flow back at most T steps while the state remembers further.

``trace=True`` also returns every unit's value at every step, the raw material of the search
for interpretable cells (Karpathy et al. 2016, section 4.1): each layer's h and, for the LSTM,
its memory cell c (their figures colour text by tanh(c)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from core.recurrent import CELLS, make_cell, run_cell


@dataclass
class CharLMConfig:
    vocab_size: int
    cell: str = "lstm"  # lstm | gru | rnn (the lecture compares all three)
    layers: int = 2
    hidden: int = 256
    embed_dim: int = 64
    dropout: float = 0.0  # between layers and before the output layer


class LayerState(NamedTuple):
    h: torch.Tensor  # (B, H)
    c: torch.Tensor | None  # (B, H) the LSTM's memory cell; None for the GRU and the RNN


State = list[LayerState]  # one per layer, bottom first


class CharLM(nn.Module):
    def __init__(self, config: CharLMConfig):
        super().__init__()
        self.config = c = config
        if c.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {c.cell!r}")
        if c.layers < 1 or c.hidden < 1 or c.vocab_size < 1 or c.embed_dim < 1:
            raise ValueError("vocab_size, layers, hidden and embed_dim must be positive")
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim)
        sizes = [c.embed_dim] + [c.hidden] * (c.layers - 1)
        self.cells = nn.ModuleList(make_cell(c.cell, size, c.hidden) for size in sizes)
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden, c.vocab_size)  # W_o, b_o

    @property
    def units(self) -> int:
        """U: how many values ``trace`` gives per step."""
        return self.config.layers * self.config.hidden * (2 if self.config.cell == "lstm" else 1)

    def unit_names(self) -> list[str]:
        """The name of each traced unit, in trace order: ``layer1.h0`` ... and, for the LSTM, ``layer1.c0`` ..."""
        kinds = ("h", "c") if self.config.cell == "lstm" else ("h",)
        return [
            f"layer{layer + 1}.{kind}{unit}"
            for layer in range(self.config.layers)
            for kind in kinds
            for unit in range(self.config.hidden)
        ]

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Zeros for every layer: the state at the start of a text."""
        zeros = torch.zeros(batch, self.config.hidden, device=device)  # (B, H)
        return [LayerState(zeros, zeros if self.config.cell == "lstm" else None) for _ in self.cells]

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One character per stream: x (B,) -> the top layer's h (B, H) and the new state."""
        inputs = self.embedding(x)  # (B, E)
        new_state = []
        for layer, (cell, previous) in enumerate(zip(self.cells, state)):
            if layer > 0:
                inputs = self.dropout(inputs)
            h, c = run_cell(cell, inputs, previous.h, previous.c)  # (B, H), (B, H) or None
            new_state.append(LayerState(h, c))
            inputs = h
        return inputs, new_state

    def forward(
        self, x: torch.Tensor, state: State | None = None, trace: bool = False
    ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """Read x (B, T): logits for each next character (B, T, V), the final state, and with
        ``trace`` every unit's value at every step (B, T, U) in ``unit_names()`` order."""
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        tops, traced = [], []
        for t in range(x.shape[1]):
            top, state = self.step(x[:, t], state)  # (B, H)
            tops.append(top)
            if trace:
                traced.append(torch.cat([part for layer in state for part in layer if part is not None], 1))  # (B, U)
        h = torch.stack(tops, 1)  # (B, T, H)
        logits = self.out(self.dropout(h))  # (B, T, V): the output layer once for the whole chunk
        return logits, state, torch.stack(traced, 1) if trace else None  # (B, T, U)

    def next_logits(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Sampling's step: x (B,) -> logits for the next character (B, V) and the new state."""
        top, state = self.step(x, state)  # (B, H)
        return self.out(top), state  # (B, V)


def detach_state(state: State) -> State:
    """The same state cut from the graph: truncated backpropagation stops here."""
    return [LayerState(s.h.detach(), None if s.c is None else s.c.detach()) for s in state]
