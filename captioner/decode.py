"""Decoding through the decoder's ``step`` only: greedy, sampling and batched beam search.

Legend: B images, K beams, N = B * K rows decoded together, L words so far, P regions, V vocabulary.

Every function takes a decoder -- the plain ``model.AttentionDecoder`` or the fast
``fast.FastDecoder``, which give the same captions -- and the feature grids (B, P, D), and
returns, per image in input order, the word ids (without <start>/<end>), the attention
map of every word (L, P), and a score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.vocab import Vocab

from .fast import FastDecoder
from .model import AttentionDecoder

Decoder = AttentionDecoder | FastDecoder  # anything with prepare / init_state / step


@dataclass
class Decoded:
    ids: list[int]  # the caption's word ids, <end> excluded
    alphas: torch.Tensor | None  # (L, P): where the model looked for each word
    score: float  # sum of log-probabilities (beam: after the length penalty)


@torch.no_grad()
def greedy(decoder: Decoder, features: torch.Tensor, max_len: int | None = None) -> list[Decoded]:
    return sample(decoder, features, max_len=max_len, temperature=0.0)


@torch.no_grad()
def sample(
    decoder: Decoder,
    features: torch.Tensor,
    max_len: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    per_image: int = 1,
) -> list[Decoded]:
    """Draw ``per_image`` captions per image (image-major: B x K results, each image's memory
    made once); ``temperature=0`` is greedy (argmax) decoding."""
    max_len = max_len or decoder.config.max_len
    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    if per_image > 1:
        state = state.select(torch.arange(features.shape[0], device=features.device).repeat_interleave(per_image))
    n = features.shape[0] * per_image
    tokens = torch.full((n,), Vocab.start_id, dtype=torch.long, device=features.device)  # (B,)
    done = torch.zeros(n, dtype=torch.bool, device=features.device)
    words, alphas, score = [], [], torch.zeros(n, device=features.device)
    for _ in range(max_len):
        logits, state, alpha = decoder.step(tokens, state, memory)  # (B, V)
        logp = torch.log_softmax(logits.float(), -1)  # (B, V)
        if temperature == 0:
            tokens = logp.argmax(-1)  # (B,)
        else:
            scaled = logp / temperature
            if top_k:
                kth = scaled.topk(top_k, -1).values[:, -1:]  # (B, 1)
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            tokens = torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator).squeeze(1)
        score += torch.where(done, 0.0, logp.gather(1, tokens[:, None]).squeeze(1))
        tokens = torch.where(done, Vocab.pad_id, tokens)
        words.append(tokens)
        if alpha is not None:
            alphas.append(alpha)
        done |= tokens == Vocab.end_id
        if done.all():
            break
    words = torch.stack(words, 1)  # (B, L)
    alphas = torch.stack(alphas, 1) if alphas else None  # (B, L, P)
    return [_finish(words[i], None if alphas is None else alphas[i], score[i].item()) for i in range(n)]


def _finish(words: torch.Tensor, alphas: torch.Tensor | None, score: float) -> Decoded:
    ids = words.tolist()
    length = ids.index(Vocab.end_id) if Vocab.end_id in ids else len([i for i in ids if i != Vocab.pad_id])
    return Decoded(ids[:length], None if alphas is None else alphas[:length].cpu(), score)


def length_normalizer(length: torch.Tensor, length_penalty: float) -> torch.Tensor:
    """GNMT's ((5 + L) / 6) ** alpha (Wu et al. 2016); alpha = 0 leaves scores as they are."""
    return ((5.0 + length.float()) / 6.0) ** length_penalty


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    features: torch.Tensor,
    beam_size: int = 3,
    max_len: int | None = None,
    length_penalty: float = 0.0,
) -> list[Decoded]:
    """Beam search for a batch of images at once, vectorised over images x beams.

    A beam that has produced <end> stays in the beam with its score frozen (it can only
    extend with <pad> at no cost), so finished and unfinished hypotheses compete on the
    same footing and the search ends when every beam of every image has finished.
    """
    max_len = max_len or decoder.config.max_len
    b, k = features.shape[0], beam_size
    device = features.device
    memory = decoder.prepare(features)  # per image, shared by its beams
    state = decoder.init_state(memory).select(torch.arange(b, device=device).repeat_interleave(k))  # (N, ...)
    tokens = torch.full((b * k,), Vocab.start_id, dtype=torch.long, device=device)  # (N,)
    # Only the first beam of each image is live at the start: the others are copies.
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # (B, K)
    done = torch.zeros(b * k, dtype=torch.bool, device=device)  # (N,)
    history = torch.zeros(b * k, 0, dtype=torch.long, device=device)  # (N, L)
    alpha_history = None  # (N, L, P)
    lengths = torch.zeros(b * k, dtype=torch.long, device=device)  # (N,)
    base = (torch.arange(b, device=device) * k).unsqueeze(1)  # (B, 1)

    for _ in range(max_len):
        logits, state, alpha = decoder.step(tokens, state, memory)  # (N, V)
        logp = torch.log_softmax(logits.float(), -1)  # (N, V)
        vocab = logp.shape[1]
        # A finished beam may only add <pad>, for free.
        logp[done] = float("-inf")
        logp[done, Vocab.pad_id] = 0.0
        total = (scores.reshape(-1, 1) + logp).reshape(b, k * vocab)  # (B, K*V)
        scores, flat = total.topk(k, dim=1)  # (B, K)
        origin = (base + flat // vocab).reshape(-1)  # (N,) rows they extend
        tokens = (flat % vocab).reshape(-1)  # (N,)
        state = state.select(origin)
        was_done = done.index_select(0, origin)
        lengths = lengths.index_select(0, origin) + (~was_done).long()
        done = was_done | (tokens == Vocab.end_id)
        history = torch.cat([history.index_select(0, origin), tokens.unsqueeze(1)], 1)  # (N, L)
        if alpha is not None:
            step_alpha = alpha.index_select(0, origin).unsqueeze(1)  # (N, 1, P)
            alpha_history = (
                step_alpha
                if alpha_history is None
                else torch.cat([alpha_history.index_select(0, origin), step_alpha], 1)
            )  # (N, L, P)
        if done.all():
            break

    # Rank by the length-normalised score; `lengths` counts the words and the <end>.
    final = scores / length_normalizer(lengths.reshape(b, k), length_penalty)  # (B, K)
    best = final.argmax(1)  # (B,)
    results = []
    for i in range(b):
        row = i * k + best[i].item()
        results.append(
            _finish(history[row], None if alpha_history is None else alpha_history[row], final[i, best[i]].item())
        )
    return results


def decode(decoder: Decoder, features: torch.Tensor, beam_size: int = 1, **kwargs) -> list[Decoded]:
    """Beam search for ``beam_size`` > 1, greedy decoding otherwise."""
    if beam_size > 1:
        return beam_search(decoder, features, beam_size=beam_size, **kwargs)
    kwargs.pop("length_penalty", None)
    return greedy(decoder, features, **kwargs)
