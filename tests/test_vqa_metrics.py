"""VQA accuracy and answer normalization against hand-computed values.

Each normalization case is worked through the official processPunctuation /
processDigitArticle by hand in the comment next to it.
"""

import pytest

from core.answers import CONTRACTIONS, exact_match, normalize_answer, process_punctuation, soft_scores, vqa_accuracy
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
    # The official code applies only this to human answers: no lowercasing, and a mark
    # replaced by a space leaves that space in place.
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
    assert vqa_accuracy("Yes.", humans) == expected  # prediction is normalized


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


def test_human_answers_get_punctuation_processing_only_when_they_differ():
    # Answers differ -> "1,000" is processed to "1000" and matches the prediction.
    assert vqa_accuracy("1,000", ["1,000"] * 3 + ["no"] * 7) == 0.9
    assert vqa_accuracy("1000", ["1,000"] * 3 + ["no"] * 7) == 0.9
    # All ten identical -> the official code leaves them untouched: no match.
    assert vqa_accuracy("1000", ["1,000"] * 10) == 0.0
    # Human answers are not lowercased or number-mapped (the released answers already are).
    assert vqa_accuracy("two", ["two"] * 4 + ["no"] * 6) == 0.0
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
