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
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from .eval_config import get_supervised_defaults
from .lincls import accuracy, build_backbone, build_eval_loader, build_train_loader, evaluate, setup_run
from .utils.config import CfgNode, add_config_args
from .utils.env import siambench_version
from .utils.io import atomic_torch_save, atomic_write_text
from .utils.logger import JSONLinesWriter, MetricLogger, format_seconds

__all__ = ["encoder_state_dict", "lr_at_epoch", "main"]

logger = logging.getLogger("siambench.supervised")
KEY_PREFIX = "module.encoder."  # official SimSiam naming, shared with pretraining checkpoints


def lr_at_epoch(cfg: CfgNode, epoch: float) -> float:
    """Learning rate at (fractional) ``epoch``: linear warm-up, then step or cosine decay."""
    s = cfg.SOLVER
    base = s.BASE_LR * s.BATCH_SIZE / 256
    if epoch < s.WARMUP_EPOCHS:
        return base * epoch / s.WARMUP_EPOCHS
    if s.SCHEDULE == "step":
        return base * 0.1 ** (int(epoch) // s.STEP_SIZE)
    if s.SCHEDULE == "cosine":
        t = (epoch - s.WARMUP_EPOCHS) / max(s.EPOCHS - s.WARMUP_EPOCHS, 1e-8)
        return base * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    raise ValueError(f"SOLVER.SCHEDULE must be 'step' or 'cosine', got {s.SCHEDULE!r}")


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ResNet's tensors under the pretraining checkpoint's ``module.encoder.`` names."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return {KEY_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
          epoch: int, cfg: CfgNode, extra: dict[str, Any]) -> None:
    atomic_torch_save({
        "state_dict": encoder_state_dict(model), "arch": cfg.MODEL.ARCH, "epoch": epoch,
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
        "config": cfg.dump(), "siambench_version": siambench_version(), "method": "supervised", **extra,
    }, path)


def _find_resume(resume: str | None, out: Path) -> Path | None:
    if not resume:
        return None
    if resume != "auto":
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint (use --resume auto for {out})")
        return Path(resume)
    marker = out / "last_checkpoint"
    if not marker.is_file():
        return None
    path = out / marker.read_text(encoding="utf-8").strip()
    if not path.is_file():
        raise FileNotFoundError(f"{marker} names {path.name}, which is missing; delete {marker} to start over")
    return path


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    cfg: CfgNode, device: torch.device, epoch: int) -> dict[str, float]:
    model.train()
    amp = cfg.SOLVER.AMP and device.type == "cuda"
    meters = MetricLogger()
    n = len(loader)
    for i, (images, target) in enumerate(meters.log_every(loader, cfg.LOG_PERIOD,
                                                         f"supervised epoch [{epoch + 1}/{cfg.SOLVER.EPOCHS}]")):
        lr = lr_at_epoch(cfg, epoch + i / n)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)  # NxC
            loss = F.cross_entropy(logits, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"supervised: loss is {loss.item()} at epoch {epoch + 1}, step {i}; "
                                     "lower SOLVER.BASE_LR or disable SOLVER.AMP")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        top1, top5 = accuracy(logits.detach().float(), target)
        meters.update(loss=loss.detach(), acc1=100.0 * top1 / len(target), acc5=100.0 * top5 / len(target), lr=lr)
    meters.synchronize_between_processes()
    return meters.global_averages()


def main(argv: Sequence[str] | None = None) -> int:
    """``siambench supervised --config-file C [--resume auto] KEY V...`` -> OUTPUT_DIR/model_final.pth."""
    parser = argparse.ArgumentParser(prog="siambench supervised", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", metavar="auto|PATH", default=None,
                        help="continue from OUTPUT_DIR/last_checkpoint ('auto', if present) or PATH")
    add_config_args(parser)
    args = parser.parse_args(argv)
    run = setup_run(get_supervised_defaults(), args.config_file, args.opts, command="supervised")
    cfg, device, out = run.cfg, run.device, Path(run.cfg.OUTPUT_DIR)
    lr_at_epoch(cfg, 0)  # validates SOLVER.SCHEDULE before any work

    train_loader, classes = build_train_loader(cfg, cfg.SOLVER.BATCH_SIZE)
    val_loader, val_classes = build_eval_loader(cfg, "val", cfg.TEST.BATCH_SIZE)
    if classes != val_classes:
        raise SystemExit(f"supervised: {cfg.DATA.ROOT}/train and {cfg.DATA.ROOT}/val have different class folders")
    model = build_backbone(cfg.MODEL.ARCH, num_classes=len(classes), zero_init_residual=cfg.MODEL.ZERO_INIT_RESIDUAL)
    if run.dist.distributed and cfg.MODEL.SYNC_BN:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if run.dist.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_at_epoch(cfg, 0), momentum=cfg.SOLVER.MOMENTUM,
                                weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.SOLVER.AMP and device.type == "cuda")

    start_epoch, val = 0, {}
    resume = _find_resume(args.resume, out)
    if resume is not None:
        ckpt = torch.load(resume, map_location="cpu", weights_only=True)
        getattr(model, "module", model).load_state_dict(
            {k[len(KEY_PREFIX):]: v for k, v in ckpt["state_dict"].items()})
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, val = ckpt["epoch"], dict(ckpt.get("val") or {})
        _set_rng_state(ckpt["rng"])
        logger.info("resumed from %s at epoch %d", resume, start_epoch)
    if run.is_main:
        JSONLinesWriter.truncate_after(out / "metrics.jsonl", start_epoch + 1)
    metrics = JSONLinesWriter(out / "metrics.jsonl")

    epochs, t0 = cfg.SOLVER.EPOCHS, time.time()
    for epoch in range(start_epoch, epochs):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, scaler, cfg, device, epoch)
        record: dict[str, Any] = {"type": "epoch", "epoch": epoch + 1, "loss": stats["loss"],
                                  "train_top1": stats["acc1"], "lr": stats["lr"]}
        period = cfg.TEST.EVAL_PERIOD
        if epoch + 1 == epochs or (period and (epoch + 1) % period == 0):
            val = evaluate(model, val_loader, device, header=f"supervised val [{epoch + 1}/{epochs}]")
            record.update(val_top1=val["top1"], val_top5=val["top5"])
        metrics.write(record)
        if run.is_main and ((epoch + 1) % cfg.SOLVER.CHECKPOINT_PERIOD == 0 or epoch + 1 == epochs):
            name = f"checkpoint_{epoch + 1:04d}.pth"
            _save(out / name, model, optimizer, scaler, epoch + 1, cfg, {"val": val})
            atomic_write_text(out / "last_checkpoint", name)
        eta = (time.time() - t0) / (epoch + 1 - start_epoch) * (epochs - epoch - 1)
        logger.info("supervised epoch %d/%d: loss %.4f%s, eta %s", epoch + 1, epochs, stats["loss"],
                    f", val top-1 {val['top1']:.2f}" if "val_top1" in record else "", format_seconds(eta))
    metrics.close()
    if run.is_main:
        _save(out / "model_final.pth", model, optimizer, scaler, epochs, cfg, {"val": val})
        logger.info("supervised: wrote %s", out / "model_final.pth")
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
