"""The tokenizer: Unicode words kept, ASCII exactly as the original regex, and what the VQA
answerer reports for a question in another language."""

import random
import re
import string
import unicodedata
from types import SimpleNamespace

import pytest
import torch

from core.vocab import _UNICODE_TOKEN, SPECIALS, Vocab, tokenize
from data_prep.scenes import make_scene
from vqa.inference import Answerer, QuestionError

# The tokenizer every shipped vocabulary was built with. ASCII text must still give this.
OLD_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def old_tokenize(text: str) -> list[str]:
    return OLD_TOKEN.findall(text.lower().replace("\u2019", "'"))


PUNCTUATION_HEAVY = [
    "",
    "   ",
    "?!",
    "What's the colour of the circle?",
    "WHAT'S THAT?!",
    "don't",
    "'quoted'",
    "''double''",
    "rock 'n' roll",
    "it's--a-test...",
    "o'clock, ma'am, y'all'd've",
    "trailing' 'leading",
    "a''b",
    "x'y'z",
    "'",
    "e.g. u.s.a. 3.5 1,000 50% $20 #1 @home",
    "red_circle __init__ snake_case_word _",
    "tab\tnew\nline\rreturn\x0bvt\x0cff",
    "(parens) [brackets] {braces} <angles>",
    "slash/back\\slash|pipe",
    "semi;colon:colon",
    'say "hello"',
    "a+b=c*d^e~f`g",
    "100% sure; 2x2=4!",
    "COCO_train2014_000000000001.jpg",
    "there is a large red circle to the right of a small blue star.",
    "\x00\x01\x7f control",
    "don\u2019t stop \u2019twas",  # the curly apostrophe joins too (not ASCII: both paths)
]


def _scene_texts(n: int = 200) -> list[str]:
    texts = []
    for i in range(n):
        _, _, captions, questions = make_scene(0, "train", i)
        texts += captions
        texts += [q[1] for q in questions]
    return texts


def _random_ascii(n: int = 2000) -> list[str]:
    rng = random.Random(0)
    alphabet = string.printable + "'''''"  # apostrophes over-represented
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def test_ascii_text_tokenizes_exactly_as_before():
    texts = _scene_texts() + PUNCTUATION_HEAVY + _random_ascii()
    assert len(texts) > 3000
    unicode_pattern = _UNICODE_TOKEN
    for text in texts:
        expected = old_tokenize(text)
        assert tokenize(text) == expected, text
        # and the Unicode pattern itself agrees on ASCII (tokenize never sends ASCII there)
        lowered = text.lower().replace("\u2019", "'")
        assert unicode_pattern.findall(lowered) == expected, text


def test_easy_vqa_questions_tokenize_exactly_as_before():
    easy_vqa = pytest.importorskip("easy_vqa")
    questions = easy_vqa.get_train_questions()[0] + easy_vqa.get_test_questions()[0]
    assert all(tokenize(q) == old_tokenize(q) for q in questions)


@pytest.mark.parametrize("path, key", [
    ("vqa/weights/scenes.pt", "question_vocab"),
    ("vqa/weights/easy_vqa.pt", "question_vocab"),
    ("captioner/weights/scenes.pt", "vocab"),
])  # fmt: skip
def test_every_word_of_the_shipped_vocabularies_is_still_one_token(path, key):
    itos = torch.load(path, map_location="cpu", weights_only=True)[key]["itos"]
    assert tuple(itos[: len(SPECIALS)]) == SPECIALS
    for word in itos[len(SPECIALS) :]:
        assert tokenize(word) == [word]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("café", ["café"]),
        ("Café au lait", ["café", "au", "lait"]),
        ("cafe\u0301", ["café"]),  # combining accent -> NFC: the same word as precomposed
        ("crème brûlée, s'il vous plaît!", ["crème", "brûlée", "s'il", "vous", "plaît"]),
        ("Какого цвета круг?", ["какого", "цвета", "круг"]),  # Cyrillic, lowercased
        ("Τι χρώμα έχει ο κύκλος;", ["τι", "χρώμα", "έχει", "ο", "κύκλος"]),  # Greek; ";" dropped
        ("ΟΔΟΣ", ["ΟΔΟΣ".lower()]),  # str.lower(), final sigma and all
        ("Straße ẞ", ["straße", "ß"]),
        ("wie viele Kreise gibt es? – «drei»", ["wie", "viele", "kreise", "gibt", "es", "drei"]),
        ("¿cuántos círculos hay?", ["cuántos", "círculos", "hay"]),  # ¿ ? dropped
        ("٣ دوائر", ["٣", "دوائر"]),  # Arabic-Indic digit and Arabic letters
        ("३ वृत्त", ["३", "वृत्त"]),  # Devanagari digit; vowel sign and virama stay in the word
        ("x² ½", ["x²", "½"]),  # numeric characters are digits of a sort: kept
        ("l'été, l’hiver", ["l'été", "l'hiver"]),  # inner apostrophes join, curly too
        ("naïve_test", ["naïve", "test"]),  # underscore is not a letter: it splits
        ("a_b", ["a", "b"]),
        ("中文问题", ["中文问题"]),  # no spaces in the script: one run of letters
        ("what…? — «yes» “no” „ja“ ‹x›", ["what", "yes", "no", "ja", "x"]),  # punctuation dropped
        ("🙂 ★ → ©", []),  # symbols are not words
        ("\u00a0yes\u2003no\u3000", ["yes", "no"]),  # any Unicode space separates
    ],
)
def test_unicode_words_are_kept(text, expected):
    assert tokenize(text) == expected


def test_tokens_are_nfc():
    for text in ["Ångström", "A\u030angstro\u0308m", "\u212bngstr\u00f6m"]:  # precomposed, combining, Angstrom sign
        (token,) = tokenize(text)
        assert token == unicodedata.normalize("NFC", "ångström")


# ---------------------------------------------------------------- the VQA answerer


@pytest.fixture(scope="module")
def answerer() -> Answerer:
    """The shipped scenes model's vocabulary in an Answerer; check_question needs nothing else."""
    itos = torch.load("vqa/weights/scenes.pt", map_location="cpu", weights_only=True)["question_vocab"]["itos"]
    net = SimpleNamespace(config=SimpleNamespace(grid=(7, 7)))
    return Answerer(net, Vocab(itos), [], encoder=None, checkpoint={}, device=torch.device("cpu"))


def test_a_question_in_another_language_is_unknown_words_not_empty(answerer):
    with pytest.raises(QuestionError, match="none of the question's words is known") as e:
        answerer.check_question("какого цвета круг?")
    assert "какого, цвета, круг" in str(e.value)
    assert "empty" not in str(e.value)
    with pytest.raises(QuestionError, match=r"none of the question's words is known.*χρώμα"):
        answerer.check_question("Τι χρώμα έχει ο κύκλος;")


@pytest.mark.parametrize("question", ["", "   ", "?", "?!...", "«»", "🙂", None])
def test_empty_or_punctuation_only_is_an_empty_question(answerer, question):
    with pytest.raises(QuestionError, match="empty question"):
        answerer.check_question(question)


def test_a_known_question_with_a_foreign_word(answerer):
    tokens, unknown = answerer.check_question("What colour is the café circle?")
    assert tokens == ["what", "colour", "is", "the", "café", "circle"]
    assert unknown == ["café"]
