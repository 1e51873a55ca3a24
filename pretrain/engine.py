"""One epoch of pretraining, for every method (``siambench.pretrain.methods``).

Host-device syncs: none per step. The loss and the monitored std of z are accumulated
on the device and read once every ``TRAIN.PRINT_FREQ`` steps (at steps 0, F, 2F, ... as
the console line, and at the epoch's last step); the non-finite check, the collapse monitor, the console, ``metrics.jsonl`` and
TensorBoard act on those period means. A non-finite loss therefore stops the run at the
end of its period (at most PRINT_FREQ - 1 updates later), always before any checkpoint
is written (``siambench.pretrain.main`` also checks the weights before each write).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from typing import Iterable

import torch
import torch.nn as nn

from .data.prefetch import prefetch_to_device
from .methods.base import Method
from .monitors import CollapseMonitor, z_std
from .schedule import adjust_learning_rate
from .utils.logger import JSONLinesWriter, MetricLogger, TensorboardWriter
from .utils.step_stats import DeviceStepStats, is_print_step

__all__ = ["TrainContext", "train_one_epoch"]

_NOT_FINITE = ("{name} is {value} at {where}: stopping before any checkpoint is written; the last checkpoint is "
               "intact (try a lower SOLVER.BASE_LR or TRAIN.AMP none)")


@dataclasses.dataclass
class TrainContext:
    """Everything a step needs besides the model, optimizer and data."""

    device: torch.device
    init_lr: float
    epochs: int
    fix_pred_lr: bool = True
    schedule_per_step: bool = False  # cosine updated every step instead of every epoch (official SimSiam)
    warmup_epochs: float = 0.0  # linear warmup before the cosine (SimCLR, BYOL, SwAV)
    start_lr: float = 0.0  # lr at the start of the warmup
    final_lr: float = 0.0  # lr at the end of the cosine
    warmup_linspace_steps: int = 0  # steps per epoch of SwAV's linspace warmup (peak on its last step); 0 = off
    amp_dtype: torch.dtype | None = None  # autocast dtype; None = fp32
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    batch_aug: nn.Module | None = None  # uint8 crops -> augmented views on the device ("batched" backend)
    channels_last: bool = False
    collapse: CollapseMonitor | None = None
    jsonl: JSONLinesWriter | None = None
    tensorboard: TensorboardWriter | None = None
    print_freq: int = 10  # steps per host read of loss / z_std (and per console line and metrics record)
    max_steps: int = 0  # >0 caps the epoch
    global_step: int = 0  # steps done so far (EMA schedules, prototype freezing, TensorBoard x axis)
    total_steps: int = 0  # steps of the whole run (BYOL's tau schedule); 0 = epochs x this epoch's steps

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A loader batch on the device, augmented (batched backends) and in the step's memory format.

        On CUDA the views arrive already copied: ``train_one_epoch`` reads the loader through
        ``data.prefetch.prefetch_to_device``, which queues each batch's copy (``non_blocking``,
        from the page-locked batches of ``DATA.PIN_MEMORY``) on a side stream one step ahead,
        so it overlaps the previous step. Elsewhere the views are moved here.
        """
        x = x.to(self.device, non_blocking=True)
        if self.batch_aug is not None:
            x = self.batch_aug(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def lr_at(self, optimizer: torch.optim.Optimizer, epoch: float) -> float:
        return adjust_learning_rate(optimizer, self.init_lr, epoch, self.epochs, self.fix_pred_lr,
                                    warmup_epochs=self.warmup_epochs, start_lr=self.start_lr,
                                    final_lr=self.final_lr, linspace_steps_per_epoch=self.warmup_linspace_steps)


def _unwrap(model: nn.Module) -> Method:
    """The bare method under DDP / torch.compile wrappers."""
    while not isinstance(model, Method):
        model = getattr(model, "_orig_mod", None) or getattr(model, "module")
    return model


def _log_period(ctx: TrainContext, epoch: int, step: int, steps: int, means: dict[str, float], lr: float) -> None:
    """A print period's means to ``metrics.jsonl``, TensorBoard and the collapse monitor."""
    record = {"type": "step", "epoch": epoch, "step": step, "steps": steps, "loss": means["loss"], "lr": lr,
              "z_std": means["z_std"]}
    if ctx.jsonl is not None:
        ctx.jsonl.write(record)
    if ctx.tensorboard is not None:
        ctx.tensorboard.add_scalars({"loss": means["loss"], "z_std": means["z_std"], "lr": lr}, ctx.global_step,
                                    "train/")
    if ctx.collapse is not None:
        ctx.collapse.update(means["z_std"], ctx.global_step, steps=steps)


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable, epoch: int,
                    ctx: TrainContext, method: Method | None = None) -> dict[str, float]:
    """Train ``epoch`` (0-based) over ``loader`` of ``(views, index)``; return epoch averages.

    Args:
        model: the (possibly DDP-wrapped / compiled) method; ``model(views)`` runs the forward.
        method: the bare method (loss and hooks); found under the wrappers when None.

    Raises:
        FloatingPointError: the loss was not finite in the last print period.
        monitors.CollapseDetected: collapse with ``MONITOR.COLLAPSE_ABORT``.
    """
    method = method or _unwrap(model)
    model.train()
    meters, stats = MetricLogger(), DeviceStepStats(("loss", "z_std"), ctx.device, error=_NOT_FINITE)
    steps = len(loader) if not ctx.max_steps else min(ctx.max_steps, len(loader))  # type: ignore[arg-type]
    total_steps = ctx.total_steps or ctx.epochs * steps
    lr = optimizer.param_groups[0]["lr"]
    batches = prefetch_to_device(itertools.islice(loader, steps), ctx.device)  # CUDA: copies one step ahead
    for i, (views, index) in enumerate(meters.log_every(batches, ctx.print_freq, f"Epoch: [{epoch}]", steps)):
        if ctx.schedule_per_step:
            lr = ctx.lr_at(optimizer, epoch + i / steps)
        views = [ctx.to_device(v) for v in views]
        method.before_forward(ctx.global_step)
        with ctx.autocast():
            out = model(views)  # the method's network outputs, NxC each
        loss, z = method.loss(out, index)  # fp32, outside autocast
        stats.add(loss, z_std(z))  # on the device: no host sync

        optimizer.zero_grad(set_to_none=True)
        if ctx.scaler is not None:
            ctx.scaler.scale(loss).backward()
            method.after_backward(ctx.global_step)
            ctx.scaler.step(optimizer)
            ctx.scaler.update()
        else:
            loss.backward()
            method.after_backward(ctx.global_step)
            optimizer.step()
        method.after_step(ctx.global_step, total_steps)
        ctx.global_step += 1

        if is_print_step(i, ctx.print_freq, steps):  # one host read per print period (as the console)
            n = stats.pending
            means = stats.flush(meters, f"epoch {epoch} steps {i + 1 - n}-{i}")
            meters.meters["lr"].update(lr, n)
            _log_period(ctx, epoch, i, n, means, lr)
    meters.synchronize_between_processes()
    averages = meters.global_averages()
    return {"loss": averages.get("loss", math.nan), "z_std": averages.get("z_std", math.nan)}
