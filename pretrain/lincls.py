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

Also home of the classification plumbing shared with ``knn`` and ``supervised``
(run setup, ImageFolder loaders, accuracy, distributed evaluation, backbone loading).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision import transforms as T

from .data.cache import cache_in_memory
from .data.folder import SafeImageFolder, resolve_cfg_data_root
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform
from .eval_config import get_lincls_defaults
from .lars import LARS
from .methods.encoders import TORCHVISION_WIDTH, build_encoder
from .run_dir import prepare_run_dir
from .utils.config import CfgNode, add_config_args, load_config, save_config
from .utils.dist import DistInfo, barrier, init_distributed_mode
from .utils.env import environment
from .utils.io import atomic_torch_save, atomic_write_json
from .utils.logger import MetricLogger, format_seconds, setup_logger
from .utils.step_stats import DeviceStepStats, is_print_step

__all__ = [
    "Run", "setup_run", "build_train_loader", "build_eval_loader", "load_backbone", "build_backbone",
    "accuracy", "evaluate", "sanity_check", "cosine_lr", "main",
]

logger = logging.getLogger("siambench.lincls")
CHECKPOINT = "lincls_checkpoint.pth"  # resume state of the classifier (the backbone is MODEL.WEIGHTS)


# ----------------------------------------------------------------------------- run setup
@dataclasses.dataclass
class Run:
    """A command's resolved config and place in the (possibly distributed) job."""

    cfg: CfgNode
    dist: DistInfo
    env: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def close(self) -> None:
        if self.dist.distributed and dist.is_initialized():
            dist.destroy_process_group()


def setup_run(defaults: CfgNode, config_file: str | None, opts: Sequence[str], command: str,
              resume: str | None = None, guard: Sequence[str] = ()) -> Run:
    """Load the config, check DATA.ROOT, join the process group, lock OUTPUT_DIR, seed, create
    OUTPUT_DIR and save config.yaml. Bad input stops before anything is created.

    Args:
        resume: the command's ``--resume`` argument (None: a new run).
        guard: file patterns that mark a run in OUTPUT_DIR; if any exists, the run is refused
            unless resumed with the same config (``siambench.pretrain.run_dir``). Empty: only lock OUTPUT_DIR.
    """
    cfg = load_config(defaults, config_file, opts)
    cfg = resolve_cfg_data_root(cfg, ("train", "val"))
    info = init_distributed_mode(device=cfg.MODEL.DEVICE)
    out = Path(cfg.OUTPUT_DIR)
    prepare_run_dir(cfg, info, resume, markers=guard)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
    setup_logger(out, rank=info.rank, filename=f"log_{command}.txt")
    seed = cfg.SEED + info.rank
    random.seed(seed)
    torch.manual_seed(seed)
    logging.getLogger(f"siambench.{command}").info("world size %d, device %s, output %s", info.world_size,
                                                  info.device, out)
    return Run(cfg=cfg, dist=info, env=environment())


# ----------------------------------------------------------------------------- data
def build_train_transform(size: int, scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """RandomResizedCrop (default scale 0.08-1) + flip: torchvision's and main_lincls' train aug."""
    return T.Compose([T.RandomResizedCrop(size, scale=tuple(scale)), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _folder(cfg: CfgNode, split: str, transform: Any) -> SafeImageFolder:
    folder = SafeImageFolder(Path(cfg.DATA.ROOT) / split, transform, strict=cfg.DATA.STRICT,
                             max_bad_fraction=cfg.DATA.MAX_BAD_FRACTION)
    return cache_in_memory(folder) if cfg.DATA.CACHE_IN_MEMORY else folder


def _per_rank(global_batch: int, what: str) -> int:
    world = dist.get_world_size() if dist.is_initialized() else 1
    if global_batch % world:
        raise ValueError(f"{what} = {global_batch} is not divisible by the world size {world}; "
                         "choose a multiple of the number of processes")
    return global_batch // world


def build_train_loader(cfg: CfgNode, global_batch: int) -> tuple[DataLoader, list[str]]:
    """Shuffled, augmented ``DATA.ROOT/train`` (a DistributedSampler under torchrun)."""
    dataset = _folder(cfg, "train", build_train_transform(cfg.DATA.IMAGE_SIZE, cfg.DATA.CROP_SCALE))
    batch = _per_rank(global_batch, "SOLVER.BATCH_SIZE")
    sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.SEED) if dist.is_initialized() else None
    loader = DataLoader(dataset, batch_size=batch, shuffle=sampler is None, sampler=sampler,
                        num_workers=cfg.DATA.NUM_WORKERS, pin_memory=torch.cuda.is_available(),
                        persistent_workers=cfg.DATA.NUM_WORKERS > 0)
    return loader, dataset.classes


def build_eval_loader(cfg: CfgNode, split: str, global_batch: int, shard: bool = True) -> tuple[DataLoader, list[str]]:
    """Centre-cropped ``DATA.ROOT/split`` in order; with ``shard`` each rank gets a disjoint
    strided slice (no padding, so distributed results count every image exactly once)."""
    dataset = _folder(cfg, split, build_eval_transform(cfg.DATA.IMAGE_SIZE))
    classes = dataset.classes
    if shard and dist.is_initialized():
        dataset = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    batch = _per_rank(global_batch, "TEST.BATCH_SIZE") if shard else global_batch
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=cfg.DATA.NUM_WORKERS,
                        pin_memory=torch.cuda.is_available())
    return loader, classes


# ----------------------------------------------------------------------------- model
def build_backbone(arch: str, num_classes: int = 1000, zero_init_residual: bool = False,
                   width: int = TORCHVISION_WIDTH) -> nn.Module:
    """A randomly initialised torchvision ResNet (with its ``fc``), ``width`` stem channels (MODEL.WIDTH)."""
    return build_encoder(arch, num_classes=num_classes, zero_init_residual=zero_init_residual, width=width)


def load_backbone(model: nn.Module, weights: str, arch: str, fmt: str = "",
                  width: int = TORCHVISION_WIDTH) -> dict[str, Any]:
    """Load a pretrained encoder's backbone (every tensor but ``fc``) into a torchvision ResNet.

    Accepts siambench, official SimSiam (``module.encoder.*``), MoCo (``module.encoder_q.*``),
    torchvision and plain checkpoints through ``siambench.convert.checkpoints.load_backbone_state_dict``.

    Args:
        model: the ResNet ``arch`` (its ``fc`` is left alone).
        weights: checkpoint path (MODEL.WEIGHTS).
        arch: MODEL.ARCH, checked against the architecture of the checkpoint's tensors.
        fmt: checkpoint format name; "" detects it from the keys.
        width: MODEL.WIDTH (stem channels), checked against the checkpoint's tensors.

    Returns:
        The loader's provenance (``format``, ``arch``, ``epoch``, ``sha256``, ...).

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the checkpoint is unreadable or holds another architecture than ``arch``.
    """
    if not Path(weights).is_file():
        raise FileNotFoundError(f"MODEL.WEIGHTS {weights} does not exist; pass the checkpoint to evaluate")
    from siambench.convert.checkpoints import load_backbone_state_dict  # lazy: convert is a heavier package

    state, info = load_backbone_state_dict(weights, fmt=fmt or None)
    if info["arch"] != arch:
        raise ValueError(f"MODEL.WEIGHTS {weights} holds a {info['arch']} encoder but MODEL.ARCH is {arch}; "
                         f"set MODEL.ARCH {info['arch']}")
    if info["width"] != width:
        raise ValueError(f"MODEL.WEIGHTS {weights} holds a {arch} of width {info['width']} but MODEL.WIDTH is "
                         f"{width}; set MODEL.WIDTH {info['width']}")
    # The loader returns the complete backbone (no fc, no BatchNorm step counters) for info["arch"].
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # only if the loader's contract were broken
        raise ValueError(f"{weights}: backbone tensors do not match {arch}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    return dict(info)


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


# ----------------------------------------------------------------------------- metrics
def accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (k > C counts as C)."""
    ranked = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices  # Nxk
    hits = ranked == target[:, None]
    return [hits[:, :k].any(dim=1).sum() for k in topk]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, header: str = "val",
             log_period: int = 50) -> dict[str, float]:
    """Top-1/top-5 (%) and mean loss of ``model`` over ``loader``, summed over all ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, count
    count = 0  # on the host: no device tensor per step
    for images, target in MetricLogger().log_every(loader, log_period, header):
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        logits = model(images)  # NxC
        top1, top5 = accuracy(logits, target)
        totals[:3] += torch.stack([F.cross_entropy(logits, target, reduction="sum").double(), top1.double(),
                                   top5.double()])
        count += len(target)
    model.train(was_training)
    totals[3] = count
    if dist.is_initialized():
        dist.all_reduce(totals)
    loss, top1, top5, n = totals.tolist()
    if n == 0:
        raise ValueError(f"{header}: empty evaluation set")
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "loss": loss / n, "count": int(n)}


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """The official per-epoch cosine schedule: base * 0.5 * (1 + cos(pi * epoch / epochs))."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


# ----------------------------------------------------------------------------- linear eval
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
    init_lr = cfg.SOLVER.BASE_LR * cfg.SOLVER.BATCH_SIZE / 256
    s = cfg.SOLVER
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
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint (use --resume auto for {output_dir})")
    return Path(resume)


def _resume(path: Path | None, sha: str, classifier: nn.Module,
            optimizer: torch.optim.Optimizer) -> tuple[int, float, list[dict[str, Any]]]:
    """Restore classifier and optimizer from ``path``; (start epoch, best top-1, history)."""
    if path is None:
        return 0, 0.0, []
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["checkpoint_sha256"] != sha:
        raise SystemExit(f"lincls: {path} was trained on a different MODEL.WEIGHTS (sha256 differs); "
                         "use a fresh OUTPUT_DIR")
    getattr(classifier, "module", classifier).load_state_dict(ckpt["classifier"])
    optimizer.load_state_dict(ckpt["optimizer"])
    logger.info("resumed from %s at epoch %d", path, ckpt["epoch"])
    return ckpt["epoch"], ckpt["best_top1"], list(ckpt["history"])


def main(argv: Sequence[str] | None = None) -> int:
    """``siambench lincls --config-file C [--resume auto] MODEL.WEIGHTS ckpt OUTPUT_DIR d``."""
    parser = argparse.ArgumentParser(prog="siambench lincls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", metavar="auto|PATH", default=None,
                        help=f"continue from OUTPUT_DIR/{CHECKPOINT} ('auto', if present) or PATH")
    add_config_args(parser, "MODEL.WEIGHTS runs/pretrain/model_final.pth OUTPUT_DIR runs/x SOLVER.EPOCHS 2")
    args = parser.parse_args(argv)
    run = setup_run(get_lincls_defaults(), args.config_file, args.opts, command="lincls", resume=args.resume,
                    guard=(CHECKPOINT, "lincls_results.json"))
    cfg, device, out = run.cfg, run.device, Path(run.cfg.OUTPUT_DIR)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("lincls: MODEL.WEIGHTS is empty; pass the checkpoint to evaluate: MODEL.WEIGHTS path")

    train_loader, classes = build_train_loader(cfg, cfg.SOLVER.BATCH_SIZE)
    val_loader, val_classes = build_eval_loader(cfg, "val", cfg.TEST.BATCH_SIZE)
    if classes != val_classes:
        raise SystemExit(f"lincls: {cfg.DATA.ROOT}/train and {cfg.DATA.ROOT}/val have different class folders")
    num_classes = cfg.MODEL.NUM_CLASSES or len(classes)
    if num_classes < len(classes):
        raise SystemExit(f"lincls: MODEL.NUM_CLASSES {num_classes} < {len(classes)} class folders in {cfg.DATA.ROOT}")

    model, reference, info = build_linear_eval(cfg, num_classes)
    model.to(device)
    sha = info["sha256"]
    classifier: nn.Module = model.classifier
    if run.dist.distributed:  # only the classifier has gradients to synchronise
        model.classifier = classifier = nn.parallel.DistributedDataParallel(
            classifier, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, init_lr = build_optimizer(cfg, list(classifier.parameters()))

    start_epoch, best_top1, history = _resume(_resume_path(args.resume, out), sha, classifier, optimizer)
    epochs = cfg.SOLVER.EPOCHS
    val: dict[str, float] = next((r["val"] for r in reversed(history) if "val" in r), {})
    t0 = time.time()
    for epoch in range(start_epoch, epochs):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        lr = cosine_lr(init_lr, epoch, epochs) if cfg.SOLVER.SCHEDULE == "cosine" else init_lr
        for group in optimizer.param_groups:
            group["lr"] = lr
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
            done = epoch + 1 - start_epoch
            eta = (time.time() - t0) / done * (epochs - epoch - 1)
            logger.info("lincls epoch %d/%d: lr %.4g, train loss %.4f%s, eta %s", epoch + 1, epochs, lr,
                        train_stats.get("loss", math.nan),
                        f", val top-1 {val['top1']:.2f} top-5 {val['top5']:.2f}" if "val" in record else "",
                        format_seconds(eta))
    if not val:  # resumed a finished run without a stored evaluation
        val = evaluate(model, val_loader, device)
    sanity_check(model.backbone, reference)

    results = {
        "top1": val["top1"], "top5": val["top5"], "best_top1": max(best_top1, val["top1"]),
        "epochs": epochs, "arch": cfg.MODEL.ARCH, "width": cfg.MODEL.WIDTH, "pretrain_epochs": info.get("epoch"),
        "checkpoint": str(Path(cfg.MODEL.WEIGHTS).resolve()), "checkpoint_sha256": sha,
        "checkpoint_format": info.get("format"), "num_classes": num_classes, "num_val": val["count"],
        "batch_size": cfg.SOLVER.BATCH_SIZE, "lr": init_lr, "optimizer": cfg.SOLVER.OPTIMIZER,
        "env": run.env,
    }
    if run.is_main:
        atomic_write_json(out / "lincls_results.json", results)
        logger.info("lincls: top-1 %.2f%%, top-5 %.2f%% -> %s", results["top1"], results["top5"],
                    out / "lincls_results.json")
    barrier()
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
