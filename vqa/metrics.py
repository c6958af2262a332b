"""VQA evaluation: per-question accuracy (official, ``core.answers``) summarised as the
official evaluation reports it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from core.answers import exact_match, normalize_answer, soft_scores, vqa_accuracy  # noqa: F401 (the metric)
from core.errors import AttendError


def summarize(records: Iterable[Mapping]) -> dict:
    """Aggregate per-question scores as the official evaluation reports them.

    ``records``: dicts with ``accuracy`` (0..1), ``answer_type`` and ``question_type``.
    Returns ``{"accuracy": overall, "per_answer_type": {type: acc},
    "per_question_type": {type: acc}, "count": n}``, accuracies x100 rounded to 2
    decimals (the official ``round(100 * mean, 2)``).
    """
    records = list(records)
    if not records:
        raise AttendError("no answered questions to summarize")
    by_answer: dict[str, list[float]] = defaultdict(list)
    by_question: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_answer[r["answer_type"]].append(float(r["accuracy"]))
        by_question[r["question_type"]].append(float(r["accuracy"]))

    def pct(values: list[float]) -> float:
        return round(100 * sum(values) / len(values), 2)

    return {
        "accuracy": pct([float(r["accuracy"]) for r in records]),
        "per_answer_type": {t: pct(v) for t, v in sorted(by_answer.items())},
        "per_question_type": {t: pct(v) for t, v in sorted(by_question.items())},
        "count": len(records),
    }
