"""Supervised baseline pretraining (``siambench supervised``).

The same torchvision ResNet the SimSiam encoder uses, trained with cross-entropy on
the ImageFolder labels of ``DATA.ROOT/train`` -- torchvision's classic ImageNet
recipe by default (SGD momentum 0.9, lr 0.1 x batch/256, weight decay 1e-4 on all
weights, x0.1 every 30 epochs, 90 epochs, RandomResizedCrop + flip). It is the
"ImageNet supervised" row of the transfer tables.

Checkpoints use the pretraining format (``docs/design.md``): ``state_dict`` keys are
``module.encoder.<torchvision name>`` (the classifier is ``module.encoder.fc.*``,
which conversion and linear evaluation drop, as they drop SimSiam's projector), so
``convert`` and ``lincls`` treat both kinds of checkpoint the same way.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .classification import accuracy, build_backbone, build_eval_loader, build_train_loader, evaluate
from .checkpoint import (LAST_CHECKPOINT, find_resume_checkpoint, load_checkpoint, load_official_state_dict,
                         save_checkpoint, set_rng_state)
from .eval_config import get_supervised_defaults
from .eval_inputs import check_classes
from .utils.run_dir import RUN_MARKERS
from .run_setup import Run, load_run
from .schedule import lr_at, scaled_lr
from .utils.config import CfgNode, add_config_args
from .utils.io import atomic_link
from .utils.logger import JSONLinesWriter, MetricLogger, format_seconds
from .utils.step_stats import DeviceStepStats, is_print_step
from .utils.stop import StopRequest, stop_on_signal

__all__ = ["SupervisedModel", "lr_at_epoch", "main"]

logger = logging.getLogger("siambench.supervised")


def lr_at_epoch(cfg: CfgNode, epoch: float) -> float:
    """Learning rate at (fractional) ``epoch``: linear warm-up from 0, then step or cosine decay."""
    s = cfg.SOLVER
    if s.SCHEDULE not in ("step", "cosine"):
        raise ValueError(f"SOLVER.SCHEDULE must be 'step' or 'cosine', got {s.SCHEDULE!r}")
    return lr_at(scaled_lr(s.BASE_LR, s.BATCH_SIZE), epoch, s.EPOCHS, s.SCHEDULE, warmup_epochs=s.WARMUP_EPOCHS,
                 step_size=s.STEP_SIZE)


class SupervisedModel(nn.Module):
    """The ResNet under the attribute name ``encoder``, as in the SimSiam model, so that
    ``siambench.pretrain.checkpoint`` writes its tensors as ``module.encoder.*``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)  # NxC logits


def _amp_dtype(cfg: CfgNode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of TRAIN.AMP, or None for fp32 (always on CPU)."""
    dtypes = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if cfg.TRAIN.AMP not in dtypes:
        raise ValueError(f"TRAIN.AMP must be one of {sorted(dtypes)}, got {cfg.TRAIN.AMP!r}")
    return dtypes[cfg.TRAIN.AMP] if device.type == "cuda" else None


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    cfg: CfgNode, device: torch.device, epoch: int) -> dict[str, float]:
    """One epoch; loss and accuracy stay on the device and are read once per TRAIN.PRINT_FREQ steps.

    Raises:
        FloatingPointError: a non-finite loss in a print period (found at its end, before
            any checkpoint of this epoch is written).
    """
    model.train()
    amp_dtype = _amp_dtype(cfg, device)
    meters, stats = MetricLogger(), DeviceStepStats(("loss", "acc1", "acc5"), device)
    n, freq = len(loader), cfg.TRAIN.PRINT_FREQ
    where = f"supervised epoch {epoch + 1}"
    for i, (images, target) in enumerate(meters.log_every(loader, freq, f"supervised epoch [{epoch + 1}/{cfg.SOLVER.EPOCHS}]")):
        lr = lr_at_epoch(cfg, epoch + i / n)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with autocast:
            logits = model(images)  # NxC
            loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # fp16 only: GradScaler reads its inf check here (bf16/fp32: no sync)
        scaler.update()
        top1, top5 = accuracy(logits.detach().float(), target)
        stats.add(loss, 100.0 * top1 / len(target), 100.0 * top5 / len(target))
        meters.meters["lr"].update(lr)
        if is_print_step(i, freq, n):
            stats.flush(meters, f"{where}, step {i} (lower SOLVER.BASE_LR or set TRAIN.AMP none)")
    stats.flush(meters, where)
    meters.synchronize_between_processes()
    return meters.global_averages()


def _build(run: Run, num_classes: int) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """(bare model, training model -- DDP when distributed --, SGD, GradScaler)."""
    cfg, device = run.cfg, run.device
    bare: nn.Module = SupervisedModel(build_backbone(cfg.MODEL.ARCH, num_classes=num_classes,
                                                     zero_init_residual=cfg.MODEL.ZERO_INIT_RESIDUAL,
                                                     width=cfg.MODEL.WIDTH))
    if run.dist.distributed and cfg.MODEL.SYNC_BN:
        bare = nn.SyncBatchNorm.convert_sync_batchnorm(bare)
    bare.to(device)
    model = bare
    if run.dist.distributed:
        model = nn.parallel.DistributedDataParallel(bare, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_at_epoch(cfg, 0), momentum=cfg.SOLVER.MOMENTUM,
                                weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    # Only float16 needs loss scaling; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=_amp_dtype(cfg, device) == torch.float16)
    return bare, model, optimizer, scaler


def _resume(resume: str | None, out: Path, bare: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler) -> tuple[int, dict[str, float]]:
    """Restore from ``--resume`` (if given and found): (epochs done, last evaluation)."""
    path = find_resume_checkpoint(out, resume) if resume else None
    if path is None:
        return 0, {}
    ckpt = load_checkpoint(path)
    load_official_state_dict(bare, ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    logger.info("resumed from %s at epoch %d", path, ckpt["epoch"])
    return ckpt["epoch"], dict(ckpt.get("val") or {})


def _train(run: Run, bare: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
           scaler: torch.amp.GradScaler, loaders: tuple[DataLoader, DataLoader], resume: str | None,
           stop: StopRequest) -> None:
    """The epochs left after ``resume``: a ``metrics.jsonl`` record (0-based ``epoch``) each, a checkpoint every
    TRAIN.CHECKPOINT_PERIOD and at the end of the epoch in which a stop signal came (then it stops)."""
    cfg, device, out = run.cfg, run.device, Path(run.cfg.OUTPUT_DIR)
    train_loader, val_loader = loaders
    start_epoch, val = _resume(resume, out, bare, optimizer, scaler)
    if run.is_main:
        JSONLinesWriter.truncate_after(out / "metrics.jsonl", start_epoch)  # drop records of epochs to redo
    metrics = JSONLinesWriter(out / "metrics.jsonl")
    epochs, t0 = cfg.SOLVER.EPOCHS, time.time()
    for epoch in range(start_epoch, epochs):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, scaler, cfg, device, epoch)
        record: dict[str, Any] = {"type": "epoch", "epoch": epoch, "loss": stats["loss"],
                                  "train_top1": stats["acc1"], "lr": stats["lr"]}
        period = cfg.TEST.EVAL_PERIOD
        if epoch + 1 == epochs or (period and (epoch + 1) % period == 0):
            val = evaluate(model, val_loader, device, header=f"supervised val [{epoch + 1}/{epochs}]")
            record.update(val_top1=val["top1"], val_top5=val["top5"])
        metrics.write(record)
        signum = stop.agreed() if epoch + 1 < epochs else 0  # the last epoch just ends
        if run.is_main and ((epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or epoch + 1 == epochs or signum):
            save_checkpoint(out, epoch + 1, bare, optimizer, scaler, cfg, extra={"method": "supervised", "val": val})
        stop.stop_if(signum, f"epoch {epoch + 1}")
        eta = (time.time() - t0) / (epoch + 1 - start_epoch) * (epochs - epoch - 1)
        logger.info("supervised epoch %d/%d: loss %.4f%s, eta %s", epoch + 1, epochs, stats["loss"],
                    f", val top-1 {val['top1']:.2f}" if "val_top1" in record else "", format_seconds(eta))
    metrics.close()


def _check_classes(cfg: CfgNode) -> CfgNode:
    """At least 2 classes, the same in train and val, before OUTPUT_DIR exists."""
    check_classes(cfg, "supervised")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``siambench supervised --config-file C [--resume auto] KEY V...`` -> OUTPUT_DIR/model_final.pth."""
    parser = argparse.ArgumentParser(prog="siambench supervised", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", metavar="auto|PATH", default=None,
                        help="continue from OUTPUT_DIR/last_checkpoint ('auto', if present) or PATH")
    add_config_args(parser, "OUTPUT_DIR runs/x SOLVER.EPOCHS 2")
    args = parser.parse_intermixed_args(argv)  # flags anywhere, also after the overrides
    run = load_run(get_supervised_defaults(), args.config_file, args.opts, command="supervised",
                   resume=args.resume, markers=RUN_MARKERS, check=_check_classes)
    cfg, out = run.cfg, Path(run.cfg.OUTPUT_DIR)
    lr_at_epoch(cfg, 0)  # validates SOLVER.SCHEDULE before any work
    _amp_dtype(cfg, run.device)  # validates TRAIN.AMP

    train_loader, classes = build_train_loader(cfg, cfg.SOLVER.BATCH_SIZE)
    val_loader, _ = build_eval_loader(cfg, "val", cfg.TEST.BATCH_SIZE)  # the same classes (_check_classes)
    bare, model, optimizer, scaler = _build(run, len(classes))
    with stop_on_signal() as stop:
        _train(run, bare, model, optimizer, scaler, (train_loader, val_loader), args.resume, stop)
    if run.is_main:
        last = out / (out / LAST_CHECKPOINT).read_text(encoding="utf-8").strip()
        atomic_link(last, out / "model_final.pth")
        logger.info("supervised: wrote %s", out / "model_final.pth")
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
