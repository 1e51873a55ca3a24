"""One epoch of SimSiam training."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from .losses import SimSiamLoss
from .monitors import CollapseMonitor, z_std
from .schedule import adjust_learning_rate
from .utils.logger import JSONLinesWriter, MetricLogger, TensorboardWriter

__all__ = ["TrainContext", "train_one_epoch"]


@dataclasses.dataclass
class TrainContext:
    """Everything a step needs besides the model, loss, optimizer and data."""

    device: torch.device
    init_lr: float
    epochs: int
    fix_pred_lr: bool = True
    schedule_per_step: bool = False  # cosine updated every step instead of every epoch (official)
    amp_dtype: torch.dtype | None = None  # autocast dtype; None = fp32
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    batch_aug: nn.Module | None = None  # uint8 crops -> augmented views on the device ("batched" backend)
    channels_last: bool = False
    targets: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor] | None = None  # hypothesis variants
    collapse: CollapseMonitor | None = None
    jsonl: JSONLinesWriter | None = None
    tensorboard: TensorboardWriter | None = None
    print_freq: int = 10
    max_steps: int = 0  # >0 caps the epoch
    global_step: int = 0  # steps done so far (TensorBoard x axis)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.batch_aug is not None:
            x = self.batch_aug(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def train_one_epoch(model: nn.Module, criterion: SimSiamLoss, optimizer: torch.optim.Optimizer,
                    loader: Iterable, epoch: int, ctx: TrainContext) -> dict[str, float]:
    """Train ``epoch`` (0-based) over ``loader`` of ``(views, index)``; return epoch averages.

    Raises:
        FloatingPointError: the loss is not finite (before the bad update is applied).
        monitors.CollapseDetected: collapse with ``MONITOR.COLLAPSE_ABORT``.
    """
    model.train()
    meters = MetricLogger()
    steps = len(loader) if not ctx.max_steps else min(ctx.max_steps, len(loader))  # type: ignore[arg-type]
    lr = optimizer.param_groups[0]["lr"]
    batches = itertools.islice(loader, steps)
    for i, (views, index) in enumerate(meters.log_every(batches, ctx.print_freq, f"Epoch: [{epoch}]", steps)):
        if ctx.schedule_per_step:
            lr = adjust_learning_rate(optimizer, ctx.init_lr, epoch + i / steps, ctx.epochs, ctx.fix_pred_lr)
        views = [ctx.to_device(v) for v in views]
        with ctx.autocast():
            ps, zs = model(views)  # predictions p and (stop-grad) projections z of each view, NxC
        ps, zs = [p.float() for p in ps], [z.float() for z in zs]
        if ctx.targets is not None:
            loss = criterion.to_targets(ps, ctx.targets(index, zs))  # D(p_v, eta_x) averaged over views
        else:
            loss = criterion(ps, zs)  # D(p1, z2)/2 + D(p2, z1)/2
        # one host-device sync per step for both monitors (not one each)
        loss_value, std = torch.stack([loss.detach(), z_std(zs[0])]).tolist()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at epoch {epoch} step {i}: stopping before the update; "
                                     "the last checkpoint is intact (try a lower SOLVER.BASE_LR or TRAIN.AMP none)")

        optimizer.zero_grad(set_to_none=True)
        if ctx.scaler is not None:
            ctx.scaler.scale(loss).backward()
            ctx.scaler.step(optimizer)
            ctx.scaler.update()
        else:
            loss.backward()
            optimizer.step()

        meters.update(loss=loss_value, z_std=std, lr=lr)
        record = {"type": "step", "epoch": epoch, "step": i, "loss": loss_value, "lr": lr, "z_std": std}
        if ctx.jsonl is not None:
            ctx.jsonl.write(record)
        if ctx.tensorboard is not None:
            ctx.tensorboard.add_scalars({"loss": loss_value, "z_std": std, "lr": lr}, ctx.global_step, "train/")
        if ctx.collapse is not None:
            ctx.collapse.update(std, ctx.global_step)
        ctx.global_step += 1
    meters.synchronize_between_processes()
    averages = meters.global_averages()
    return {"loss": averages.get("loss", math.nan), "z_std": averages.get("z_std", math.nan)}
