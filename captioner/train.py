"""Train and evaluate the captioner on a prepared data folder (`attend train/evaluate captioner`).

Training runs the shared loop (``core.training.fit``) on cached features with the fast
teacher forcing (``fast.TrainingDecoder``; ``fast=False``: the plain model), and validates
each epoch by greedy decoding. Evaluation decodes a whole split and scores it with BLEU, the
COCO toolkit and, on data prepared from the generated scenes, the scenes' own measures.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from core import distributed
from core.checkpoint import check_encoder_fit, export_checkpoint, load_checkpoint
from core.config import check_options
from core.domain import domain_record
from core.encoder import EncoderConfig
from core.errors import AttendError
from core.features import FeatureCache
from core.prepared import CAPTIONS, atomic_write_json, split_records
from core.training import TrainConfig, check_train_config, fit, seed_everything
from core.vocab import Vocab
from data_prep.scenes.measures import score_scenes, split_ground_truth

from .checkpoint import BOUNDS, DERIVED, KIND, captioner_config, load_captioner, resolve_checkpoint
from .data import CaptionGroups, CaptionPairs, collate_captions, images_per_batch
from .decode import Decoded, Decoder, decode
from .fast import FastDecoder, TrainingDecoder
from .metrics import bleu, coco_metrics
from .model import AttentionDecoder, CaptionerConfig, caption_loss, hard_attention_loss
from .scst import CiderD, ScstImages, ScstLoss, collate_images


def _loss(net, batch, device):
    features, captions = batch
    features, captions = features.to(device, non_blocking=True).float(), captions.to(device, non_blocking=True)
    logits, alphas = net(features, captions)
    decoder = net.module if hasattr(net, "module") else net
    if decoder.draws is not None:  # hard attention: the locations this pass drew
        return hard_attention_loss(decoder, logits, alphas, captions[:, 1:])
    return caption_loss(
        logits.float(), None if alphas is None else alphas.float(), captions[:, 1:], decoder.config.alpha_c
    )


@torch.no_grad()
def generate(
    decoder: Decoder,
    cache: FeatureCache,
    keys: list[str],
    beam_size: int = 3,
    batch_size: int = 32,
    length_penalty: float = 0.0,
    device: torch.device | str = "cpu",
) -> list[Decoded]:
    """Decode the cached grids of ``keys`` in batches; results in the order of ``keys``."""
    results = []
    for i in range(0, len(keys), batch_size):
        grids = np.stack([cache[k] for k in keys[i : i + batch_size]])
        features = torch.from_numpy(grids).to(device).float()  # (B, P, D)
        results.extend(decode(decoder, features, beam_size=beam_size, length_penalty=length_penalty))
    return results


def score_split(
    decoder: Decoder,
    cache: FeatureCache,
    records: list[dict],
    vocab: Vocab,
    data_dir: Path,
    split: str,
    beam_size: int,
    length_penalty: float = 0.0,
    with_coco: bool = False,
    source: str = "",
    device: torch.device | str = "cpu",
) -> tuple[dict, list[dict]]:
    """Decode every image of a split and score it: BLEU, with ``with_coco`` the COCO toolkit, and
    the scenes measures where the data's ``source`` (recorded when it was prepared) is "scenes"."""
    records = [r for r in records if r["image"] in cache]
    if not records:
        raise AttendError(f"split {split!r}: none of its images is in the feature cache")
    decoded = generate(
        decoder, cache, [r["image"] for r in records], beam_size=beam_size, length_penalty=length_penalty, device=device
    )
    hypotheses = [vocab.decode(d.ids) for d in decoded]
    references = [r["tokens"] for r in records]
    metrics = bleu(references, hypotheses)
    if with_coco:
        metrics.update(coco_metrics(references, hypotheses))
    else:  # CIDEr-D, what SCST optimises, without the toolkit (the same numbers, tested)
        metrics["cider"] = round(100 * float(CiderD(references).scores(range(len(records)), hypotheses).mean()), 2)
    h, w = cache.grid
    predictions = [
        {
            "image_id": r["image_id"],
            "caption": " ".join(hyp),
            "tokens": hyp,
            "attention": None if d.alphas is None else d.alphas.reshape(-1, h, w).tolist(),
        }
        for r, hyp, d in zip(records, hypotheses, decoded)
    ]
    if source == "scenes":
        truth, side = split_ground_truth(data_dir, split)
        wanted = {r["image_id"] for r in records}
        scenes = score_scenes(predictions, {k: v for k, v in truth.items() if k in wanted}, image_size=side)
        metrics["object_accuracy"] = round(100 * scenes["object_accuracy"], 2)
        if scenes["pointing_accuracy"] is not None:
            metrics["pointing_accuracy"] = round(100 * scenes["pointing_accuracy"], 2)
        metrics["scenes"] = {k: scenes[k] for k in ("counts", "errors", "by_object_count", "examples")}
    return metrics, predictions


def metric_names(source: str, attention: bool) -> list[str]:
    """The validation metrics ``score_split`` gives (those ``--select`` may name): BLEU-1..4,
    CIDEr-D, and on data prepared from the scenes object accuracy and, with attention, pointing
    accuracy."""
    names = [f"bleu{n}" for n in range(1, 5)] + ["cider"]
    if source == "scenes":
        names += ["object_accuracy"] + (["pointing_accuracy"] if attention else [])
    return names


def train_captioner(
    data_dir: str | Path,
    out_dir: str | Path,
    model_overrides: dict,
    train: TrainConfig,
    encoder: EncoderConfig | None = None,
    val_split: str = "val",
    val_limit: int = 500,
    select: str = "bleu4",
    device: str | None = None,
    export: str | Path | None = None,
    captions_per_image: int = 0,
    init: str | Path | None = None,
    fast: bool = True,
    scst: bool = False,
    scst_samples: int = 5,
    scst_baseline: str = "mean",
    scst_object_bonus: float = 0.0,
    log=print,
) -> dict:
    """Teacher-forced training on cached features; selection on validation ``select``.

    ``captions_per_image`` K: each batch holds ``train.batch_size // K`` images with K of their
    captions each (``data.CaptionGroups``); 0: every caption is its own example (``CaptionPairs``).
    ``train.batch_size`` counts captions either way.
    ``export``: also write best.pt as a float16 shippable checkpoint there.
    ``init``: start from this captioner checkpoint's weights (fine-tuning: a fresh optimizer and
    schedule; its model options, with ``model_overrides`` such as ``alpha_c`` on top). The run
    keeps the checkpoint's word ids, so its vocabulary must hold every word of the data's; the
    feature setting (``encoder``) must be the same.
    ``fast``: train with ``fast.TrainingDecoder`` and validate with ``fast.FastDecoder``; False:
    the plain model for both (slower, the same numbers).
    ``scst``: self-critical training (``scst.py``) from ``init``: ``scst_samples`` K captions
    sampled per image, each rewarded by its CIDEr-D against the image's training references,
    with the ``scst_baseline`` ("mean" of the other samples or the "greedy" caption's reward);
    ``train.batch_size`` counts sampled captions (``batch_size // K`` images). Dropout is 0
    unless ``model_overrides`` sets it, so that the samples and their log-probabilities come
    from one distribution. ``scst_object_bonus`` (scenes only): added to the reward of a
    caption that is right about the whole scene.
    """
    if captions_per_image < 0:
        raise AttendError("--captions-per-image must be 0 or more")
    if scst:
        if init is None:
            raise AttendError("--scst fine-tunes a trained captioner: give its checkpoint with --init")
        if captions_per_image:
            raise AttendError("--scst samples its own captions: drop --captions-per-image")
        ScstLoss.check(scst_samples, scst_baseline)
        if not (isinstance(scst_object_bonus, (int, float)) and 0 <= scst_object_bonus < float("inf")):
            raise AttendError(f"--scst-object-bonus {scst_object_bonus!r}: expected a number of at least 0")
        model_overrides = {"dropout": 0.0, **model_overrides}
    train = check_train_config(train)
    if model_overrides.get("attention") in ("soft", "hard"):  # --set attention=hard: the spelling
        model_overrides = {**model_overrides, "attention": True, "attention_mode": model_overrides["attention"]}
    model_overrides = check_options(CaptionerConfig, model_overrides, BOUNDS, DERIVED)
    data_dir = Path(data_dir)
    encoder = encoder or EncoderConfig()
    prepared, train_records = split_records(data_dir, CAPTIONS, "train")
    _, val_records = split_records(data_dir, CAPTIONS, val_split)
    val_records = val_records[:val_limit]
    vocab = Vocab.from_dict(prepared["vocab"])
    source = prepared.get("source", "")
    seed_everything(train.seed)  # the initial weights follow the seed
    attention = model_overrides.get("attention", True if init is None else None)
    if attention is None:  # fine-tuning: the checkpoint's option, unless --set changes it
        options = captioner_config(load_checkpoint(resolve_checkpoint(init), KIND))
        attention = options.get("attention", True) if isinstance(options, dict) else True
    names = metric_names(source, attention)
    if select not in names:  # before anything is built or read
        raise AttendError(f"--select {select}: not a validation metric here (choose from {', '.join(names)})")
    if init is None:
        cache = FeatureCache.for_data(data_dir, encoder)
        config = CaptionerConfig(
            **{"vocab_size": len(vocab), "encoder_dim": cache.dim, "grid": list(cache.grid), **model_overrides}
        )
        model = (TrainingDecoder if fast else AttentionDecoder)(config)
    else:
        config, model, vocab = _initial_model(init, vocab, encoder, model_overrides, fast)
        cache = FeatureCache.for_data(data_dir, encoder)
    for what, records in (("split 'train'", train_records), (f"split {val_split!r}", val_records)):
        skipped = cache.require([r["image"] for r in records], what)
        if skipped:
            log(f"{what}: {len(skipped)} image(s) left out, unreadable when the cache was built")
    ctx = distributed.init(device)
    try:
        loss_fn, collate = _loss, collate_captions
        if scst:
            train_set = ScstImages(train_records, cache)
            objects = None
            if scst_object_bonus:
                if source != "scenes":
                    raise AttendError(
                        "--scst-object-bonus: only for data prepared from the scenes (it reads their objects)"
                    )
                objects = train_set.objects(split_ground_truth(data_dir, "train")[0])
            loss_fn = ScstLoss(
                CiderD(train_set.references()), vocab, scst_samples, scst_baseline, objects, scst_object_bonus
            )
            collate = collate_images
            train = replace(train, batch_size=images_per_batch(train.batch_size, scst_samples))
        elif captions_per_image:
            train_set = CaptionGroups(train_records, cache, vocab, config.max_len, captions_per_image)
            train = replace(train, batch_size=images_per_batch(train.batch_size, captions_per_image))
        else:
            train_set = CaptionPairs(train_records, cache, vocab, config.max_len)

        def evaluate(model):
            # Greedy on a fixed slice of validation: cheap enough to run every epoch. A fresh
            # FastDecoder each time: it is a snapshot of the weights as they are now.
            decoder = FastDecoder(model) if fast else model
            metrics, _ = score_split(
                decoder,
                cache,
                val_records,
                vocab,
                data_dir,
                val_split,
                beam_size=1,
                source=prepared.get("source", ""),
                device=next(model.parameters()).device,
            )
            metrics.pop("scenes", None)
            if "pointing_accuracy" in names:  # absent when no caption named a shape: nothing pointed at
                metrics.setdefault("pointing_accuracy", 0.0)
            return metrics

        extra = {
            "kind": KIND,
            "config": asdict(config),
            "vocab": vocab.to_dict(),
            "encoder": asdict(encoder),
            "data": {"source": prepared.get("source", "")},
            "captions_per_image": captions_per_image,
            "init": None if init is None else str(init),
            "scst": (
                {"samples": scst_samples, "baseline": scst_baseline, "object_bonus": scst_object_bonus}
                if scst
                else None
            ),
            # Only rank 0 writes checkpoints, so only it fits the check (a minute or two on a CPU).
            "domain": domain_record(data_dir, "train", val_split, log) if ctx.is_main else None,
        }
        result = fit(
            model, train_set, collate, loss_fn, evaluate, select, train, ctx, extra, log=log, metric_names=names
        )
        if export and ctx.is_main:
            result["exported"] = export_checkpoint(result["checkpoint"], export, KIND)
    finally:
        distributed.shutdown()
    return result


def _initial_model(
    init: str | Path, vocab: Vocab, encoder: EncoderConfig, model_overrides: dict, fast: bool
) -> tuple[CaptionerConfig, AttentionDecoder, Vocab]:
    """What a fine-tuning run starts from: ``init``'s weights, its options + overrides, and its
    vocabulary (the data's words in another order, e.g. another scenes seed, keep their ids)."""
    start, start_vocab, start_encoder, checkpoint = load_captioner(init, fast=False)
    check_encoder_fit(resolve_checkpoint(init), KIND, start.config.grid, start.config.encoder_dim, start_encoder)
    unknown = [word for word in vocab.itos if word not in start_vocab]
    if unknown:
        raise AttendError(
            f"--init {init}: {len(unknown)} of this data's words are not in its vocabulary "
            f"(e.g. {', '.join(unknown[:3])})"
        )
    if start_encoder != encoder:
        raise AttendError(
            f"--init {init}: trained on {start_encoder.tag} features, this run reads "
            f"{encoder.tag} (match --encoder/--image-size/--mid-level)"
        )
    config = CaptionerConfig(**{**captioner_config(checkpoint), **model_overrides})
    model = (TrainingDecoder if fast else AttentionDecoder)(config)
    # Coverage may be added: its w_c starts at zero, so the model starts as ``init`` was.
    added = {"attention.coverage_proj.weight"} if model.covers and not start.covers else set()
    try:
        missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
        if set(missing) != added or unexpected:
            raise RuntimeError
    except RuntimeError:
        raise AttendError(
            f"--init {init}: --set {' '.join(sorted(model_overrides))} changes the model's "
            "shape; only options such as alpha_c, dropout or coverage=true can change when fine-tuning"
        ) from None
    return config, model, start_vocab


def evaluate_captioner(
    checkpoint: str | Path,
    data_dir: str | Path,
    split: str = "test",
    beam_size: int = 3,
    length_penalty: float = 0.0,
    out: str | Path | None = None,
    device: str | None = None,
    int8: bool = False,
    fast: bool = True,
) -> dict:
    """Every metric on one split; writes metrics JSON and the captions in the COCO results format.

    ``checkpoint``: a path or a shipped name; ``fast=False`` decodes with the plain model.
    """
    device = torch.device(device or ("cpu" if int8 or not torch.cuda.is_available() else "cuda"))
    data_dir = Path(data_dir)
    decoder, vocab, encoder, state = load_captioner(checkpoint, device, int8=int8, fast=fast)
    options = state["config"]
    check_encoder_fit(resolve_checkpoint(checkpoint), KIND, options["grid"], options["encoder_dim"], encoder)
    prepared, records = split_records(data_dir, CAPTIONS, split)
    cache = FeatureCache.for_data(data_dir, encoder)
    skipped = cache.require([r["image"] for r in records], f"split {split!r}")
    started = time.perf_counter()
    metrics, predictions = score_split(
        decoder,
        cache,
        records,
        vocab,
        data_dir,
        split,
        beam_size,
        length_penalty,
        with_coco=True,
        source=prepared.get("source", ""),
        device=device,
    )
    summary = {
        "checkpoint": str(checkpoint),
        "data": str(data_dir),
        "split": split,
        "beam_size": beam_size,
        "weights": "int8" if int8 else "float32",
        "images": len(predictions),
        "skipped_images": len(skipped),  # listed by the data, unreadable when the cache was built
        "seconds": round(time.perf_counter() - started, 1),
        **metrics,
    }
    if out:
        out = Path(out)
        atomic_write_json(out / f"metrics_{split}.json", summary, indent=2)
        atomic_write_json(
            out / f"captions_{split}_results.json",
            [{"image_id": p["image_id"], "caption": p["caption"]} for p in predictions],
        )
    return summary
