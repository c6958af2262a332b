"""Interpretable cells (Karpathy, Johnson & Fei-Fei, "Visualizing and Understanding Recurrent
Networks", 2016, section 4.1): which single unit of a trained character model tracks a
property of the text it reads?

The method, in three steps:

1. Label every character of a text with properties a reader of Python sees (``text_properties``):
   inside a string, inside a comment, the line's indentation, the position in the line, the
   depth of open brackets. Strings, comments and brackets come from the standard library's
   ``tokenize``, so a ``#`` inside a string is not a comment.
2. Read the text with the model and record every unit after every character
   (``unit_activations``, (N, U)): each layer's h and, for the LSTM, tanh(c), the value the
   paper colours text by.
3. Correlate every unit with every property (``find_cells``: Pearson's r, all units at once)
   and keep the unit with the largest |r|. A unit with |r| near 1 is a cell that counts or
   switches with the property; ``render_html`` colours the text by it, as the paper's figures do.

``cells_report`` writes cells.json (the numbers), cells.html (the text coloured, up to a few
thousand characters) and cells.png (its first lines, one panel per property).
"""

from __future__ import annotations

import html
import io
import tokenize
from pathlib import Path

import numpy as np
import torch

from core.errors import AttendError
from core.prepared import atomic_write_bytes, atomic_write_json

from .data import CharVocab
from .model import CharLM

PROPERTIES = {
    "in_string": "inside a string literal (quotes included)",
    "in_comment": "inside a # comment",
    "indent": "the line's indentation (leading spaces; a tab counts 4)",
    "line_position": "characters since the start of the line",
    "bracket_depth": "open ( [ { brackets, outside strings and comments",
}
STRING_TOKENS = {tokenize.STRING} | {
    getattr(tokenize, name) for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, name)
}
OPEN, CLOSE = "([{", ")]}"


def _line_starts(text: str) -> list[int]:
    """The offset of each line's first character, as tokenize counts lines (after each "\\n")."""
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def _tokens(text: str) -> list[tokenize.TokenInfo]:
    """Python tokens of ``text``, as many as tokenize reads before any error: text that is not
    Python (or is cut mid-statement) still gets the properties of its readable part."""
    tokens = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            tokens.append(token)
    except (tokenize.TokenError, SyntaxError):
        pass
    return tokens


def text_properties(text: str) -> dict[str, np.ndarray]:
    """Each property of ``PROPERTIES`` for every character: float arrays of length N = len(text)."""
    n = len(text)
    starts = _line_starts(text)
    in_string = np.zeros(n, np.float32)
    in_comment = np.zeros(n, np.float32)
    bracket_delta = np.zeros(n + 1, np.float32)  # +1 at an opening bracket's offset, -1 after a closing one

    def offset(row: int, col: int) -> int:
        return min(starts[min(row, len(starts)) - 1] + col, n)

    for token in _tokens(text):
        begin, end = offset(*token.start), offset(*token.end)
        if token.type in STRING_TOKENS:
            in_string[begin:end] = 1
        elif token.type == tokenize.COMMENT:
            in_comment[begin:end] = 1
        elif token.type == tokenize.OP and token.string in OPEN:
            bracket_delta[begin] += 1
        elif token.type == tokenize.OP and token.string in CLOSE:
            bracket_delta[end] -= 1  # the closing bracket itself is still inside
    bracket_depth = np.maximum(np.cumsum(bracket_delta[:n]), 0)

    indent = np.zeros(n, np.float32)
    line_position = np.zeros(n, np.float32)
    for row, begin in enumerate(starts):
        end = starts[row + 1] if row + 1 < len(starts) else n
        line = text[begin:end]
        stripped = line.lstrip(" \t")
        width = sum(4 if ch == "\t" else 1 for ch in line[: len(line) - len(stripped)])
        indent[begin:end] = width
        line_position[begin:end] = np.arange(end - begin)
    return {
        "in_string": in_string,
        "in_comment": in_comment,
        "indent": indent,
        "line_position": line_position,
        "bracket_depth": bracket_depth.astype(np.float32),
    }


@torch.no_grad()
def unit_activations(model: CharLM, vocab: CharVocab, text: str, chunk: int = 500) -> np.ndarray:
    """Every unit after reading each character: (N, U) in ``model.unit_names()`` order, the
    LSTM's memory cells as tanh(c). The text is read in chunks with the state carried over."""
    model.eval()
    device = next(model.parameters()).device
    ids = vocab.encode(text).to(device)  # (N,)
    state, parts = None, []
    for begin in range(0, len(ids), chunk):
        _, state, traced = model(ids[begin : begin + chunk].view(1, -1), state, trace=True)  # (1, T, U)
        parts.append(traced[0].float().cpu())
    if not parts:
        return np.zeros((0, model.units), np.float32)
    values = torch.cat(parts).numpy()  # (N, U)
    if model.config.cell == "lstm":
        hidden = model.config.hidden
        for layer in range(model.config.layers):
            c = slice((2 * layer + 1) * hidden, (2 * layer + 2) * hidden)
            values[:, c] = np.tanh(values[:, c])
    return values


def correlations(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson's r of each column of values (N, U) with target (N,): (U,); 0 for a constant unit.
    NaN everywhere when the target is constant (the text never shows the property)."""
    v = values - values.mean(0)  # (N, U)
    t = target - target.mean()  # (N,)
    t_norm = np.sqrt((t * t).sum())
    if t_norm == 0:
        return np.full(values.shape[1], np.nan)
    v_norm = np.sqrt((v * v).sum(0))  # (U,)
    r = (t @ v) / (t_norm * np.where(v_norm == 0, 1, v_norm))
    return np.where(v_norm == 0, 0.0, r)


def find_cells(values: np.ndarray, properties: dict[str, np.ndarray], names: list[str], top: int = 5) -> dict:
    """For each property, the ``top`` units by |r|: {property: {"units": [{"unit", "index", "r"}, ...]}}.
    A property the text never varies gets {"units": [], "note": ...}."""
    found = {}
    for prop, target in properties.items():
        r = correlations(values, target)
        if np.isnan(r).all():
            found[prop] = {"units": [], "note": f"the text shows no change in {prop}: nothing to correlate"}
            continue
        best = np.argsort(-np.abs(r))[:top]
        found[prop] = {"units": [{"unit": names[i], "index": int(i), "r": round(float(r[i]), 4)} for i in best]}
    return found


def _colour(value: float) -> str:
    """A diverging colour for value in [-1, 1]: blue (negative), white (0), red (positive)."""
    v = float(np.clip(value, -1, 1))
    fade = int(255 * (1 - abs(v)))
    return f"rgb(255,{fade},{fade})" if v > 0 else f"rgb({fade},{fade},255)"


def render_html(text: str, values: np.ndarray, title: str) -> str:
    """``text`` with each character's background coloured by ``values`` (N,) in [-1, 1] (scaled
    by the largest |value| when that exceeds 1); every character escaped."""
    scale = max(1.0, float(np.abs(values).max(initial=0)))
    spans = []
    for ch, v in zip(text, values):
        shown = "\u21b5\n" if ch == "\n" else html.escape(ch)  # a visible mark for line breaks
        spans.append(f'<span style="background:{_colour(v / scale)}">{shown}</span>')
    return (
        f"<h3>{html.escape(title)}</h3>\n"
        '<pre style="font: 13px/1.35 monospace; white-space: pre-wrap">' + "".join(spans) + "</pre>\n"
    )


LEGEND = (
    "<p>Colour: the unit's value after reading each character, <span style=\"background:rgb(0,0,255);"
    'color:white">&nbsp;-1&nbsp;</span> <span style="background:white">&nbsp;0&nbsp;</span> '
    '<span style="background:rgb(255,0,0);color:white">&nbsp;+1&nbsp;</span> (h in [-1, 1]; the LSTM\'s '
    "memory cells as tanh(c)).</p>\n"
)


def render_png(
    path: str | Path, text: str, panels: list[tuple[str, np.ndarray]], lines: int = 20, columns: int = 80
) -> None:
    """A PNG of ``text``'s first ``lines`` lines (``columns`` wide), once per panel (title, values
    (N,) in [-1, 1]): each character on a square coloured by its value, blue -1, white 0, red +1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = text.split("\n")[:lines]
    fig, axes = plt.subplots(len(panels), 1, figsize=(columns * 0.1, len(panels) * (lines * 0.16 + 0.4)), squeeze=False)
    for ax, (title, values) in zip(axes[:, 0], panels):
        grid = np.full((len(rows), columns), np.nan)  # (lines, columns): NaN where no character
        offset = 0
        for r, row in enumerate(rows):
            shown = row[:columns]
            grid[r, : len(shown)] = values[offset : offset + len(shown)]
            for col, ch in enumerate(shown):
                if not ch.isspace():
                    ax.text(col, r, ch, ha="center", va="center", family="monospace", fontsize=7)
            offset += len(row) + 1
        ax.imshow(grid, cmap="bwr", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def read_cells_text(path: str | Path, max_chars: int) -> str:
    """The text to analyse: the file's first ``max_chars`` characters, or a one-line error."""
    from .data import read_text_file

    text = read_text_file(Path(path))[:max_chars]
    if len(text) < 2:
        raise AttendError(f"{path}: too little text to analyse (at least 2 characters)")
    return text


def cells_report(
    model: CharLM,
    vocab: CharVocab,
    text: str,
    out_dir: str | Path,
    shown_chars: int = 3000,
    source: str = "",
    start_line: int = 1,
) -> dict:
    """Find the interpretable cells for ``text`` and write cells.json and cells.html to ``out_dir``
    and cells.png (each atomically). The pictures show the text from line ``start_line`` on; the
    correlations use all of it. Returns the JSON's content."""
    values = unit_activations(model, vocab, text)  # (N, U)
    found = find_cells(values, text_properties(text), model.unit_names())
    report = {
        "source": source,
        "chars": len(text),
        "model": {k: getattr(model.config, k) for k in ("cell", "layers", "hidden")},
        "properties": {name: {"meaning": PROPERTIES[name], **found[name]} for name in PROPERTIES},
    }
    start = sum(len(line) for line in text.splitlines(keepends=True)[: max(start_line - 1, 0)])
    start = min(start, len(text) - 1)
    shown = text[start : start + shown_chars]
    sections = []
    for name, entry in report["properties"].items():
        if not entry["units"]:
            sections.append(f"<h3>{html.escape(name)}</h3><p>{html.escape(entry['note'])}</p>\n")
            continue
        best = entry["units"][0]
        title = f"{name} ({entry['meaning']}): unit {best['unit']}, r = {best['r']:+.3f}"
        sections.append(render_html(shown, values[start : start + len(shown), best["index"]], title))
    page = (
        "<!doctype html>\n<meta charset='utf-8'>\n<title>Interpretable cells</title>\n"
        f"<h2>Interpretable cells: {html.escape(source or 'text')}</h2>\n"
        f"<p>Correlations over {len(text):,} characters; {len(shown):,} shown from line {start_line}.</p>\n"
        + LEGEND
        + "".join(sections)
    )
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "cells.json", report, indent=1)
    atomic_write_bytes(out_dir / "cells.html", page.encode())
    panels = [
        (
            f"{name}: unit {entry['units'][0]['unit']}, r = {entry['units'][0]['r']:+.3f}",
            values[start:, entry["units"][0]["index"]],
        )
        for name, entry in report["properties"].items()
        if entry["units"]
    ]
    if panels:
        buffer = io.BytesIO()
        render_png(buffer, text[start:], panels)
        atomic_write_bytes(out_dir / "cells.png", buffer.getvalue())
    return report
