"""Show, Attend and Tell (Xu et al. 2015): an LSTM decoder with soft attention over a feature grid.

Legend: B batch (images, or images x beams while decoding), P regions (h * w), D encoder
channels, T caption steps, E embedding, A attention, H hidden, V vocabulary.

One ``step()`` serves teacher forcing, greedy decoding, sampling and beam search: the
loop in ``forward`` calls the same ``advance`` as ``step`` and only applies the output
layers (deep output and vocabulary) once to all steps: the same numbers, one large
matrix product instead of T, and one weight gradient instead of T accumulated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

CELLS = ("lstm", "gru", "rnn")


@dataclass
class CaptionerConfig:
    vocab_size: int
    encoder_dim: int = 1280
    embed_dim: int = 128
    attention_dim: int = 256
    hidden_dim: int = 384
    cell: str = "lstm"               # lstm | gru | rnn (the lecture compares all three)
    attention: bool = True           # False: the "CNN + RNN" baseline, mean feature -> initial state only
    position_encoding: bool = True   # add a learned map of each cell's (x, y) to the features
    deep_output: bool = True         # Xu eq. 7: words read L_h h + L_z context, not h alone
    attention_query: str = "previous"  # "previous": alpha_t from h_{t-1} (Xu et al.); "current": from
                                       # h_t after the cell update, the LSTM reading the previous
                                       # context (Lu et al. 2017), so each word reads a fresh look
    gate: str = "scalar"             # beta = sigmoid(f_beta(h)): one scalar per step (Xu et al.
                                     # 4.2.1), or "vector": one per channel (a common variant)
    dropout: float = 0.3
    alpha_c: float = 1.0             # weight of the doubly stochastic regularisation
    max_len: int = 30                # decoding limit, in tokens (<end> included)
    grid: list[int] = field(default_factory=lambda: [7, 7])  # (h, w) the model was trained on


def coordinate_features(h: int, w: int, bands: int = 4, device=None) -> torch.Tensor:
    """Fixed features of each cell centre (x, y) in [0, 1]: [sin x, cos x, sin y, cos y] at
    frequencies pi * 2^k, k < bands: (P, 4 * bands), cells rows first."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    y, x = torch.meshgrid(ys, xs, indexing="ij")                       # (h, w)
    freqs = math.pi * 2.0 ** torch.arange(bands, device=device, dtype=torch.float32)  # (bands,)
    angles = torch.stack([x, y], -1).reshape(-1, 2, 1) * freqs         # (P, 2, bands)
    return torch.cat([angles.sin(), angles.cos()], -1).reshape(h * w, -1)  # (P, 4*bands)


class SoftAttention(nn.Module):
    """e_ti = v . tanh(W_a a_i + W_h h_{t-1}); alpha_t = softmax(e_t); z_t = sum_i alpha_ti a_i.

    Computed as v . tanh(u) + b = 2v . sigmoid(2u) + (b - sum v), the same scores: on the CPU
    torch's sigmoid is about 3x faster than its tanh (3.2M values: 1.9 ms vs 6.5 ms), and
    this is the largest elementwise pass of a step. The 2u comes from doubling each side of
    the sum, the image side once per image (``project``) and the query at each step.
    """

    def __init__(self, encoder_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, attention_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def project(self, features: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        """The image side 2 (W_a a_i + b), computed once per image and reused at every step;
        ``position`` (P, D), if given, is added to every grid by linearity: W_a (a_i + p_i)."""
        projected = self.encoder_proj(features)                       # (B, P, A)
        if position is not None:
            projected = projected + position @ self.encoder_proj.weight.t()  # (B, P, A)
        return projected.mul_(2)

    def forward(self, features, projected, query, position=None):
        """features (B, P, D), projected (B, P, A) from ``project``, query = hidden_proj(h)
        (B*K, A): K query rows per image (beams), image-major, read the image's memory
        without copying it K times. Returns the context (B*K, D) and alpha (B*K, P)."""
        b, p, _ = projected.shape
        alpha = self.weights(projected, query)                         # (B*K, P)
        context = torch.bmm(alpha.view(b, -1, p), features).view(alpha.shape[0], -1)  # (B*K, D)
        if position is not None:
            context = context + alpha @ position                       # (B*K, D)
        return context, alpha

    def weights(self, projected: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """alpha (B*K, P): the softmax of the scores of every cell, for each query row."""
        b, p, a = projected.shape
        k = query.shape[0] // b
        query = 2 * query.view(b, k, 1, a)                             # (B, K, 1, A)
        weight, bias = 2 * self.score.weight[0], self.score.bias - self.score.weight.sum()  # (A,), (1,)
        if torch.is_grad_enabled():
            # sigmoid in place is safe for autograd: its backward needs only its own output.
            s = torch.sigmoid_(projected.unsqueeze(1) + query)         # (B, K, P, A)
            e = (s @ weight + bias).view(b * k, p)                     # (B*K, P)
        else:
            e = self._scores_in_chunks(projected, query, weight, bias).view(b * k, p)
        return torch.softmax(e, dim=-1)                                # (B*K, P)

    CHUNK = 1 << 20  # values per slice of the (B, K, P, A) scores: 4 MB, stays in the cache

    @classmethod
    def _scores_in_chunks(cls, projected, query, weight, bias) -> torch.Tensor:
        """The scores (B, K, P) a few images at a time through one reused buffer: a batch's
        whole (B, K, P, A) tensor (32 images x 5 beams: 64 MB) is fresh memory at every step,
        and filling it cost 4-5x more than the same work in cache-sized slices (63 vs 13 ms
        per step; `attend bench decode`)."""
        b, k, _, a = query.shape
        p = projected.shape[1]
        n = max(1, cls.CHUNK // (k * p * a))                           # images per slice
        buffer = projected.new_empty(min(n, b), k, p, a)
        scores = projected.new_empty(b, k, p)
        for i in range(0, b, n):
            s = buffer[: min(n, b - i)]
            torch.sigmoid_(torch.add(projected[i:i + n].unsqueeze(1), query[i:i + n], out=s))
            torch.matmul(s, weight, out=scores[i:i + n])
        return scores.add_(bias)


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
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=0)
        if c.position_encoding:
            self.position = nn.Linear(16, c.encoder_dim)
        if c.attention:
            self.attention = SoftAttention(c.encoder_dim, c.hidden_dim, c.attention_dim)
            self.gate = nn.Linear(c.hidden_dim, 1 if c.gate == "scalar" else c.encoder_dim)  # f_beta
            if c.deep_output:
                self.context_out = nn.Linear(c.encoder_dim, c.hidden_dim)
        input_dim = c.embed_dim + (c.encoder_dim if c.attention else 0)
        self.cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[c.cell](input_dim, c.hidden_dim)
        self.init_h = nn.Linear(c.encoder_dim, c.hidden_dim)
        if c.cell == "lstm":
            self.init_c = nn.Linear(c.encoder_dim, c.hidden_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(c.hidden_dim, c.vocab_size)

    # ------------------------------------------------------------------ per image
    def prepare(self, features: torch.Tensor) -> dict:
        """Everything computed once per image: (B, P, D) grid -> the decoder's memory.

        The position encoding is a (P, D) table added to every image's grid. It is kept
        apart and applied by linearity (W (a_i + p_i) = W a_i + W p_i, and likewise for the
        context), so the big (B, P, D) grid never needs a gradient: adding it in place made
        autograd accumulate a (B, P, D) gradient at every step, most of a training step's time.
        Without gradients (decoding) it is simply added once, so each step reads one grid.
        """
        features = features.float()                                    # (B, P, D)
        position = None
        if self.config.position_encoding:
            h, w = self.config.grid
            if features.shape[1] != h * w:
                raise ValueError(f"grid has {features.shape[1]} cells, the model was built for {h}x{w}")
            position = self.position(coordinate_features(h, w, device=features.device))  # (P, D)
            if not torch.is_grad_enabled():  # decoding: no gradient to spare, add it once
                features, position = features + position, None
        memory = {"features": features, "mean": features.mean(1)}      # (B, P, D), (B, D)
        if position is not None:
            memory["position"] = position
            memory["mean"] = memory["mean"] + position.mean(0)         # (B, D)
        if self.config.attention:
            memory["projected"] = self.attention.project(features, position)  # (B, P, A)
            if self._tables_pay(features):
                memory["tables"] = self._context_tables(features)
        return memory

    # With a scalar gate the gated context z = beta sum_i alpha_i a_i is a weighted sum of the
    # cells, w = beta alpha, and so is every linear map of it: W z = w (A W^T). Decoding one
    # image on the CPU, a step's cost is reading weights, and the context's maps are the
    # largest of them (the LSTM's W_ih context columns and context_out: 4H x D + H x D, 20 MB
    # at the COCO size). Their products with the grid, "context tables" (P x 4H and P x H per
    # image), are made once per image, and each step reads those instead: 2 MB, not 20.
    # It pays while the images' cells are fewer than the channels (B P <= D): beyond that the
    # tables cost more to make and to read than the weights they replace.
    def _tables_pay(self, features: torch.Tensor) -> bool:
        c = self.config
        b, p, d = features.shape
        return (not torch.is_grad_enabled() and features.device.type == "cpu" and b * p <= d
                and c.gate == "scalar" and c.cell == "lstm" and self._plain("cell")
                and (not c.deep_output or self._plain("context_out")))

    def _context_tables(self, features: torch.Tensor) -> dict:
        """features (B, P, D) -> {"cell": (B, P, 4H) = A W_ih[:, E:]^T, "out": (B, P, H) = A W_co^T}."""
        tables = {"cell": features @ self.cell.weight_ih[:, self.config.embed_dim:].t()}
        if self.config.deep_output:
            tables["out"] = features @ self.context_out.weight.t()
        return tables

    def init_state(self, memory: dict) -> tuple:
        """(h, c) or, with attention_query "current", (h, c, previous gated context)."""
        h = torch.tanh(self.init_h(memory["mean"]))                    # (B, H)
        c = torch.tanh(self.init_c(memory["mean"])) if self.config.cell == "lstm" else None
        if self._query_current:                                        # no context yet
            z = memory["projected"][..., 0] if "tables" in memory else memory["mean"]  # (B, P) or (B, D)
            return (h, c, torch.zeros_like(z))
        return (h, c)

    @property
    def _query_current(self) -> bool:
        return self.config.attention and self.config.attention_query == "current"

    # ------------------------------------------------------------------ per step
    def advance(self, x: torch.Tensor, state: tuple, memory: dict):
        """One recurrent step: embedded previous words (B, E) -> (h (B, H), gated context
        or None), new state, alpha (B, P) or None. The gated context is (B, D), or with
        context tables its weights over the cells (B, P)."""
        c = self.config
        if not c.attention:
            h, cell = self._cell(x, None, state[0], state[1], memory)
            return (h, None), (h, cell), None
        if self._query_current:
            h, cell = self._cell(x, state[2], state[0], state[1], memory)  # (B, H)
            gated, alpha = self._look(h, memory)                       # (B, D) or (B, P), (B, P)
            new_state = (h, cell, gated)
        else:
            gated, alpha = self._look(state[0], memory)
            h, cell = self._cell(x, gated, state[0], state[1], memory)
            new_state = (h, cell)
        return (h, gated), new_state, alpha

    def _look(self, h: torch.Tensor, memory: dict):
        """Soft attention queried by h, gated by beta = sigmoid(f_beta(h)): the gated context
        (B, D), or with context tables its weights beta * alpha (B, P)."""
        if self._fusable("look", h, memory):  # W_h h and f_beta(h) as one product
            query, gate = self._fused("look", h, memory).split(
                [self.config.attention_dim, self.gate.out_features], 1)  # (B, A), (B, 1 or D)
        else:
            query, gate = self.attention.hidden_proj(h), self.gate(h)
        if "tables" in memory:
            alpha = self.attention.weights(memory["projected"], query)  # (B, P)
            return torch.sigmoid(gate) * alpha, alpha
        context, alpha = self.attention(memory["features"], memory["projected"], query,
                                        memory.get("position"))        # (B, D), (B, P)
        return torch.sigmoid(gate) * context, alpha

    def _cell(self, x: torch.Tensor, z: torch.Tensor | None, h: torch.Tensor, c: torch.Tensor | None,
              memory: dict):
        """x (B, E), the gated context z (see ``advance``) or None, the state h and c."""
        if "tables" in memory:  # W_ih [x; z] = W_ih[:, :E] x + w (A W_ih[:, E:]^T)
            gates = self._fused("cell_xh", torch.cat([x, h], 1), memory) + _weighted(z, memory["tables"]["cell"])
        else:
            x = x if z is None else torch.cat([x, z], 1)
            if self.config.cell != "lstm":
                return self.cell(x, h), None                           # (B, H)
            if not self._fusable("cell", x, memory):
                return self.cell(x, (h, c))                            # (B, H) each
            gates = self._fused("cell", torch.cat([x, h], 1), memory)  # W [x; h] + b as one product
        # nn.LSTMCell's equations, gates in its order (i, f, g, o).
        i, f, g, o = gates.chunk(4, 1)                                 # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def output(self, h: torch.Tensor, gated: torch.Tensor | None, memory: dict | None = None) -> torch.Tensor:
        """Word logits (..., V) from the hidden state (..., H) and, with deep output, the gated
        context (..., D) (Xu eq. 7: L_o(h + L_z z)); any leading shape, so teacher forcing
        applies it once to every step. With context tables ``gated`` holds weights (..., P)."""
        lead = h.shape[:-1]
        if gated is not None and self.config.deep_output:
            z = gated.reshape(-1, gated.shape[-1])
            if memory is not None and "tables" in memory:
                out = _weighted(z, memory["tables"]["out"]) + self.context_out.bias
            else:
                out = self._output_layer("context_out", z)
            h = h + out.reshape(*lead, -1)
        out = self.dropout(h).reshape(-1, h.shape[-1])
        return self._output_layer("fc", out).reshape(*lead, -1)        # (..., V)

    def _output_layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """"context_out" or "fc" on (N, in) rows: the fused form when decoding on the CPU."""
        return self._fused(name, x, {}) if self._fusable(name, x, {}) else getattr(self, name)(x)

    # ------------------------------------------------------------------ fused per-step products
    # A step's linear layers are few-row products (one image's beams, or a batch) whose cost
    # is reading the weights. Named groups of them run as one product x W^T + b:
    #   "look" = W_h and f_beta, both read h; "cell" = the LSTM's W_ih and W_hh on [x; h];
    #   "context_out" and "fc" alone.
    # Decoding on the CPU (no gradients): computed as (W x^T)^T from the (out, in) weight, with
    # the groups' weights concatenated once and cached; for a few rows MKL runs this form about
    # twice as fast as x W^T (3 rows, 3072 -> 2048: 2.3 vs 4.3 ms; `attend bench decode`).
    # Teacher forcing on the CPU: a DeferredLinear per group (below). Elsewhere (CUDA, the
    # int8 copy, a step taken with gradients) the modules run as they are.
    defer_weight_grads = True

    def train(self, mode: bool = True):
        """Also drops the cached concatenated weights (``_fused``): they are rebuilt when a
        weight's version changes, but fused optimizers (Adam(fused=True), as `attend train`
        uses) update parameters without bumping it, and would leave them stale. Training
        switches to eval() before it validates, so each validation reads the current weights."""
        self.__dict__.pop("_fused_weights", None)
        return super().train(mode)

    def _group_layers(self, name: str) -> tuple:
        if name == "look":
            return (self.attention.hidden_proj, self.gate)
        return (self.cell,) if name == "cell_xh" else (getattr(self, name),)

    def _plain(self, name: str) -> bool:
        """The group's layers are the float modules (not the int8 copy's quantized ones)."""
        return all(type(m) in (nn.Linear, nn.LSTMCell) for m in self._group_layers(name))

    def _fusable(self, name: str, x: torch.Tensor, memory: dict) -> bool:
        if name in memory.get("deferred", {}):
            return True
        return not torch.is_grad_enabled() and x.device.type == "cpu" and self._plain(name)

    def _group(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The group's (out, in) weight and (out,) bias, built from the parameters by autograd ops."""
        if name == "cell":
            return torch.cat([self.cell.weight_ih, self.cell.weight_hh], 1), self.cell.bias_ih + self.cell.bias_hh
        if name == "cell_xh":  # without the context's columns (context tables)
            w_x = self.cell.weight_ih[:, : self.config.embed_dim]
            return torch.cat([w_x, self.cell.weight_hh], 1), self.cell.bias_ih + self.cell.bias_hh
        layers = self._group_layers(name)
        return torch.cat([m.weight for m in layers]), torch.cat([m.bias for m in layers])

    def _fused(self, name: str, x: torch.Tensor, memory: dict) -> torch.Tensor:
        deferred = memory.get("deferred", {}).get(name)
        if deferred is not None:
            return deferred(x)
        layers = self._group_layers(name)
        if len(layers) == 1 and type(layers[0]) is nn.Linear:   # nothing to concatenate
            return _linear_t(x, layers[0].weight, layers[0].bias.unsqueeze(1))
        params = [p for m in layers for p in m.parameters(recurse=False)]
        key = tuple((p.data_ptr(), p._version) for p in params)
        cache = self.__dict__.setdefault("_fused_weights", {})  # not a buffer: never saved
        if name not in cache or cache[name][0] != key:          # rebuilt after a change (see train())
            weight, bias = self._group(name)
            cache[name] = (key, weight.detach(), bias.detach().unsqueeze(1))
        _, weight, bias = cache[name]
        return _linear_t(x, weight, bias)

    def step(self, tokens: torch.Tensor, state: tuple, memory: dict):
        """Previous words (B,) -> logits (B, V), new state, alpha (B, P) (None without attention)."""
        (h, gated), state, alpha = self.advance(self.embedding(tokens), state, memory)
        return self.output(h, gated, memory), state, alpha

    def _step_groups(self) -> list[str]:
        return (["look"] if self.config.attention else []) + (["cell"] if self.config.cell == "lstm" else [])

    # ------------------------------------------------------------------ teacher forcing
    def forward(self, features: torch.Tensor, captions: torch.Tensor):
        """Teacher forcing. features (B, P, D); captions (B*K, T) = <start> w1 .. wn <end> <pad>...,
        K captions per image, image-major (K = 1: one caption per grid).

        Returns logits (B*K, T-1, V) predicting captions[:, 1:], and alphas (B*K, T-1, P).

        With K > 1 everything made once per image (``prepare``: the attention's image side,
        the initial state) is made once for its K captions, and each step's attention reads
        the image's memory with K query rows, as beam search reads it with K beams: the same
        numbers as repeating each grid K times, without the K-fold projection and its
        weight gradient (a quarter of a COCO-sized training step, `attend bench train`).
        """
        b, n = features.shape[0], captions.shape[0]
        if n % b:
            raise ValueError(f"{n} captions for {b} images: expected the same number per image")
        memory = self.prepare(features)
        if torch.is_grad_enabled() and features.device.type == "cpu" and self.defer_weight_grads:
            memory["deferred"] = {name: DeferredLinear(*self._group(name))
                                  for name in self._step_groups() if self._plain(name)}
        state = self.init_state(memory)
        if n > b:
            state = tuple(None if s is None else s.repeat_interleave(n // b, 0) for s in state)
        # One embedding lookup for all steps: one sparse-to-dense gradient instead of T.
        words = self.embedding(captions[:, :-1])                       # (B, T-1, E)
        hs, gateds, alphas = [], [], []
        for t in range(captions.shape[1] - 1):
            (h, gated), state, alpha = self.advance(words[:, t], state, memory)
            hs.append(h)
            if alpha is not None:
                gateds.append(gated)
                alphas.append(alpha)
        logits = self.output(torch.stack(hs, 1), torch.stack(gateds, 1) if gateds else None, memory)  # (B, T-1, V)
        alphas = torch.stack(alphas, 1) if alphas else None            # (B, T-1, P)
        return logits, alphas


def _weighted(w: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Weights over the cells (B*K, P), K rows per image, image-major, times a context table
    (B, P, G) -> (B*K, G)."""
    b, p, g = table.shape
    return torch.bmm(w.view(b, -1, p), table).view(-1, g)


def _linear_t(x: torch.Tensor, weight: torch.Tensor, bias_column: torch.Tensor) -> torch.Tensor:
    """x W^T + b computed as (W x^T)^T: (B, in), (out, in), (out, 1) -> (B, out), row-major.
    For up to ~100 rows MKL runs this form 1.5-2x faster than x W^T (3 or 32 rows, 3072 ->
    2048: 2.3 vs 4.3 ms, 3.7 vs 6.5 ms), but only when x is row-major."""
    return torch.addmm(bias_column, weight, x.contiguous().t()).t().contiguous()


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
        self.weight, self.bias_column = weight, bias.unsqueeze(1)     # (out, in), (out, 1)
        self.weight_t = None     # W^T, made at the first backward: g W runs faster as (W^T g^T)^T
        self.steps = 0
        self.banked: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return _DeferredStep.apply(x, self.weight, self.bias_column, self, self.steps == 1)


class _DeferredStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias_column, owner: DeferredLinear, first: bool):
        ctx.save_for_backward(x)
        ctx.owner, ctx.first = owner, first
        return _linear_t(x, weight, bias_column)                       # (B, out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        owner = ctx.owner
        owner.banked.append((x, g))
        grad_x = None
        if ctx.needs_input_grad[0]:
            if owner.weight_t is None:
                owner.weight_t = owner.weight.detach().t().contiguous()  # (in, out)
            grad_x = torch.mm(owner.weight_t, g.contiguous().t()).t().contiguous()  # (B, in)
        if not ctx.first:
            return grad_x, None, None, None, None
        banked, owner.banked, owner.weight_t = owner.banked, [], None
        if len(banked) != owner.steps:  # a step not reached, or reached after the first
            raise RuntimeError(f"deferred weight gradient: {len(banked)} of {owner.steps} steps backpropagated")
        xs = torch.cat([b[0] for b in banked])                         # (T*B, in)
        gs = torch.cat([b[1] for b in banked])                         # (T*B, out)
        return grad_x, gs.t() @ xs, gs.sum(0).unsqueeze(1), None, None


def caption_loss(logits: torch.Tensor, alphas: torch.Tensor | None, targets: torch.Tensor,
                 alpha_c: float, pad_id: int = 0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy over the real words plus the doubly stochastic regulariser.

    lambda * sum_i (1 - sum_t alpha_ti)^2 (Xu et al. eq. 14) pushes the model to look at
    every region over the course of the caption; sums run over real (non-pad) steps only.
    """
    mask = targets != pad_id                                           # (B, T-1)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id)
    loss = ce
    reg = torch.zeros((), device=logits.device)
    if alphas is not None and alpha_c > 0:
        coverage = (alphas * mask.unsqueeze(-1)).sum(1)                # (B, P)
        reg = alpha_c * ((1.0 - coverage) ** 2).sum(1).mean()
        loss = ce + reg
    return loss, {"loss": loss.item(), "ce": ce.item(), "reg": reg.item()}


STEP_LAYERS = ("attention.hidden_proj", "gate", "context_out", "cell", "fc")


def quantized_int8(decoder: AttentionDecoder) -> AttentionDecoder:
    """A copy of ``decoder`` for CPU decoding whose per-step layers (``STEP_LAYERS``) hold int8
    weights: PyTorch's dynamic quantization, activations stay float and are quantized on the
    fly. Decoding one image is limited by reading every weight at every step, and int8 reads
    4x fewer bytes; the layers used once per image stay float32. Captions can differ from
    the float32 model's where two words score almost alike (measured in the README).
    """
    import copy
    import warnings

    present = dict(decoder.named_modules())
    spec = {name: torch.ao.quantization.default_dynamic_qconfig for name in STEP_LAYERS if name in present}
    with warnings.catch_warnings():
        # Upstream deprecates torch.ao quantization in favour of torchao; the pinned torch has it.
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        small = copy.deepcopy(decoder).cpu().eval()
        small.__dict__.pop("_fused_weights", None)  # float copies the int8 layers do not use
        return torch.ao.quantization.quantize_dynamic(small, spec, dtype=torch.qint8)
