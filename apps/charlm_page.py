"""The app's character-model page: sample Python-like text, and see the interpretable cells.

UI only: the model and the analysis come from ``charlm`` (``inference.sample``, ``cells``).
The coloured text is built by ``charlm.cells.render_html``, which escapes every character.
Called by ``apps/streamlit_app.py`` when the sidebar's *Page* is *Character model*.
"""

from __future__ import annotations

import streamlit as st

from core.errors import AttendError

MAX_CHARS = 6000  # characters analysed: a few seconds on the CPU
SHOWN_CHARS = 2500  # characters coloured
OWN_TEXT = "Your own text"


@st.cache_resource(show_spinner="Loading the character model...", max_entries=1)
def get_model():
    from charlm.checkpoint import load_charlm

    return load_charlm("stdlib")


@st.cache_data(show_spinner=False, max_entries=1)
def held_out_files() -> dict[str, str]:
    """The standard-library files the shipped model never trained on: name -> path."""
    from charlm.data import held_out, stdlib_files, stdlib_root

    root = stdlib_root()
    return {str(f): str(root / f) for f in stdlib_files() if held_out(str(f))}


@st.cache_data(show_spinner="Reading the text with the model...", max_entries=8)
def analyse(text: str):
    """Every unit after every character (N, U), the text's properties, and the best units of each."""
    from charlm.cells import find_cells, text_properties, unit_activations

    model, vocab = get_model()
    values = unit_activations(model, vocab, text)
    properties = text_properties(text)
    return values, properties, find_cells(values, properties, model.unit_names())


def show_sample(model, vocab) -> None:
    from charlm.inference import sample

    st.subheader("Sample")
    left, middle, right = st.columns(3)
    prime = left.text_input("Start with", value="def ", key="charlm_prime")
    temperature = middle.slider("Temperature", 0.0, 1.5, 0.5, 0.05, key="charlm_temperature")
    length = right.number_input("Characters", 10, 2000, 300, 10, key="charlm_length")
    seed = left.number_input("Seed", 0, 2**31 - 1, 1, key="charlm_seed")
    if st.button("Write", key="charlm_sample"):
        text = sample(model, vocab, prime=prime, length=int(length), temperature=temperature, seed=int(seed))
        st.code(prime + text, language="python")
    st.caption(
        "Low temperatures are safe and repetitive, high ones inventive and broken; the same seed writes the same text."
    )


def choose_text() -> tuple[str, str] | None:
    from charlm.cells import read_cells_text

    files = held_out_files()
    choice = st.selectbox("Text", [*files, OWN_TEXT], key="charlm_text_choice")
    if choice == OWN_TEXT:
        text = st.text_area("Paste some Python", key="charlm_own_text", height=200)[:MAX_CHARS]
        if len(text) < 2:
            st.info("Paste some text to read.")
            return None
        return text, "your text"
    try:
        return read_cells_text(files[choice], MAX_CHARS), choice
    except AttendError as e:
        st.error(str(e))
        return None


def show_cells(model) -> None:
    from charlm.cells import LEGEND, PROPERTIES, correlations, render_html

    st.subheader("Interpretable cells")
    st.markdown(
        "Karpathy, Johnson and Fei-Fei (2016): some single units track a property of the text. "
        "Pick a property to see the unit that follows it best (Pearson's r over the text), or any unit."
    )
    chosen = choose_text()
    if chosen is None:
        return
    text, name = chosen
    values, properties, found = analyse(text)
    names = model.unit_names()
    mode = st.radio(
        "Colour by", [*PROPERTIES, "any unit"], key="charlm_property", horizontal=True,
        format_func=lambda p: p.replace("_", " "),
    )  # fmt: skip
    if mode == "any unit":
        index = names.index(st.selectbox("Unit", names, key="charlm_unit"))
    elif found[mode]["units"]:
        index = found[mode]["units"][0]["index"]
    else:
        st.info(found[mode]["note"])
        return
    rs = {p: correlations(values[:, index : index + 1], properties[p])[0] for p in PROPERTIES}
    st.caption(
        f"Unit {names[index]} over {len(text):,} characters of {name}: "
        + ", ".join(f"{p.replace('_', ' ')} r = {r:+.3f}" for p, r in rs.items() if r == r)  # r != r: NaN
    )
    shown = text[:SHOWN_CHARS]
    st.html(LEGEND + render_html(shown, values[: len(shown), index], f"unit {names[index]}"))


def main() -> None:
    st.title("Character model")
    st.markdown(
        "A two-layer LSTM that reads and writes Python one character at a time (Karpathy 2015), "
        "trained on Python's standard library. The files below were held out from its training."
    )
    try:
        model, vocab = get_model()
    except AttendError as e:
        st.error(str(e))
        return
    with st.container(key="section_charlm_sample"):
        show_sample(model, vocab)
    with st.container(key="section_charlm_cells"):
        show_cells(model)
