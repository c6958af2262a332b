"""VQA answers as the official evaluation (GT-Vision-Lab/VQA ``vqaEval.py``) processes and scores them.

One source for both sides: data preparation turns human answers into training targets
(``soft_scores``), evaluation scores predictions (``vqa_accuracy``, ``exact_match``).

This follows the *current* official code (commit of 2021-03-11, "Fixed processing answers
bug"; its punctuation list has ``'-'`` and ``'!'`` and no ``':'`` or apostrophe). Copies
of the 2015 code still circulate and score differently. For one question with N >= 2
human answers it does this:

1. Clean: in the prediction and in every human answer, newlines and tabs become spaces
   and the ends are stripped (``clean_answer``).
2. **Only if the cleaned human answers are not all identical**: every human answer *and*
   the prediction go through ``processPunctuation`` then ``processDigitArticle``
   (together ``normalize_answer``: punctuation deleted or spaced, periods not before a
   digit removed, lowercase, number words -> digits, no articles, contractions).
   **If all N are identical, nothing more is done**: the cleaned prediction is compared
   with the cleaned human answer as raw strings, so "Yes" or "yes." against ten "yes"
   scores 0, and so does "two" against ten "2". (``prediction_form`` is the form a
   prediction is compared in; it depends on the human answers.)
3. For each of the N human answers, leave it out, count the other answers equal to the
   prediction (``matches``), score ``min(1, matches / 3)``; the accuracy is the mean
   over the N leave-one-out subsets.

(The 2015 code instead always normalized the prediction fully and gave the human
answers, when they differed, ``processPunctuation`` alone.)

Why this equals ``min(1, 0.3 k)`` with N = 10 answers of which k match the prediction:
leaving out one of the k matching answers leaves k - 1 matches (k such subsets);
leaving out one of the 10 - k others leaves k matches (10 - k subsets). So

    acc(k) = [k * min(1, (k-1)/3) + (10-k) * min(1, k/3)] / 10

    k = 0:  0
    k = 1:  [1*0   + 9*(1/3)] / 10 = 3/10 = 0.3
    k = 2:  [2*1/3 + 8*(2/3)] / 10 = 6/10 = 0.6
    k = 3:  [3*2/3 + 7*1    ] / 10 = 9/10 = 0.9
    k >= 4: every subset still has >= 3 matches, so 1.

For k <= 3 the bracket is k(k-1)/3 + k(10-k)/3 = 9k/3, i.e. 0.3 k exactly; hence
``min(1, 0.3 k)``. (With another number of answers the leave-one-out mean is computed
directly.) A single human answer has no leave-one-out subset -- the official code would
always give 0 -- so it is scored as an exact match of the normalized strings instead,
the metric of data sets with one ground-truth answer per question (easy-VQA,
``exact_match``); the official code has no such case.

This "soft score" is also the training target for the top-K answer classifier
(Kazemi & Elqursh 2017), see ``data_prep/vqa_v2.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

# The official contraction table, verbatim (the official file mixes straight and curly
# apostrophes between its versions; this is the straight-apostrophe version). Some keys
# can never match -- capitalised ones ("Im") after lowercasing, "somebody'd" maps the
# wrong way round -- and are kept anyway so that the table is the official one.
CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# Apostrophe and colon are deliberately absent (the 2021 list): "don't" keeps its apostrophe.
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# Verbatim from the official code. "(?!<=\d)" was meant as a look-behind but is a
# look-ahead for the text "<=digit", which never occurs here, so in effect: a period
# is removed unless a digit follows it ("3.5" keeps it, "dog." and "5." lose it).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# The official code passes re.UNICODE (= 32) as the *count* argument of sub(), so at
# most 32 periods are removed. Reproduced so that even odd strings score identically.
_PERIOD_COUNT = int(re.UNICODE)
_ANY_MARK = re.compile("[" + re.escape("".join(PUNCTUATION) + ".") + "]")


@lru_cache(maxsize=1 << 16)  # pure, and the same few answers recur across a data set
def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: punctuation -> space, or deleted.

    Each punctuation character is deleted (not replaced by a space) when it touches a
    space anywhere in the *original* text, or when the text contains a digit,digit comma
    ("1,000" -> "1000"); otherwise it becomes a space ("red,car" -> "red car"). Then
    periods not followed by a digit are removed. No lowercasing happens here.
    """
    if not _ANY_MARK.search(text):
        return text  # fast path: most answers ("yes", "2") have nothing to process
    out = text
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lowercase, number words -> digits, drop
    articles, restore contractions, and re-join on single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def clean_answer(s: str) -> str:
    """The official first step for every answer: newlines and tabs -> spaces, ends stripped."""
    return s.replace("\n", " ").replace("\t", " ").strip()


@lru_cache(maxsize=1 << 16)
def normalize_answer(s: str) -> str:
    """``clean_answer``, ``process_punctuation``, ``process_digit_article``: the full
    normalization the official code applies to the prediction and to every human answer
    of a question whose human answers are not all identical.

    >>> normalize_answer("Two")
    '2'
    >>> normalize_answer("the dog.")
    'dog'
    >>> normalize_answer("dont")
    "don't"
    """
    return process_digit_article(process_punctuation(clean_answer(s)))


def answers_identical(human_answers: Sequence[str]) -> bool:
    """True when the cleaned human answers are all the same string: then the official
    code compares the prediction with them raw (after ``clean_answer`` only)."""
    return len({clean_answer(a) for a in human_answers}) == 1  # official: not len(set(...)) > 1


def prediction_form(prediction: str, human_answers: Sequence[str]) -> str:
    """The form in which ``prediction`` is compared with these human answers: the key to
    look up in ``soft_scores(human_answers)``.

    ``normalize_answer(prediction)``, except when there are several human answers and
    they are all identical: then only ``clean_answer(prediction)`` (the official quirk).
    """
    if len(human_answers) >= 2 and answers_identical(human_answers):
        return clean_answer(prediction)
    return normalize_answer(prediction)


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Official (2021) VQA accuracy of ``prediction`` against one question's human answers.

    With N >= 2 answers: the mean over the N leave-one-out subsets of
    ``min(1, matches / 3)``; for the usual 10 answers that is ``min(1, 0.3 k)``. If the
    cleaned human answers differ, they and the prediction are all normalized
    (``normalize_answer``) before comparing; if they are all identical, the cleaned
    strings are compared raw -- both as in the official code.

    With a single human answer there is no leave-one-out subset (the official code would
    always give 0), so it is scored as an exact match of the normalized strings instead.
    """
    return soft_scores(human_answers).get(prediction_form(prediction, human_answers), 0.0)


def soft_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """Every answer form that scores above 0 on this question, with its VQA accuracy.

    Keys are the human answers as the official code compares them: ``normalize_answer``
    of each when they differ, ``clean_answer`` (raw) when all are identical, and
    ``normalize_answer`` of the one answer when there is only one. A prediction ``p``
    scores ``soft_scores(h).get(prediction_form(p, h), 0.0)``, which is what
    ``vqa_accuracy`` returns. Computing all scores at once is what the training targets
    need.
    """
    if not human_answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    if len(human_answers) == 1:
        return {normalize_answer(human_answers[0]): 1.0}
    if answers_identical(human_answers):
        humans = [clean_answer(a) for a in human_answers]
    else:
        humans = [normalize_answer(a) for a in human_answers]
    n = len(humans)
    scores = {}
    for answer, k in Counter(humans).items():
        # Leaving out one of the k matching answers leaves k - 1 matches, leaving out one
        # of the n - k others leaves k. Summing the integers min(3, matches) and dividing
        # once gives e.g. exactly 0.3 rather than 0.30000000000000004.
        total = k * min(3, k - 1) + (n - k) * min(3, k)
        scores[answer] = total / (3 * n)
    return scores


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when the two answers are equal after ``normalize_answer``, else 0.0.

    Used for data sets with a single ground-truth answer per question (easy-VQA).
    """
    return float(normalize_answer(prediction) == normalize_answer(answer))
