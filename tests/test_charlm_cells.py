"""Interpretable cells (charlm/cells.py): the text's properties by hand, Pearson's r against
numpy, escaped pictures, and a small model trained here that grows a unit tracking quotes."""

from __future__ import annotations

import html
import json
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from charlm.cells import cells_report, correlations, find_cells, render_html, text_properties, unit_activations
from charlm.data import BPTTStreams, CharVocab, collate_chunks
from charlm.fast import TrainingCharLM
from charlm.model import CharLM, CharLMConfig
from charlm.train import TruncatedBPTT

from cli_helpers import cli_error, run_cli


def _digits(props: dict, name: str) -> str:
    return "".join(str(int(v))[-1] for v in props[name])


def test_text_properties_by_hand():
    text = 'def f(a, b="x#y"):  # hi\n    return [a,\n        b]\n'
    props = text_properties(text)
    assert all(len(v) == len(text) for v in props.values())
    # the quotes and what is between them; the "#" inside the string is not a comment
    assert _digits(props, "in_string") == "0" * 11 + "1" * 5 + "0" * 35
    assert _digits(props, "in_comment") == "0" * 20 + "1" * 4 + "0" * 27
    assert _digits(props, "indent") == "0" * 25 + "4" * 15 + "8" * 11
    assert _digits(props, "line_position") == "0123456789012345678901234" + "012345678901234" + "01234567890"
    # "(" opens at 5 and its ")" at 16 is still inside; "[" at 36 stays open across the line break
    assert _digits(props, "bracket_depth") == "00000" + "1" * 12 + "0" * 19 + "1" * 14 + "0"


def test_text_that_is_not_python_still_gets_its_properties():
    text = 'an "open string\n  and ( more\n'
    props = text_properties(text)  # tokenize fails; the lines' own properties remain
    assert props["indent"].tolist() == [0] * 16 + [2] * 13
    assert props["line_position"][-1] == 12


def test_correlations_equal_numpy_and_handle_constants():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 6)).astype(np.float32)
    values[:, 3] = 1.0  # a constant unit
    target = values[:, 1] * 2 + rng.normal(size=200) * 0.5
    r = correlations(values, target)
    for i in (0, 1, 2, 4, 5):
        assert r[i] == pytest.approx(np.corrcoef(values[:, i], target)[0, 1], abs=1e-5)
    assert r[3] == 0
    assert np.isnan(correlations(values, np.ones(200))).all()
    found = find_cells(values, {"t": target, "flat": np.zeros(200)}, [f"u{i}" for i in range(6)], top=2)
    assert found["t"]["units"][0]["unit"] == "u1" and len(found["t"]["units"]) == 2
    assert found["flat"]["units"] == [] and "no change" in found["flat"]["note"]


def test_render_html_escapes_the_text():
    page = render_html("<script>&\n", np.array([1.0, -1.0, 0.0, 0.5, 0.2, 0.1, 0.0, 0.0, 0.3, 0.0]), "a <b> title")
    tags = re.findall(r"<[^>]*>", page)
    assert {re.match(r"</?(\w+)", tag).group(1) for tag in tags} == {"h3", "pre", "span"}  # no <script>, no <b>
    assert html.unescape(re.sub(r"<[^>]*>", "", page)) == "a <b> title\n<script>&\u21b5\n\n"
    assert "rgb(255,0,0)" in page and "rgb(0,0,255)" in page  # +1 red, -1 blue


def test_lstm_activations_are_its_h_and_tanh_c_read_in_chunks():
    torch.manual_seed(0)
    vocab = CharVocab.build("abc xyz\n")
    model = CharLM(CharLMConfig(len(vocab), layers=2, hidden=5, embed_dim=3)).eval()
    text = "abc xyz\nzyx cba\n" * 3
    values = unit_activations(model, vocab, text, chunk=7)  # (N, U)
    with torch.no_grad():
        _, _, trace = model(vocab.encode(text).view(1, -1), trace=True)  # (1, N, U)
    trace = trace[0].numpy()
    names = model.unit_names()
    h = [i for i, n in enumerate(names) if ".h" in n]
    c = [i for i, n in enumerate(names) if ".c" in n]
    np.testing.assert_allclose(values[:, h], trace[:, h], atol=1e-6)
    np.testing.assert_allclose(values[:, c], np.tanh(trace[:, c]), atol=1e-6)


def _quoted_text(seed: int, n: int) -> str:
    """Words outside quotes are letters, inside quotes digits: predicting the next character
    needs to know whether a quote is open."""
    rng = random.Random(seed)
    parts = []
    while sum(map(len, parts)) < n:
        if rng.random() < 0.5:
            parts.append('"' + "".join(rng.choice("0123456789 ") for _ in range(rng.randint(2, 12))) + '" ')
        else:
            parts.append("".join(rng.choice("abcdefgh ") for _ in range(rng.randint(2, 12))) + " ")
        if rng.random() < 0.15:
            parts.append("\n")
    return "".join(parts)


@pytest.fixture
def one_thread_here():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_trained_model_grows_a_quote_cell_and_the_report_says_so(tmp_path, one_thread_here):
    text = _quoted_text(0, 20_000)
    vocab = CharVocab.build(text)
    torch.manual_seed(0)
    model = TrainingCharLM(CharLMConfig(len(vocab), cell="lstm", layers=1, hidden=16, embed_dim=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    streams = BPTTStreams(vocab.encode(text), batch=16, bptt=50, chars_per_epoch=16 * 50 * 25)
    loss_fn = TruncatedBPTT()
    for epoch in range(8):
        streams.set_epoch(epoch, 0)
        for items in DataLoader(streams, batch_size=16, collate_fn=collate_chunks):
            loss, _ = loss_fn(model, items, "cpu")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    held_out = _quoted_text(1, 3000)  # new text: the unit must generalise, not remember
    report = cells_report(model, vocab, held_out, tmp_path, shown_chars=500, source="quotes")
    best = report["properties"]["in_string"]["units"][0]
    assert abs(best["r"]) >= 0.8, report["properties"]["in_string"]
    assert json.loads((tmp_path / "cells.json").read_text()) == report
    page = (tmp_path / "cells.html").read_text()
    pictured = sum(1 for entry in report["properties"].values() if entry["units"])
    assert f"unit {best['unit']}" in page and page.count("<span") == 500 * pictured + 3  # + the legend's three
    assert report["properties"]["in_comment"]["units"] == []  # no "#" in this text
    with Image.open(tmp_path / "cells.png") as png:
        assert png.format == "PNG" and png.height > png.width / 4

    # an untrained model of the same shape has no such unit: the training made it
    torch.manual_seed(0)
    fresh = CharLM(CharLMConfig(len(vocab), cell="lstm", layers=1, hidden=16, embed_dim=8))
    values = unit_activations(fresh, vocab, held_out)
    assert np.nanmax(np.abs(correlations(values, text_properties(held_out)["in_string"]))) < abs(best["r"]) - 0.2


def test_cells_command_and_its_errors(tmp_path, capsys):
    torch.manual_seed(0)
    code_text = "def f(x):\n    return [x, 'a']  # c\n" * 20
    source = tmp_path / "code.py"
    source.write_text(code_text)
    trained = tmp_path / "run"
    args = ("charlm", "train", "--text", source, "--out", trained, "--hidden", "8", "--layers", "1", "--embed", "4")
    args += ("--epochs", "1", "--chars-per-epoch", "200", "--batch-size", "2", "--bptt", "10", "--val-chars", "50")
    assert run_cli(capsys, *args)[0] == 0
    code, out, _ = run_cli(
        capsys, "charlm", "cells", "--checkpoint", trained / "best.pt", "--text", source, "--out", tmp_path / "cells"
    )
    assert code == 0 and "in_string" in out and "cells.html" in out
    report = json.loads((tmp_path / "cells" / "cells.json").read_text())
    assert set(report["properties"]) == {"in_string", "in_comment", "indent", "line_position", "bracket_depth"}
    assert all(abs(report["properties"][p]["units"][0]["r"]) <= 1 for p in report["properties"])

    assert "no such file" in cli_error(capsys, "charlm", "cells", "--text", tmp_path / "nope.py", "--out", tmp_path)
    (tmp_path / "bin.py").write_bytes(b"\x00\x01")
    assert "binary" in cli_error(capsys, "charlm", "cells", "--text", tmp_path / "bin.py", "--out", tmp_path)
