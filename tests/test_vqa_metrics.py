"""VQA accuracy and answer normalization against hand-computed values.

Each normalization case is worked through the official processPunctuation /
processDigitArticle by hand in the comment next to it; each accuracy case through the
rules of the 2021 official vqaEval.py (see core/answers.py): clean (newline/tab -> space,
strip); only if the 10 cleaned human answers differ, normalize them all AND the
prediction; else compare raw; accuracy = min(1, 0.3 k) for k matching humans.
"""

import pytest

from core.answers import (
    CONTRACTIONS,
    PUNCTUATION,
    answers_identical,
    clean_answer,
    exact_match,
    normalize_answer,
    prediction_form,
    process_punctuation,
    soft_scores,
    vqa_accuracy,
)
from core.errors import AttendError
from vqa.metrics import summarize


@pytest.mark.parametrize(
    "raw, expected",
    [
        # lowercase, then "two" is a number word -> "2"
        ("Two", "2"),
        ("none", "0"),
        ("ten", "10"),
        # period not followed by a digit is removed; "the" is an article
        ("the dog.", "dog"),
        ("5.", "5"),
        ("u.s.a.", "usa"),
        # period followed by a digit stays
        ("3.5", "3.5"),
        ("2.5.", "2.5"),  # the first period is before "5", the last is not
        # contraction table restores the apostrophe; an existing apostrophe is kept
        ("dont", "don't"),
        ("Whats", "what's"),
        ("don't", "don't"),
        # a capitalised table key cannot match after lowercasing ("Im" -> "im", as officially)
        ("Im", "im"),
        # '!' touches no space -> replaced by a space -> "yes " -> split/join -> "yes"
        ("yes!", "yes"),
        # digit,digit comma anywhere: every punctuation mark is deleted, not spaced
        ("1,000", "1000"),
        ("1,000 dogs!", "1000 dogs"),
        # ", " touches a space -> comma deleted; "a" article dropped
        ("a red, car", "red car"),
        # comma touching no space and no digit,digit -> becomes a space
        ("red,car", "red car"),
        ("t-shirt", "t shirt"),
        ("(red)", "red"),
        # ':' is not in the 2021 punctuation list and "%" never was
        ("it's 3:00", "it's 3:00"),
        ("50%", "50%"),
        # newline and tab become spaces, ends are stripped
        ("\tno\n", "no"),
        ("an apple", "apple"),
        ("black and white", "black and white"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_process_punctuation_does_not_lowercase_or_strip():
    # processPunctuation alone: no lowercasing, and a mark replaced by a space leaves
    # that space in place (processDigitArticle's split/join removes it afterwards).
    assert process_punctuation("Yes!") == "Yes "
    assert process_punctuation("red, blue") == "red blue"


def test_contraction_table_is_the_official_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["aint"] == "ain't" and CONTRACTIONS["arent"] == "aren't"
    assert CONTRACTIONS["whats"] == "what's" and CONTRACTIONS["youve"] == "you've"
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # the official table's own oddity


@pytest.mark.parametrize(
    "k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (5, 1.0), (9, 1.0), (10, 1.0)]
)
def test_leave_one_out_equals_min_1_point3k(k, expected):
    # k matching humans of 10: [k*min(1,(k-1)/3) + (10-k)*min(1,k/3)] / 10
    humans = ["yes"] * k + ["no"] * (10 - k)
    assert vqa_accuracy("yes", humans) == expected  # exact, not approximate
    # The prediction is normalized only when the human answers differ (2021 code). With
    # k = 10 they are all "yes" and compared raw, so "Yes." scores 0 (the pre-2021
    # expectation here was 1.0).
    assert vqa_accuracy("Yes.", humans) == (expected if k < 10 else 0.0)


def test_leave_one_out_with_other_numbers_of_answers():
    # 3 answers, 2 match: subsets leave out yes (1 match), yes (1), no (2) -> (1/3+1/3+2/3)/3
    assert vqa_accuracy("yes", ["yes", "yes", "no"]) == pytest.approx(4 / 9)
    # 5 answers, 4 match: leave out a yes -> 3 matches -> 1; leave out no -> 4 -> 1
    assert vqa_accuracy("yes", ["yes"] * 4 + ["no"]) == 1.0
    # 2 answers, 1 match: (0 + 1/3) / 2
    assert vqa_accuracy("yes", ["yes", "no"]) == pytest.approx(1 / 6)


def test_single_answer_is_exact_match_and_empty_is_an_error():
    assert vqa_accuracy("Yes", ["yes"]) == 1.0
    assert vqa_accuracy("no", ["yes"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


def test_answers_get_full_normalization_only_when_they_differ():
    # Answers differ -> "1,000" is processed to "1000" and matches the prediction.
    assert vqa_accuracy("1,000", ["1,000"] * 3 + ["no"] * 7) == 0.9
    assert vqa_accuracy("1000", ["1,000"] * 3 + ["no"] * 7) == 0.9
    # All ten identical -> the official code leaves them untouched: no match.
    assert vqa_accuracy("1000", ["1,000"] * 10) == 0.0
    # 2021: human answers get processDigitArticle too, so "two" -> "2" on both sides
    # (pre-2021 the humans were only punctuation-processed and this scored 0.0).
    assert vqa_accuracy("two", ["two"] * 4 + ["no"] * 6) == 1.0
    assert vqa_accuracy("two", ["2"] * 4 + ["no"] * 6) == 1.0


def test_soft_scores_equal_vqa_accuracy():
    humans = ["blue"] * 4 + ["red"] * 3 + ["green"] + ["yellow"] * 2
    assert soft_scores(humans) == {"blue": 1.0, "red": 0.9, "green": 0.3, "yellow": 0.6}
    for answer, score in soft_scores(humans).items():
        assert vqa_accuracy(answer, humans) == score
    assert vqa_accuracy("purple", humans) == 0.0


def test_exact_match():
    assert exact_match("circle", "circle") == 1.0
    assert exact_match("Circle.", "circle") == 1.0
    assert exact_match("circle", "rectangle") == 0.0


def test_summarize():
    records = [
        {"accuracy": 1.0, "answer_type": "yes/no", "question_type": "is the"},
        {"accuracy": 0.3, "answer_type": "yes/no", "question_type": "is the"},
        {"accuracy": 0.6, "answer_type": "number", "question_type": "how many"},
    ]
    assert summarize(records) == {
        "accuracy": 63.33,  # 100 * 1.9 / 3 = 63.333...
        "per_answer_type": {"number": 60.0, "yes/no": 65.0},
        "per_question_type": {"how many": 60.0, "is the": 65.0},
        "count": 3,
    }
    with pytest.raises(AttendError):
        summarize([])


# --------------------------------------------------------------------------------------
# The 2021 rules, case by case. Every expected value is worked out by hand in the comment:
# "identical" = the 10 cleaned human answers are one string -> raw comparison;
# "differ" = they are not -> humans and prediction normalized; then min(1, 0.3 k).
_DOTS32_X = "." * 32 + "x"  # 32 periods: all removed by the capped sub -> "x"
_DOTS33_X = "." * 33 + "x"  # 33 periods: the cap (count=32) leaves one -> ".x"

OFFICIAL_2021_CASES = [
    # --- all identical: raw comparison, nothing normalized ---
    ("yes", ["yes"] * 10, 1.0),  # identical, raw "yes" == "yes", k = 10
    ("Yes", ["yes"] * 10, 0.0),  # identical -> no lowercasing: "Yes" != "yes"
    ("yes.", ["yes"] * 10, 0.0),  # identical -> the period is not removed
    ("two", ["2"] * 10, 0.0),  # identical -> no number words: "two" != "2"
    ("2", ["two"] * 10, 0.0),  # same the other way round
    ("the dog", ["dog"] * 10, 0.0),  # identical -> the article is not dropped
    ("1000", ["1,000"] * 10, 0.0),  # identical -> the digit,digit comma stays
    ("red  car", ["red car"] * 10, 0.0),  # identical -> inner double space is not squeezed
    # --- cleaning happens always, before the identity test ---
    (" yes\n", ["yes"] * 10, 1.0),  # prediction cleaned to "yes", raw equal, k = 10
    ("black\nand white", ["black and white"] * 10, 1.0),  # inner newline -> space, then equal
    ("yes", ["yes\t"] * 5 + [" yes"] * 5, 1.0),  # humans clean to 10 x "yes": identical, k = 10
    ("Yes", ["yes\t"] * 5 + [" yes"] * 5, 0.0),  # ... so raw: "Yes" != "yes"
    # --- the two examples of the brief (0.0 with the pre-2021 code) ---
    ("2", ["two"] * 3 + ["3"] * 7, 0.9),  # differ -> humans "2" x3, "3" x7; k = 3 -> 0.9
    ("dog", ["the dog"] * 3 + ["cat"] * 7, 0.9),  # differ -> "the dog" -> "dog"; k = 3
    # --- differ: case and number words normalized on both sides ---
    ("Yes", ["yes"] * 9 + ["Yes"], 1.0),  # differ -> all ten "yes", prediction "yes"; k = 10
    ("Two", ["2"] * 4 + ["3"] * 6, 1.0),  # "Two" -> "2"; k = 4 -> 1
    ("none", ["0"] * 2 + ["zero"] + ["1"] * 7, 0.9),  # "none", "zero" -> "0"; k = 3
    ("RED", ["Red"] * 2 + ["blue"] * 8, 0.6),  # both lowercased; k = 2
    ("an apple", ["apple"] * 3 + ["apples"] * 7, 0.9),  # article "an" dropped; k = 3
    ("red  car", ["red car"] * 2 + ["blue"] * 8, 0.6),  # differ -> split/join squeezes; k = 2
    # --- contractions ---
    ("dont", ["don't"] * 2 + ["no"] * 8, 0.6),  # prediction "dont" -> "don't"; k = 2
    ("don't", ["dont"] + ["no"] * 9, 0.3),  # human "dont" -> "don't"; k = 1
    # --- punctuation: replaced by a space vs deleted ---
    ("t shirt", ["t-shirt"] * 3 + ["shirt"] * 7, 0.9),  # "-" touches no space -> space; k = 3
    ("tshirt", ["t-shirt"] * 3 + ["shirt"] * 7, 0.0),  # ... so not "tshirt"
    ("red car", ["red,car"] * 2 + ["blue"] * 8, 0.6),  # "," touches no space -> space
    ("red car", ["red, car"] * 2 + ["blue"] * 8, 0.6),  # ", " touches a space -> deleted
    ("yes", ["yes!"] * 4 + ["no"] * 6, 1.0),  # "yes!" -> "yes " -> split/join "yes"; k = 4
    ("3:00", ["3:00"] * 3 + ["3"] * 7, 0.9),  # ":" is not in the 2021 list: kept on both sides
    ("300", ["3:00"] * 3 + ["3"] * 7, 0.0),  # ... so "300" matches nothing
    # --- a digit,digit comma anywhere: every mark is deleted, none spaced ---
    ("1000", ["1,000"] * 3 + ["100"] * 7, 0.9),  # "1,000" -> "1000"; k = 3
    ("1 000", ["1,000"] * 3 + ["100"] * 7, 0.0),  # the comma is deleted, not spaced
    ("1000dogs", ["1,000-dogs"] + ["no"] * 9, 0.3),  # "-" deleted too (comma rule); k = 1
    ("1000 dogs", ["1,000-dogs"] + ["no"] * 9, 0.0),  # ... so not "1000 dogs"
    # --- periods: removed unless a digit follows ---
    ("3.5", ["3.5"] * 2 + ["3"] * 8, 0.6),  # period before "5" stays; k = 2
    ("35", ["3.5"] * 2 + ["3"] * 8, 0.0),  # ... so "35" matches nothing
    ("2.5", ["2.5."] + ["2"] * 9, 0.3),  # "2.5." -> "2.5" (last period not before a digit)
    ("usa", ["u.s.a."] * 3 + ["uk"] * 7, 0.9),  # every period precedes a letter or the end
    ("dog", ["dog."] * 4 + ["cat"] * 6, 1.0),  # "dog." -> "dog"; k = 4
    # --- the count=re.UNICODE quirk: at most 32 periods removed per answer ---
    ("x", [_DOTS32_X] * 3 + ["y"] * 7, 0.9),  # 32 periods all removed -> "x"; k = 3
    ("x", [_DOTS33_X] * 3 + ["y"] * 7, 0.0),  # 33rd period survives -> ".x" != "x"
    (_DOTS33_X, [_DOTS33_X] * 3 + ["y"] * 7, 0.9),  # prediction capped the same way -> ".x"
    (".x", [_DOTS33_X] * 3 + ["y"] * 7, 0.0),  # ".x" itself loses its period -> "x"
]
OFFICIAL_2021_CASES_HUMANS = [h for _, h, _ in OFFICIAL_2021_CASES] + [["Yes"] * 10, ["yes"] * 10]


@pytest.mark.parametrize("prediction, humans, expected", OFFICIAL_2021_CASES)
def test_official_2021_rules(prediction, humans, expected):
    assert len(humans) == 10
    assert vqa_accuracy(prediction, humans) == expected
    # soft_scores keyed by prediction_form gives the same value
    assert soft_scores(humans).get(prediction_form(prediction, humans), 0.0) == expected


def test_punctuation_list_is_the_2021_one():
    # the official list, in its order; no ":" and no apostrophe
    assert PUNCTUATION == list(';/[]"{}()=+\\_-><@`,?!')


def test_prediction_form_and_soft_score_keys():
    # identical -> raw (cleaned) forms on both sides
    assert answers_identical(["yes"] * 9 + [" yes\n"])
    assert not answers_identical(["yes"] * 9 + ["Yes"])
    assert prediction_form(" Yes.\t", ["yes"] * 10) == "Yes."
    assert soft_scores(["Yes"] * 10) == {"Yes": 1.0}
    # differ -> normalized forms
    assert prediction_form("Yes.", ["yes", "no"]) == "yes"
    assert soft_scores(["two"] * 3 + ["3"] * 7) == {"2": 0.9, "3": 1.0}
    assert soft_scores(["the dog"] * 3 + ["A dog"] + ["cat"] * 6) == {"dog": 1.0, "cat": 1.0}
    # one answer -> normalized (exact match of normalized strings)
    assert prediction_form("Yes.", ["yes"]) == "yes"
    assert soft_scores(["The Dog."]) == {"dog": 1.0}
    assert clean_answer("\tred\ncar ") == "red car"


def test_normalized_candidates_can_be_looked_up_by_normalize_answer():
    # data_prep/vqa_v2.py looks candidates up by normalize_answer(candidate). Its
    # candidates are normalized answers (fixed points of normalize_answer), for which
    # prediction_form is the candidate itself whichever branch applies, so the stored
    # targets equal vqa_accuracy.
    candidates = ["yes", "no", "2", "dog", "don't", "3.5", "red car", "1000"]
    for humans in OFFICIAL_2021_CASES_HUMANS:
        scores = soft_scores(humans)
        for c in candidates:
            assert normalize_answer(c) == c
            assert prediction_form(c, humans) == c
            assert scores.get(normalize_answer(c), 0.0) == vqa_accuracy(c, humans)
