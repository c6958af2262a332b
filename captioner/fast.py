"""The speed path beside the plain model: the same numbers as ``captioner.model``, faster.

Legend as in ``model.py``: B images, N rows (B x K), P regions, D channels, E embedding,
A attention, H hidden, V vocabulary.

Two classes, each chosen explicitly by the code that builds a model (``--plain`` on the
command line runs the reference instead); parity tests run every decoding function and a
training step through both and compare them with the plain model:

* ``FastDecoder(decoder, int8=False)`` decodes: ``prepare`` / ``init_state`` / ``step`` like
  the plain decoder, so greedy, sampling and beam search (``decode.py``) take either. It is a
  snapshot of the decoder's weights, concatenated once for the step's products, so build a
  new one after the weights change (training builds one for each validation).
* ``TrainingDecoder`` is an ``AttentionDecoder`` (same parameters, same checkpoints) whose
  ``forward`` is a faster teacher forcing, for training, DDP included.

What each trick buys, measured on a 2-core CPU (`attend bench decode` / `attend bench train`):

* Attention scores as v . tanh(u) + b = 2v . sigmoid(2u) + (b - sum v): the same scores,
  and torch's sigmoid is about 3x faster than its tanh on the CPU (3.2M values: 1.9 vs 6.5
  ms). The image side is doubled once per image, the query at each step.
* Decoding computes those scores a few images at a time in one reused 4 MB buffer: a whole
  (B, K, P, A) tensor for 32 images x 5 beams is 64 MB of fresh memory at every step, and
  filling it cost 4-5x more than the same work in cache-sized slices (63 vs 13 ms a step).
* A step's linear layers are few-row products whose cost is reading the weights. Groups of
  them run as one product, (W x^T)^T from the (out, in) weight: the attention query and the
  gate (both read h), the LSTM's W_ih and W_hh. For a few rows MKL runs this form 1.5-2x
  faster than x W^T (3 rows, 3072 -> 2048: 2.3 vs 4.3 ms).
* Context tables: with a scalar gate, z = beta sum_i alpha_i a_i is a weighted sum of the
  cells, w = beta alpha, and so is every linear map of it: W z = w (A W^T). Decoding a few
  images, the products of the grid with the LSTM's context columns and with L_z (P x 4H and
  P x H per image) are made once, and each step reads those: 2 MB instead of 20 at the COCO
  size. They pay while the images' cells are fewer than the channels (B P <= D).
* int8: the per-step layers as PyTorch's dynamic int8 modules (4x fewer bytes to read).
* Teacher forcing: the position table is added by linearity, W (a_i + p_i) = W a_i + W p_i,
  so the (B, P, D) grid needs no gradient (accumulating one at every step was most of a
  training step); the embedding and the output layers run once over all steps; and
  ``DeferredLinear`` turns the T per-step weight gradients of the LSTM (and of the query
  and gate) into one product over all steps.
"""

from __future__ import annotations

import copy
import warnings
from typing import NamedTuple

import torch
from torch import nn

from .model import AttentionDecoder, CaptionerConfig, HardDraws, State

STEP_LAYERS = ("attention.hidden_proj", "gate", "context_out", "cell", "fc")  # int8 in FastDecoder(int8=True)
CHUNK = 1 << 20  # values per slice of the (B, K, P, A) scores: 4 MB, stays in the cache


def _linear_t(x: torch.Tensor, weight: torch.Tensor, bias_column: torch.Tensor) -> torch.Tensor:
    """x W^T + b computed as (W x^T)^T: (N, in), (out, in), (out, 1) -> (N, out), row-major.
    For up to ~100 rows MKL runs this form 1.5-2x faster than x W^T, but only when x is row-major."""
    return torch.addmm(bias_column, weight, x.contiguous().t()).t().contiguous()


def _sigmoid_score(score: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """v, b of the tanh form -> (2v (A,), b - sum v (1,)) of the sigmoid form."""
    return 2 * score.weight[0], score.bias - score.weight.sum()


def _weighted(w: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Weights over the cells (N, P), K rows per image, times a context table (B, P, G) -> (N, G)."""
    b, p, g = table.shape
    return torch.bmm(w.view(b, -1, p), table).view(-1, g)


def _lstm_gates(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTMCell's equations from its pre-activations (N, 4H), gates in its order (i, f, g, o)."""
    i, f, g, o = gates.chunk(4, 1)  # (N, H) each
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _lstm_weights(decoder: AttentionDecoder, columns: slice = slice(None)):
    """The LSTM's [W_ih[:, columns] | W_hh] (4H, in) and b_ih + b_hh (4H,), by autograd ops."""
    cell = decoder.cell
    return torch.cat([cell.weight_ih[:, columns], cell.weight_hh], 1), cell.bias_ih + cell.bias_hh


def _look_weights(decoder: AttentionDecoder):
    """W_h and f_beta stacked, (A + 1 or A + D, H), both read h."""
    layers = (decoder.attention.hidden_proj, decoder.gate)
    return torch.cat([m.weight for m in layers]), torch.cat([m.bias for m in layers])


# ---------------------------------------------------------------------------- decoding


class FastMemory(NamedTuple):
    features: torch.Tensor  # (B, P, D) the grid, position added
    mean: torch.Tensor  # (B, D)
    projected: torch.Tensor | None  # (B, P, A) 2 (W_a a_i + b_a): the sigmoid form's image side
    tables: tuple[torch.Tensor, torch.Tensor | None] | None  # (B, P, 4H) A W_ih[:, E:]^T, (B, P, H) A L_z^T


class FastDecoder:
    """Decoding with the weights of ``decoder`` (a snapshot: build a new one after they change).

    Its steps return what the plain decoder's return, except that with context tables the
    state's ``context`` holds the gated context's weights over the cells (N, P) instead of
    the context itself (N, D): the tables turn one into the other.
    """

    def __init__(self, decoder: AttentionDecoder, int8: bool = False):
        self.config: CaptionerConfig = decoder.config
        self.int8 = int8
        self.decoder = decoder = quantized_int8(decoder) if int8 else decoder
        self.device = decoder.fc.bias.device if not int8 else torch.device("cpu")
        c = self.config
        with torch.no_grad():
            if c.attention:
                self.score = tuple(t.detach() for t in _sigmoid_score(decoder.attention.score))
            # 2 w_c (A,): coverage's term of the scores, doubled like the rest in the sigmoid form
            self.coverage_weight = 2 * decoder.attention.coverage_proj.weight[:, 0].detach() if decoder.covers else None
            # Each per-step product as (weight (out, in), bias column (out, 1)), or None for int8 modules.
            self.look = self.lstm = self.lstm_xh = self.context_out = self.fc = None
            if not int8:
                if c.attention:
                    self.look = _column(*_look_weights(decoder))
                    if c.deep_output:
                        self.context_out = _column(decoder.context_out.weight, decoder.context_out.bias)
                if c.cell == "lstm":
                    self.lstm = _column(*_lstm_weights(decoder))
                    self.lstm_xh = _column(*_lstm_weights(decoder, slice(0, c.embed_dim)))
                self.fc = _column(decoder.fc.weight, decoder.fc.bias)

    def _tables_pay(self, features: torch.Tensor) -> bool:
        b, p, d = features.shape
        c = self.config
        return c.attention and not self.int8 and c.gate == "scalar" and c.cell == "lstm" and b * p <= d

    @torch.no_grad()
    def prepare(self, features: torch.Tensor) -> FastMemory:
        """As the plain ``prepare``, with the image side doubled and, where they pay, context tables."""
        d = self.decoder
        d.check_grid(features)
        features = features.float()  # (B, P, D)
        if self.config.position_encoding:
            features = features + d.position_table(features.device)  # (B, P, D)
        projected = tables = None
        if self.config.attention:
            projected = d.attention.project(features).mul_(2)  # (B, P, A)
            if self._tables_pay(features):
                out = features @ d.context_out.weight.t() if self.config.deep_output else None  # (B, P, H)
                tables = (features @ d.cell.weight_ih[:, self.config.embed_dim :].t(), out)  # (B, P, 4H)
        return FastMemory(features, features.mean(1), projected, tables)

    @torch.no_grad()
    def init_state(self, memory: FastMemory) -> State:
        h = torch.tanh(self.decoder.init_h(memory.mean))  # (B, H)
        c = torch.tanh(self.decoder.init_c(memory.mean)) if self.config.cell == "lstm" else None
        context = None
        if self.decoder.query_current:  # no context yet: its weights (B, P) with tables, else (B, D)
            context = torch.zeros_like(memory.projected[..., 0] if memory.tables else memory.mean)
        coverage = torch.zeros_like(memory.projected[..., 0]) if self.decoder.covers else None  # (B, P)
        return State(h, c, context, coverage)

    def _scores(self, projected: torch.Tensor, query: torch.Tensor, coverage=None) -> torch.Tensor:
        """alpha (N, P) for query rows (N, A), a few images at a time through one reused buffer;
        ``coverage`` (N, P): each cell's attention so far, in a coverage model."""
        b, p, a = projected.shape
        k = query.shape[0] // b
        query = 2 * query.view(b, k, 1, a)  # (B, K, 1, A)
        coverage = None if coverage is None else coverage.view(b, k, p, 1)  # (B, K, P, 1)
        weight, bias = self.score
        n = max(1, CHUNK // (k * p * a))  # images per slice
        buffer = projected.new_empty(min(n, b), k, p, a)
        scores = projected.new_empty(b, k, p)
        for i in range(0, b, n):
            s = torch.add(projected[i : i + n].unsqueeze(1), query[i : i + n], out=buffer[: min(n, b - i)])
            if coverage is not None:
                s.addcmul_(coverage[i : i + n], self.coverage_weight)  # + 2 w_c cov_i
            torch.sigmoid_(s)
            torch.matmul(s, weight, out=scores[i : i + n])
        return torch.softmax(scores.add_(bias).view(b * k, p), dim=-1)  # (N, P)

    def _look(self, h: torch.Tensor, memory: FastMemory, coverage=None):
        """(gated context (N, D), or with tables its weights (N, P)), alpha (N, P)."""
        d = self.decoder
        if self.look is not None:
            query, gate = _linear_t(h, *self.look).split([self.config.attention_dim, d.gate.out_features], 1)
        else:
            query, gate = d.attention.hidden_proj(h), d.gate(h)  # (N, A), (N, 1 or D)
        alpha = self._scores(memory.projected, query, coverage)  # (N, P)
        if memory.tables:
            return torch.sigmoid(gate) * alpha, alpha
        b, p, _ = memory.projected.shape
        context = torch.bmm(alpha.view(b, -1, p), memory.features).view(alpha.shape[0], -1)  # (N, D)
        return torch.sigmoid(gate) * context, alpha

    def _recur(self, x: torch.Tensor, z: torch.Tensor | None, state: State, memory: FastMemory):
        if memory.tables:  # W_ih [x; z] = W_ih[:, :E] x + w (A W_ih[:, E:]^T)
            gates = _linear_t(torch.cat([x, state.h], 1), *self.lstm_xh) + _weighted(z, memory.tables[0])
            return _lstm_gates(gates, state.c)
        inputs = x if z is None else torch.cat([x, z], 1)  # (N, E [+ D])
        if self.config.cell != "lstm":
            return self.decoder.cell(inputs, state.h), None
        if self.lstm is None:  # int8
            return self.decoder.cell(inputs, (state.h, state.c))
        return _lstm_gates(_linear_t(torch.cat([inputs, state.h], 1), *self.lstm), state.c)

    def _output(self, h: torch.Tensor, z: torch.Tensor | None, memory: FastMemory) -> torch.Tensor:
        d = self.decoder
        if z is not None and self.config.deep_output:
            if memory.tables:
                h = h + _weighted(z, memory.tables[1]) + d.context_out.bias
            elif self.context_out is not None:
                h = h + _linear_t(z, *self.context_out)
            else:
                h = h + d.context_out(z)
        return _linear_t(h, *self.fc) if self.fc is not None else d.fc(h)  # (N, V)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: State, memory: FastMemory):
        """As ``AttentionDecoder.step`` (decoding: no dropout, no gradients)."""
        x = self.decoder.embedding(tokens)  # (N, E)
        z = alpha = None
        if not self.config.attention:
            h, c = self._recur(x, None, state, memory)
        elif self.decoder.query_current:
            h, c = self._recur(x, state.context, state, memory)
            z, alpha = self._look(h, memory, state.coverage)
        else:
            z, alpha = self._look(state.h, memory, state.coverage)
            h, c = self._recur(x, z, state, memory)
        coverage = None if state.coverage is None else state.coverage + alpha  # (N, P)
        return self._output(h, z, memory), State(h, c, z if self.decoder.query_current else None, coverage), alpha


def _column(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return weight.detach(), bias.detach().unsqueeze(1)  # (out, in), (out, 1)


def quantized_int8(decoder: AttentionDecoder) -> AttentionDecoder:
    """A CPU copy of ``decoder`` whose per-step layers (``STEP_LAYERS``) hold int8 weights:
    PyTorch's dynamic quantization, activations stay float and are quantized on the fly.
    Decoding one image is limited by reading every weight at every step, and int8 reads 4x
    fewer bytes; the layers used once per image stay float32. Captions can differ from the
    float32 model's where two words score almost alike (measured in the README)."""
    present = dict(decoder.named_modules())
    spec = {name: torch.ao.quantization.default_dynamic_qconfig for name in STEP_LAYERS if name in present}
    with warnings.catch_warnings():
        # Upstream deprecates torch.ao quantization in favour of torchao; the pinned torch has it.
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        small = copy.deepcopy(decoder).cpu().eval()
        return torch.ao.quantization.quantize_dynamic(small, spec, dtype=torch.qint8)


# ---------------------------------------------------------------------------- training


class TrainingDecoder(AttentionDecoder):
    """An ``AttentionDecoder`` whose teacher forcing is the fast one (see the module's docstring)."""

    def forward(self, features: torch.Tensor, captions: torch.Tensor):
        """As ``AttentionDecoder.forward``: logits (N, T-1, V), alphas (N, T-1, P) or None."""
        c = self.config
        b, n = features.shape[0], captions.shape[0]
        if n % b:
            raise ValueError(f"{n} captions for {b} images: expected the same number per image")
        self.check_grid(features)
        features = features.float()  # (B, P, D), never given a gradient
        position = self.position_table(features.device) if c.position_encoding else None  # (P, D)
        mean = features.mean(1) if position is None else features.mean(1) + position.mean(0)  # (B, D)
        if c.attention:
            projected = self.attention.encoder_proj(features)  # (B, P, A)
            if position is not None:
                projected = projected + position @ self.attention.encoder_proj.weight.t()  # (B, P, A)
            projected = projected.mul_(2)
            look = DeferredLinear(*_look_weights(self))
        lstm = DeferredLinear(*_lstm_weights(self)) if c.cell == "lstm" else None
        h = torch.tanh(self.init_h(mean))  # (B, H)
        cell = torch.tanh(self.init_c(mean)) if c.cell == "lstm" else None
        coverage = features.new_zeros(features.shape[:2]) if self.covers else None  # (B, P)
        state = State(h, cell, torch.zeros_like(mean) if self.query_current else None, coverage)
        state = state.select(torch.arange(b, device=features.device).repeat_interleave(n // b))  # (N, ...)
        weight, bias = _sigmoid_score(self.attention.score) if c.attention else (None, None)
        self.draws = draws = HardDraws(n, features.device) if self.samples_locations else None

        def look_at(h, coverage):  # gated context (N, D), alpha (N, P)
            query, gate = look(h).split([c.attention_dim, self.gate.out_features], 1)  # (N, A), (N, 1 or D)
            p, a = projected.shape[1:]
            u = projected.unsqueeze(1) + 2 * query.view(b, -1, 1, a)  # (B, K, P, A)
            if coverage is not None:
                u = u + 2 * coverage.view(b, -1, p, 1) * self.attention.coverage_proj.weight[:, 0]
            # sigmoid in place is safe for autograd: its backward needs only its own output.
            s = torch.sigmoid_(u)  # (B, K, P, A)
            alpha = torch.softmax((s @ weight + bias).view(-1, p), dim=-1)  # (N, P)
            w = alpha if draws is None else draws(alpha)  # hard attention: a drawn one-hot (N, P)
            context = torch.bmm(w.view(b, -1, p), features).view(alpha.shape[0], -1)  # (N, D)
            if position is not None:
                context = context + w @ position  # (N, D)
            return torch.sigmoid(gate) * context, alpha

        def recur(x, z, state):
            inputs = x if z is None else torch.cat([x, z], 1)  # (N, E [+ D])
            if lstm is None:
                return self.cell(inputs, state.h), None
            return _lstm_gates(lstm(torch.cat([inputs, state.h], 1)), state.c)

        words = self.embedding(captions[:, :-1])  # (N, T-1, E): one lookup, one gradient
        hs, zs, alphas = [], [], []
        for t in range(captions.shape[1] - 1):
            z = alpha = None
            if not c.attention:
                h, cell = recur(words[:, t], None, state)
            elif self.query_current:
                h, cell = recur(words[:, t], state.context, state)
                z, alpha = look_at(h, state.coverage)
            else:
                z, alpha = look_at(state.h, state.coverage)
                h, cell = recur(words[:, t], z, state)
            coverage = None if state.coverage is None else state.coverage + alpha  # (N, P)
            state = State(h, cell, z if self.query_current else None, coverage)
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
        # The output layers once over all steps, as one (N (T-1), .) matrix product each.
        h = torch.stack(hs, 1)  # (N, T-1, H)
        if c.attention and c.deep_output:
            z = torch.stack(zs, 1)  # (N, T-1, D)
            h = h + self.context_out(z.view(-1, z.shape[-1])).view(h.shape)  # (N, T-1, H)
        logits = self.fc(self.dropout(h).view(-1, h.shape[-1])).view(*h.shape[:2], -1)  # (N, T-1, V)
        return logits, (torch.stack(alphas, 1) if c.attention else None)


class DeferredLinear:
    """y_t = x_t W^T + b for every step t of one teacher-forced pass, with the weight's gradient
    deferred to one product over all steps: sum_t g_t^T x_t = [g_1..g_T]^T [x_1..x_T].

    Autograd would compute T products of K = batch (2048 x 32 x 3072 for the COCO LSTM) and
    add them up; one product of K = T * batch runs the BLAS far better (`attend bench train`).
    Each step's backward returns only its input's gradient and banks (x_t, g_t); the first
    step's backward, which autograd runs last (every later step depends on it through the
    recurrent state), returns the whole weight and bias gradients.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias_column = weight, bias.unsqueeze(1)  # (out, in), (out, 1)
        self.weight_t = None  # W^T, made at the first backward: g W runs faster as (W^T g^T)^T
        self.steps = 0
        self.banked: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return _DeferredStep.apply(x, self.weight, self.bias_column, self, self.steps == 1)


class _DeferredStep(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # one dtype for the banked products
    def forward(ctx, x, weight, bias_column, owner: DeferredLinear, first: bool):
        ctx.save_for_backward(x)
        ctx.owner, ctx.first = owner, first
        return _linear_t(x, weight, bias_column)  # (N, out)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        owner = ctx.owner
        owner.banked.append((x, g))
        grad_x = None
        if ctx.needs_input_grad[0]:
            if owner.weight_t is None:
                owner.weight_t = owner.weight.detach().t().contiguous()  # (in, out)
            grad_x = torch.mm(owner.weight_t, g.contiguous().t()).t().contiguous()  # (N, in)
        if not ctx.first:
            return grad_x, None, None, None, None
        banked, owner.banked, owner.weight_t = owner.banked, [], None
        if len(banked) != owner.steps:  # a step not reached, or reached after the first
            raise RuntimeError(f"deferred weight gradient: {len(banked)} of {owner.steps} steps backpropagated")
        xs = torch.cat([b[0] for b in banked])  # (T*N, in)
        gs = torch.cat([b[1] for b in banked])  # (T*N, out)
        return grad_x, gs.t() @ xs, gs.sum(0).unsqueeze(1), None, None
