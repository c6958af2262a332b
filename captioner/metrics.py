"""Caption metrics: BLEU-1..4 (nltk) and the COCO toolkit's metrics (the scenes' own measures
are in ``data_prep.scenes``).

Tokenisation, one for everything: ``core.vocab.tokenize`` (lowercase, words and
numbers, punctuation dropped) on references and on generated captions. nltk's
``corpus_bleu`` and pycocoevalcap's BLEU agree on identical tokens (a test
checks it), so the two BLEU figures differ only where the toolkits do.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings


def bleu(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict:
    """Corpus BLEU-1..4 (x100) with nltk: references[i] is the list of token lists of image i."""
    from nltk.translate.bleu_score import corpus_bleu

    weights = [(1, 0, 0, 0), (0.5, 0.5, 0, 0), (1 / 3, 1 / 3, 1 / 3, 0), (0.25, 0.25, 0.25, 0.25)]
    with warnings.catch_warnings():
        # nltk warns, in six lines, whenever an n-gram order has no match (an early model):
        # the score is then 0, which is what we report, unsmoothed as in the papers.
        warnings.filterwarnings("ignore", category=UserWarning, module="nltk")
        scores = corpus_bleu(references, hypotheses, weights=weights)
    return {f"bleu{n}": round(100 * s, 2) for n, s in enumerate(scores, 1)}


def coco_metrics(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict:
    """pycocoevalcap's BLEU, METEOR (needs Java), ROUGE-L and CIDEr, x100, on our tokens.

    SPICE is left out: it downloads Stanford CoreNLP at first use, impossible offline.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        return {}
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    scorers = [(Bleu(4), [f"coco_bleu{n}" for n in range(1, 5)]), (Rouge(), "rouge_l"), (Cider(), "cider")]
    if shutil.which("java"):
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.insert(1, (Meteor(), "meteor"))
    out = {}
    for scorer, names in scorers:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap's own progress lines: not ours
                score, _ = scorer.compute_score(gts, res)
        except Exception as e:  # METEOR's Java subprocess can fail on odd machines: report, go on
            out[f"{names if isinstance(names, str) else names[0]}_error"] = type(e).__name__
            continue
        if isinstance(names, list):
            out.update({n: round(100 * s, 2) for n, s in zip(names, score)})
        else:
            out[names] = round(100 * float(score), 2)
    return out
