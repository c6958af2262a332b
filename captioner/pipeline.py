"""Train and evaluate the captioner on a prepared data folder (what `attend train/evaluate captioner` run)."""
from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from . import distributed
from .data import CaptionGroups, CaptionPairs, collate_captions, images_per_batch
from .evaluate import bleu, coco_metrics, generate, scenes_ground_truth
from .features import FeatureCache
from .encoder import EncoderConfig
from .errors import AttendError
from .model import AttentionDecoder, CaptionerConfig, caption_loss, quantized_int8
from .prepared import CAPTIONS, atomic_write_json, split_records
from .scenes_metrics import score_scenes
from .training import TrainConfig, export_checkpoint, fit, load_checkpoint
from .vocab import Vocab

KIND = "captioner"


def _loss(net, batch, device):
    features, captions = batch
    features, captions = features.to(device, non_blocking=True).float(), captions.to(device, non_blocking=True)
    logits, alphas = net(features, captions)
    decoder = net.module if hasattr(net, "module") else net
    return caption_loss(logits.float(), None if alphas is None else alphas.float(), captions[:, 1:],
                        decoder.config.alpha_c)


def score_split(decoder: AttentionDecoder, cache: FeatureCache, records: list[dict], vocab: Vocab,
                data_dir: Path, split: str, beam_size: int, length_penalty: float = 0.0,
                with_coco: bool = False) -> tuple[dict, list[dict]]:
    """Decode every image of a split and score it: BLEU (+ COCO toolkit, + scenes measures)."""
    records = [r for r in records if r["image"] in cache]
    if not records:
        raise AttendError(f"split {split!r}: none of its images is in the feature cache")
    decoded = generate(decoder, cache, [r["image"] for r in records], beam_size=beam_size,
                       length_penalty=length_penalty)
    hypotheses = [vocab.decode(d.ids) for d in decoded]
    references = [r["tokens"] for r in records]
    metrics = bleu(references, hypotheses)
    if with_coco:
        metrics.update(coco_metrics(references, hypotheses))
    h, w = cache.grid
    predictions = [{"image_id": r["image_id"], "caption": " ".join(hyp), "tokens": hyp,
                    "attention": None if d.alphas is None else d.alphas.reshape(-1, h, w).tolist()}
                   for r, hyp, d in zip(records, hypotheses, decoded)]
    scenes_truth = scenes_ground_truth(data_dir, split)
    if scenes_truth is not None:
        truth, side = scenes_truth
        wanted = {r["image_id"] for r in records}
        scenes = score_scenes(predictions, {k: v for k, v in truth.items() if k in wanted}, image_size=side)
        metrics["object_accuracy"] = round(100 * scenes["object_accuracy"], 2)
        if scenes["pointing_accuracy"] is not None:
            metrics["pointing_accuracy"] = round(100 * scenes["pointing_accuracy"], 2)
        metrics["scenes"] = {k: scenes[k] for k in ("counts", "errors", "by_object_count", "examples")}
    return metrics, predictions


def train_captioner(data_dir: str | Path, out_dir: str | Path, model_overrides: dict, train: TrainConfig,
                    encoder: EncoderConfig | None = None, val_split: str = "val", val_limit: int = 500,
                    select: str = "bleu4", device: str | None = None, export: str | Path | None = None,
                    captions_per_image: int = 0, init: str | Path | None = None, log=print) -> dict:
    """Teacher-forced training on cached features; selection on validation ``select``.

    ``captions_per_image`` K: each batch holds ``train.batch_size // K`` images with K of their
    captions each (``data.CaptionGroups``); 0: every caption is its own example (``CaptionPairs``).
    ``train.batch_size`` counts captions either way.
    ``export``: also write best.pt as a float16 shippable checkpoint there.
    ``init``: start from this captioner checkpoint's weights (fine-tuning: a fresh optimizer and
    schedule; its model options, with ``model_overrides`` such as ``alpha_c`` on top). The run
    keeps the checkpoint's word ids, so its vocabulary must hold every word of the data's; the
    feature setting (``encoder``) must be the same.
    """
    if captions_per_image < 0:
        raise AttendError("--captions-per-image must be 0 or more")
    data_dir = Path(data_dir)
    encoder = encoder or EncoderConfig()
    prepared, train_records = split_records(data_dir, CAPTIONS, "train")
    _, val_records = split_records(data_dir, CAPTIONS, val_split)
    vocab = Vocab.from_dict(prepared["vocab"])
    known = {f.name for f in fields(CaptionerConfig)}
    unknown = set(model_overrides) - known
    if unknown:
        raise AttendError(f"unknown model option(s): {', '.join(sorted(unknown))}")
    if init is None:
        cache = FeatureCache.for_data(data_dir, encoder)
        config = CaptionerConfig(**{"vocab_size": len(vocab), "encoder_dim": cache.dim, "grid": list(cache.grid),
                                    **model_overrides})
        model = AttentionDecoder(config)
    else:
        config, model, vocab = _initial_model(init, vocab, encoder, model_overrides)
        cache = FeatureCache.for_data(data_dir, encoder)
    ctx = distributed.init(device)
    try:
        if captions_per_image:
            train_set = CaptionGroups(train_records, cache, vocab, config.max_len, captions_per_image)
            train = replace(train, batch_size=images_per_batch(train.batch_size, captions_per_image))
        else:
            train_set = CaptionPairs(train_records, cache, vocab, config.max_len)
        val_records = val_records[:val_limit]

        def evaluate(decoder):
            # Greedy on a fixed slice of validation: cheap enough to run every epoch.
            metrics, _ = score_split(decoder, cache, val_records, vocab, data_dir, val_split, beam_size=1)
            metrics.pop("scenes", None)
            return metrics

        extra = {"kind": KIND, "config": asdict(config), "vocab": vocab.to_dict(),
                 "encoder": asdict(encoder), "data": {"source": prepared.get("source", "")},
                 "captions_per_image": captions_per_image, "init": None if init is None else str(init)}
        result = fit(model, train_set, collate_captions, _loss, evaluate, select, train, ctx, extra, log=log)
        if export and ctx.is_main:
            result["exported"] = export_checkpoint(result["checkpoint"], export, KIND)
    finally:
        distributed.shutdown()
    return result


def _initial_model(init: str | Path, vocab: Vocab, encoder: EncoderConfig,
                   model_overrides: dict) -> tuple[CaptionerConfig, AttentionDecoder, Vocab]:
    """What a fine-tuning run starts from: ``init``'s weights, its options + overrides, and its
    vocabulary (the data's words in another order, e.g. another scenes seed, keep their ids)."""
    start, start_vocab, start_encoder, checkpoint = load_captioner(init)
    unknown = [word for word in vocab.itos if word not in start_vocab]
    if unknown:
        raise AttendError(f"--init {init}: {len(unknown)} of this data's words are not in its vocabulary "
                          f"(e.g. {', '.join(unknown[:3])})")
    if start_encoder != encoder:
        raise AttendError(f"--init {init}: trained on {start_encoder.tag} features, this run reads "
                          f"{encoder.tag} (match --encoder/--image-size/--mid-level)")
    config = CaptionerConfig(**{**captioner_config(checkpoint), **model_overrides})
    model = AttentionDecoder(config)
    try:
        model.load_state_dict(start.state_dict())
    except RuntimeError:
        raise AttendError(f"--init {init}: --set {' '.join(sorted(model_overrides))} changes the model's "
                          "shape; only options such as alpha_c or dropout can change when fine-tuning") from None
    return config, model, start_vocab


def captioner_config(checkpoint: dict) -> dict:
    """The model options of a captioner checkpoint; those written before the ``gate`` option
    existed had a per-channel gate."""
    return {"gate": "vector", **checkpoint["config"]}


def load_captioner(path: str | Path, device: str | torch.device = "cpu",
                   int8: bool = False) -> tuple[AttentionDecoder, Vocab, EncoderConfig, dict]:
    """Rebuild a decoder from one checkpoint file: (decoder, vocab, encoder config, checkpoint).

    ``int8``: the CPU decoding copy with int8 per-step layers (``model.quantized_int8``).
    """
    if int8 and torch.device(device).type != "cpu":
        raise AttendError("int8 decoding runs on the CPU only (drop --int8 or use --device cpu)")
    checkpoint = load_checkpoint(path, KIND)
    try:
        decoder = AttentionDecoder(CaptionerConfig(**captioner_config(checkpoint)))
        decoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint["model"].items()})
        vocab = Vocab.from_dict(checkpoint["vocab"])
        encoder = EncoderConfig(**checkpoint["encoder"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise AttendError(f"{path}: captioner checkpoint does not match this version ({type(e).__name__})") from None
    decoder = quantized_int8(decoder) if int8 else decoder.to(device).eval()
    return decoder, vocab, encoder, checkpoint


def evaluate_captioner(checkpoint: str | Path, data_dir: str | Path, split: str = "test", beam_size: int = 3,
                       length_penalty: float = 0.0, out: str | Path | None = None,
                       device: str | None = None, int8: bool = False) -> dict:
    """Every metric on one split; writes metrics JSON and the captions in the COCO results format."""
    device = torch.device(device or ("cpu" if int8 or not torch.cuda.is_available() else "cuda"))
    data_dir = Path(data_dir)
    decoder, vocab, encoder, _ = load_captioner(checkpoint, device, int8=int8)
    _, records = split_records(data_dir, CAPTIONS, split)
    cache = FeatureCache.for_data(data_dir, encoder)
    started = time.perf_counter()
    metrics, predictions = score_split(decoder, cache, records, vocab, data_dir, split, beam_size,
                                       length_penalty, with_coco=True)
    summary = {"checkpoint": str(checkpoint), "data": str(data_dir), "split": split, "beam_size": beam_size,
               "weights": "int8" if int8 else "float32",
               "images": len(predictions), "seconds": round(time.perf_counter() - started, 1), **metrics}
    if out:
        out = Path(out)
        atomic_write_json(out / f"metrics_{split}.json", summary, indent=2)
        atomic_write_json(out / f"captions_{split}_results.json",
                          [{"image_id": p["image_id"], "caption": p["caption"]} for p in predictions])
    return summary
