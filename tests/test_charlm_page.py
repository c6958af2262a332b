"""The app's character-model page, through AppTest on the shipped stdlib model: sampling
matches the library, and the cells view colours a text by the unit it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from charlm.checkpoint import load_charlm
from charlm.inference import sample

APP = Path(__file__).resolve().parent.parent / "apps" / "streamlit_app.py"
TIMEOUT = 120


@pytest.fixture
def page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.radio(key="page").set_value("charlm").run()
    assert not at.exception
    return at


def test_sampling_on_the_page_is_the_librarys(page):
    page.text_input(key="charlm_prime").set_value("import ").run()
    page.number_input(key="charlm_length").set_value(40).run()
    page.button(key="charlm_sample").click().run()
    assert not page.exception
    model, vocab = load_charlm("stdlib")
    expected = "import " + sample(model, vocab, prime="import ", length=40, temperature=0.5, seed=1)
    assert [c.value for c in page.code] == [expected]


def test_cells_of_your_own_text_name_the_unit_and_its_correlations(page):
    page.selectbox(key="charlm_text_choice").set_value("Your own text").run()
    assert any("Paste some text" in i.value for i in page.info)
    text = 'def f(x):\n    return ["a", (x, 1)]  # two\n' * 30
    page.text_area(key="charlm_own_text").set_value(text).run()
    page.radio(key="charlm_property").set_value("bracket_depth").run()
    assert not page.exception and not page.error
    captions = [c.value for c in page.caption if c.value.startswith("Unit ")]
    assert len(captions) == 1 and f"over {len(text):,} characters" in captions[0]
    assert "bracket depth r = " in captions[0] and "in comment r = " in captions[0]

    page.radio(key="charlm_property").set_value("any unit").run()
    page.selectbox(key="charlm_unit").set_value("layer1.h3").run()
    assert [c.value for c in page.caption if c.value.startswith("Unit ")][0].startswith("Unit layer1.h3 ")
