"""Multiple-choice VQA: rank a question's candidate answers by the model's answer scores.

VQA v1's multiple-choice task (Antol et al. 2015) gives each question 18 candidates, one of
them right; the model must pick one. A classifier over K answers picks the candidate it
gives the highest probability (softmax over its whole answer list), so the choice is the
open-ended model's own belief restricted to the candidates: no retraining.

A candidate is matched to the model's answers in the official normalised form
(``core.answers.normalize_answer``: "Two" -> "2", "a dog" -> "dog"), the form the answer
list was built in (``data_prep/vqa_v2.py``). Where several of the model's answers share one
form their probabilities are summed (it can only happen with an answer list that was not
normalised). A candidate whose form is not among the model's answers cannot be scored: it
is reported as ``unscorable`` and never ranked, not silently given probability 0 -- a model
that cannot say "a bald eagle" has no opinion about it. If no candidate is scorable no
answer is chosen (``choice`` None, with a ``note`` saying why).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.answers import clean_answer, normalize_answer
from core.errors import AttendError

MIN_CHOICES = 2
MAX_CHOICES = 100  # VQA v1 has 18; a bound keeps a pasted list from flooding the output
MAX_CHOICE_CHARS = 200


class ChoiceError(AttendError):
    """Candidate answers that cannot be ranked: too few, empty, or the same answer twice."""


def check_choices(choices: Sequence[str]) -> list[str]:
    """The candidates, each ``clean_answer``-ed, or ``ChoiceError`` (one line) when they are not usable:
    fewer than ``MIN_CHOICES``, more than ``MAX_CHOICES``, one empty (or empty once normalised,
    like "the"), or two the same answer once normalised ("Two" and "2", "a dog" and "dog")."""
    if isinstance(choices, str) or not all(isinstance(c, str) for c in choices):
        raise ChoiceError("choices must be a list of strings, one candidate answer each")
    cleaned = [clean_answer(c) for c in choices]
    if len(cleaned) < MIN_CHOICES:
        raise ChoiceError(
            f"give at least {MIN_CHOICES} candidate answers to choose from (got {len(cleaned)}), "
            'e.g. --choices "a bald eagle" "a sparrow"'
        )
    if len(cleaned) > MAX_CHOICES:
        raise ChoiceError(f"too many candidate answers ({len(cleaned)}; the limit is {MAX_CHOICES})")
    seen: dict[str, str] = {}
    for n, choice in enumerate(cleaned, 1):
        if len(choice) > MAX_CHOICE_CHARS:
            raise ChoiceError(f"candidate {n} is too long ({len(choice)} characters; the limit is {MAX_CHOICE_CHARS})")
        form = normalize_answer(choice)
        if not form:
            raise ChoiceError(f"candidate {n} ({choice!r}) is empty" if choice else f"candidate {n} is empty")
        if form in seen:
            raise ChoiceError(
                f"candidates {seen[form]!r} and {choice!r} are the same answer once normalised ({form!r})"
            )
        seen[form] = choice
    return cleaned


def answer_forms(answers: Sequence[str]) -> dict[str, list[int]]:
    """normalised form -> the indices of the model's answers with that form."""
    forms: dict[str, list[int]] = {}
    for k, answer in enumerate(answers):
        forms.setdefault(normalize_answer(answer), []).append(k)
    return forms


def rank_choices(probs: torch.Tensor, forms: dict[str, list[int]], choices: Sequence[str]) -> dict:
    """Rank ``choices`` by one question's answer probabilities ``probs`` (K,).

    Returns ``{"choice": the best candidate or None, "ranked": [{"choice", "form",
    "probability", "rank"}, ...] best first, "unscorable": [candidates outside the answer
    list]}``, plus ``"note"`` when nothing could be chosen. Ties keep the candidates' given
    order (stable sort), so candidates that normalise alike (allowed in data sets, refused
    from users by ``check_choices``) share a probability and the first one is chosen.
    """
    probs = probs.detach().float().cpu()  # (K,)
    scored, unscorable = [], []
    for choice in choices:
        form = normalize_answer(choice)
        indices = forms.get(form)
        if not indices:
            unscorable.append(choice)
            continue
        scored.append((float(probs[indices].sum()), choice, form))
    order = sorted(range(len(scored)), key=lambda i: -scored[i][0])  # stable: ties in given order
    ranked = [
        {"choice": scored[i][1], "form": scored[i][2], "probability": round(scored[i][0], 4), "rank": r}
        for r, i in enumerate(order, 1)
    ]
    result: dict = {"choice": ranked[0]["choice"] if ranked else None, "ranked": ranked, "unscorable": unscorable}
    if not ranked:
        result["note"] = (
            f"no answer chosen: none of the {len(choices)} candidates is among this model's "
            f"{len(probs)} answers, so none can be scored"
        )
    return result
