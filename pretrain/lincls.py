"""Linear evaluation of a frozen encoder (``siambench lincls``).

The official SimSiam ``main_lincls.py --lars`` protocol: the pretrained ResNet is
frozen and kept in eval mode (BatchNorm uses its running statistics), a linear
classifier on the pooled features (weight ~ N(0, 0.01^2), bias 0) is trained with
LARS (SGD momentum 0.9, trust coefficient 0.001, no weight decay), global batch
4096, lr 0.1 x batch/256, per-epoch cosine decay, 90 epochs; top-1/top-5 on the
centre-cropped validation set. After training, the backbone is checked to be
bit-identical to the checkpoint (the official code's ``sanity_check``).

``lincls_results.json`` reports the last epoch's accuracy as ``top1``/``top5`` (the
best epoch, ``best_top1``, is also recorded but would select on the validation set).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .classification import accuracy, build_backbone, build_eval_loader, build_train_loader, evaluate, load_backbone
from .eval_config import get_lincls_defaults
from .eval_inputs import check_classes, check_weights
from .lars import LARS
from .run_setup import Run, load_run
from .schedule import adjust_learning_rate, scaled_lr
from .utils.config import CfgNode, ConfigError, add_config_args
from .utils.dist import barrier
from .utils.errors import MissingFileError
from .utils.io import atomic_torch_save, atomic_write_json, load_weights_only
from .utils.logger import MetricLogger, format_seconds
from .utils.step_stats import DeviceStepStats, is_print_step
from .utils.stop import StopRequest, stop_on_signal

__all__ = ["LinearEval", "build_linear_eval", "build_optimizer", "sanity_check", "main"]

logger = logging.getLogger("siambench.lincls")
CHECKPOINT = "lincls_checkpoint.pth"  # resume state of the classifier (the backbone is MODEL.WEIGHTS)


def sanity_check(backbone: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """Assert every backbone tensor still equals the checkpoint's (the encoder was frozen).

    Raises:
        RuntimeError: naming the first tensor that changed.
    """
    for name, value in backbone.state_dict().items():
        if name.startswith("fc.") or name not in reference:
            continue
        if not torch.equal(value.detach().cpu(), reference[name]):
            raise RuntimeError(f"sanity check failed: frozen backbone tensor {name} changed during linear eval")


class LinearEval(nn.Module):
    """Frozen backbone (eval mode, no autograd) + the trainable linear classifier."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.classifier = classifier

    def train(self, mode: bool = True) -> "LinearEval":
        super().train(mode)
        self.backbone.eval()  # frozen BN: running statistics are never updated
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.backbone(images)  # NxD pooled features
        return self.classifier(feats)  # NxC


def build_linear_eval(cfg: CfgNode, num_classes: int) -> tuple[LinearEval, dict[str, torch.Tensor], dict]:
    """Backbone loaded from MODEL.WEIGHTS, classifier initialised as in the official code."""
    backbone = build_backbone(cfg.MODEL.ARCH, width=cfg.MODEL.WIDTH)
    info = load_backbone(backbone, cfg.MODEL.WEIGHTS, cfg.MODEL.ARCH, cfg.MODEL.WEIGHTS_FORMAT, cfg.MODEL.WIDTH)
    reference = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    linear = nn.Linear(backbone.fc.in_features, num_classes)
    nn.init.normal_(linear.weight, mean=0.0, std=cfg.MODEL.INIT_STD)
    nn.init.zeros_(linear.bias)
    # Optional BN without affine on the features (MAE's linear probe): a linear map of the
    # standardised features, so one SGD lr fits encoders whose feature scales differ.
    classifier = (nn.Sequential(nn.BatchNorm1d(linear.in_features, affine=False), linear)
                  if cfg.MODEL.FEATURE_BN else linear)
    backbone.fc = nn.Identity()
    return LinearEval(backbone, classifier), reference, info


def build_optimizer(cfg: CfgNode, params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, float]:
    """LARS (or plain SGD) at lr = BASE_LR * BATCH_SIZE / 256 (the linear scaling rule)."""
    s = cfg.SOLVER
    init_lr = scaled_lr(s.BASE_LR, s.BATCH_SIZE)
    if s.OPTIMIZER == "lars":
        opt: torch.optim.Optimizer = LARS(params, init_lr, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY,
                                          trust_coefficient=s.LARS_TRUST, eps=s.LARS_EPS)
    elif s.OPTIMIZER == "sgd":
        opt = torch.optim.SGD(params, init_lr, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'lars' or 'sgd', got {s.OPTIMIZER!r}")
    if s.SCHEDULE not in ("cosine", "constant"):
        raise ValueError(f"SOLVER.SCHEDULE must be 'cosine' or 'constant', got {s.SCHEDULE!r}")
    return opt, init_lr


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, epochs: int, log_period: int) -> dict[str, float]:
    """One epoch of the classifier; loss/accuracy are read from the device once per ``log_period``.

    Raises:
        FloatingPointError: a non-finite loss in a period (before the epoch's checkpoint).
    """
    model.train()  # LinearEval keeps the backbone in eval mode
    meters, stats = MetricLogger(), DeviceStepStats(("loss", "acc1", "acc5"), device)
    total = len(loader)
    for i, (images, target) in enumerate(meters.log_every(loader, log_period, f"lincls epoch [{epoch + 1}/{epochs}]")):
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        logits = model(images)  # NxC
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        top1, top5 = accuracy(logits.detach(), target)
        stats.add(loss, 100.0 * top1 / len(target), 100.0 * top5 / len(target))
        meters.meters["lr"].update(optimizer.param_groups[0]["lr"])
        if is_print_step(i, log_period, total):
            stats.flush(meters, f"lincls epoch {epoch + 1}, step {i} (lower SOLVER.BASE_LR)")
    stats.flush(meters, f"lincls epoch {epoch + 1}")
    meters.synchronize_between_processes()
    return meters.global_averages()


def _resume_path(resume: str | None, output_dir: Path) -> Path | None:
    if not resume:
        return None
    if resume == "auto":
        path = output_dir / CHECKPOINT
        return path if path.is_file() else None
    if not Path(resume).is_file():
        raise MissingFileError(f"--resume {resume}: no such checkpoint (use --resume auto for {output_dir})")
    return Path(resume)


def _resume(path: Path | None, sha: str, classifier: nn.Module,
            optimizer: torch.optim.Optimizer) -> tuple[int, float, list[dict[str, Any]]]:
    """Restore classifier and optimizer from ``path``; (start epoch, best top-1, history)."""
    if path is None:
        return 0, 0.0, []
    ckpt = load_weights_only(path, fix=f"delete it to restart the linear evaluation in {path.parent}")
    if ckpt["checkpoint_sha256"] != sha:
        raise ConfigError(f"lincls: {path} was trained on a different MODEL.WEIGHTS (sha256 differs: the file "
                          "changed since); use a fresh OUTPUT_DIR")
    getattr(classifier, "module", classifier).load_state_dict(ckpt["classifier"])
    optimizer.load_state_dict(ckpt["optimizer"])
    logger.info("resumed from %s at epoch %d", path, ckpt["epoch"])
    return ckpt["epoch"], ckpt["best_top1"], list(ckpt["history"])


def _data(cfg: CfgNode) -> tuple[DataLoader, DataLoader, int]:
    """(train loader, val loader, number of classes); the two splits must hold the same classes."""
    train_loader, classes = build_train_loader(cfg, cfg.SOLVER.BATCH_SIZE)
    val_loader, _ = build_eval_loader(cfg, "val", cfg.TEST.BATCH_SIZE)  # the same classes (_check_inputs)
    return train_loader, val_loader, cfg.MODEL.NUM_CLASSES or len(classes)


def _check_inputs(cfg: CfgNode) -> CfgNode:
    """Classes, MODEL.NUM_CLASSES and weights, before OUTPUT_DIR exists; the config to run."""
    classes = len(check_classes(cfg, "lincls"))
    if cfg.MODEL.NUM_CLASSES and cfg.MODEL.NUM_CLASSES < classes:
        raise ConfigError(f"lincls: MODEL.NUM_CLASSES {cfg.MODEL.NUM_CLASSES} < {classes} class folders in "
                          f"{cfg.DATA.ROOT}/train; set MODEL.NUM_CLASSES 0 (= the number of class folders)")
    return check_weights(cfg, "lincls")


def _build(run: Run, num_classes: int) -> tuple[LinearEval, nn.Module, dict[str, torch.Tensor], dict]:
    """(model on the device, its classifier -- DDP-wrapped when distributed --, backbone reference, weights info)."""
    model, reference, info = build_linear_eval(run.cfg, num_classes)
    model.to(run.device)
    classifier: nn.Module = model.classifier
    if run.dist.distributed:  # only the classifier has gradients to synchronise
        model.classifier = classifier = nn.parallel.DistributedDataParallel(
            classifier, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    return model, classifier, reference, info


def _train(run: Run, model: LinearEval, classifier: nn.Module, optimizer: torch.optim.Optimizer, init_lr: float,
           loaders: tuple[DataLoader, DataLoader], resume: str | None, sha: str,
           stop: StopRequest) -> tuple[dict[str, float], float]:
    """The epochs left after ``resume``, a checkpoint after each (a stop signal ends the run after the
    epoch's checkpoint); (last evaluation, best top-1)."""
    cfg, device, out = run.cfg, run.device, Path(run.cfg.OUTPUT_DIR)
    train_loader, val_loader = loaders
    start_epoch, best_top1, history = _resume(_resume_path(resume, out), sha, classifier, optimizer)
    epochs = cfg.SOLVER.EPOCHS
    val: dict[str, float] = next((r["val"] for r in reversed(history) if "val" in r), {})
    t0 = time.time()
    for epoch in range(start_epoch, epochs):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        lr = adjust_learning_rate(optimizer, init_lr, epoch, epochs, schedule=cfg.SOLVER.SCHEDULE)
        train_stats = train_one_epoch(model, train_loader, optimizer, device, epoch, epochs, cfg.TRAIN.PRINT_FREQ)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train": train_stats}
        if (epoch + 1) % cfg.TEST.EVAL_PERIOD == 0 or epoch + 1 == epochs:
            val = evaluate(model, val_loader, device, header=f"lincls val [{epoch + 1}/{epochs}]")
            best_top1 = max(best_top1, val["top1"])
            record["val"] = val
        history.append(record)
        if run.is_main:
            atomic_torch_save({"classifier": getattr(classifier, "module", classifier).state_dict(),
                               "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "best_top1": best_top1,
                               "history": history, "checkpoint_sha256": sha, "config": cfg.dump()},
                              out / CHECKPOINT)  # the backbone is not saved: it is MODEL.WEIGHTS
            eta = (time.time() - t0) / (epoch + 1 - start_epoch) * (epochs - epoch - 1)
            logger.info("lincls epoch %d/%d: lr %.4g, train loss %.4f%s, eta %s", epoch + 1, epochs, lr,
                        train_stats.get("loss", math.nan),
                        f", val top-1 {val['top1']:.2f} top-5 {val['top5']:.2f}" if "val" in record else "",
                        format_seconds(eta))
        stop.stop_if(stop.agreed() if epoch + 1 < epochs else 0, f"epoch {epoch + 1}")
    if not val:  # resumed a finished run without a stored evaluation
        val = evaluate(model, val_loader, device)
    return val, best_top1


def _results(run: Run, val: dict[str, float], best_top1: float, info: dict, num_classes: int,
             init_lr: float) -> dict[str, Any]:
    cfg = run.cfg
    return {
        "top1": val["top1"], "top5": val["top5"], "best_top1": max(best_top1, val["top1"]),
        "epochs": cfg.SOLVER.EPOCHS, "arch": cfg.MODEL.ARCH, "width": cfg.MODEL.WIDTH,
        "pretrain_epochs": info.get("epoch"), "checkpoint": str(Path(cfg.MODEL.WEIGHTS).resolve()),
        "checkpoint_sha256": info["sha256"], "checkpoint_format": info.get("format"), "num_classes": num_classes,
        "num_val": val["count"], "batch_size": cfg.SOLVER.BATCH_SIZE, "lr": init_lr,
        "optimizer": cfg.SOLVER.OPTIMIZER, "env": run.env,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``siambench lincls --config-file C [--resume auto] MODEL.WEIGHTS ckpt OUTPUT_DIR d``."""
    parser = argparse.ArgumentParser(prog="siambench lincls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", metavar="auto|PATH", default=None,
                        help=f"continue from OUTPUT_DIR/{CHECKPOINT} ('auto', if present) or PATH")
    add_config_args(parser, "MODEL.WEIGHTS runs/pretrain/model_final.pth OUTPUT_DIR runs/x SOLVER.EPOCHS 2")
    args = parser.parse_intermixed_args(argv)  # flags anywhere, also after the overrides
    run = load_run(get_lincls_defaults(), args.config_file, args.opts, command="lincls", resume=args.resume,
                   markers=(CHECKPOINT, "lincls_results.json"), check=_check_inputs)
    cfg, out = run.cfg, Path(run.cfg.OUTPUT_DIR)

    train_loader, val_loader, num_classes = _data(cfg)
    model, classifier, reference, info = _build(run, num_classes)
    optimizer, init_lr = build_optimizer(cfg, list(classifier.parameters()))
    with stop_on_signal() as stop:
        val, best_top1 = _train(run, model, classifier, optimizer, init_lr, (train_loader, val_loader), args.resume,
                                info["sha256"], stop)
    sanity_check(model.backbone, reference)
    results = _results(run, val, best_top1, info, num_classes, init_lr)
    if run.is_main:
        atomic_write_json(out / "lincls_results.json", results)
        logger.info("lincls: top-1 %.2f%%, top-5 %.2f%% -> %s", results["top1"], results["top5"],
                    out / "lincls_results.json")
    barrier()
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
