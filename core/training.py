"""The model-agnostic training loop shared by the captioner and the VQA model.

It knows nothing of captions or answers: a task hands it a model, a training set with
its collate function, a loss function, an evaluation function and a selection metric.
It does epochs, Adam with warm-up + cosine decay, gradient clipping, mixed precision on
CUDA only (bf16 autocast with nn.LSTM crashes in oneDNN on the CPU), DDP under torchrun,
an atomic checkpoint every epoch (``last.pt``) and on improvement (``best.pt``),
``--resume``, a JSON-lines metrics log and a PNG plot. Only rank 0 writes files.

Safety: the options are checked before anything runs (``check_train_config``, the selection
metric against the names the evaluation gives); a step whose loss or gradient is not
finite stops the run with one line naming the epoch and the step, before the optimizer
moves, so ``last.pt`` and ``best.pt`` keep the last good epoch's weights (a checkpoint is
never written with weights that are not finite); ``--resume`` checks the run's options
against ``last.pt`` before loading it.

Reproducibility: every random draw of an epoch comes from seeds that depend only on
(seed, epoch, rank): the order of the examples (``DistributedSampler``'s seed + epoch, also
with one process), the data-loading workers' seeds (the loader's generator, re-seeded each
epoch), the global RNG that dropout uses (re-seeded each epoch) and a data set's own draws
(``train_set.set_epoch(epoch, seed)`` where it has one). Two runs with the same seed give
the same losses and weights, and a run resumed from ``last.pt`` continues exactly as the
uninterrupted run would have (model, optimizer and schedule states are saved exactly;
nothing random is carried from one epoch to the next, so no RNG state needs saving). Call
``seed_everything`` before building the model so that its initial weights follow the seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import time
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from .checkpoint import CHECKPOINT_VERSION, check_state_dict, finite_state, load_checkpoint, save_checkpoint
from .config import Bound, Invalid, convert, field_kinds
from .distributed import Context
from .errors import AttendError
from .prepared import atomic_write_bytes


@dataclass
class TrainConfig:
    out_dir: str
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant
    seed: int = 0
    workers: int = 0
    resume: bool = False


# What each TrainConfig field may hold, and the command-line flag that sets it.
TRAIN_BOUNDS = {
    "epochs": Bound(1, 1_000_000),
    "batch_size": Bound(1, 1_000_000),
    "lr": Bound(0.0, None),  # 0 is allowed: a run that only evaluates (the weights stay put)
    "weight_decay": Bound(0.0, None),
    "grad_clip": Bound(0.0, None),  # 0: no clipping
    "warmup_steps": Bound(0, 10**9),
    "schedule": Bound(choices=("cosine", "constant")),
    "seed": Bound(-(2**63), 2**63 - 1),
    "workers": Bound(0, 1024),
}
FLAGS = {"warmup_steps": "--warmup", "out_dir": "--out"}

# extra keys of a checkpoint that a resumed run must share with last.pt: what the model
# reads and writes. The model options (extra["config"]) may change where the weights'
# shapes stay (dropout, alpha_c).
RESUME_MUST_MATCH = ("kind", "encoder", "vocab", "question_vocab", "answers", "metric")


def check_train_config(cfg: TrainConfig) -> TrainConfig:
    """Every option checked (one line naming its flag), ints widened to float where a float is due."""
    values = {}
    for name, kind in field_kinds(TrainConfig).items():
        value = getattr(cfg, name)
        try:
            values[name] = convert(value, kind, TRAIN_BOUNDS.get(name))
        except Invalid as e:
            flag = FLAGS.get(name, "--" + name.replace("_", "-"))
            raise AttendError(f"{flag} {value!r}: {e}") from None
    if not values["out_dir"]:
        raise AttendError("--out: a run folder is needed")
    return TrainConfig(**values)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed that depends on (seed, epoch, stream) only, well mixed (seed 1 epoch 0 and
    seed 0 epoch 1 differ); ``stream`` tells apart the draws of one epoch (a rank, an item)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_everything(seed: int) -> None:
    """torch (CPU and CUDA), numpy and random from one seed: call before building a model."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ---------------------------------------------------------------- the loop


def _schedule(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, with the fused kernel (one pass over each parameter, on the CPU and on CUDA)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def _one_line(error: AttendError) -> AttendError:
    """An AttendError raised in a DataLoader worker comes back with the worker's traceback
    in its message; its last line is the original message."""
    text = str(error).strip()
    if "\n" not in text:
        return error
    last = text.splitlines()[-1]
    return AttendError(last.split("AttendError: ", 1)[-1])


def _same(saved, now) -> bool:
    """Equal, where dicts compare on the keys both have (a checkpoint of an older attend may
    lack an option added since, e.g. the encoder's mid_level)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return all(saved[k] == now[k] for k in saved.keys() & now.keys())
    return saved == now


def _resume(
    last_path: Path, model: nn.Module, optimizer, scheduler, extra: dict
) -> tuple[int, float, list[dict], list[str]]:
    """Load last.pt's weights and training state into the run, after checking it fits:
    (first epoch to run, best so far, history, the model options that changed)."""
    state = load_checkpoint(last_path, extra["kind"])
    train = state.get("train")
    needed = {"optimizer": dict, "scheduler": dict, "epoch": int, "best": (int, float), "history": list}
    if not isinstance(train, dict) or any(not isinstance(train.get(k), t) for k, t in needed.items()):
        raise AttendError(
            f"{last_path}: no training state to resume from (an exported or a best.pt checkpoint?); "
            "choose another --out"
        )
    for key in RESUME_MUST_MATCH:
        if key in extra and not _same(state.get(key), extra[key]):
            raise AttendError(
                f"--resume: {last_path} was trained with another {key} than this run's "
                f"(different data or --encoder/--image-size/--mid-level); choose another --out"
            )
    before, now = state.get("config", {}), extra.get("config", {})
    changed = sorted(k for k in now if isinstance(before, dict) and before.get(k) != now[k])
    try:
        check_state_dict(last_path, extra["kind"], model, state["model"])
    except AttendError as e:
        if changed:
            options = ", ".join(f"{k}={before.get(k)!r}->{now[k]!r}" for k in changed)
            raise AttendError(
                f"--resume: the model options differ from {last_path}'s in a way that changes the "
                f"model's shape ({options}); drop those --set options or choose another --out"
            ) from None
        raise e from None
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(train["optimizer"])
        scheduler.load_state_dict(train["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise AttendError(f"{last_path}: its optimizer state does not fit this model ({type(e).__name__})") from None
    if train["epoch"] < 0 or isinstance(train["epoch"], bool):
        raise AttendError(f"{last_path}: invalid training state (epoch {train['epoch']!r})")
    return train["epoch"] + 1, float(train["best"]), train["history"], changed


def fit(
    model: nn.Module,
    train_set: Dataset,
    collate: Callable,
    loss_fn: Callable[[nn.Module, object, torch.device], tuple[torch.Tensor, dict]],
    evaluate: Callable[[nn.Module], dict],
    select: str,
    cfg: TrainConfig,
    ctx: Context,
    extra: dict,
    log: Callable[[str], None] = print,
    metric_names: Collection[str] | None = None,
    shuffle: bool = True,
) -> dict:
    """Train ``model`` and return the best validation metrics.

    Args:
        loss_fn: (model, batch, device) -> (loss, {name: float}); gets the DDP-wrapped model.
        evaluate: (plain model) -> {name: float}; run on rank 0 after every epoch.
        select: the metric of ``evaluate`` that picks ``best.pt`` (higher is better).
        extra: stored in every checkpoint (kind, model config, vocabulary ...), so one file
            is enough to rebuild and run the model.
        metric_names: the names ``evaluate`` will give, when known: ``select`` is checked
            against them before the first step.
        shuffle: False keeps the items in their order (truncated backpropagation through time
            reads the chunks of each stream in turn): rank r of W reads items r, r + W, r + 2W ...
            (``DistributedSampler(shuffle=False)``), so the data set arranges its items for that.
    Raises:
        AttendError: bad options, a run folder in use, a ``last.pt`` that does not fit, or a
            loss that is not finite (after which ``last.pt``/``best.pt`` are the last good ones).
    """
    cfg = check_train_config(cfg)
    if metric_names is not None and select not in metric_names:
        raise AttendError(f"--select {select}: not a validation metric here (choose from {', '.join(metric_names)})")
    out = Path(cfg.out_dir)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    if last_path.exists() and not cfg.resume:
        raise AttendError(f"{out}: holds a training run already; pass --resume to continue it or choose another --out")
    device = ctx.device
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg.lr, cfg.weight_decay)
    # One process or many, the order is DistributedSampler's: a permutation seeded by seed + epoch
    # (or, without ``shuffle``, every W-th item from the rank's own).
    sampler = DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=shuffle, seed=cfg.seed)
    generator = torch.Generator()  # the workers' seeds; re-seeded every epoch
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        drop_last=len(train_set) > cfg.batch_size,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    if len(loader) == 0:
        raise AttendError("the training split is empty")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, cfg.epochs * len(loader)))

    start_epoch, best, history = 0, -math.inf, []
    if cfg.resume and last_path.exists():
        start_epoch, best, history, changed = _resume(last_path, model, optimizer, scheduler, extra)
        log(f"resumed from {last_path} at epoch {start_epoch + 1}")
        if changed:
            log(f"model options changed since {last_path}: {', '.join(changed)}")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)

    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    saved = f"{last_path} holds epoch {start_epoch}" if start_epoch else "nothing was saved"

    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        generator.manual_seed(epoch_seed(cfg.seed, epoch))
        seed_everything(epoch_seed(cfg.seed, epoch, ctx.rank))  # dropout: the same draws on a resumed run
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch, cfg.seed)
        net.train()
        started, sums, count = time.perf_counter(), {}, 0
        # A bar on a terminal only (disable=None), on rank 0: CPU epochs take minutes.
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            disable=None if ctx.is_main else True,
        )
        try:
            for batch in bar:
                with autocast:
                    loss, metrics = loss_fn(net, batch, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # The norm is needed to check the gradients; max_norm inf scales them by exactly 1.
                norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
                bad = torch.stack([~torch.isfinite(loss.detach().float()), ~torch.isfinite(norm.float())]).any()
                if ctx.distributed:  # every rank stops at the same step
                    bad = bad.float()
                    torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
                if bool(bad):
                    value = float(loss.detach())
                    what = f"loss is not finite ({value:g})" if not math.isfinite(value) else "gradient is not finite"
                    raise AttendError(
                        f"epoch {epoch + 1}, step {count + 1}: the training {what}; stopped without saving "
                        f"({saved}). Check the features (`attend features` verifies and repairs the cache) "
                        "or lower --lr"
                    )
                optimizer.step()
                scheduler.step()
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0.0) + value
                count += 1
                if count % 20 == 0 and "loss" in sums:
                    bar.set_postfix(loss=f"{sums['loss'] / count:.4f}", refresh=False)
        except AttendError as e:
            bar.close()
            raise _one_line(e) from None
        seconds = time.perf_counter() - started
        row = {
            "epoch": epoch + 1,
            **{f"train_{k}": round(v / count, 5) for k, v in sums.items()},
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 1),
        }
        state_dict = model.state_dict()
        if not finite_state(state_dict):  # every rank holds the same weights: all stop here together
            raise AttendError(f"epoch {epoch + 1}: the weights are not finite; stopped without saving ({saved})")
        if ctx.is_main:
            model.eval()
            row.update({f"val_{k}": v for k, v in evaluate(model).items()})
            if f"val_{select}" not in row:
                given = ", ".join(k[4:] for k in row if k.startswith("val_"))
                raise AttendError(f"--select {select}: the evaluation gave no such metric (it gave: {given})")
            improved = row[f"val_{select}"] > best
            best = max(best, row[f"val_{select}"])
            history.append(row)
            checkpoint = {**extra, "model": state_dict, "metrics": row, "version": CHECKPOINT_VERSION}
            if improved:
                save_checkpoint(best_path, checkpoint)
            save_checkpoint(
                last_path,
                {
                    **checkpoint,
                    "train": {
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "best": best,
                        "history": history,
                        "config": asdict(cfg),
                    },
                },
            )
            saved = f"{last_path} holds epoch {epoch + 1}"
            atomic_write_bytes(log_path, "".join(json.dumps(r) + "\n" for r in history).encode())
            plot_history(history, out / "metrics.png", select)
            log(" ".join(f"{k}={v}" for k, v in row.items()) + ("  *best*" if improved else ""))
        if ctx.distributed:
            torch.distributed.barrier()
    return {"best": best, "metric": f"val_{select}", "history": history, "checkpoint": str(best_path)}


def plot_history(history: list[dict], path: Path, select: str) -> None:
    """Loss and the selection metric per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    losses = [r.get("train_loss") for r in history]
    scores = [r.get(f"val_{select}") for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, losses, marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="training loss")
    right.plot(epochs, scores, marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel=select, title=f"validation {select} (selects best.pt)")
    known = [(e, s) for e, s in zip(epochs, scores) if s is not None]
    if known:  # the best epoch, marked and labelled: one epoch reads as a value, not a lone dot
        epoch, score = max(known, key=lambda pair: pair[1])
        right.plot([epoch], [score], marker="*", markersize=14, color="tab:orange", linestyle="none")
        right.annotate(f"best {score:.4g} (epoch {epoch})", (epoch, score), textcoords="offset points", xytext=(0, 8),
                       ha="center", fontsize=8)  # fmt: skip
    for axis, values in ((left, losses), (right, scores)):
        values = [v for v in values if v is not None]
        axis.set_xticks(epochs)  # whole epochs only
        if len(epochs) == 1:
            axis.set_xlim(epochs[0] - 1, epochs[0] + 1)
        if values:  # a flat or single series gets a visible range around it, not +-4% of nothing
            low, high = min(values), max(values)
            pad = max((high - low) * 0.15, abs(high) * 0.05, 1e-3)
            axis.set_ylim(low - pad, high + pad * 2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
