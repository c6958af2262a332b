"""The plain decoder and its decoding: the paper's equations by hand, parity between decoding
functions, overfitting. Decoding tests run through the plain model and the fast path alike;
tests/test_captioner_fast.py compares the two directly."""

import math

import pytest
import torch

from captioner.decode import beam_search, greedy, length_normalizer, sample
from captioner.fast import FastDecoder, TrainingDecoder
from captioner.model import AttentionDecoder, CaptionerConfig, caption_loss
from core.position import coordinate_features
from core.vocab import SPECIALS, Vocab


def tiny(cell="lstm", attention=True, **kw):
    torch.manual_seed(0)
    config = CaptionerConfig(
        vocab_size=12,
        encoder_dim=8,
        embed_dim=6,
        attention_dim=5,
        hidden_dim=7,
        grid=[2, 3],
        cell=cell,
        attention=attention,
        max_len=9,
        **kw,
    )
    return AttentionDecoder(config).eval()


def decoding(decoder, path):
    """The decoder as the decoding functions get it: the plain model itself, or the fast path."""
    return decoder if path == "plain" else FastDecoder(decoder)


PATHS = pytest.mark.parametrize("path", ["plain", "fast"])


def captions(batch=4, length=6):
    c = torch.randint(4, 12, (batch, length))
    c[:, 0] = Vocab.start_id
    return c


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("query", ["previous", "current"])
def test_captions_grouped_by_image_equal_repeated_grids(cell, attention, query):
    """K captions per image read the image's memory with K rows: the same logits, alphas and
    parameter gradients as repeating each grid K times, one caption per grid."""
    runs = []
    for grouped in (True, False):
        decoder = tiny(cell, attention, attention_query=query, dropout=0.0)
        torch.manual_seed(1)
        features, caps = torch.randn(2, 6, 8), captions(batch=6)  # 2 images x 3 captions
        grids = features if grouped else features.repeat_interleave(3, 0)  # (2, P, D) or (6, P, D)
        logits, alphas = decoder(grids, caps)
        loss, _ = caption_loss(logits, alphas, caps[:, 1:], alpha_c=1.0)
        loss.backward()
        runs.append((logits, alphas, {n: p.grad for n, p in decoder.named_parameters()}))
    (logits, alphas, grads), (ref_logits, ref_alphas, ref_grads) = runs
    assert logits.shape == (6, 5, 12)
    assert torch.allclose(logits, ref_logits, atol=1e-6)
    if attention:
        assert torch.allclose(alphas, ref_alphas, atol=1e-6)
    for name, g in ref_grads.items():
        assert torch.allclose(grads[name], g, atol=1e-5), name
    with pytest.raises(ValueError, match="same number per image"):
        decoder(torch.randn(4, 6, 8), captions(batch=6))


@pytest.mark.parametrize("query", ["previous", "current"])
def test_first_step_by_hand(query):
    """One step written out from Xu et al.'s equations with the module's weights: h_0, c_0 from
    the mean grid; e = v . tanh(W_a a + W_h h) + b; z = sigmoid(f_beta(h)) sum alpha a; the LSTM
    gates (i, f, g, o); logits = L_o(h + L_z z)."""
    decoder = tiny(attention_query=query)
    d, features, tokens = decoder, torch.randn(2, 6, 8), torch.tensor([Vocab.start_id, 5])

    def linear(m, x):
        return x @ m.weight.t() + m.bias

    def lstm(x, h, c):
        gates = x @ d.cell.weight_ih.t() + d.cell.bias_ih + h @ d.cell.weight_hh.t() + d.cell.bias_hh
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def look(h):
        e = torch.tanh(linear(d.attention.encoder_proj, a) + linear(d.attention.hidden_proj, h)[:, None])  # (B, P, A)
        alpha = torch.softmax(e @ d.attention.score.weight[0] + d.attention.score.bias, -1)  # (B, P)
        return torch.sigmoid(linear(d.gate, h)) * torch.einsum("bp,bpd->bd", alpha, a), alpha

    with torch.no_grad():
        a = features + linear(d.position, coordinate_features(2, 3))  # (B, P, D)
        h0, c0 = torch.tanh(linear(d.init_h, a.mean(1))), torch.tanh(linear(d.init_c, a.mean(1)))
        x = d.embedding.weight[tokens]
        if query == "previous":
            z, alpha = look(h0)
            h, _ = lstm(torch.cat([x, z], 1), h0, c0)
        else:
            h, _ = lstm(torch.cat([x, torch.zeros_like(a[:, 0])], 1), h0, c0)
            z, alpha = look(h)
        expected = linear(d.fc, h + linear(d.context_out, z))
        memory = decoder.prepare(features)
        logits, state, got_alpha = decoder.step(tokens, decoder.init_state(memory), memory)
    assert torch.allclose(logits, expected, atol=1e-6)
    assert torch.allclose(got_alpha, alpha, atol=1e-6)
    assert torch.allclose(state.h, h, atol=1e-6)


@PATHS
def test_coverage_scores_by_hand_and_sums_the_alphas(path):
    """Coverage (Tu et al. 2016): e_ti = v . tanh(W_a a_i + W_h h + w_c cov_ti) + b, with cov_t
    the sum of the alphas of the steps before t; with w_c = 0 the model is the one without it."""
    decoder = tiny(attention_query="current", coverage=True)
    d, features = decoder, torch.randn(2, 6, 8)
    tokens = [torch.tensor([Vocab.start_id] * 2), torch.tensor([5, 7]), torch.tensor([6, 4])]
    with torch.no_grad():
        d.attention.coverage_proj.weight.normal_()
        run = decoding(decoder, path)
        memory = run.prepare(features)
        state, alphas = run.init_state(memory), []
        for t in tokens:
            _, state, alpha = run.step(t, state, memory)
            alphas.append(alpha)
        # the third step's scores by hand, from its query h_3 and the first two steps' alphas
        a = features + d.position(coordinate_features(2, 3))  # (B, P, D)
        h = state.h
        cov = alphas[0] + alphas[1]  # (B, P)
        w_c = d.attention.coverage_proj.weight[:, 0]  # (A,)
        u = d.attention.encoder_proj(a) + d.attention.hidden_proj(h)[:, None] + cov[..., None] * w_c
        expected = torch.softmax(torch.tanh(u) @ d.attention.score.weight[0] + d.attention.score.bias, -1)
    assert torch.allclose(alphas[2], expected, atol=1e-6)
    assert torch.allclose(state.coverage, sum(alphas), atol=1e-6)

    without = tiny(attention_query="current")
    with torch.no_grad():
        d.attention.coverage_proj.weight.zero_()
    without.load_state_dict({k: v for k, v in d.state_dict().items() if "coverage" not in k})
    a, b = beam_search(decoding(d, path), features, 3), beam_search(decoding(without, path), features, 3)
    assert [r.ids for r in a] == [r.ids for r in b]
    assert all(torch.allclose(r.alphas, s.alphas, atol=1e-6) for r, s in zip(a, b))

    # Without attention the option has nothing to act on: the model is the plain CNN + RNN one.
    blind, plain_blind = tiny(attention=False, coverage=True), tiny(attention=False)
    assert not blind.covers and blind.state_dict().keys() == plain_blind.state_dict().keys()
    assert [r.ids for r in greedy(decoding(blind, path), features)] == [
        r.ids for r in greedy(decoding(plain_blind, path), features)
    ]


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_gate_scales_the_context_by_sigmoid_f_beta(gate):
    """z_t = beta_t * sum_i alpha_ti a_i with beta_t = sigmoid(f_beta(h)): one number per
    step (Xu et al. 4.2.1, the default) or one per channel ("vector")."""
    decoder = tiny(gate=gate)
    assert decoder.gate.out_features == (1 if gate == "scalar" else 8)
    features, h = torch.randn(3, 6, 8), torch.randn(3, 7)
    memory = decoder.prepare(features)
    gated, alpha = decoder.look(h, memory)
    with torch.no_grad():
        grid = features + decoder.position(coordinate_features(2, 3))  # (3, P, D)
        beta = torch.sigmoid(h @ decoder.gate.weight.t() + decoder.gate.bias)  # (3, 1 or D)
        expected = beta * torch.einsum("bp,bpd->bd", alpha, grid)
    assert gated.shape == (3, 8)
    assert torch.allclose(gated, expected, atol=1e-6)


def test_checkpoints_without_the_gate_option_load_with_the_channel_gate(tmp_path):
    """Checkpoints written before the ``gate`` option had a per-channel gate: they still load."""
    from captioner.checkpoint import KIND, load_captioner
    from core.checkpoint import save_checkpoint

    decoder = tiny(gate="vector")
    config = {k: v for k, v in vars(decoder.config).items() if k != "gate"}
    path = tmp_path / "old.pt"
    save_checkpoint(
        path,
        {
            "kind": KIND,
            "model": decoder.state_dict(),
            "config": config,
            "vocab": Vocab([*SPECIALS, *"abcdefgh"]).to_dict(),
            "encoder": {},
        },
    )
    loaded, _, _, _ = load_captioner(path, fast=False)
    assert loaded.config.gate == "vector"
    assert torch.equal(loaded.gate.weight, decoder.gate.weight)


@PATHS
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("query", ["previous", "current"])
def test_beam_size_one_equals_greedy(cell, query, path):
    decoder = decoding(tiny(cell, attention_query=query), path)
    features = torch.randn(5, 6, 8)
    for g, b in zip(greedy(decoder, features), beam_search(decoder, features, beam_size=1)):
        assert g.ids == b.ids
        assert math.isclose(g.score, b.score, abs_tol=1e-5)
        assert torch.allclose(g.alphas, b.alphas)


@PATHS
@pytest.mark.parametrize("beam", [2, 3, 5])
@pytest.mark.parametrize("query", ["previous", "current"])
def test_batched_beam_equals_one_at_a_time(beam, query, path):
    decoder = decoding(tiny(attention_query=query), path)
    features = torch.randn(4, 6, 8)
    batched = beam_search(decoder, features, beam_size=beam)
    for i in range(4):
        single = beam_search(decoder, features[i : i + 1], beam_size=beam)[0]
        assert batched[i].ids == single.ids
        assert math.isclose(batched[i].score, single.score, abs_tol=1e-4)


@PATHS
def test_beam_score_is_the_sum_of_step_log_probabilities(path):
    """Re-score the returned caption with teacher forcing: an independent path to the same number."""
    decoder = tiny()
    features = torch.randn(3, 6, 8)
    for i, d in enumerate(beam_search(decoding(decoder, path), features, beam_size=3)):
        ids = [Vocab.start_id, *d.ids] + ([Vocab.end_id] if len(d.ids) < decoder.config.max_len else [])
        logits, alphas = decoder(features[i : i + 1], torch.tensor([ids]))
        logp = torch.log_softmax(logits[0], -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        assert math.isclose(d.score, logp, abs_tol=1e-4)
        assert torch.allclose(alphas[0, : len(d.ids)], d.alphas, atol=1e-6)


@PATHS
def test_beam_search_finds_better_or_equal_scores_than_greedy(path):
    decoder = decoding(tiny(), path)
    features = torch.randn(8, 6, 8)
    for g, b in zip(greedy(decoder, features), beam_search(decoder, features, beam_size=4)):
        assert b.score >= g.score - 1e-5


def test_length_penalty_matches_gnmt_formula():
    assert length_normalizer(torch.tensor(7), 0.0).item() == 1.0
    assert math.isclose(length_normalizer(torch.tensor(7), 1.0).item(), 2.0)
    assert math.isclose(length_normalizer(torch.tensor(1), 0.5).item(), 1.0)


@PATHS
def test_sampling_is_reproducible_and_top1_is_greedy(path):
    decoder = decoding(tiny(), path)
    features = torch.randn(3, 6, 8)
    a = sample(decoder, features, generator=torch.Generator().manual_seed(1))
    b = sample(decoder, features, generator=torch.Generator().manual_seed(1))
    assert [x.ids for x in a] == [x.ids for x in b]
    top1 = sample(decoder, features, top_k=1, generator=torch.Generator().manual_seed(2))
    assert [x.ids for x in top1] == [x.ids for x in greedy(decoder, features)]


def test_loss_by_hand():
    """Cross-entropy over real words only, plus lambda * sum_i (1 - sum_t alpha_ti)^2."""
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3.0)  # p(target 2) = 3 / 6 = 0.5
    targets = torch.tensor([[2, 1, 0]])  # third step is padding
    alphas = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]])
    loss, parts = caption_loss(logits, alphas, targets, alpha_c=2.0)
    ce = (-math.log(0.5) - math.log(0.25)) / 2
    reg = 2.0 * ((1 - 1.5) ** 2 + (1 - 0.5) ** 2)  # padding step's alphas are not counted
    assert math.isclose(parts["ce"], ce, rel_tol=1e-6)
    assert math.isclose(parts["reg"], reg, rel_tol=1e-6)
    assert math.isclose(loss.item(), ce + reg, rel_tol=1e-6)


def test_coordinate_features_rows_first():
    c = coordinate_features(2, 3, bands=1)  # (P, 4): sin x, cos x, sin y, cos y at frequency pi
    assert c.shape == (6, 4)
    x = (torch.tensor([0, 1, 2, 0, 1, 2]) + 0.5) / 3
    y = (torch.tensor([0, 0, 0, 1, 1, 1]) + 0.5) / 2
    assert torch.allclose(c[:, 0], torch.sin(math.pi * x), atol=1e-6)
    assert torch.allclose(c[:, 1], torch.cos(math.pi * x), atol=1e-6)
    assert torch.allclose(c[:, 2], torch.sin(math.pi * y), atol=1e-6)
    assert torch.allclose(c[:, 3], torch.cos(math.pi * y), atol=1e-6)


@PATHS
def test_overfits_a_batch(path):
    """A tiny decoder learns four fixed captions for four grids exactly."""
    torch.manual_seed(0)
    config = CaptionerConfig(
        vocab_size=12,
        encoder_dim=8,
        embed_dim=16,
        attention_dim=16,
        hidden_dim=32,
        grid=[2, 3],
        dropout=0.0,
        alpha_c=0.0,
        max_len=8,
    )
    decoder = (AttentionDecoder if path == "plain" else TrainingDecoder)(config)
    features = torch.randn(4, 6, 8)
    caps = torch.tensor([[1, 4, 5, 6, 2, 0], [1, 7, 8, 2, 0, 0], [1, 9, 10, 11, 4, 2], [1, 5, 5, 2, 0, 0]])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(200):
        logits, alphas = decoder(features, caps)
        loss, _ = caption_loss(logits, alphas, caps[:, 1:], config.alpha_c)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    got = [d.ids for d in beam_search(decoding(decoder, path), features, beam_size=3)]
    assert got == [[4, 5, 6], [7, 8], [9, 10, 11, 4], [5, 5]]


def test_caption_groups_hold_k_of_each_images_own_captions():
    """Each item is one grid with exactly K of its image's captions: a random K of more, every
    one of fewer plus repeats; collated image-major, padded with 0; no cached grid, no item."""
    import numpy as np

    from captioner.data import CaptionGroups, CaptionPairs, collate_captions

    words = [f"w{i}" for i in range(9)]
    records = [
        {"image": "a", "tokens": [[w] for w in words[:7]]},  # 7 references
        {"image": "b", "tokens": [words[7:9], ["w0"]]},  # 2 references
        {"image": "missing", "tokens": [["w1"]]},
    ]
    cache = {"a": np.zeros((6, 8), np.float16), "b": np.ones((6, 8), np.float16)}
    vocab = Vocab.build([w for r in records for w in r["tokens"]])
    groups = CaptionGroups(records, cache, vocab, max_len=9, per_image=5)
    assert len(groups) == 2
    torch.manual_seed(0)
    for _ in range(5):
        features, caps = collate_captions([groups[0], groups[1]])
        assert features.shape == (2, 6, 8) and features[1].eq(1).all()
        assert caps.shape == (10, 4) and (caps[:, 0] == Vocab.start_id).all()
        texts = [tuple(vocab.decode(c.tolist())) for c in caps]
        assert len(set(texts[:5])) == 5 and set(texts[:5]) <= {(w,) for w in words[:7]}
        assert set(texts[5:]) == {("w7", "w8"), ("w0",)}
        assert caps[5:][torch.tensor([t == ("w0",) for t in texts[5:]])][:, 3].eq(0).all()  # padded
    assert len(CaptionPairs(records, cache, vocab, max_len=9)) == 9
