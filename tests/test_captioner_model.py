"""The decoder and its decoding: parity between code paths, hand-computed values, overfitting."""
import math

import pytest
import torch

from captioner.decode import beam_search, greedy, length_normalizer, sample
from captioner.model import AttentionDecoder, CaptionerConfig, caption_loss, coordinate_features
from captioner.vocab import SPECIALS, Vocab


def tiny(cell="lstm", attention=True, **kw):
    torch.manual_seed(0)
    config = CaptionerConfig(vocab_size=12, encoder_dim=8, embed_dim=6, attention_dim=5, hidden_dim=7,
                             grid=[2, 3], cell=cell, attention=attention, max_len=9, **kw)
    return AttentionDecoder(config).eval()


def captions(batch=4, length=6):
    c = torch.randint(4, 12, (batch, length))
    c[:, 0] = Vocab.start_id
    return c


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("query", ["previous", "current"])
def test_forward_equals_step_loop(cell, attention, query):
    decoder = tiny(cell, attention, attention_query=query)
    features, caps = torch.randn(4, 6, 8), captions()
    logits, alphas = decoder(features, caps)
    assert logits.shape == (4, 5, 12)
    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    stepped, stepped_alphas = [], []
    for t in range(5):
        out, state, alpha = decoder.step(caps[:, t], state, memory)
        stepped.append(out)
        stepped_alphas.append(alpha)
    assert torch.allclose(torch.stack(stepped, 1), logits, atol=1e-6)
    if attention:
        assert alphas.shape == (4, 5, 6)
        assert torch.allclose(torch.stack(stepped_alphas, 1), alphas)
        assert torch.allclose(alphas.sum(-1), torch.ones(4, 5), atol=1e-6)
    else:
        assert alphas is None


@pytest.mark.parametrize("query", ["previous", "current"])
def test_decoding_memory_equals_the_training_memory(query):
    """Without gradients the position table is added to the grid once; with them it is kept
    apart and applied by linearity. Both give the same steps."""
    decoder = tiny(attention_query=query)
    features, caps = torch.randn(3, 6, 8), captions(batch=3)
    runs = []
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            memory = decoder.prepare(features)
            state = decoder.init_state(memory)
            steps = []
            for t in range(5):
                logits, state, alpha = decoder.step(caps[:, t], state, memory)
                steps.append(torch.cat([logits, alpha], 1).detach())
            runs.append((sorted(memory), torch.stack(steps, 1)))
    assert "position" in runs[0][0] and "position" not in runs[1][0]
    assert torch.allclose(runs[0][1], runs[1][1], atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("query", ["previous", "current"])
def test_deferred_weight_gradients_equal_autograd(cell, query):
    """Teacher forcing on the CPU defers the per-step weight gradients to one product per
    group; every parameter's gradient equals plain autograd's, also on a second backward."""
    grads = []
    for deferred in (True, False):
        decoder = tiny(cell, attention_query=query, dropout=0.0)
        decoder.defer_weight_grads = deferred
        features, caps = torch.randn(3, 6, 8), captions(batch=3)
        logits, alphas = decoder(features, caps)
        loss, _ = caption_loss(logits, alphas, caps[:, 1:], alpha_c=1.0)
        loss.backward(retain_graph=True)
        once = {n: p.grad.clone() for n, p in decoder.named_parameters()}
        loss.backward()   # the banks are emptied after each pass: gradients add up, not mix
        twice = {n: p.grad.clone() for n, p in decoder.named_parameters()}
        grads.append((once, twice))
    (once, twice), (ref_once, ref_twice) = grads
    assert once.keys() == ref_once.keys()
    for name in ref_once:
        assert torch.allclose(once[name], ref_once[name], atol=1e-6), name
        assert torch.allclose(twice[name], 2 * ref_once[name], atol=1e-6), name
    assert ref_once["cell.weight_ih"].abs().sum() > 0


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
        features, caps = torch.randn(2, 6, 8), captions(batch=6)            # 2 images x 3 captions
        grids = features if grouped else features.repeat_interleave(3, 0)    # (2, P, D) or (6, P, D)
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


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("chunk", [None, 2 * 3 * 6 * 5])   # default, or slices of 2 of the 5 images
def test_attention_scores_are_the_tanh_form(grad, chunk, monkeypatch):
    """e_ti = v . tanh(W_a a_i + W_h h) + b, computed by hand, equals the sigmoid form used,
    with gradients and without (scores in cache-sized slices of images, the last one short)."""
    from captioner.model import SoftAttention

    if chunk:
        monkeypatch.setattr(SoftAttention, "CHUNK", chunk)
    torch.manual_seed(1)
    att = SoftAttention(encoder_dim=8, hidden_dim=7, attention_dim=5)
    features, h = torch.randn(5, 6, 8), torch.randn(5 * 3, 7)      # 3 query rows per image
    with torch.set_grad_enabled(grad):
        context, alpha = att(features, att.project(features), att.hidden_proj(h))
    with torch.no_grad():
        u = att.encoder_proj(features).repeat_interleave(3, 0) + att.hidden_proj(h).unsqueeze(1)  # (15, P, A)
        e = torch.tanh(u) @ att.score.weight[0] + att.score.bias                                 # (15, P)
        expected = torch.einsum("np,npd->nd", torch.softmax(e, -1), features.repeat_interleave(3, 0))
    assert torch.allclose(alpha, torch.softmax(e, -1), atol=1e-6)
    assert torch.allclose(context, expected, atol=1e-6)


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("grad", [True, False])
def test_gate_scales_the_context_by_sigmoid_f_beta(gate, grad):
    """z_t = beta_t * sum_i alpha_ti a_i with beta_t = sigmoid(f_beta(h)): one number per
    step (Xu et al. 4.2.1, the default) or one per channel ("vector")."""
    decoder = tiny(gate=gate)
    assert decoder.gate.out_features == (1 if gate == "scalar" else 8)
    features, h = torch.randn(3, 6, 8), torch.randn(3, 7)
    with torch.set_grad_enabled(grad):
        memory = decoder.prepare(features)
        gated, alpha = decoder._look(h, memory)
    with torch.no_grad():
        grid = features + decoder.position(coordinate_features(2, 3))                  # (3, P, D)
        beta = torch.sigmoid(h @ decoder.gate.weight.t() + decoder.gate.bias)          # (3, 1 or D)
        expected = beta * torch.einsum("bp,bpd->bd", alpha, grid)
    assert gated.shape == (3, 8)
    assert torch.allclose(gated, expected, atol=1e-6)


def test_checkpoints_without_the_gate_option_load_with_the_channel_gate(tmp_path):
    """Checkpoints written before the ``gate`` option had a per-channel gate: they still load."""
    from captioner.pipeline import KIND, load_captioner
    from captioner.training import save_checkpoint

    decoder = tiny(gate="vector")
    config = {k: v for k, v in vars(decoder.config).items() if k != "gate"}
    path = tmp_path / "old.pt"
    save_checkpoint(path, {"kind": KIND, "model": decoder.state_dict(), "config": config,
                           "vocab": Vocab([*SPECIALS, *"abcdefgh"]).to_dict(), "encoder": {}})
    loaded, _, _, _ = load_captioner(path)
    assert loaded.config.gate == "vector"
    assert torch.equal(loaded.gate.weight, decoder.gate.weight)


@pytest.mark.parametrize("query", ["previous", "current"])
@pytest.mark.parametrize("deep_output", [True, False])
def test_context_tables_give_the_steps_and_beams_of_the_plain_path(query, deep_output, monkeypatch):
    """Decoding a few images with a scalar gate reads the context's linear maps from per-image
    tables (w (A W^T) for W z); the steps, alphas and beams equal the plain path's."""
    torch.manual_seed(0)
    config = CaptionerConfig(vocab_size=12, encoder_dim=16, embed_dim=6, attention_dim=5, hidden_dim=7,
                             grid=[2, 3], attention_query=query, deep_output=deep_output, max_len=9)
    decoder = AttentionDecoder(config).eval()
    features, caps = torch.randn(2, 6, 16), captions(batch=2)   # 2 images x 6 cells <= 16 channels
    runs = []
    for tables in (True, False):
        if not tables:
            monkeypatch.setattr(AttentionDecoder, "_tables_pay", lambda self, features: False)
        with torch.no_grad():
            memory = decoder.prepare(features)
            assert ("tables" in memory) == tables
            state, steps = decoder.init_state(memory), []
            for t in range(5):
                logits, state, alpha = decoder.step(caps[:, t], state, memory)
                steps.append(torch.cat([logits, alpha], 1))
            beams = beam_search(decoder, features, beam_size=3)
        runs.append((torch.stack(steps, 1), [(d.ids, d.alphas) for d in beams]))
    (steps, beams), (plain_steps, plain_beams) = runs
    assert torch.allclose(steps, plain_steps, atol=1e-5)
    for (ids, alphas), (plain_ids, plain_alphas) in zip(beams, plain_beams):
        assert ids == plain_ids
        assert torch.allclose(alphas, plain_alphas, atol=1e-5)


def test_context_tables_only_where_they_pay():
    """Tables for B x P <= D and a scalar gate, without gradients; never for a batch beyond
    that, a channel gate, or a step taken with gradients."""
    def memory_of(batch, grad=False, **kw):
        torch.manual_seed(0)
        config = CaptionerConfig(vocab_size=12, encoder_dim=16, embed_dim=6, attention_dim=5,
                                 hidden_dim=7, grid=[2, 3], **kw)
        with torch.set_grad_enabled(grad):
            return AttentionDecoder(config).eval().prepare(torch.randn(batch, 6, 16))
    assert "tables" in memory_of(2)
    assert "tables" not in memory_of(3)                   # 18 cells > 16 channels
    assert "tables" not in memory_of(2, gate="vector")
    assert "tables" not in memory_of(2, grad=True)
    assert "tables" not in memory_of(2, cell="gru")


def test_decoding_weights_follow_every_weight_change():
    """Decoding on the CPU reads cached concatenations of the step weights; after an in-place
    change (an optimizer step, a loaded state) they are rebuilt, so steps match the modules."""
    decoder = tiny()
    features, tokens = torch.randn(2, 6, 8), torch.tensor([Vocab.start_id, 5])
    for _ in range(2):
        with torch.no_grad():
            memory = decoder.prepare(features)
            fast, _, _ = decoder.step(tokens, decoder.init_state(memory), memory)
        memory = decoder.prepare(features)
        slow, _, _ = decoder.step(tokens, decoder.init_state(memory), memory)   # with gradients: the modules
        assert torch.allclose(fast, slow, atol=1e-6)
        with torch.no_grad():
            for p in decoder.parameters():
                p.add_(0.1 * torch.randn_like(p))


def test_decoding_weights_follow_a_fused_adam_step_after_eval():
    """Adam(fused=True) updates the weights without bumping their version; the training loop's
    eval() before validating still makes decoding read the updated weights."""
    from captioner.training import make_optimizer

    decoder = tiny(dropout=0.0)
    optimizer = make_optimizer(decoder.parameters(), lr=0.1)
    features, caps = torch.randn(2, 6, 8), captions(batch=2)
    tokens = caps[:, 0]
    for _ in range(2):
        decoder.eval()
        with torch.no_grad():
            memory = decoder.prepare(features)
            fast, _, _ = decoder.step(tokens, decoder.init_state(memory), memory)
        memory = decoder.prepare(features)
        slow, _, _ = decoder.step(tokens, decoder.init_state(memory), memory)   # the modules
        assert torch.allclose(fast, slow, atol=1e-6)
        decoder.train()
        logits, alphas = decoder(features, caps)
        caption_loss(logits, alphas, caps[:, 1:], alpha_c=1.0)[0].backward()
        optimizer.step()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_int8_decoder_stays_close_to_float32(cell):
    """The int8 copy quantizes only the per-step layers; its word log-probabilities stay
    within a small distance of the float32 model's, and beam 1 still equals greedy."""
    from captioner.model import STEP_LAYERS, quantized_int8

    torch.manual_seed(0)
    config = CaptionerConfig(vocab_size=300, encoder_dim=64, embed_dim=32, attention_dim=32, hidden_dim=48,
                             grid=[2, 3], cell=cell, max_len=9)
    decoder = AttentionDecoder(config).eval()
    small = quantized_int8(decoder)
    kinds = {name: type(m).__module__ for name, m in small.named_modules()}
    assert all(kinds[name].startswith("torch.ao.nn.quantized.dynamic") for name in STEP_LAYERS), kinds
    assert kinds["attention.encoder_proj"] == "torch.nn.modules.linear"   # once per image: float
    assert type(decoder.cell).__module__ == "torch.nn.modules.rnn"          # the original is untouched
    features = torch.randn(4, 6, 64)
    caps = torch.randint(4, 300, (4, 6))
    caps[:, 0] = Vocab.start_id
    with torch.no_grad():
        exact = torch.log_softmax(decoder(features, caps)[0], -1)
        close = torch.log_softmax(small(features, caps)[0], -1)
    error = (close - exact).abs().max().item()
    spread = (exact.max(-1).values - exact.min(-1).values).min().item()  # about 1 nat at random init
    assert 0 < error < 0.03 * spread, (error, spread)
    for g, b in zip(greedy(small, features), beam_search(small, features, beam_size=1)):
        assert g.ids == b.ids


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("query", ["previous", "current"])
def test_beam_size_one_equals_greedy(cell, query):
    decoder = tiny(cell, attention_query=query)
    features = torch.randn(5, 6, 8)
    for g, b in zip(greedy(decoder, features), beam_search(decoder, features, beam_size=1)):
        assert g.ids == b.ids
        assert math.isclose(g.score, b.score, abs_tol=1e-5)
        assert torch.allclose(g.alphas, b.alphas)


@pytest.mark.parametrize("beam", [2, 3, 5])
@pytest.mark.parametrize("query", ["previous", "current"])
def test_batched_beam_equals_one_at_a_time(beam, query):
    decoder = tiny(attention_query=query)
    features = torch.randn(4, 6, 8)
    batched = beam_search(decoder, features, beam_size=beam)
    for i in range(4):
        single = beam_search(decoder, features[i:i + 1], beam_size=beam)[0]
        assert batched[i].ids == single.ids
        assert math.isclose(batched[i].score, single.score, abs_tol=1e-4)


def test_beam_score_is_the_sum_of_step_log_probabilities():
    """Re-score the returned caption with teacher forcing: an independent path to the same number."""
    decoder = tiny()
    features = torch.randn(3, 6, 8)
    for i, d in enumerate(beam_search(decoder, features, beam_size=3)):
        ids = [Vocab.start_id, *d.ids] + ([Vocab.end_id] if len(d.ids) < decoder.config.max_len else [])
        logits, alphas = decoder(features[i:i + 1], torch.tensor([ids]))
        logp = torch.log_softmax(logits[0], -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        assert math.isclose(d.score, logp, abs_tol=1e-4)
        assert torch.allclose(alphas[0, : len(d.ids)], d.alphas, atol=1e-6)


def test_beam_search_finds_better_or_equal_scores_than_greedy():
    decoder = tiny()
    features = torch.randn(8, 6, 8)
    for g, b in zip(greedy(decoder, features), beam_search(decoder, features, beam_size=4)):
        assert b.score >= g.score - 1e-5


def test_length_penalty_matches_gnmt_formula():
    assert length_normalizer(torch.tensor(7), 0.0).item() == 1.0
    assert math.isclose(length_normalizer(torch.tensor(7), 1.0).item(), 2.0)
    assert math.isclose(length_normalizer(torch.tensor(1), 0.5).item(), 1.0)


def test_sampling_is_reproducible_and_top1_is_greedy():
    decoder = tiny()
    features = torch.randn(3, 6, 8)
    a = sample(decoder, features, generator=torch.Generator().manual_seed(1))
    b = sample(decoder, features, generator=torch.Generator().manual_seed(1))
    assert [x.ids for x in a] == [x.ids for x in b]
    top1 = sample(decoder, features, top_k=1, generator=torch.Generator().manual_seed(2))
    assert [x.ids for x in top1] == [x.ids for x in greedy(decoder, features)]


def test_loss_by_hand():
    """Cross-entropy over real words only, plus lambda * sum_i (1 - sum_t alpha_ti)^2."""
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3.0)          # p(target 2) = 3 / 6 = 0.5
    targets = torch.tensor([[2, 1, 0]])      # third step is padding
    alphas = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]])
    loss, parts = caption_loss(logits, alphas, targets, alpha_c=2.0)
    ce = (-math.log(0.5) - math.log(0.25)) / 2
    reg = 2.0 * ((1 - 1.5) ** 2 + (1 - 0.5) ** 2)  # padding step's alphas are not counted
    assert math.isclose(parts["ce"], ce, rel_tol=1e-6)
    assert math.isclose(parts["reg"], reg, rel_tol=1e-6)
    assert math.isclose(loss.item(), ce + reg, rel_tol=1e-6)


def test_coordinate_features_rows_first():
    c = coordinate_features(2, 3, bands=1)   # (P, 4): sin x, cos x, sin y, cos y at frequency pi
    assert c.shape == (6, 4)
    x = (torch.tensor([0, 1, 2, 0, 1, 2]) + 0.5) / 3
    y = (torch.tensor([0, 0, 0, 1, 1, 1]) + 0.5) / 2
    assert torch.allclose(c[:, 0], torch.sin(math.pi * x), atol=1e-6)
    assert torch.allclose(c[:, 1], torch.cos(math.pi * x), atol=1e-6)
    assert torch.allclose(c[:, 2], torch.sin(math.pi * y), atol=1e-6)
    assert torch.allclose(c[:, 3], torch.cos(math.pi * y), atol=1e-6)


def test_overfits_a_batch():
    """A tiny decoder learns four fixed captions for four grids exactly."""
    torch.manual_seed(0)
    config = CaptionerConfig(vocab_size=12, encoder_dim=8, embed_dim=16, attention_dim=16, hidden_dim=32,
                             grid=[2, 3], dropout=0.0, alpha_c=0.0, max_len=8)
    decoder = AttentionDecoder(config)
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
    got = [d.ids for d in beam_search(decoder, features, beam_size=3)]
    assert got == [[4, 5, 6], [7, 8], [9, 10, 11, 4], [5, 5]]


def test_caption_groups_hold_k_of_each_images_own_captions():
    """Each item is one grid with exactly K of its image's captions: a random K of more, every
    one of fewer plus repeats; collated image-major, padded with 0; no cached grid, no item."""
    import numpy as np

    from captioner.data import CaptionGroups, CaptionPairs, collate_captions

    words = [f"w{i}" for i in range(9)]
    records = [{"image": "a", "tokens": [[w] for w in words[:7]]},          # 7 references
               {"image": "b", "tokens": [words[7:9], ["w0"]]},               # 2 references
               {"image": "missing", "tokens": [["w1"]]}]
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
