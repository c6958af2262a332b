"""The character-level language model (charlm/): parity of its paths, truncated BPTT, the
streams' layout under DDP, training through the command line with resume, sampling, the
baselines' probabilities, the corpus split and damaged checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from charlm.checkpoint import load_charlm
from charlm.data import UNKNOWN, BPTTStreams, CharVocab, collate_chunks, held_out, stdlib_corpus, stdlib_files
from charlm.fast import TrainingCharLM, fused_forward
from charlm.inference import sample
from charlm.metrics import KneserNey, Unigram, model_bpc, windows
from charlm.model import CharLM, CharLMConfig
from charlm.train import TruncatedBPTT
from core.checkpoint import load_checkpoint
from core.errors import AttendError

from cli_helpers import cli_error, run_cli

CELLS = ("lstm", "gru", "rnn")
TEXT = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n    y: int = 0\n" * 3


def _model(cell: str = "lstm", vocab_size: int = 12, **kw) -> CharLM:
    torch.manual_seed(0)
    options = {"hidden": 16, "embed_dim": 8, "layers": 2, **kw}
    return CharLM(CharLMConfig(vocab_size=vocab_size, cell=cell, **options)).eval()


@pytest.fixture
def one_thread_here():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: two threads synchronising cost more than they save
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the model's paths


@pytest.mark.parametrize("cell", CELLS)
def test_forward_equals_stepping_next_logits_and_the_fused_path(cell):
    model = _model(cell)
    x = torch.randint(0, 12, (3, 7), generator=torch.Generator().manual_seed(1))  # (B, T)
    with torch.no_grad():
        logits, state, trace = model(x, trace=True)  # (B, T, V)
        stepped, s = [], model.init_state(3)
        for t in range(7):
            out, s = model.next_logits(x[:, t], s)  # (B, V)
            stepped.append(out)
        fused, fused_state = fused_forward(model, x)  # (B, T, V)
    assert logits.shape == (3, 7, 12) and trace.shape == (3, 7, model.units)
    torch.testing.assert_close(torch.stack(stepped, 1), logits)
    torch.testing.assert_close(fused, logits, atol=1e-5, rtol=1e-5)
    for a, b, c in zip(state, s, fused_state):
        torch.testing.assert_close(a.h, b.h)
        torch.testing.assert_close(c.h, a.h, atol=1e-5, rtol=1e-5)
    # the training class's forward is the fused path, with the same state_dict
    training = TrainingCharLM(model.config)
    training.load_state_dict(model.state_dict())
    torch.testing.assert_close(training.eval()(x)[0], logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_carries_the_state_and_cuts_the_gradient(cell):
    model = _model(cell)
    model.train()  # no dropout in this config: the same numbers as eval
    generator = torch.Generator().manual_seed(2)
    first = torch.randint(1, 6, (2, 5), generator=generator)  # chunk 1 reads ids 1..5 only
    second = torch.randint(6, 12, (2, 6), generator=generator)  # chunk 2 reads ids 6..11 only
    text = torch.cat([first, second], 1)  # (B, 11): chunk 1 = text[:, :6], chunk 2 = text[:, 5:]
    loss_fn = TruncatedBPTT()
    loss1, _ = loss_fn(model, (text[:, :6], 0), "cpu")
    loss2, _ = loss_fn(model, (text[:, 5:], 1), "cpu")
    whole, _, _ = model(text[:, :-1])  # (B, 10, V)
    expected = F.cross_entropy(whole.flatten(0, 1), text[:, 1:].flatten())
    torch.testing.assert_close((loss1 * 5 + loss2 * 5) / 10, expected)
    # no gradient of chunk 2's loss reaches the characters only chunk 1 read
    model.zero_grad()
    loss2.backward()
    grad = model.embedding.weight.grad
    assert grad[1:6].abs().sum() == 0 and grad[6:12].abs().sum() > 0
    # chunk 0 starts from zeros again
    again, _ = loss_fn(model, (text[:, :6], 0), "cpu")
    torch.testing.assert_close(again, loss1)


def test_the_streams_give_each_rank_its_own_chunks_in_order():
    ids = torch.arange(1000)
    world, batch, bptt = 2, 3, 4
    streams = BPTTStreams(ids, batch, bptt, chars_per_epoch=world * batch * bptt * 5, world=world)
    streams.set_epoch(3, seed=7)
    assert streams.chunks == 5 and len(streams) == world * batch * 5
    seen_streams = []
    for rank in range(world):
        sampler = DistributedSampler(streams, world, rank, shuffle=False)
        loader = DataLoader(streams, batch_size=batch, sampler=sampler, collate_fn=collate_chunks)
        batches = list(loader)
        assert [chunk for _, chunk in batches] == list(range(5))
        rows = torch.stack([x for x, _ in batches], 1)  # (B, chunks, T + 1)
        for row in rows:
            # each chunk continues where the last one stopped (its last id is the next's first)
            assert all(int(row[c, -1]) == int(row[c + 1, 0]) for c in range(4))
            assert torch.equal(row[:, :-1].flatten(), (row[0, 0] + torch.arange(5 * bptt)) % 1000)
            seen_streams.append(int(row[0, 0]))
    assert len(set(seen_streams)) == world * batch  # no two ranks read the same stream
    before = streams.starts.clone()
    streams.set_epoch(4, seed=7)
    assert not torch.equal(before, streams.starts)  # the next epoch reads elsewhere
    streams.set_epoch(3, seed=7)
    assert torch.equal(before, streams.starts)  # and (seed, epoch) alone decides


def test_overfitting_a_tiny_text_drives_bpc_near_zero(one_thread_here):
    vocab = CharVocab.build("abcdefgh")
    ids = vocab.encode("abcdefgh" * 40)
    torch.manual_seed(0)
    model = TrainingCharLM(CharLMConfig(len(vocab), layers=1, hidden=32, embed_dim=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    streams = BPTTStreams(ids, batch=4, bptt=16, chars_per_epoch=4 * 16 * 8)
    loss_fn = TruncatedBPTT()
    for epoch in range(6):
        streams.set_epoch(epoch, 0)
        for items in DataLoader(streams, batch_size=4, collate_fn=collate_chunks):
            loss, _ = loss_fn(model, items, "cpu")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert model_bpc(model, windows(ids, streams=4)) < 0.1
    assert model_bpc(model, windows(ids, streams=4), fast=False) < 0.1


# ---------------------------------------------------------------- the command line


class Interrupt(Exception):
    pass


def _train_args(text, out):
    return ("charlm", "train", "--text", text, "--out", out, "--hidden", "16", "--layers", "1", "--embed", "8")


def test_train_sample_evaluate_export_and_resume_through_main(tmp_path, capsys, monkeypatch, one_thread_here):
    text = tmp_path / "code.py"
    text.write_text(TEXT * 4)
    options = ("--epochs", "2", "--chars-per-epoch", "1200", "--batch-size", "4", "--bptt", "10")
    options += ("--val-chars", "200", "--warmup", "2", "--lr", "0.01")
    code, out, _ = run_cli(capsys, *_train_args(text, tmp_path / "a"), *options)
    assert code == 0, out
    assert {"best.pt", "last.pt", "metrics.jsonl", "metrics.png"} <= {p.name for p in (tmp_path / "a").iterdir()}
    history = load_checkpoint(tmp_path / "a" / "last.pt", "charlm")["train"]["history"]
    assert len(history) == 2 and history[1]["val_bpc"] < history[0]["val_bpc"] < 8

    # interrupted after its first epoch, then resumed: the same weights as the run above
    import apps.cli_charlm

    def stop_after_first_epoch(message):
        if message.startswith("epoch=1 "):
            raise Interrupt

    monkeypatch.setattr(apps.cli_charlm, "log", stop_after_first_epoch)
    with pytest.raises(Interrupt):
        run_cli(capsys, *_train_args(text, tmp_path / "b"), *options)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "b" / "last.pt", "charlm")["train"]["epoch"] == 0
    code, _, err = run_cli(capsys, *_train_args(text, tmp_path / "b"), *options, "--resume")
    assert code == 0 and "resumed" in err
    a = load_checkpoint(tmp_path / "a" / "last.pt", "charlm")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt", "charlm")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)

    sampled = ("charlm", "sample", "--checkpoint", tmp_path / "a" / "best.pt", "--length", "40", "--json")
    code, first, _ = run_cli(capsys, *sampled, "--prime", "def ", "--seed", "3")
    code2, second, _ = run_cli(capsys, *sampled, "--prime", "def ", "--seed", "3")
    assert code == code2 == 0 and first == second and len(eval_json(first)["text"]) == 40

    code, out, _ = run_cli(capsys, "charlm", "evaluate", "--checkpoint", tmp_path / "a" / "best.pt", "--text", text)
    assert code == 0 and "5-gram" in out and "unigram" in out and "model" in out

    shipped = tmp_path / "shipped.pt"
    code, out, _ = run_cli(capsys, "charlm", "export", "--checkpoint", tmp_path / "a" / "best.pt", "--out", shipped)
    assert code == 0 and "train" not in load_checkpoint(shipped, "charlm")
    model, vocab = load_charlm(str(shipped))
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    assert len(sample(model, vocab, "x", length=5)) == 5


def eval_json(text: str) -> dict:
    import json

    return json.loads(text)


def test_text_and_option_errors_are_one_line(tmp_path, capsys):
    empty, binary = tmp_path / "empty.txt", tmp_path / "blob.bin"
    empty.write_text("  \n")
    binary.write_bytes(b"\x00\x01\x02abc")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    out = tmp_path / "run"
    assert "no such file" in cli_error(capsys, *_train_args(tmp_path / "missing.txt", out))
    assert "empty text file" in cli_error(capsys, *_train_args(empty, out))
    assert "binary" in cli_error(capsys, *_train_args(binary, out))
    assert "not UTF-8" in cli_error(capsys, *_train_args(latin, out))
    assert "--text FILE... or --stdlib" in cli_error(capsys, "charlm", "train", "--out", out)
    with pytest.raises(SystemExit) as bad:
        run_cli(capsys, "charlm", "sample", "--temperature", "-1")
    assert bad.value.code == 2


def test_load_charlm_refuses_damaged_files_in_one_line(tmp_path, capsys):
    from core.checkpoint import save_checkpoint

    model = _model("gru")
    vocab = CharVocab([UNKNOWN, *"abcdefghijk"])
    good = {
        "kind": "charlm",
        "config": {"vocab_size": 12, "cell": "gru", "layers": 2, "hidden": 16, "embed_dim": 8, "dropout": 0.0},
        "vocab": {"chars": vocab.chars},
        "model": model.state_dict(),
    }
    save_checkpoint(tmp_path / "good.pt", good)
    loaded, loaded_vocab = load_charlm(str(tmp_path / "good.pt"))
    assert loaded_vocab.chars == vocab.chars

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "good.pt").read_bytes()[:300])
    wrong_shape = {**good, "config": {**good["config"], "hidden": 17}}
    huge = {**good, "config": {**good["config"], "hidden": 10**9}}
    bad_vocab = {**good, "vocab": {"chars": ["ab", *vocab.chars[1:]]}}
    nan = {**good, "model": {**good["model"], "out.bias": torch.full((12,), float("nan"))}}
    for name, state in (("shape", wrong_shape), ("huge", huge), ("vocab", bad_vocab), ("nan", nan)):
        save_checkpoint(tmp_path / f"{name}.pt", state)
    for name in ("truncated", "shape", "huge", "vocab", "nan"):
        with pytest.raises(AttendError) as e:
            load_charlm(str(tmp_path / f"{name}.pt"))
        assert "\n" not in str(e.value) and str(tmp_path / f"{name}.pt") in str(e.value)
        assert "error" in cli_error(capsys, "charlm", "sample", "--checkpoint", tmp_path / f"{name}.pt")


# ---------------------------------------------------------------- sampling and metrics


def test_sampling_is_seeded_and_temperature_to_zero_is_greedy():
    vocab = CharVocab([UNKNOWN, *"abcdefghijk"])
    model = _model("lstm")
    a = sample(model, vocab, "abc", length=30, temperature=1.0, seed=5)
    assert a == sample(model, vocab, "abc", length=30, temperature=1.0, seed=5)
    assert a != sample(model, vocab, "abc", length=30, temperature=1.0, seed=6)
    greedy = sample(model, vocab, "abc", length=30, greedy=True)
    assert greedy == sample(model, vocab, "abc", length=30, temperature=0.0)
    assert greedy == sample(model, vocab, "abc", length=30, temperature=1e-4, seed=9)
    assert sample(model, vocab, "abc", length=30, top_k=1, seed=2) == greedy
    assert UNKNOWN not in a and len(sample(model, vocab, "z\u00e9", length=3)) == 3  # unknown prime: allowed
    with pytest.raises(AttendError):
        sample(model, vocab, "a", temperature=-1)


def test_unigram_bpc_equals_the_hand_computed_value():
    vocab = CharVocab.build("aab")  # [UNKNOWN, a, b]
    unigram = Unigram(vocab.encode("aab"), len(vocab))  # p(a) = 3/6, p(b) = 2/6, p(unknown) = 1/6
    rows = windows(vocab.encode("abba"), streams=1)  # predicts b, b, a
    assert rows.shape == (1, 4)
    assert unigram.bpc(rows) == pytest.approx((2 * math.log2(3) + 1) / 3)


def test_the_5gram_distribution_sums_to_one_and_beats_the_unigram():
    vocab = CharVocab.build(TEXT)
    ids = vocab.encode(TEXT)
    kn = KneserNey(ids, len(vocab), order=5)
    for history in ("", "def", "    ret", "zzzz", "class Po", "\n\n"):
        p = kn.distribution(vocab.encode(history))
        assert p.shape == (len(vocab),) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
    rows = windows(ids, streams=2)
    assert kn.bpc(rows) < Unigram(ids, len(vocab)).bpc(rows) / 2


# ---------------------------------------------------------------- the corpus


def test_the_stdlib_split_is_by_file_deterministic_and_has_no_tests():
    files = [f.as_posix() for f in stdlib_files()]
    assert files == sorted(files) and len(files) > 100
    assert not any(part in ("test", "tests", "site-packages") for f in files for part in f.split("/"))
    corpus = stdlib_corpus(max_chars=400_000)
    train, val = {f.path for f in corpus.train_files}, {f.path for f in corpus.val_files}
    assert train and val and not train & val
    assert all(held_out(p) for p in val) and not any(held_out(p) for p in train)
    assert 200_000 < len(corpus.train_text) + len(corpus.val_text) <= 400_000
    assert corpus.describe() == stdlib_corpus(max_chars=400_000).describe()
    assert corpus.describe()["val"]["paths"] == sorted(val)
