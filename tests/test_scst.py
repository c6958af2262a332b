"""Self-critical training: the CIDEr-D reward against pycocoevalcap, the REINFORCE gradient
against a hand derivation and against the plain model's step-by-step log-probabilities,
the baselines by hand, the sampler's per-image rows, and SCST raising CIDEr-D on scenes."""

from __future__ import annotations

import json
import random

import pytest
import torch

from captioner.decode import greedy, sample
from captioner.fast import FastDecoder, TrainingDecoder
from captioner.model import AttentionDecoder, CaptionerConfig, caption_loss
from captioner.scst import CiderD, ScstLoss, as_captions, mean_baseline, ngram_counts, reinforce_loss
from captioner.train import train_captioner
from core.checkpoint import load_checkpoint
from core.errors import AttendError
from core.training import TrainConfig
from core.vocab import SPECIALS, Vocab
from tests.cli_helpers import one_line_error, run_cli

TINY_MODEL = {"hidden_dim": 32, "embed_dim": 16, "attention_dim": 16, "dropout": 0.0}  # as conftest's
WORDS = "a the small large red blue green circle square triangle star above below left of right".split()


def _pycocoevalcap_cider(references, hypotheses):
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    return Cider().compute_score(gts, res)[1]


def test_cider_d_equals_pycocoevalcap_per_caption():
    rng = random.Random(0)
    references = [
        [[rng.choice(WORDS) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 5))] for _ in range(80)
    ]
    hypotheses = [[rng.choice(WORDS) for _ in range(rng.randint(0, 10))] for _ in range(80)]
    hypotheses[0] = []  # nothing said
    hypotheses[1] = ["zebra"]  # a word no reference has (document frequency 0)
    hypotheses[2] = references[2][0] * 2  # a reference said twice: clipped, and penalised for length
    hypotheses[3] = list(references[3][0])  # a reference exactly
    ours = CiderD(references).scores(range(80), hypotheses)
    theirs = _pycocoevalcap_cider(references, hypotheses)
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert ours[0] == 0 and ours[3] > ours[2] > 0


def test_cider_d_clips_a_repeated_object_below_the_single_mention():
    references = [
        [
            ["a", "red", "circle", "above", "a", "blue", "square"],
            ["a", "blue", "square", "below", "a", "red", "circle"],
        ],
        [["a", "green", "star"], ["a", "small", "green", "star"]],
    ]
    reward = CiderD(references)
    right = reward.score(0, ["a", "red", "circle", "above", "a", "blue", "square"])
    doubled = reward.score(0, ["a", "red", "circle", "above", "a", "red", "circle"])
    assert right > doubled
    assert reward.score(0, references[0][0] + references[0][0]) < right


def test_ngram_counts_by_hand():
    counts = ngram_counts(["a", "b", "a", "b"], n=3)
    assert counts[("a",)] == 2 and counts[("a", "b")] == 2 and counts[("b", "a")] == 1
    assert counts[("a", "b", "a")] == 1 and sum(counts.values()) == 4 + 3 + 2


def test_mean_baseline_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert mean_baseline(rewards).tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]
    with pytest.raises(ValueError):
        mean_baseline(rewards[:, :1])


def _tiny(seed=0, cls=AttentionDecoder, **options):
    torch.manual_seed(seed)
    config = CaptionerConfig(
        vocab_size=7, encoder_dim=8, embed_dim=4, attention_dim=5, hidden_dim=6, grid=[2, 2], dropout=0.0, **options
    )
    return cls(config).eval()


def test_sample_per_image_draws_what_each_row_would_draw_alone():
    decoder = _tiny()
    features = torch.randn(3, 4, 8)
    torch.manual_seed(5)
    together = sample(decoder, features, per_image=4)
    torch.manual_seed(5)
    repeated = sample(decoder, features.repeat_interleave(4, 0))  # the same rows, memory made 4 times
    assert [d.ids for d in together] == [d.ids for d in repeated]
    assert len({tuple(d.ids) for d in together}) > 3  # sampling, not greedy


@pytest.mark.parametrize("query", ["previous", "current"])
def test_reinforce_gradient_equals_the_hand_derivation_and_the_stepwise_model(query):
    """d/db of -(1/M) sum_n A_n sum_t log softmax(l_nt)[w_nt] for the output bias b is
    -(1/M) sum_n A_n sum_t (onehot(w_nt) - softmax(l_nt)): the score-function estimator.
    And the whole gradient equals that of the log-probabilities accumulated step by step
    through the plain model's ``step`` (the decoding path)."""
    plain = _tiny(attention_query=query)
    fast = _tiny(cls=TrainingDecoder, attention_query=query)
    fast.load_state_dict(plain.state_dict())
    features = torch.randn(2, 4, 8)
    torch.manual_seed(3)
    drawn = sample(plain, features, per_image=3, max_len=6)
    captions = as_captions(drawn, 6, "cpu")  # (6, T)
    targets = captions[:, 1:]
    advantages = torch.tensor([0.5, -1.0, 2.0, 0.0, -0.25, 1.5])

    logits, _ = fast(features, captions)
    loss = reinforce_loss(logits, targets, advantages)
    loss.backward()

    mask = (targets != Vocab.pad_id).float()
    probabilities = torch.softmax(logits.detach(), -1)  # (N, T, V)
    onehot = torch.nn.functional.one_hot(targets, 7).float()
    by_hand = -(advantages[:, None, None] * (onehot - probabilities) * mask[..., None]).sum((0, 1)) / mask.sum()
    assert fast.fc.bias.grad == pytest.approx(by_hand, abs=1e-6)

    memory = plain.prepare(features)
    state = plain.init_state(memory).select(torch.arange(2).repeat_interleave(3))
    total = torch.zeros(())
    for t in range(targets.shape[1]):
        step_logits, state, _ = plain.step(captions[:, t], state, memory)
        logp = torch.log_softmax(step_logits, -1).gather(1, targets[:, t : t + 1]).squeeze(1)
        total = total - (advantages * logp * mask[:, t]).sum()
    (total / mask.sum()).backward()
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        assert a.grad == pytest.approx(b.grad, abs=1e-5), name


def test_scst_loss_rewards_and_baselines_reach_the_metrics():
    decoder = _tiny(cls=TrainingDecoder).train()
    vocab = Vocab([*SPECIALS, "red", "blue", "circle"])
    reward = CiderD([[["red", "circle"]], [["blue", "circle"]]])
    features = torch.randn(2, 4, 8)
    for baseline in ("mean", "greedy"):
        torch.manual_seed(0)
        loss_fn = ScstLoss(reward, vocab, samples=4, baseline=baseline)
        loss, metrics = loss_fn(decoder, (features, torch.tensor([0, 1])), "cpu")
        loss.backward()
        assert torch.isfinite(loss) and metrics["reward"] >= 0 and set(metrics) >= {"reward", "baseline", "loss"}
        if baseline == "mean":  # the mean of the others' rewards averages to the mean reward
            assert metrics["baseline"] == pytest.approx(metrics["reward"], abs=1e-6)
        else:
            best = greedy(FastDecoder(decoder), features)
            expected = reward.scores([0, 1], [vocab.decode(d.ids) for d in best]).mean()
            assert metrics["baseline"] == pytest.approx(expected, abs=1e-6)


TOY_WORDS = ["a", "red", "blue", "circle", "square", "above", "below", "there", "is"]
TOY_REFERENCES = [
    [
        "a red circle above a blue square",
        "there is a red circle above a blue square",
        "a blue square below a red circle",
    ],
    [
        "a blue circle below a red square",
        "there is a blue circle below a red square",
        "a red square above a blue circle",
    ],
    ["a red square", "there is a red square"],
    ["a blue circle", "there is a blue circle"],
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scst_raises_the_greedy_captions_cider_d_over_its_cross_entropy_start(seed, one_thread):
    """Four images (random grids) and their references. 60 cross-entropy steps give a start
    whose greedy captions are partly right; 150 SCST steps (5 samples per image, mean
    baseline) raise the greedy captions' CIDEr-D. Measured while writing it, seeds 0-5:
    4.23 -> 4.73, 4.69 -> 6.06, 5.85 -> 6.56, 5.70 -> 7.17, 5.50 -> 6.29, 4.23 -> 4.69. At a
    constant learning rate runs longer than ~200 steps can collapse (seed 2 fell to 4.5 by
    step 300): training runs use the cosine schedule."""
    torch.manual_seed(seed)
    vocab = Vocab([*SPECIALS, *TOY_WORDS])
    references = [[r.split() for r in refs] for refs in TOY_REFERENCES]
    reward = CiderD(references)
    config = CaptionerConfig(
        vocab_size=len(vocab), encoder_dim=8, embed_dim=8, attention_dim=8, hidden_dim=32, grid=[2, 2], dropout=0.0,
        max_len=16,
    )  # fmt: skip
    model = TrainingDecoder(config).train()
    features = torch.randn(4, 4, 8)

    def greedy_cider():
        captions = [vocab.decode(d.ids) for d in greedy(FastDecoder(model), features)]
        return float(reward.scores(range(4), captions).mean())

    captions = torch.zeros(12, 12, dtype=torch.long)  # 3 references per image, image-major
    for i, refs in enumerate(references):
        for j in range(3):
            ids = vocab.encode(refs[j % len(refs)], add_start_end=True)
            captions[3 * i + j, : len(ids)] = torch.tensor(ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        logits, alphas = model(features, captions)
        loss, _ = caption_loss(logits, alphas, captions[:, 1:], 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    before = greedy_cider()

    scst = ScstLoss(reward, vocab, samples=5, baseline="mean")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(150):
        loss, _ = scst(model, (features, torch.arange(4)), "cpu")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert greedy_cider() > before + 0.3, (before, greedy_cider())


def test_train_captioner_scst_on_scenes_logs_rewards_and_records_its_options(scenes_dir, tmp_path, one_thread):
    start = tmp_path / "ce"
    ce = TrainConfig(out_dir=str(start), epochs=2, batch_size=4, lr=1e-2, warmup_steps=1)
    train_captioner(scenes_dir, start, dict(TINY_MODEL), ce, device="cpu", log=lambda m: None)
    run = tmp_path / "scst"
    scst = TrainConfig(out_dir=str(run), epochs=2, batch_size=10, lr=1e-3, warmup_steps=1)
    result = train_captioner(
        scenes_dir, run, {}, scst, device="cpu", init=start / "last.pt", scst=True, scst_baseline="greedy",
        select="cider", log=lambda m: None,
    )  # fmt: skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {"train_reward", "train_baseline", "val_cider", "val_object_accuracy"} <= rows[0].keys()
    assert result["metric"] == "val_cider"
    state = load_checkpoint(run / "last.pt", "captioner")
    assert state["scst"] == {"samples": 5, "baseline": "greedy", "object_bonus": 0.0}
    assert state["config"]["dropout"] == 0.0
    assert state["init"] == str(start / "last.pt")


def test_scst_options_are_checked_with_one_line(scenes_dir, tiny_captioner, tmp_path, capsys):
    common = ["train", "captioner", "--data", scenes_dir, "--scst"]
    code, _, err = run_cli(capsys, *common, "--out", tmp_path / "a")
    assert "--init" in one_line_error(code, err)
    code, _, err = run_cli(capsys, *common, "--init", tiny_captioner, "--out", tmp_path / "b", "--scst-samples", "1")
    assert "--scst-samples" in one_line_error(code, err)
    code, _, err = run_cli(
        capsys, *common, "--init", tiny_captioner, "--out", tmp_path / "c", "--captions-per-image", "5"
    )
    assert "--captions-per-image" in one_line_error(code, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_object_bonus_adds_to_the_reward_of_a_caption_right_about_the_whole_scene():
    scene = [
        {"shape": "circle", "color": "red", "size": "small", "bbox": [10, 10, 36, 36]},
        {"shape": "square", "color": "blue", "size": "large", "bbox": [10, 120, 70, 70]},
    ]
    references = [["a small red circle above a large blue square".split()]]
    plain = ScstLoss(CiderD(references), Vocab(list(SPECIALS)), samples=2)
    bonus = ScstLoss(CiderD(references), Vocab(list(SPECIALS)), samples=2, objects=[scene], object_bonus=5.0)
    right = "a large blue square below a small red circle".split()  # right, though worded unlike the reference
    twice = "a small red circle above a small red circle".split()
    base = plain.rewards([0, 0], [right, twice])
    assert bonus.rewards([0, 0], [right, twice]) == pytest.approx(base + [5.0, 0.0])
    with pytest.raises(AttendError):
        ScstLoss(CiderD(references), Vocab(list(SPECIALS)), samples=2, object_bonus=1.0)
