"""The fast path (captioner/fast.py) against the plain model (captioner/model.py), the reference:
teacher forcing and every gradient, each decoding step, greedy, sampling with a seed, beam
search alone and batched, with and without context tables and score slices, and int8 within
its tolerance."""

import pytest
import torch

from captioner import fast
from captioner.decode import beam_search, greedy, sample
from captioner.fast import FastDecoder, TrainingDecoder, quantized_int8
from captioner.model import AttentionDecoder, CaptionerConfig, caption_loss
from core.training import make_optimizer
from core.vocab import Vocab

CELLS = pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
QUERIES = pytest.mark.parametrize("query", ["previous", "current"])


def pair(encoder_dim=8, **kw):
    """A plain decoder and a TrainingDecoder with the same weights."""
    torch.manual_seed(0)
    config = CaptionerConfig(
        vocab_size=12, encoder_dim=encoder_dim, embed_dim=6, attention_dim=5, hidden_dim=7, grid=[2, 3], max_len=9, **kw
    )
    plain = AttentionDecoder(config)
    if config.coverage:  # w_c starts at zero: give it weights, or coverage would change nothing
        torch.nn.init.normal_(plain.attention.coverage_proj.weight)
    training = TrainingDecoder(config)
    training.load_state_dict(plain.state_dict())
    return plain, training


def captions(batch, length=6):
    c = torch.randint(4, 12, (batch, length))
    c[:, 0] = Vocab.start_id
    c[0, 4:] = 0  # a padded caption
    return c


def test_the_training_decoder_is_the_plain_model_with_another_forward():
    plain, training = pair()
    assert isinstance(training, AttentionDecoder)
    assert plain.state_dict().keys() == training.state_dict().keys()


@CELLS
@QUERIES
@pytest.mark.parametrize("attention", ["soft", "coverage", None])
@pytest.mark.parametrize("per_image", [1, 3])
def test_teacher_forcing_and_gradients_equal_the_plain_model(cell, query, attention, per_image):
    """Logits, alphas and every parameter's gradient; a second backward adds up (the deferred
    weight gradients' banks are emptied after each pass)."""
    runs = []
    options = dict(attention=attention is not None, coverage=attention == "coverage")
    for model in pair(cell=cell, attention_query=query, dropout=0.0, **options):
        torch.manual_seed(1)
        features, caps = torch.randn(2, 6, 8), captions(2 * per_image)
        logits, alphas = model(features, caps)
        loss, _ = caption_loss(logits, alphas, caps[:, 1:], alpha_c=1.0)
        loss.backward(retain_graph=True)
        once = {n: p.grad.clone() for n, p in model.named_parameters()}
        loss.backward()
        twice = {n: p.grad.clone() for n, p in model.named_parameters()}
        runs.append((logits, alphas, once, twice))
    (ref_logits, ref_alphas, ref_grads, _), (logits, alphas, once, twice) = runs
    assert logits.shape == (2 * per_image, 5, 12)
    assert torch.allclose(logits, ref_logits, atol=1e-6)
    if attention:
        assert torch.allclose(alphas, ref_alphas, atol=1e-6)
    else:
        assert alphas is None and ref_alphas is None
    assert once.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        assert torch.allclose(once[name], g, atol=1e-5), name
        assert torch.allclose(twice[name], 2 * g, atol=1e-5), name
    assert ref_grads["cell.weight_ih"].abs().sum() > 0
    if attention == "coverage":
        assert ref_grads["attention.coverage_proj.weight"].abs().sum() > 0


def test_teacher_forcing_checks_captions_per_image():
    _, training = pair()
    with pytest.raises(ValueError, match="same number per image"):
        training(torch.randn(4, 6, 8), captions(6))


def steps(decoder, features, caps):
    """Teacher-forced steps through prepare / init_state / step: logits and alphas (B, T, V + P)."""
    with torch.no_grad():
        memory = decoder.prepare(features)
        state, out = decoder.init_state(memory), []
        for t in range(caps.shape[1] - 1):
            logits, state, alpha = decoder.step(caps[:, t], state, memory)
            out.append(logits if alpha is None else torch.cat([logits, alpha], 1))
    return torch.stack(out, 1), state


@CELLS
@QUERIES
@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("images", [2, 3])  # 2 x 6 cells <= 16 channels: context tables; 3: none
@pytest.mark.parametrize("coverage", [False, True])
def test_decoding_steps_equal_the_plain_model(cell, query, gate, deep_output, images, coverage):
    options = dict(cell=cell, attention_query=query, gate=gate, deep_output=deep_output, coverage=coverage)
    plain, _ = pair(encoder_dim=16, **options)
    plain.eval()
    decoder = FastDecoder(plain)
    features, caps = torch.randn(images, 6, 16), captions(images)
    tables = images == 2 and gate == "scalar" and cell == "lstm"
    assert (decoder.prepare(features).tables is not None) == tables
    got, state = steps(decoder, features, caps)
    expected, ref_state = steps(plain, features, caps)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(state.h, ref_state.h, atol=1e-5)


@pytest.mark.parametrize("attention", [True, False])
def test_decoding_without_attention_or_position_equals_the_plain_model(attention):
    plain, _ = pair(attention=attention, position_encoding=False)
    plain.eval()
    features, caps = torch.randn(3, 6, 8), captions(3)
    assert torch.allclose(steps(FastDecoder(plain), features, caps)[0], steps(plain, features, caps)[0], atol=1e-5)


@QUERIES
@pytest.mark.parametrize("images", [2, 5])
@pytest.mark.parametrize("coverage", [False, True])
def test_greedy_sampling_and_beam_search_equal_the_plain_model(query, images, coverage):
    """Greedy, sampling with a seed, beam search one image at a time and batched: the same words,
    scores and maps (2 images: with context tables); with coverage, beam search carries each
    beam's own attention so far."""
    plain, _ = pair(encoder_dim=16, attention_query=query, coverage=coverage)
    plain.eval()
    decoder = FastDecoder(plain)
    features = torch.randn(images, 6, 16)
    runs = []
    for d in (plain, decoder):
        generator = torch.Generator().manual_seed(3)
        runs.append(
            [
                greedy(d, features),
                sample(d, features, temperature=0.8, generator=generator),
                beam_search(d, features, beam_size=3),
                beam_search(d, features[:1], beam_size=4),
            ]
        )
    for reference, got in zip(*runs):
        for r, g in zip(reference, got):
            assert g.ids == r.ids
            assert abs(g.score - r.score) < 1e-4
            assert torch.allclose(g.alphas, r.alphas, atol=1e-5)


@pytest.mark.parametrize("coverage", [False, True])
def test_scores_in_slices_equal_the_plain_model(monkeypatch, coverage):
    """Decoding computes the attention scores a few images at a time; slices of 2 of 5 images
    (the last one short) give the plain model's alphas."""
    plain, _ = pair(coverage=coverage)
    plain.eval()
    monkeypatch.setattr(fast, "CHUNK", 2 * 3 * 6 * 5)  # 2 images x 3 beams x 6 cells x 5 attention
    features = torch.randn(5, 6, 8)
    for r, g in zip(beam_search(plain, features, beam_size=3), beam_search(FastDecoder(plain), features, 3)):
        assert g.ids == r.ids
        assert torch.allclose(g.alphas, r.alphas, atol=1e-5)


def test_a_fast_decoder_is_a_snapshot_of_the_weights():
    """Training builds a FastDecoder for each validation: one built after a fused Adam step
    (which changes weights without bumping their version) decodes with the new weights."""
    plain, training = pair(dropout=0.0)
    optimizer = make_optimizer(training.parameters(), lr=0.1)
    features, caps = torch.randn(2, 6, 8), captions(2)
    before = FastDecoder(training)
    logits, alphas = training(features, caps)
    caption_loss(logits, alphas, caps[:, 1:], alpha_c=1.0)[0].backward()
    optimizer.step()
    training.eval()
    expected = steps(training, features, caps)[0]
    assert torch.allclose(steps(FastDecoder(training), features, caps)[0], expected, atol=1e-5)
    assert not torch.allclose(steps(before, features, caps)[0], expected, atol=1e-3)


@CELLS
def test_int8_decoder_stays_close_to_float32(cell):
    """int8 quantizes only the per-step layers, on a copy; its word log-probabilities stay within
    a small distance of the plain float32 model's, and beam 1 still equals greedy."""
    torch.manual_seed(0)
    config = CaptionerConfig(
        vocab_size=300, encoder_dim=64, embed_dim=32, attention_dim=32, hidden_dim=48, grid=[2, 3], cell=cell, max_len=9
    )
    plain = AttentionDecoder(config).eval()
    small = FastDecoder(plain, int8=True)
    kinds = {name: type(m).__module__ for name, m in small.decoder.named_modules()}
    assert all(kinds[name].startswith("torch.ao.nn.quantized.dynamic") for name in fast.STEP_LAYERS), kinds
    assert kinds["attention.encoder_proj"] == "torch.nn.modules.linear"  # once per image: float
    assert type(plain.cell).__module__ == "torch.nn.modules.rnn"  # the original is untouched
    assert small.decoder is not plain and type(quantized_int8(plain).fc).__module__ == kinds["fc"]
    features = torch.randn(4, 6, 64)
    caps = torch.randint(4, 300, (4, 6))
    caps[:, 0] = Vocab.start_id
    exact = torch.log_softmax(steps(plain, features, caps)[0][..., :300], -1)
    close = torch.log_softmax(steps(small, features, caps)[0][..., :300], -1)
    error = (close - exact).abs().max().item()
    spread = (exact.max(-1).values - exact.min(-1).values).min().item()  # about 1 nat at random init
    assert 0 < error < 0.03 * spread, (error, spread)
    for g, b in zip(greedy(small, features), beam_search(small, features, beam_size=1)):
        assert g.ids == b.ids
