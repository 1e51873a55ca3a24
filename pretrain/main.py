"""``siambench pretrain``: SimSiam (or ``MODEL.METHOD``) pretraining, single process or torchrun/SLURM multi-GPU.

    siambench pretrain --config-file configs/pretrain/simsiam_r50_100ep.yaml DATA.ROOT /data/imagenet
    torchrun --nproc_per_node 8 -m siambench.pretrain --config-file ... [--resume auto] [--strict-data] KEY VALUE ...

Writes ``OUTPUT_DIR/{config.yaml, checkpoint_*.pth, last_checkpoint, model_final.pth,
metrics.jsonl, log.txt, tb/}``.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from . import checkpoint as ckpt_io
from .builder import build_model
from .config import get_cfg
from .accel import check_compile, ddp_kwargs, set_cudnn_benchmark
from .data import (IndexedDataset, TwoCropsTransform, build_dataset, build_eval_transform, build_pretrain_loader,
                   epoch_seed, set_loader_epoch)
from .data.loader import batch_bytes, plan_prefetch, resolve_num_workers
from .data.unlabelled import without_knn_monitor
from .data.method_transforms import AUGMENTATIONS, build_multi_view_transform, build_view_transform
from .data.views import build_view_pipeline, check_view_cfg
from .engine import TrainContext, train_one_epoch
from .lars import LARS, LARS_RULES
from .methods import METHODS
from .monitors import CollapseDetected, CollapseMonitor, KnnMonitor
from .run_setup import seed_all, setup_run
from .schedule import scaled_lr
from .sync_bn import convert_sync_batchnorm
from .targets import KStepTargets, MovingAverageTargets
from .utils.config import CfgNode, ConfigError, add_config_args, load_config
from .utils.dist import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed_mode
from .utils.io import atomic_link
from .utils.logger import JSONLinesWriter, TensorboardWriter
from .utils.stop import StopRequest, stop_on_signal

__all__ = ["main", "parse_args", "train"]

logger = logging.getLogger("siambench.pretrain")

EXIT_COLLAPSED = 3
_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="siambench pretrain",
                                     description="self-supervised pretraining: SimSiam or MODEL.METHOD")
    parser.add_argument("--resume", metavar="auto|PATH", default=None,
                        help="'auto': continue from OUTPUT_DIR/last_checkpoint if any; or a checkpoint path")
    parser.add_argument("--strict-data", action="store_true", help="stop at the first unreadable image")
    add_config_args(parser, "OUTPUT_DIR runs/x SOLVER.EPOCHS 2")  # the defaults are the paper's baseline recipe
    return parser.parse_intermixed_args(argv)  # flags anywhere, also after the overrides


def _check_cfg(cfg, info: DistInfo) -> None:
    if cfg.SOLVER.BATCH_SIZE % info.world_size:
        raise ConfigError(f"SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE} (global) is not divisible by the "
                          f"{info.world_size} ranks; choose a multiple of {info.world_size}")
    if cfg.TRAIN.AMP not in _AMP:
        raise ConfigError(f"TRAIN.AMP must be one of {sorted(_AMP)}, got {cfg.TRAIN.AMP!r}")
    check_view_cfg(cfg)  # DATA.AUG_BACKEND, DATA.DECODE
    check_compile(cfg, info)  # TRAIN.COMPILE with SyncBN under DDP
    if cfg.HYPOTHESIS.MODE not in ("none", "kstep", "moving_average"):
        raise ConfigError(f"HYPOTHESIS.MODE must be none, kstep or moving_average, got {cfg.HYPOTHESIS.MODE!r}")
    if cfg.SOLVER.SCHEDULE_UNIT not in ("epoch", "step"):
        raise ConfigError(f"SOLVER.SCHEDULE_UNIT must be 'epoch' or 'step', got {cfg.SOLVER.SCHEDULE_UNIT!r}")
    method = cfg.MODEL.METHOD
    if method not in METHODS:
        raise ConfigError(f"MODEL.METHOD must be one of {', '.join(METHODS)}, got {method!r}")
    if cfg.SOLVER.OPTIMIZER not in ("sgd", "lars"):
        raise ConfigError(f"SOLVER.OPTIMIZER must be 'sgd' or 'lars', got {cfg.SOLVER.OPTIMIZER!r}")
    if cfg.SOLVER.LARS_RULE not in LARS_RULES:
        raise ConfigError(f"SOLVER.LARS_RULE must be one of {', '.join(LARS_RULES)}, got {cfg.SOLVER.LARS_RULE!r}")
    if cfg.DATA.AUGMENTATION not in AUGMENTATIONS:
        raise ConfigError(f"DATA.AUGMENTATION must be one of {', '.join(AUGMENTATIONS)}, got {cfg.DATA.AUGMENTATION!r}")
    if cfg.DATA.AUG_BACKEND == "batched" and cfg.DATA.AUGMENTATION != "moco_v2":
        raise ConfigError(f"DATA.AUG_BACKEND batched implements the moco_v2 views only; set DATA.AUG_BACKEND pil "
                          f"for DATA.AUGMENTATION {cfg.DATA.AUGMENTATION}")
    if cfg.DATA.AUG_BACKEND == "batched" and method == "swav" and cfg.MODEL.SWAV.NUM_SMALL_CROPS:
        raise ConfigError("MODEL.SWAV.NUM_SMALL_CROPS > 0 (multi-crop) needs DATA.AUG_BACKEND pil: the batched "
                          "backend makes crops of one size")
    if cfg.SOLVER.WARMUP_EPOCHS and cfg.SOLVER.SCHEDULE_UNIT != "step":
        raise ConfigError("SOLVER.WARMUP_EPOCHS > 0 needs SOLVER.SCHEDULE_UNIT step (the warmup is per step)")
    if method != "simsiam" and cfg.HYPOTHESIS.MODE != "none":
        raise ConfigError(f"HYPOTHESIS.MODE {cfg.HYPOTHESIS.MODE} is a SimSiam experiment; MODEL.METHOD is {method}")
    if method == "moco_v2" and cfg.MODEL.MOCO.QUEUE % cfg.SOLVER.BATCH_SIZE:
        raise ConfigError(f"MODEL.MOCO.QUEUE {cfg.MODEL.MOCO.QUEUE} must be a multiple of SOLVER.BATCH_SIZE "
                          f"{cfg.SOLVER.BATCH_SIZE} (official builder.py asserts it)")


def build_model_and_optimizer(cfg, info: DistInfo):
    """(train_model, bare method, optimizer, scaler): SyncBN + DDP when distributed, compile if asked."""
    seed_all(cfg.SEED)  # identical init on every rank (DDP also broadcasts it)
    bare = build_model(cfg)
    model: nn.Module = bare
    if info.distributed and cfg.MODEL.SYNC_BN:  # torch's SyncBatchNorm is GPU-only; gloo/CPU runs use ours
        convert = nn.SyncBatchNorm.convert_sync_batchnorm if info.device.type == "cuda" else convert_sync_batchnorm
        model = bare = convert(bare)
    model.to(info.device)
    if cfg.TRAIN.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    init_lr = scaled_lr(cfg.SOLVER.BASE_LR, cfg.SOLVER.BATCH_SIZE)
    groups = bare.param_groups(cfg.SOLVER.EXCLUDE_BIAS_BN)
    if cfg.SOLVER.OPTIMIZER == "lars":  # SimCLR, BYOL, SwAV: each its official LARS (SOLVER.LARS_RULE)
        optimizer: torch.optim.Optimizer = LARS(groups, lr=init_lr, momentum=cfg.SOLVER.MOMENTUM,
                                                weight_decay=cfg.SOLVER.WEIGHT_DECAY,
                                                trust_coefficient=cfg.SOLVER.LARS_TRUST, rule=cfg.SOLVER.LARS_RULE)
    else:
        optimizer = torch.optim.SGD(groups, lr=init_lr, momentum=cfg.SOLVER.MOMENTUM,
                                    weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs(cfg, info))
    if cfg.TRAIN.COMPILE:
        model = torch.compile(model)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.TRAIN.AMP == "fp16")
    return model, bare, optimizer, scaler


def build_data(cfg, info: DistInfo, num_views: int):
    """(pretraining loader, its dataset, batch augment or None, single-view target loader or None)."""
    views = build_view_pipeline(cfg, info.device)  # DATA.AUG_BACKEND / DATA.DECODE
    batch_aug = views.batch_aug
    if batch_aug is None:  # PIL path: the method's own view recipe (DATA.AUGMENTATION)
        view_tf = build_view_transform(cfg.DATA.AUGMENTATION, cfg.DATA.IMAGE_SIZE, cfg.DATA.CROP_SCALE)
        views_tf = build_multi_view_transform(cfg, num_views)
    else:  # batched path: crops in the workers, the MoCo v2 ops on the device
        view_tf = views.view_tf
        views_tf = TwoCropsTransform(view_tf, num_views)
    per_rank = cfg.SOLVER.BATCH_SIZE // info.world_size
    workers = resolve_num_workers(cfg.DATA.NUM_WORKERS)
    d = cfg.DATA
    decode = "gpu_jpeg" if views.collate_fn is not None else "pil"  # gpu_jpeg falls back to pil without CUDA
    prefetch = plan_prefetch(d.PREFETCH_FACTOR, workers, batch_bytes("pil" if batch_aug is None else "batched",
                                                                     decode, per_rank, num_views, d.IMAGE_SIZE))
    logger.info("data loader: %d workers per rank (DATA.NUM_WORKERS %d), prefetch %d", workers, d.NUM_WORKERS,
                prefetch)
    loader_kw = dict(batch_size=per_rank, num_workers=workers, rank=info.rank, prefetch_factor=prefetch,
                     world_size=info.world_size, seed=cfg.SEED, persistent_workers=cfg.DATA.PERSISTENT_WORKERS,
                     pin_memory=cfg.DATA.PIN_MEMORY and info.device.type == "cuda", collate_fn=views.collate_fn)
    dataset = build_dataset(cfg, "train", views_tf, strict=cfg.DATA.STRICT, image_loader=views.image_loader)
    loader = build_pretrain_loader(IndexedDataset(dataset), **loader_kw)
    target_loader = None
    if cfg.HYPOTHESIS.MODE == "kstep":  # T'(x): one more view per image, same sample order
        target_loader = build_pretrain_loader(IndexedDataset(build_dataset(
            cfg, "train", view_tf, strict=cfg.DATA.STRICT, image_loader=views.image_loader)), **loader_kw)
    return loader, dataset, batch_aug, target_loader


def build_targets(cfg, bare: nn.Module, ctx: TrainContext, num_images: int):
    mode = cfg.HYPOTHESIS.MODE
    if mode == "kstep":
        def encode(view: torch.Tensor) -> torch.Tensor:
            with ctx.autocast():
                return bare.encoder(ctx.to_device(view))  # NxC projections with the current theta

        return KStepTargets(cfg.HYPOTHESIS.K_STEPS, encode)
    if mode == "moving_average":
        return MovingAverageTargets(num_images, cfg.MODEL.DIM, cfg.HYPOTHESIS.MOMENTUM,
                                    cfg.HYPOTHESIS.BANK_DEVICE or ctx.device)
    return None


def check_finite(model: nn.Module, epoch: int) -> None:
    """Raise before a checkpoint write if any weight or buffer is NaN/inf (one host sync)."""
    tensors = [t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()]
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        bad = next(n for n, t in itertools.chain(model.named_parameters(), model.named_buffers())
                   if t.is_floating_point() and not bool(torch.isfinite(t).all()))
        raise FloatingPointError(f"non-finite weights ({bad}) after epoch {epoch}: no checkpoint written; the "
                                 "last checkpoint is intact (try a lower SOLVER.BASE_LR or TRAIN.AMP none)")


def build_knn_monitor(cfg, info: DistInfo) -> KnnMonitor | None:
    """The kNN monitor of MONITOR.KNN_PERIOD (None when off); its file lists are scanned here, once."""
    if not cfg.MONITOR.KNN_PERIOD:
        return None
    tf = build_eval_transform(cfg.DATA.IMAGE_SIZE)
    train_set, val_set = build_dataset(cfg, "train", tf), build_dataset(cfg, "val", tf)
    m = cfg.MONITOR
    return KnnMonitor(train_set, val_set, info.device, len(train_set.classes), k=m.KNN_K, t=m.KNN_T,
                      batch_size=max(cfg.SOLVER.BATCH_SIZE // info.world_size, 64),
                      num_workers=resolve_num_workers(cfg.DATA.NUM_WORKERS), train_subset=m.KNN_TRAIN_SUBSET,
                      rank=info.rank, world_size=info.world_size)


def build_context(cfg, info: DistInfo, bare: nn.Module, scaler: torch.amp.GradScaler, batch_aug: nn.Module | None,
                  steps_per_epoch: int) -> TrainContext:
    """The engine's ``TrainContext`` for ``cfg`` (schedule, AMP, collapse monitor, print period)."""
    s = cfg.SOLVER
    return TrainContext(
        device=info.device, init_lr=scaled_lr(s.BASE_LR, s.BATCH_SIZE), epochs=s.EPOCHS, fix_pred_lr=s.FIX_PRED_LR,
        schedule_per_step=s.SCHEDULE_UNIT == "step", warmup_epochs=s.WARMUP_EPOCHS, start_lr=s.START_LR,
        final_lr=s.FINAL_LR, warmup_linspace_steps=steps_per_epoch if s.WARMUP_LINSPACE else 0,
        amp_dtype=_AMP[cfg.TRAIN.AMP], scaler=scaler if scaler.is_enabled() else None,
        batch_aug=batch_aug, channels_last=cfg.TRAIN.CHANNELS_LAST,
        collapse=CollapseMonitor.from_config(cfg, dim=bare.monitor_dim), print_freq=cfg.TRAIN.PRINT_FREQ,
        max_steps=cfg.TRAIN.MAX_STEPS_PER_EPOCH, total_steps=s.EPOCHS * steps_per_epoch,
    )


@dataclasses.dataclass
class Pretraining:
    """The built pieces of a run that every epoch uses."""

    cfg: CfgNode
    info: DistInfo
    model: nn.Module  # the training model (DDP / compiled)
    bare: nn.Module  # the method itself
    optimizer: torch.optim.Optimizer
    ctx: TrainContext
    loader: Any
    dataset: Any
    target_loader: Any = None
    targets: Any = None  # SimSiam's hypothesis variants (paper Sec. 5), or None
    knn: KnnMonitor | None = None  # MONITOR.KNN_PERIOD's monitor (built once: its file lists are scanned once)

    def run_epoch(self, epoch: int) -> dict:
        """Train one epoch (0-based); its ``metrics.jsonl`` record (kNN top-1 when due)."""
        cfg, info, tic = self.cfg, self.info, time.time()
        seed_all(epoch_seed(cfg.SEED, epoch, info.rank))  # augmentations in this process (num_workers 0, batched)
        set_loader_epoch(self.loader, cfg.SEED, epoch, info.rank)
        if self.target_loader is not None:
            set_loader_epoch(self.target_loader, cfg.SEED, epoch, info.rank, stream=1)
            self.targets.begin_epoch(iter(self.target_loader))
        lr = self.ctx.lr_at(self.optimizer, epoch)
        self.bare.begin_epoch(epoch)
        stats = train_one_epoch(self.model, self.optimizer, self.loader, epoch, self.ctx, self.bare)
        record = {"type": "epoch", "epoch": epoch, **stats, "lr": lr, "time_s": round(time.time() - tic, 3),
                  "bad_images": int(round(float(all_reduce_mean(self.dataset.num_bad)) * info.world_size))
                  if hasattr(self.dataset, "num_bad") else 0}
        if self.knn is not None and ((epoch + 1) % cfg.MONITOR.KNN_PERIOD == 0 or epoch + 1 == cfg.SOLVER.EPOCHS):
            record["knn_top1"] = self.knn(self.bare.eval_encoder())
        return record

    def extra_state(self) -> dict:
        """What a checkpoint holds besides weights and optimizer, for a bit-exact resume."""
        state = {"monitor": {"collapse": self.ctx.collapse.state_dict(), "global_step": self.ctx.global_step},
                 "method": self.bare.extra_state()}
        if self.targets is not None:
            state["hypothesis"] = self.targets.state_dict()
        return state

    def save(self, epoch: int, name: str | None = None) -> None:
        """Check the weights are finite, then write the checkpoint of ``epoch`` epochs done."""
        check_finite(self.bare, epoch - 1)  # a NaN never reaches a checkpoint
        ckpt_io.save_checkpoint(self.cfg.OUTPUT_DIR, epoch, self.bare, self.optimizer, self.ctx.scaler, self.cfg,
                                self.extra_state(), name=name)

    def resume_from(self, path: Path) -> int:
        """Restore weights, optimizer, scaler, RNG, monitor, hypothesis and method state; return the epochs done."""
        state, ctx = ckpt_io.load_checkpoint(path), self.ctx
        ckpt_io.load_official_state_dict(self.bare, state["state_dict"])
        ckpt_io.load_optimizer_state(self.optimizer, state["optimizer"])  # ours, or an official SimSiam one
        if state.get("scaler") and ctx.scaler is not None:
            ctx.scaler.load_state_dict(state["scaler"])
        if "rng" in state:  # official SimSiam checkpoints have no RNG/monitor state: not bit-exact
            ckpt_io.set_rng_state(state["rng"])
            ctx.collapse.load_state_dict(state["monitor"]["collapse"])
            ctx.global_step = int(state["monitor"]["global_step"])
        else:
            logger.warning("%s has no RNG or monitor state (official SimSiam checkpoint?): resuming, not bit-exact",
                           path)
        if self.targets is not None and "hypothesis" in state:
            self.targets.load_state_dict(state["hypothesis"])
        self.bare.load_extra_state(state.get("method", {}))
        logger.info("resumed from %s (epoch %d done)", path, int(state["epoch"]))
        return int(state["epoch"])


def build(cfg, info: DistInfo) -> Pretraining:
    """Model, optimizer, data, engine context and hypothesis targets of ``cfg``."""
    model, bare, optimizer, scaler = build_model_and_optimizer(cfg, info)
    loader, dataset, batch_aug, target_loader = build_data(cfg, info, bare.num_views)
    steps_per_epoch = min(cfg.TRAIN.MAX_STEPS_PER_EPOCH or len(loader), len(loader))
    ctx = build_context(cfg, info, bare, scaler, batch_aug, steps_per_epoch)
    targets = build_targets(cfg, bare, ctx, len(dataset))
    if targets is not None:
        bare.targets = targets  # SimSiam's hypothesis variants (paper Sec. 5)
    return Pretraining(cfg, info, model, bare, optimizer, ctx, loader, dataset, target_loader, targets,
                       build_knn_monitor(cfg, info))


def _epochs(run: Pretraining, start_epoch: int, stop: StopRequest) -> None:
    """Epochs ``start_epoch``.. of the run: a record each, a checkpoint every TRAIN.CHECKPOINT_PERIOD and
    at the end of the epoch in which a stop signal came (then :class:`StopRequested` is raised)."""
    cfg, info, ctx = run.cfg, run.info, run.ctx
    for epoch in range(start_epoch, cfg.SOLVER.EPOCHS):
        record = run.run_epoch(epoch)
        logger.info("epoch %d: %s", epoch, {k: v for k, v in record.items() if k != "type"})
        if record["bad_images"]:
            logger.warning("%d unreadable images so far (replaced; see the warnings above)", record["bad_images"])
        ctx.jsonl.write(record)
        ctx.tensorboard.add_scalars({k: record[k] for k in ("loss", "z_std", "knn_top1") if k in record},
                                    epoch + 1, "epoch/")
        signum = stop.agreed() if epoch + 1 < cfg.SOLVER.EPOCHS else 0  # the last epoch just ends
        if info.is_main and ((epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or epoch + 1 == cfg.SOLVER.EPOCHS
                             or signum):
            run.save(epoch + 1)
        barrier()
        stop.stop_if(signum, f"epoch {epoch + 1}")


def train(cfg, info: DistInfo, resume: str | None = None) -> int:
    """Pretrain per ``cfg``; return the exit code (0, or 3 when a collapse aborted the run)."""
    _check_cfg(cfg, info)
    cfg, knn_note = without_knn_monitor(cfg)
    cfg = setup_run(cfg, info, "pretrain", resume, splits=("train", "val") if cfg.MONITOR.KNN_PERIOD else ("train",),
                    unlabelled_ok=True).cfg
    if knn_note:
        logger.warning(knn_note)
    out, epochs = Path(cfg.OUTPUT_DIR), cfg.SOLVER.EPOCHS
    run = build(cfg, info)
    path = ckpt_io.find_resume_checkpoint(out, resume) if resume else None
    start_epoch = run.resume_from(path) if path is not None else 0
    if info.is_main:
        JSONLinesWriter.truncate_after(out / "metrics.jsonl", start_epoch)  # drop records of epochs to redo
    barrier()
    run.ctx.jsonl = JSONLinesWriter(out / "metrics.jsonl")
    run.ctx.tensorboard = TensorboardWriter(out / "tb", enabled=info.is_main and cfg.MONITOR.TENSORBOARD)
    try:
        with stop_on_signal() as stop:
            _epochs(run, start_epoch, stop)
    except CollapseDetected as e:
        logger.error("%s", e)
        return EXIT_COLLAPSED
    finally:
        run.ctx.jsonl.close()
        run.ctx.tensorboard.close()
    if info.is_main:
        if start_epoch < epochs:  # the last epoch just wrote this state: link it, not a 2nd copy
            check_finite(run.bare, epochs - 1)
            atomic_link(out / ckpt_io.checkpoint_name(epochs), out / "model_final.pth")
        else:  # resumed from a checkpoint of the final epoch: nothing trained, nothing written yet
            run.save(epochs, name="model_final.pth")
        logger.info("done: %s", out / "model_final.pth")
    barrier()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(get_cfg(), args.config_file, args.opts)
    if args.strict_data:
        cfg.defrost()
        cfg.DATA.STRICT = True
        cfg.freeze()
    info = init_distributed_mode(device=cfg.MODEL.DEVICE)
    set_cudnn_benchmark(info.device)
    try:
        return train(cfg, info, args.resume)
    finally:
        cleanup()
