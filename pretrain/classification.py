"""Classification plumbing shared by ``lincls``, ``knn`` and ``supervised``.

ImageFolder train/eval loaders (sharded per rank), torchvision ResNet backbones and the
loading of a pretrained encoder into one (any checkpoint format ``siambench.convert``
reads), top-k accuracy and distributed evaluation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision import transforms as T

from .data.cache import cache_in_memory
from .data.folder import SafeImageFolder
from .data.loader import resolve_num_workers
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform
from .methods.encoders import TORCHVISION_WIDTH, build_encoder
from .utils.config import CfgNode
from .utils.logger import MetricLogger

__all__ = ["build_train_transform", "build_train_loader", "build_eval_loader", "build_backbone", "load_backbone",
           "accuracy", "evaluate"]


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
    workers = resolve_num_workers(cfg.DATA.NUM_WORKERS)
    loader = DataLoader(dataset, batch_size=batch, shuffle=sampler is None, sampler=sampler, num_workers=workers,
                        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
    return loader, dataset.classes


def build_eval_loader(cfg: CfgNode, split: str, global_batch: int, shard: bool = True) -> tuple[DataLoader, list[str]]:
    """Centre-cropped ``DATA.ROOT/split`` in order; with ``shard`` each rank gets a disjoint
    strided slice (no padding, so distributed results count every image exactly once)."""
    dataset = _folder(cfg, split, build_eval_transform(cfg.DATA.IMAGE_SIZE))
    classes = dataset.classes
    if shard and dist.is_initialized():
        dataset = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    batch = _per_rank(global_batch, "TEST.BATCH_SIZE") if shard else global_batch
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=resolve_num_workers(cfg.DATA.NUM_WORKERS),
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
    state, info = read_backbone(weights, fmt)
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


def read_backbone(weights: str | Path, fmt: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(backbone state dict, provenance) of any checkpoint format ``siambench convert`` reads;
    the one place pretrain imports convert (lazily: convert is a heavier package)."""
    from siambench.convert.checkpoints import load_backbone_state_dict

    return load_backbone_state_dict(weights, fmt=fmt or None)


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
