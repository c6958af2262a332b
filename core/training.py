"""The model-agnostic training loop shared by the captioner and the VQA model.

It knows nothing of captions or answers: a task hands it a model, a training set with
its collate function, a loss function, an evaluation function and a selection metric.
It does epochs, Adam with warm-up + cosine decay, gradient clipping, mixed precision on
CUDA only (bf16 autocast with nn.LSTM crashes in oneDNN on the CPU), DDP under torchrun,
an atomic checkpoint every epoch (``last.pt``) and on improvement (``best.pt``),
``--resume``, a JSON-lines metrics log and a PNG plot. Only rank 0 writes files.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from .checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
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
) -> dict:
    """Train ``model`` and return the best validation metrics.

    Args:
        loss_fn: (model, batch, device) -> (loss, {name: float}); gets the DDP-wrapped model.
        evaluate: (plain model) -> {name: float}; run on rank 0 after every epoch.
        select: the metric of ``evaluate`` that picks ``best.pt`` (higher is better).
        extra: stored in every checkpoint (kind, model config, vocabulary ...), so one file
            is enough to rebuild and run the model.
    """
    out = Path(cfg.out_dir)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if last_path.exists() and not cfg.resume:
        raise AttendError(f"{out}: holds a training run already; pass --resume to continue it or choose another --out")
    torch.manual_seed(cfg.seed + ctx.rank)
    device = ctx.device
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg.lr, cfg.weight_decay)
    sampler = (
        DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed)
        if ctx.distributed
        else None
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
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
        state = load_checkpoint(last_path, extra["kind"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["train"]["optimizer"])
        scheduler.load_state_dict(state["train"]["scheduler"])
        start_epoch, best, history = state["train"]["epoch"] + 1, state["train"]["best"], state["train"]["history"]
        log(f"resumed from {last_path} at epoch {start_epoch + 1}")

    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
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
        for batch in bar:
            with autocast:
                loss, metrics = loss_fn(net, batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value
            count += 1
            if count % 20 == 0 and "loss" in sums:
                bar.set_postfix(loss=f"{sums['loss'] / count:.4f}", refresh=False)
        seconds = time.perf_counter() - started
        row = {
            "epoch": epoch + 1,
            **{f"train_{k}": round(v / count, 5) for k, v in sums.items()},
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 1),
        }
        if ctx.is_main:
            model.eval()
            row.update({f"val_{k}": v for k, v in evaluate(model).items()})
            improved = row[f"val_{select}"] > best
            best = max(best, row[f"val_{select}"])
            history.append(row)
            checkpoint = {**extra, "model": model.state_dict(), "metrics": row, "version": CHECKPOINT_VERSION}
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
            atomic_write_bytes(log_path, "".join(json.dumps(r) + "\n" for r in history).encode())
            plot_history(history, out / "metrics.png", select)
            log(" ".join(f"{k}={v}" for k, v in row.items()) + ("  *best*" if improved else ""))
        if ctx.distributed:
            torch.distributed.barrier()
    return {"best": best, "history": history, "checkpoint": str(best_path)}


def plot_history(history: list[dict], path: Path, select: str) -> None:
    """Loss and the selection metric per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [r.get("train_loss") for r in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.plot(epochs, [r.get(f"val_{select}") for r in history], marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel=select, title=f"validation {select}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
