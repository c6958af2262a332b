"""Show, Attend and Tell (Xu et al. 2015): an LSTM decoder with soft attention over a feature grid.

Legend: B images, N decoded rows (B x K: K captions or beams per image, image-major),
P regions (h * w), D encoder channels, T caption steps, E embedding, A attention,
H hidden, V vocabulary.

    grid a (B, P, D) --+ position of each cell--> memory: a, mean(a), W_a a + b_a (once per image)
    init:  h_0 = tanh(W_h0 mean(a)),  c_0 = tanh(W_c0 mean(a))                        eq. 5 (Xu)
    step t, previous word y_{t-1}:
      attention: e_ti = v . tanh(W_a a_i + W_h h_{t-1});  alpha_t = softmax(e_t)       eq. 4
      context:   z_t = beta_t sum_i alpha_ti a_i,  beta_t = sigmoid(f_beta(h_{t-1}))   4.2.1
      LSTM:      h_t, c_t = LSTM([E y_{t-1}; z_t], h_{t-1}, c_{t-1})                   eq. 1-3
      word:      p(y_t) = softmax(L_o(h_t + L_z z_t))  (deep output)                   eq. 7

With ``attention_query="current"`` (Lu et al. 2017) the LSTM reads the previous context
first and the attention is queried by the updated h_t, so each word reads a fresh look.

Coverage (``coverage=True``; Tu et al. 2016, See et al. 2017): each cell's score also reads
the attention it has had so far, cov_ti = sum_{k<t} alpha_ki, through a learned vector w_c:
e_ti = v . tanh(W_a a_i + W_h h + w_c cov_ti). The decoder can then tell an object it has
described from a like one it has not, the error of naming one object twice. w_c starts at
zero, so a trained model fine-tuned with coverage starts from its own captions.

Stochastic hard attention (``attention_mode="hard"``, Xu et al. section 4.1): in training,
each step draws one location s_t ~ Multinoulli(alpha_t) and reads that cell alone,
context = a_{s_t}; for a random half of the captions (drawn per caption and forward pass)
the context is the expected one, sum_i alpha_ti a_i, as the paper does to reduce variance.
The locations are learned by REINFORCE (``hard_attention_loss``). Decoding reads the
expected context: deterministic, the same computation as soft attention (so the fast
decoder runs it unchanged), and what the model was trained on half the time.

This file is the reference: it reads like the paper and holds no speed machinery. Decoding
and training run through ``captioner.fast``, which computes the same numbers faster and is
tested equal to this model step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from core.position import coordinate_features
from core.recurrent import CELLS, make_cell, run_cell

__all__ = [
    "CELLS",
    "AttentionDecoder",
    "CaptionerConfig",
    "HardDraws",
    "Memory",
    "SoftAttention",
    "State",
    "caption_loss",
    "hard_attention_loss",
    "word_log_probs",
]


@dataclass
class CaptionerConfig:
    vocab_size: int
    encoder_dim: int = 1280
    embed_dim: int = 128
    attention_dim: int = 256
    hidden_dim: int = 384
    cell: str = "lstm"  # lstm | gru | rnn (the lecture compares all three)
    attention: bool = True  # False: the "CNN + RNN" baseline, mean feature -> initial state only
    position_encoding: bool = True  # add a learned map of each cell's (x, y) to the features
    deep_output: bool = True  # Xu eq. 7: words read L_h h + L_z context, not h alone
    attention_query: str = "previous"  # "previous": alpha_t from h_{t-1} (Xu et al.); "current": from h_t
    attention_mode: str = "soft"  # "hard": sample one location per word in training (Xu 4.1)
    hard_entropy: float = 0.01  # lambda_e, the entropy bonus of hard attention (Xu eq. 12)
    hard_reinforce: float = 1.0  # lambda_r, the weight of its REINFORCE term
    gate: str = "scalar"  # beta = sigmoid(f_beta(h)): one scalar per step (Xu 4.2.1), or "vector": per channel
    dropout: float = 0.3
    alpha_c: float = 1.0  # weight of the doubly stochastic regularisation
    coverage: bool = False  # the attention scores read each cell's attention so far (Tu et al. 2016)
    max_len: int = 30  # decoding limit, in tokens (<end> included)
    grid: list[int] = field(default_factory=lambda: [7, 7])  # (h, w) the model was trained on


class Memory(NamedTuple):
    """What the decoder computes once per image and reads at every step."""

    features: torch.Tensor  # (B, P, D) the grid a, each cell's position added
    mean: torch.Tensor  # (B, D) its mean over the cells: the initial state reads it
    projected: torch.Tensor | None  # (B, P, A) W_a a_i + b_a, the image side of the attention


class State(NamedTuple):
    """The recurrent state of N decoded rows."""

    h: torch.Tensor  # (N, H)
    c: torch.Tensor | None  # (N, H) the LSTM's memory cell; None for the GRU and the RNN
    context: torch.Tensor | None  # (N, D) the last gated context z_t, read by the next step's
    #                               LSTM when attention_query == "current"; else None
    coverage: torch.Tensor | None = None  # (N, P) sum of the alphas so far, with coverage; else None

    def select(self, rows: torch.Tensor) -> State:
        """The state of the given rows (beam search keeps the best N of N * V)."""
        return State(*(None if s is None else s.index_select(0, rows) for s in self))


class SoftAttention(nn.Module):
    """e_ti = v . tanh(W_a a_i + W_h h + b [+ w_c cov_i]); alpha = softmax(e); context = sum_i alpha_i a_i."""

    def __init__(self, encoder_dim: int, hidden_dim: int, attention_dim: int, coverage: bool = False):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, attention_dim)  # W_a
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim)  # W_h
        self.score = nn.Linear(attention_dim, 1)  # v
        if coverage:
            self.coverage_proj = nn.Linear(1, attention_dim, bias=False)  # w_c
            nn.init.zeros_(self.coverage_proj.weight)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The image side W_a a_i + b_a, computed once per image: (B, P, D) -> (B, P, A)."""
        return self.encoder_proj(features)

    def forward(self, features: torch.Tensor, projected: torch.Tensor, h: torch.Tensor, choose=None, coverage=None):
        """features (B, P, D), projected (B, P, A), h (N, H) with K = N / B rows per image.
        Returns the context (N, D) and alpha (N, P). ``choose``: alpha -> the weights the
        context is made with (hard attention's one-hot draws); None: alpha itself.
        ``coverage``: (N, P) the attention each cell has had so far (a coverage model only)."""
        b, p, a = projected.shape
        query = self.hidden_proj(h).view(b, -1, 1, a)  # (B, K, 1, A)
        u = projected.unsqueeze(1) + query  # (B, K, P, A)
        if coverage is not None:
            u = u + self.coverage_proj(coverage.view(b, -1, p, 1))  # (B, K, P, A)
        e = self.score(torch.tanh(u))  # (B, K, P, 1)
        alpha = torch.softmax(e.view(-1, p), dim=-1)  # (N, P)
        weights = alpha if choose is None else choose(alpha)  # (N, P)
        context = torch.bmm(weights.view(b, -1, p), features)  # (B, K, D)
        return context.view(-1, features.shape[-1]), alpha  # (N, D), (N, P)


class HardDraws:
    """The locations hard attention draws in one teacher-forced pass: for each step, the one-hot
    weights its context reads (N, P), the location (N,), and which rows read the expectation."""

    def __init__(self, rows: int, device: torch.device):
        self.expected = torch.rand(rows, device=device) < 0.5  # (N,) the paper's "half the time"
        self.locations: list[torch.Tensor] = []  # (N,) per step

    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha (N, P) -> the context's weights (N, P): a drawn one-hot, or alpha on expected rows."""
        location = torch.multinomial(alpha.detach(), 1).squeeze(1)  # (N,)
        self.locations.append(location)
        onehot = F.one_hot(location, alpha.shape[1]).to(alpha.dtype)  # (N, P)
        return torch.where(self.expected.unsqueeze(1), alpha, onehot)

    def stacked(self) -> torch.Tensor:
        return torch.stack(self.locations, 1)  # (N, T)


class AttentionDecoder(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config = c = config
        if c.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {c.cell!r}")
        if c.attention_query not in ("previous", "current"):
            raise ValueError(f"attention_query must be 'previous' or 'current', got {c.attention_query!r}")
        if c.gate not in ("scalar", "vector"):
            raise ValueError(f"gate must be 'scalar' or 'vector', got {c.gate!r}")
        if c.attention_mode not in ("soft", "hard"):
            raise ValueError(f"attention_mode must be 'soft' or 'hard', got {c.attention_mode!r}")
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=0)
        if c.position_encoding:
            self.position = nn.Linear(16, c.encoder_dim)  # of coordinate_features: 16 per cell
        if c.attention:
            self.attention = SoftAttention(c.encoder_dim, c.hidden_dim, c.attention_dim, c.coverage)
            self.gate = nn.Linear(c.hidden_dim, 1 if c.gate == "scalar" else c.encoder_dim)  # f_beta
            if c.deep_output:
                self.context_out = nn.Linear(c.encoder_dim, c.hidden_dim)  # L_z
        input_dim = c.embed_dim + (c.encoder_dim if c.attention else 0)
        self.cell = make_cell(c.cell, input_dim, c.hidden_dim)
        self.init_h = nn.Linear(c.encoder_dim, c.hidden_dim)
        if c.cell == "lstm":
            self.init_c = nn.Linear(c.encoder_dim, c.hidden_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(c.hidden_dim, c.vocab_size)  # L_o
        if c.attention and c.attention_mode == "hard":
            # b, the moving average of log p(y | s) (Xu eq. 12): a buffer, so checkpoints keep it
            self.register_buffer("hard_baseline", torch.zeros(()))
        self.draws: HardDraws | None = None  # set by a training forward of a hard-attention model

    @property
    def query_current(self) -> bool:
        return self.config.attention and self.config.attention_query == "current"

    @property
    def covers(self) -> bool:
        """Coverage in the attention scores (without attention the option has nothing to act on)."""
        return self.config.attention and self.config.coverage

    @property
    def samples_locations(self) -> bool:
        """Hard attention in training: teacher forcing draws locations (decoding never does)."""
        return self.config.attention and self.config.attention_mode == "hard" and self.training

    def position_table(self, device: torch.device) -> torch.Tensor:
        """The learned position of every cell, (P, D), added to each image's grid."""
        h, w = self.config.grid
        return self.position(coordinate_features(h, w, device=device))  # (P, D)

    def check_grid(self, features: torch.Tensor) -> None:
        h, w = self.config.grid
        if self.config.position_encoding and features.shape[1] != h * w:
            raise ValueError(f"grid has {features.shape[1]} cells, the model was built for {h}x{w}")

    # ------------------------------------------------------------------ once per image
    def prepare(self, features: torch.Tensor) -> Memory:
        """The grid (B, P, D) -> the decoder's memory of it."""
        self.check_grid(features)
        features = features.float()  # (B, P, D)
        if self.config.position_encoding:
            features = features + self.position_table(features.device)  # (B, P, D)
        projected = self.attention.project(features) if self.config.attention else None  # (B, P, A)
        return Memory(features, features.mean(1), projected)

    def init_state(self, memory: Memory) -> State:
        """h_0 and c_0 from the mean of the grid (B rows)."""
        h = torch.tanh(self.init_h(memory.mean))  # (B, H)
        c = torch.tanh(self.init_c(memory.mean)) if self.config.cell == "lstm" else None  # (B, H)
        context = torch.zeros_like(memory.mean) if self.query_current else None  # (B, D): none yet
        coverage = memory.features.new_zeros(memory.features.shape[:2]) if self.covers else None  # (B, P)
        return State(h, c, context, coverage)

    # ------------------------------------------------------------------ per step
    def look(self, h: torch.Tensor, memory: Memory, coverage=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft attention queried by h (N, H), gated: z = beta * context (N, D), and alpha (N, P).
        ``coverage`` (N, P): the attention each cell has had so far, in a coverage model."""
        choose = self.draws if self.samples_locations else None  # decoding never draws
        context, alpha = self.attention(memory.features, memory.projected, h, choose, coverage)  # (N, D), (N, P)
        beta = torch.sigmoid(self.gate(h))  # (N, 1) or (N, D)
        return beta * context, alpha

    def recur(self, x: torch.Tensor, z: torch.Tensor | None, state: State) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The recurrent cell on [embedded word; gated context]: (N, H) and the LSTM's c or None."""
        inputs = x if z is None else torch.cat([x, z], 1)  # (N, E [+ D])
        return run_cell(self.cell, inputs, state.h, state.c)

    def output(self, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Word logits (N, V) from h (N, H) and, with deep output, the gated context z (N, D)."""
        if z is not None and self.config.deep_output:
            h = h + self.context_out(z)  # (N, H)
        return self.fc(self.dropout(h))  # (N, V)

    def step(self, tokens: torch.Tensor, state: State, memory: Memory):
        """Previous words (N,) -> logits (N, V), the new state, alpha (N, P) (None without attention)."""
        x = self.embedding(tokens)  # (N, E)
        z = alpha = None
        if not self.config.attention:
            h, c = self.recur(x, None, state)
        elif self.query_current:
            h, c = self.recur(x, state.context, state)  # reads the previous look
            z, alpha = self.look(h, memory, state.coverage)
        else:
            z, alpha = self.look(state.h, memory, state.coverage)
            h, c = self.recur(x, z, state)
        coverage = None if state.coverage is None else state.coverage + alpha  # (N, P)
        return self.output(h, z), State(h, c, z if self.query_current else None, coverage), alpha

    # ------------------------------------------------------------------ teacher forcing
    def forward(self, features: torch.Tensor, captions: torch.Tensor):
        """Teacher forcing. features (B, P, D); captions (N, T) = <start> w1 .. wn <end> <pad>...,
        K = N / B captions per image, image-major (K = 1: one caption per grid).

        Returns logits (N, T-1, V) predicting captions[:, 1:], and alphas (N, T-1, P) or None.
        """
        b, n = features.shape[0], captions.shape[0]
        if n % b:
            raise ValueError(f"{n} captions for {b} images: expected the same number per image")
        memory = self.prepare(features)
        state = self.init_state(memory).select(torch.arange(b, device=features.device).repeat_interleave(n // b))
        self.draws = HardDraws(n, features.device) if self.samples_locations else None
        logits, alphas = [], []
        for t in range(captions.shape[1] - 1):
            logit, state, alpha = self.step(captions[:, t], state, memory)  # (N, V), (N, P)
            logits.append(logit)
            alphas.append(alpha)
        return torch.stack(logits, 1), (torch.stack(alphas, 1) if self.config.attention else None)


def caption_loss(
    logits: torch.Tensor, alphas: torch.Tensor | None, targets: torch.Tensor, alpha_c: float, pad_id: int = 0
) -> tuple[torch.Tensor, dict]:
    """Cross-entropy over the real words plus the doubly stochastic regulariser.

    lambda * sum_i (1 - sum_t alpha_ti)^2 (Xu et al. eq. 14) pushes the model to look at
    every region over the course of the caption; sums run over real (non-pad) steps only.
    """
    mask = targets != pad_id  # (N, T-1)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id)
    loss = ce
    reg = torch.zeros((), device=logits.device)
    if alphas is not None and alpha_c > 0:
        coverage = (alphas * mask.unsqueeze(-1)).sum(1)  # (N, P)
        reg = alpha_c * ((1.0 - coverage) ** 2).sum(1).mean()
        loss = ce + reg
    return loss, {"loss": loss.item(), "ce": ce.item(), "reg": reg.item()}


def word_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(w_nt) of each target word: logits (N, T, V), targets (N, T) -> (N, T)."""
    return torch.log_softmax(logits.float(), -1).gather(2, targets.unsqueeze(2)).squeeze(2)


def hard_attention_loss(
    decoder: AttentionDecoder,
    logits: torch.Tensor,
    alphas: torch.Tensor,
    targets: torch.Tensor,
    pad_id: int = 0,
    momentum: float = 0.9,
) -> tuple[torch.Tensor, dict]:
    """Xu et al. eq. 12 for the locations ``decoder.draws`` drew in this pass:

        - log p(y | s)  -  lambda_r (log p(y | s) - b) sum_t log p(s_t)  -  lambda_e sum_t H[alpha_t]

    The first term trains the words (cross-entropy through the drawn contexts); the second
    is REINFORCE for the locations, rewarded by how well the caption is then predicted,
    against b, a moving average of log p(y | s) (kept in ``decoder.hard_baseline``); the
    third keeps the attention from collapsing early. Per caption, log p(y | s) is the mean
    log-probability of its words, and the REINFORCE term covers only the captions whose
    contexts were drawn (not the half that read the expectation). Also updates b.
    """
    mask = (targets != pad_id).float()  # (N, T)
    words = mask.sum(1).clamp(min=1.0)  # (N,)
    logp = word_log_probs(logits, targets)  # (N, T)
    caption_logp = (logp * mask).sum(1) / words  # (N,) log p(y | s) per word
    ce = -caption_logp.mean()
    draws = decoder.draws
    drawn = (~draws.expected).float()  # (N,)
    if decoder.hard_baseline.item() == 0.0:  # the first step: start b at this batch's mean, not at 0
        decoder.hard_baseline.fill_(caption_logp.detach().mean())
    location_logp = torch.log(alphas.float().gather(2, draws.stacked().unsqueeze(2)).squeeze(2) + 1e-12)  # (N, T)
    advantage = (caption_logp.detach() - decoder.hard_baseline) * drawn  # (N,)
    reinforce = -(advantage * (location_logp * mask).sum(1) / words).mean()
    entropy = -(alphas.float() * torch.log(alphas.float() + 1e-12)).sum(2)  # (N, T)
    entropy = ((entropy * mask).sum(1) / words).mean()
    c = decoder.config
    loss = ce + c.hard_reinforce * reinforce - c.hard_entropy * entropy
    with torch.no_grad():  # b <- 0.9 b + 0.1 log p(y | s) (Xu: the exponential moving average)
        decoder.hard_baseline.mul_(momentum).add_((1 - momentum) * caption_logp.mean())
    return loss, {"loss": loss.item(), "ce": ce.item(), "reinforce": reinforce.item(), "entropy": entropy.item()}
