"""The speed path of the character model: the same cells, run by PyTorch's fused recurrent kernels.

``CharLM.forward`` (charlm/model.py) steps the cells from Python, one character and one layer at
a time: it is the reference, and the only path that can trace every unit. Training reads whole
chunks and needs no trace, so it can hand the cells' own parameters to the fused kernels that
``nn.LSTM``/``nn.GRU``/``nn.RNN`` call (``torch.lstm``, ``torch.gru``, ``torch.rnn_tanh``): they loop
over time in C++ and take about half the time per chunk on this CPU (2x256 LSTM, 64 streams of
100 characters, one thread: 2.6-3.9k characters/s stepped, 5.7-6.7k fused).

This works because ``nn.LSTMCell`` and ``nn.LSTM`` (likewise the GRU and the RNN) store the same
four tensors per layer in the same gate order (LSTM: i, f, g, o; GRU: r, z, n). The fused
kernels apply their own dropout between layers (a different random stream from the reference),
so parity is exact only without dropout; ``tests/test_charlm.py`` checks it for every cell.
"""

from __future__ import annotations

import torch

from .model import CharLM, LayerState, State

KERNELS = {"lstm": torch.lstm, "gru": torch.gru, "rnn": torch.rnn_tanh}


def fused_forward(model: CharLM, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
    """Equal to ``model(x, state)[:2]``: logits (B, T, V) and the final state, through the fused kernels."""
    config = model.config
    if state is None:
        state = model.init_state(x.shape[0], x.device)
    weights = [w for cell in model.cells for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    inputs = model.embedding(x)  # (B, T, E)
    h0 = torch.stack([s.h for s in state])  # (L, B, H)
    dropout = config.dropout if model.training else 0.0
    # (weights, has_biases, num_layers, dropout, train, bidirectional, batch_first), as nn.LSTM passes them
    args = (weights, True, config.layers, dropout, model.training, False, True)
    if config.cell == "lstm":
        c0 = torch.stack([s.c for s in state])  # (L, B, H)
        h, h_n, c_n = KERNELS["lstm"](inputs, (h0, c0), *args)  # (B, T, H), (L, B, H), (L, B, H)
        final = [LayerState(h_n[i], c_n[i]) for i in range(config.layers)]
    else:
        h, h_n = KERNELS[config.cell](inputs, h0, *args)  # (B, T, H), (L, B, H)
        final = [LayerState(h_n[i], None) for i in range(config.layers)]
    logits = model.out(model.dropout(h))  # (B, T, V)
    return logits, final


class TrainingCharLM(CharLM):
    """A ``CharLM`` whose forward runs the fused kernels (the trace still comes from the reference).

    Training builds this class explicitly (``--plain`` builds ``CharLM``); its state_dict is
    the reference's, so checkpoints load into either class. Being the module's own forward, it
    runs under DistributedDataParallel like any model.
    """

    def forward(
        self, x: torch.Tensor, state: State | None = None, trace: bool = False
    ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        if trace:
            return super().forward(x, state, trace=True)
        logits, state = fused_forward(self, x, state)  # (B, T, V)
        return logits, state, None
