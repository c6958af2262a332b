"""Stochastic hard attention (Xu et al. 2015, section 4.1): the drawn context is the drawn
cell, the fast teacher forcing draws and computes what the plain model does, the loss is
eq. 12 computed by hand, decoding reads the expected context, and a run trains end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from captioner.checkpoint import load_captioner
from captioner.decode import beam_search, greedy
from captioner.fast import FastDecoder, TrainingDecoder
from captioner.model import AttentionDecoder, CaptionerConfig, HardDraws, hard_attention_loss
from core.checkpoint import load_checkpoint
from tests.cli_helpers import run_cli


def _model(cls=AttentionDecoder, seed=0, **options):
    torch.manual_seed(seed)
    config = CaptionerConfig(
        vocab_size=9, encoder_dim=8, embed_dim=4, attention_dim=5, hidden_dim=6, grid=[2, 3], dropout=0.0,
        attention_mode="hard", **options,
    )  # fmt: skip
    return cls(config)


def test_draws_are_one_hot_on_drawn_rows_and_alpha_on_expected_rows():
    torch.manual_seed(0)
    draws = HardDraws(400, torch.device("cpu"))
    alpha = torch.softmax(torch.randn(400, 6), 1)
    weights = draws(alpha)
    location = draws.stacked()[:, 0]
    drawn = ~draws.expected
    assert 120 < int(drawn.sum()) < 280  # about half the captions draw
    assert torch.equal(weights[drawn], torch.nn.functional.one_hot(location[drawn], 6).float())
    assert torch.equal(weights[~drawn], alpha[~drawn])
    # The draws follow alpha: a peaked alpha is drawn at its peak.
    peaked = torch.full((400, 6), 1e-6).index_fill_(1, torch.tensor([4]), 1.0)
    draws(peaked / peaked.sum(1, keepdim=True))
    assert (draws.stacked()[:, 1] == 4).float().mean() > 0.99


@pytest.mark.parametrize("query", ["previous", "current"])
def test_fast_teacher_forcing_draws_and_computes_what_the_plain_model_does(query):
    plain = _model(attention_query=query).train()
    fast = _model(TrainingDecoder, attention_query=query).train()
    fast.load_state_dict(plain.state_dict())
    features = torch.randn(2, 6, 8)
    captions = torch.tensor([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0], [1, 5, 5, 8, 2], [1, 4, 2, 0, 0]])
    results = []
    for model in (plain, fast):
        torch.manual_seed(11)
        logits, alphas = model(features, captions)
        loss, _ = hard_attention_loss(model, logits, alphas, captions[:, 1:])
        loss.backward()
        results.append((logits.detach(), alphas.detach(), model.draws.stacked(), model.draws.expected))
    (pl, pa, ps, pe), (fl, fa, fs, fe) = results
    assert torch.equal(ps, fs) and torch.equal(pe, fe)
    assert fl == pytest.approx(pl, abs=1e-5) and fa == pytest.approx(pa, abs=1e-5)
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        assert a.grad == pytest.approx(b.grad, abs=1e-5), name


def test_a_drawn_row_reads_the_drawn_cell_alone():
    """Without the gate's scaling or position, a drawn row's context is a_{s_t} exactly."""
    model = _model(position_encoding=False).train()
    features = torch.randn(1, 6, 8)
    memory = model.prepare(features)
    model.draws = HardDraws(1, torch.device("cpu"))
    model.draws.expected[:] = False
    h = torch.randn(1, 6)
    context, alpha = model.attention(memory.features, memory.projected, h, model.draws)
    cell = model.draws.stacked()[0, 0]
    assert torch.equal(context[0], features[0, cell])


def test_loss_is_xu_equation_12_by_hand():
    model = _model().train()
    features = torch.randn(2, 6, 8)
    captions = torch.tensor([[1, 4, 5, 2], [1, 6, 2, 0]])
    torch.manual_seed(3)
    logits, alphas = model(features, captions)
    model.hard_baseline.fill_(-1.5)
    c = model.config
    loss, parts = hard_attention_loss(model, logits, alphas, captions[:, 1:])
    targets = captions[:, 1:].tolist()
    s, expected = model.draws.stacked().tolist(), model.draws.expected.tolist()
    total = 0.0
    for n in range(2):
        steps = [t for t in range(3) if targets[n][t] != 0]
        logp = sum(math.log(torch.softmax(logits[n, t], 0)[targets[n][t]].item()) for t in steps) / len(steps)
        location = sum(math.log(alphas[n, t, s[n][t]].item()) for t in steps) / len(steps)
        entropy = sum(-(alphas[n, t] * alphas[n, t].log()).sum().item() for t in steps) / len(steps)
        reinforce = 0.0 if expected[n] else -(logp - (-1.5)) * location
        total += (-logp + c.hard_reinforce * reinforce - c.hard_entropy * entropy) / 2
    assert loss.item() == pytest.approx(total, abs=1e-5)
    assert set(parts) == {"loss", "ce", "reinforce", "entropy"}
    # b moved a tenth of the way to this batch's mean log p(y | s)
    assert model.hard_baseline.item() == pytest.approx(0.9 * -1.5 + 0.1 * -parts["ce"], abs=1e-5)


def test_decoding_a_hard_model_reads_the_expected_context():
    hard = _model().eval()
    soft = AttentionDecoder(CaptionerConfig(**{**hard.config.__dict__, "attention_mode": "soft"})).eval()
    soft.load_state_dict({k: v for k, v in hard.state_dict().items() if k != "hard_baseline"})
    features = torch.randn(3, 6, 8)
    for decoder in (hard, FastDecoder(hard)):
        for ours, theirs in zip(greedy(decoder, features, max_len=8), greedy(soft, features, max_len=8)):
            assert ours.ids == theirs.ids and torch.allclose(ours.alphas, theirs.alphas, atol=1e-6)
        for ours, theirs in zip(
            beam_search(decoder, features, 3, max_len=8), beam_search(soft, features, 3, max_len=8)
        ):
            assert ours.ids == theirs.ids


def test_train_hard_attention_end_to_end(scenes_dir, tmp_path, capsys, one_thread):
    run = tmp_path / "hard"
    code, out, err = run_cli(
        capsys, "train", "captioner", "--data", scenes_dir, "--out", run, "--epochs", "2", "--batch-size", "4",
        "--lr", "1e-2", "--warmup", "1", "--set", "attention=hard", "hidden_dim=32", "embed_dim=16", "attention_dim=16",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"train_ce", "train_reinforce", "train_entropy"} <= rows[0].keys()
    state = load_checkpoint(run / "last.pt", "captioner")
    assert state["config"]["attention_mode"] == "hard" and state["model"]["hard_baseline"].item() < 0
    decoder, *_ = load_captioner(run / "last.pt")
    assert decoder.config.attention_mode == "hard"
    image = next((scenes_dir / "images" / "test").glob("*.png"))
    code, out, err = run_cli(capsys, "caption", str(image), "--checkpoint", run / "last.pt", "--json")
    assert code == 0, err
    result = json.loads(out.splitlines()[0])
    assert len(result["attention"]) == len(result["tokens"])  # the per-word distribution is reported
