"""Datasets and loaders for pretraining and for the kNN monitor.

``DATA.DATASET`` picks ``imagefolder`` (``DATA.ROOT/{train,val}/<class>/<image>``,
ImageNet layout; also the on-disk synthetic dataset) or ``synthetic`` (generated in
memory, no files). Pretraining uses a ``DistributedSampler`` on every run (one
replica in a single process) so the data order depends only on (seed, epoch).

Worker count and prefetch depth follow the machine (``resolve_num_workers``,
``plan_prefetch``): ``DATA.NUM_WORKERS -1`` splits the CPUs this process may run on
among the ranks of the node, and the batches the workers hold in shared memory
(``/dev/shm``) are kept under half of what is free there.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .cache import cache_in_memory
from .folder import SafeImageFolder
from .synthetic import SyntheticShapes

__all__ = ["IndexedDataset", "build_dataset", "build_pretrain_loader", "set_loader_epoch", "epoch_seed",
           "local_world_size", "resolve_num_workers", "batch_bytes", "plan_prefetch"]

logger = logging.getLogger(__name__)
_ENCODED_IMAGE_BYTES = 150_000  # a JPEG of ImageNet's typical 500x375 (~110-130 KB) plus its share of the batch


def local_world_size() -> int:
    """Ranks on this node: torchrun's LOCAL_WORLD_SIZE, else SLURM's tasks per node, else 1."""
    value = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]
    return max(1, int(value or 1))


def resolve_num_workers(value: int, local_ranks: int | None = None) -> int:
    """``DATA.NUM_WORKERS``: an explicit count (>= 0) as given; -1 = the CPUs of this process's affinity mask
    divided among the node's ranks, less one per rank for the training process itself (at least 1)."""
    if value >= 0:
        return value
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // (local_ranks or local_world_size()) - 1)


def batch_bytes(aug_backend: str, decode: str, batch: int, views: int, size: int) -> int:
    """Bytes of one loader batch in shared memory: float32 views (pil), uint8 crops (batched) or JPEG bytes."""
    if decode == "gpu_jpeg":
        return batch * _ENCODED_IMAGE_BYTES
    return batch * views * 3 * size * size * (4 if aug_backend == "pil" else 1)


def plan_prefetch(requested: int, workers: int, one_batch: int, shm_free: int | None = None) -> int:
    """``requested`` batches per worker, lowered (to 1 at least) until ``workers x prefetch x one_batch``
    fits in half the free ``/dev/shm`` (``shm_free``; read here when None). Warns when even 1 does not fit."""
    if workers == 0:
        return requested
    if shm_free is None:
        try:
            st = os.statvfs("/dev/shm")
            shm_free = st.f_bavail * st.f_frsize
        except OSError:
            return requested
    prefetch = requested
    while prefetch > 1 and workers * prefetch * one_batch > shm_free // 2:
        prefetch -= 1
    if prefetch != requested or workers * one_batch > shm_free // 2:
        logger.warning("DATA.PREFETCH_FACTOR %d -> %d: %d workers x %d batches of %.0f MB would hold %.1f GB of "
                       "/dev/shm (%.1f GB free)%s", requested, prefetch, workers, prefetch, one_batch / 1e6,
                       workers * prefetch * one_batch / 1e9, shm_free / 1e9,
                       "; still too much: lower DATA.NUM_WORKERS or the per-rank batch" if prefetch == 1 and
                       workers * one_batch > shm_free // 2 else "")
    return prefetch


class IndexedDataset(Dataset):
    """``(sample, index)`` pairs: the per-image targets of the hypothesis variants need the index."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample, _target = self.dataset[index]
        return sample, index


def build_dataset(cfg, split: str, transform: Callable | None, strict: bool = False,
                  image_loader: Callable[[str], Any] | None = None) -> Dataset:
    """The ``split`` ("train" or "val") dataset named by ``cfg.DATA``.

    ``image_loader`` (imagefolder only) replaces PIL decoding (e.g. ``gpu_decode.read_encoded``).

    Raises:
        ValueError: unknown ``DATA.DATASET`` or bad layout; FileNotFoundError: missing root.
    """
    kind = cfg.DATA.DATASET
    if kind == "imagefolder":
        if not cfg.DATA.ROOT:
            raise ValueError("DATA.ROOT is empty: set it to a directory with train/<class>/*.jpg "
                             "(e.g. `siambench pretrain --config-file C DATA.ROOT /data/imagenet`)")
        extra = {"loader": image_loader} if image_loader is not None else {}
        folder = SafeImageFolder(os.path.join(cfg.DATA.ROOT, split), transform, strict=strict,
                                 max_bad_fraction=cfg.DATA.MAX_BAD_FRACTION, **extra)
        return cache_in_memory(folder) if cfg.DATA.CACHE_IN_MEMORY else folder
    if kind == "synthetic":
        s = cfg.DATA.SYNTHETIC
        length = s.TRAIN_SIZE if split == "train" else s.VAL_SIZE
        return SyntheticShapes(length, s.IMAGE_SIZE, s.NUM_CLASSES, seed=cfg.SEED * 2 + (split != "train"),
                               transform=transform)
    raise ValueError(f"DATA.DATASET must be 'imagefolder' or 'synthetic', got {kind!r}")


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """One seed per (run seed, epoch, rank): resuming at an epoch replays its exact data."""
    return (seed * 1_000_003 + epoch) * 1009 + rank


def build_pretrain_loader(dataset: Dataset, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1,
                          seed: int = 0, pin_memory: bool = False, persistent_workers: bool = False,
                          collate_fn: Callable | None = None, prefetch_factor: int = 2) -> DataLoader:
    """Shuffled, drop-last loader of this rank's shard; call ``set_loader_epoch`` before each epoch.

    Args:
        batch_size: per-rank batch (global batch / world size).
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n // world_size < batch_size:
        raise ValueError(f"the dataset has {n} images, fewer than one batch of {batch_size} per rank x "
                         f"{world_size} ranks; lower SOLVER.BATCH_SIZE or use more data")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0,
                      generator=torch.Generator(), prefetch_factor=prefetch_factor if num_workers > 0 else None,
                      collate_fn=collate_fn)


def set_loader_epoch(loader: DataLoader, seed: int, epoch: int, rank: int = 0, stream: int = 0) -> None:
    """Fix the epoch's shuffle (sampler) and the workers' augmentation seeds (generator).

    Loaders with the same ``seed`` walk the same sample order; a different ``stream``
    gives them independent augmentations (the k-step targets' extra view).

    With persistent workers the worker seeds are drawn once, so exact replay on
    resume is only guaranteed without them.
    """
    loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
    loader.generator.manual_seed(epoch_seed(seed, epoch, rank) + 7919 * stream)  # type: ignore[union-attr]
