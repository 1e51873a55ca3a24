"""Datasets and loaders for pretraining and for the kNN monitor.

``DATA.DATASET`` picks ``imagefolder`` (``DATA.ROOT/{train,val}/<class>/<image>``,
ImageNet layout; also the on-disk synthetic dataset; a ``DATA.ROOT`` without ``train/``,
or a list file, is read as unlabelled images: ``unlabelled.py``) or ``synthetic``
(generated in memory, no files). Pretraining uses a ``DistributedSampler`` on every run (one
replica in a single process) so the data order depends only on (seed, epoch).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .cache import cache_in_memory
from .folder import SafeImageFolder
from .synthetic import SyntheticShapes
from .unlabelled import UnlabelledImages, is_unlabelled_root, unlabelled_root_error

__all__ = ["IndexedDataset", "build_dataset", "build_pretrain_loader", "set_loader_epoch", "epoch_seed"]


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
        if is_unlabelled_root(cfg.DATA.ROOT):  # no labels: only pretraining's train split reads it
            if split != "train":
                raise unlabelled_root_error(cfg.DATA.ROOT)
            folder = UnlabelledImages(cfg.DATA.ROOT, transform, strict=strict,
                                      max_bad_fraction=cfg.DATA.MAX_BAD_FRACTION, **extra)
            return cache_in_memory(folder) if cfg.DATA.CACHE_IN_MEMORY else folder
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
                          collate_fn: Callable | None = None, prefetch_factor: int = 4) -> DataLoader:
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
