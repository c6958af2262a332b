"""Train and evaluate the VQA model on a prepared data folder (`attend train/evaluate vqa`).

Training runs the shared loop (``core.training.fit``): resume, torchrun, the metrics
log and plot come from there. Evaluation answers every question of a split, scores it
with the official VQA accuracy (10 human answers) or exact match (one answer, easy-VQA),
and writes the answers in the official results format ``[{question_id, answer}]``.

``--multiple-choice`` also scores VQA v1's multiple-choice task where the prepared questions
carry candidates (``choices``): the model's pick is the candidate it ranks first
(``vqa/choices.py``) and the official MC accuracy is the same formula applied to that pick.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from core import distributed
from core.checkpoint import check_encoder_fit, export_checkpoint
from core.config import check_options
from core.domain import domain_record
from core.encoder import EncoderConfig
from core.errors import AttendError
from core.features import FeatureCache
from core.prepared import VQA, atomic_write_json, split_records
from core.training import TrainConfig, check_train_config, fit, seed_everything
from core.vocab import Vocab

from .checkpoint import BOUNDS, DERIVED, KIND, METRICS, load_vqa, resolve_checkpoint
from .choices import answer_forms, rank_choices
from .data import Collate, VQAExamples
from .metrics import exact_match, summarize, vqa_accuracy
from .model import VQAConfig, VQANet, vqa_loss

# ---------------------------------------------------------------- answering a split


@torch.inference_mode()
def answer_logits(
    net: VQANet, examples: VQAExamples, batch_size: int = 64, device: str | torch.device = "cpu"
) -> Iterator[torch.Tensor]:
    """The answer logits (B, K) of the questions of ``examples.records``, batch by batch, in order.

    ``batch_size`` counts images (each with all its questions)."""
    net.eval()
    loader = DataLoader(examples, batch_size=batch_size, shuffle=False, collate_fn=Collate(None))
    for features, questions, image_index, _ in loader:
        logits, _ = net(features.to(device).float(), questions.to(device), image_index.to(device))  # (B, K)
        yield logits.float().cpu()


def predict(
    net: VQANet, examples: VQAExamples, batch_size: int = 64, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The index of the best answer for every question of ``examples.records``, in order."""
    return torch.cat([logits.argmax(1) for logits in answer_logits(net, examples, batch_size, device)])


def score(prediction: str, record: dict, metric: str) -> float | None:
    """One answer's accuracy (0..1), or None where the record has no human answers (test)."""
    if not record["answers"]:
        return None
    if metric == "exact":
        return exact_match(prediction, record["answers"][0])
    return vqa_accuracy(prediction, record["answers"])


def answer_split(
    net: VQANet,
    cache: FeatureCache,
    records: list[dict],
    vocab: Vocab,
    answers: list[str],
    metric: str,
    batch_size: int = 64,
    device="cpu",
    multiple_choice: bool = False,
) -> tuple[dict | None, list[dict]]:
    """Answer the records whose image is cached -> (summary or None when nothing is scorable, answered).

    Answers are strings from the model's own answer list, so a checkpoint can be scored on
    any prepared folder (another seed of the scenes, say) whatever that folder's answer ids.
    With ``multiple_choice``, a record with candidates (``choices``) also gets ``choice`` (the
    candidate ranked first; None when none is among the model's answers), ``choice_accuracy``
    (that candidate scored like an open-ended answer; 0 without a choice) and
    ``random_choice_accuracy`` (the mean score of its candidates: a uniform random pick).
    """
    examples = VQAExamples(records, cache, vocab, training=False)
    forms = answer_forms(answers) if multiple_choice else {}
    answered = []
    rows = iter(examples.records)
    for logits in answer_logits(net, examples, batch_size, device):
        probs = torch.softmax(logits, dim=1) if multiple_choice else None  # (B, K)
        for b, k in enumerate(logits.argmax(1).tolist()):
            r = next(rows)
            answer = answers[k]
            item = {
                "question_id": r["question_id"],
                "answer": answer,
                "accuracy": score(answer, r, metric),
                "answer_type": r["answer_type"],
                "question_type": r["question_type"],
            }
            if multiple_choice and r.get("choices"):
                choice = rank_choices(probs[b], forms, r["choices"])["choice"]
                item["choice"] = choice
                if r["answers"]:
                    item["choice_accuracy"] = 0.0 if choice is None else score(choice, r, metric)
                    item["random_choice_accuracy"] = sum(score(c, r, metric) for c in r["choices"]) / len(r["choices"])
            answered.append(item)
    scored = [a for a in answered if a["accuracy"] is not None]
    return (summarize(scored) if scored else None), answered


# ---------------------------------------------------------------- training


def _metric(prepared: dict) -> str:
    metric = prepared.get("metric", "vqa")
    if metric not in METRICS:
        raise AttendError(f"vqa.json: unknown metric {metric!r} (expected one of {', '.join(METRICS)})")
    return metric


def train_vqa(
    data_dir: str | Path,
    out_dir: str | Path,
    model_overrides: dict,
    train: TrainConfig,
    encoder: EncoderConfig | None = None,
    val_split: str = "val",
    val_limit: int = 5000,
    device: str | None = None,
    export: str | Path | None = None,
    select: str = "accuracy",
    log=print,
) -> dict:
    """Train on cached features, selecting ``best.pt`` on validation accuracy.

    Args:
        model_overrides: ``VQAConfig`` fields to change (``--set glimpses=3``).
        select: the validation metric that picks ``best.pt``: ``accuracy`` or ``type_QTYPE``
            for a question type of the validation split (checked before anything is built).
        val_limit: validation questions answered after every epoch (the first ones).
        export: also write best.pt as a float16 shippable checkpoint here.
    """
    train = check_train_config(train)
    model_overrides = check_options(VQAConfig, model_overrides, BOUNDS, DERIVED)
    data_dir = Path(data_dir)
    encoder = encoder or EncoderConfig()
    prepared, train_records = split_records(data_dir, VQA, "train")
    _, val_records = split_records(data_dir, VQA, val_split)
    metric = _metric(prepared)
    vocab = Vocab.from_dict(prepared["question_vocab"])
    answers = list(prepared["answers"])
    val_records = [r for r in val_records if r["answers"]][:val_limit]
    if not val_records:
        raise AttendError(f"split {val_split!r} has no answered questions to select on")
    names = ["accuracy"] + sorted({f"type_{r['question_type']}" for r in val_records})
    if select not in names:  # before anything is built or read
        raise AttendError(f"--select {select}: not a validation metric here (choose from {', '.join(names)})")
    cache = FeatureCache.for_data(data_dir, encoder)
    for what, records in (("split 'train'", train_records), (f"split {val_split!r}", val_records)):
        skipped = cache.require([r["image"] for r in records], what)
        if skipped:
            log(f"{what}: {len(skipped)} image(s) left out, unreadable when the cache was built")
    # The question types validation will report: those of the questions whose image was readable.
    names = ["accuracy"] + sorted({f"type_{r['question_type']}" for r in val_records if r["image"] in cache})
    config = VQAConfig(
        **{
            "question_vocab_size": len(vocab),
            "num_answers": len(answers),
            "encoder_dim": cache.dim,
            "grid": list(cache.grid),
            **model_overrides,
        }
    )
    seed_everything(train.seed)  # the initial weights follow the seed
    model = VQANet(config)
    train_set = VQAExamples(train_records, cache, vocab, training=True)

    def loss_fn(net, batch, device):
        features, questions, image_index, targets = (t.to(device, non_blocking=True) for t in batch)
        logits, _ = net(features.float(), questions, image_index)  # (B, K)
        loss = vqa_loss(logits, targets, metric)
        # The soft score of the argmax: the training accuracy, free of charge.
        hit = targets.gather(1, logits.argmax(1, keepdim=True)).clamp(max=1).mean()
        return loss, {"loss": loss.item(), "accuracy": 100 * hit.item()}

    def evaluate(net):
        summary, _ = answer_split(net, cache, val_records, vocab, answers, metric, device=next(net.parameters()).device)
        return {"accuracy": summary["accuracy"], **{f"type_{k}": v for k, v in summary["per_question_type"].items()}}

    extra = {
        "kind": KIND,
        "config": asdict(config),
        "question_vocab": vocab.to_dict(),
        "answers": answers,
        "encoder": asdict(encoder),
        "metric": metric,
        "data": {"source": prepared.get("source", "")},
    }
    ctx = distributed.init(device)
    try:
        # Only rank 0 writes checkpoints, so only it fits the check (a minute or two on a CPU).
        extra["domain"] = domain_record(data_dir, "train", val_split, log) if ctx.is_main else None
        log(
            f"{train_set.questions} training questions on {len(train_set)} images, "
            f"{len(val_records)} validation questions, {len(answers)} answers, metric {metric}"
        )
        result = fit(
            model,
            train_set,
            Collate(len(answers)),
            loss_fn,
            evaluate,
            select,
            train,
            ctx,
            extra,
            log=log,
            metric_names=names,
        )
    finally:
        distributed.shutdown()
    if export and ctx.is_main:
        result["exported"] = export_checkpoint(result["checkpoint"], export, KIND)
    return result


# ---------------------------------------------------------------- evaluation


def multiple_choice_summary(answered: list[dict]) -> dict:
    """The multiple-choice part of ``evaluate_vqa``'s result, from ``answer_split(..., multiple_choice=True)``.

    ``accuracy`` (with the per-type breakdowns) over the questions that have candidates and
    human answers; ``skipped_no_choices``: answered questions without candidates (not scored
    for MC); ``no_scorable_choice``: questions none of whose candidates the model knows (scored
    0); ``random_choice_accuracy``: what picking a candidate uniformly at random would score.
    """
    with_choices = [a for a in answered if "choice" in a]
    scored = [a for a in with_choices if "choice_accuracy" in a]
    out: dict = {
        "questions_with_choices": len(with_choices),
        "skipped_no_choices": len(answered) - len(with_choices),
        "no_scorable_choice": sum(a["choice"] is None for a in with_choices),
        "scored": len(scored),
        "accuracy": None,
    }
    if scored:
        summary = summarize({**a, "accuracy": a["choice_accuracy"]} for a in scored)
        out.update({k: summary[k] for k in ("accuracy", "per_answer_type", "per_question_type")})
        out["random_choice_accuracy"] = round(100 * sum(a["random_choice_accuracy"] for a in scored) / len(scored), 2)
    return out


def evaluate_vqa(
    checkpoint: str | Path,
    data_dir: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 64,
    multiple_choice: bool = False,
) -> dict:
    """Accuracy with per answer type / question type breakdown; writes metrics and the results file.

    Files in ``out``: ``metrics_SPLIT.json`` and ``vqa_SPLIT_results.json`` (``[{question_id,
    answer}]`` for every question whose image could be read, the official format). With
    ``multiple_choice`` the result also has ``"multiple_choice"`` (``multiple_choice_summary``)
    and ``out`` gets ``vqa_SPLIT_mc_results.json`` (the chosen candidate of every question
    where one was chosen).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data_dir = Path(data_dir)
    net, vocab, answers, encoder, state = load_vqa(checkpoint, device)
    check_encoder_fit(resolve_checkpoint(checkpoint), "VQA", net.config.grid, net.config.encoder_dim, encoder)
    prepared, records = split_records(data_dir, VQA, split)
    metric = _metric(prepared)
    cache = FeatureCache.for_data(data_dir, encoder)
    skipped = set(cache.require([r["image"] for r in records], f"split {split!r}"))
    started = time.perf_counter()
    summary, answered = answer_split(net, cache, records, vocab, answers, metric, batch_size, device, multiple_choice)
    result = {
        "checkpoint": str(checkpoint),
        "data": str(data_dir),
        "split": split,
        "metric": metric,
        "questions": len(records),
        "answered": len(answered),
        # images the data lists that were unreadable when the cache was built, and their questions
        "skipped_images": len(skipped),
        "skipped_questions": sum(r["image"] in skipped for r in records),
        "scored": summary["count"] if summary else 0,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if summary:
        result.update({k: summary[k] for k in ("accuracy", "per_answer_type", "per_question_type")})
    else:
        result["accuracy"] = None  # a test split without annotations: results file only
    if multiple_choice:
        result["multiple_choice"] = multiple_choice_summary(answered)
    if out:
        out = Path(out)
        atomic_write_json(out / f"metrics_{split}.json", result, indent=2)
        atomic_write_json(
            out / f"vqa_{split}_results.json",
            [{"question_id": a["question_id"], "answer": a["answer"]} for a in answered],
        )
        result["results_file"] = str(out / f"vqa_{split}_results.json")
        if multiple_choice:
            atomic_write_json(
                out / f"vqa_{split}_mc_results.json",
                [{"question_id": a["question_id"], "answer": a["choice"]} for a in answered if a.get("choice")],
            )
            result["mc_results_file"] = str(out / f"vqa_{split}_mc_results.json")
    return result
