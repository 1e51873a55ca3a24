"""The pretraining view pipeline chosen by ``DATA.AUG_BACKEND`` and ``DATA.DECODE``.

=================  ==========================  ==================================================
AUG_BACKEND        DECODE                      workers do                 / device does
=================  ==========================  ==================================================
``pil`` (paper)    ``pil``                     decode, every MoCo v2 op   / normalised views arrive
``batched``        ``pil``                     decode, crop, flip (uint8) / jitter, gray, blur, norm
``batched``        ``gpu_jpeg``                read bytes, draw crop box  / decode, crop, + the above
=================  ==========================  ==================================================

All three draw the same distribution of views (tests/pretrain/test_batched_aug_equivalence.py).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from ..utils.config import ConfigError
from .folder import pil_loader
from .gpu_aug import BatchAugment
from .gpu_decode import DecodeAugment, EncodedCropTransform, collate_encoded, read_encoded
from .transforms import build_crop_transform, build_moco_v2_transform

__all__ = ["ViewPipeline", "build_view_pipeline", "check_view_cfg", "DECODERS"]

logger = logging.getLogger(__name__)
DECODERS = ("pil", "gpu_jpeg")


class ViewPipeline:
    """What the dataset, the loader and the training step need for one backend."""

    def __init__(self, view_tf: Callable, batch_aug: torch.nn.Module | None,
                 image_loader: Callable[[str], Any] = pil_loader, collate_fn: Callable | None = None) -> None:
        self.view_tf, self.batch_aug, self.image_loader, self.collate_fn = view_tf, batch_aug, image_loader, collate_fn


def build_view_pipeline(cfg, device: torch.device, decode_on_cpu: bool = False) -> ViewPipeline:
    """The pipeline of ``cfg.DATA`` on ``device``.

    ``DATA.DECODE gpu_jpeg`` where CUDA is absent falls back to PIL decoding in the
    workers (the ``batched`` path), with a warning: decoding on the CPU in the training
    process would only be slower. ``decode_on_cpu`` keeps the device path on a CPU
    device anyway (tests and ``bench_gpu --smoke`` exercise the GPU code that way).

    Raises:
        ConfigError: unknown ``DATA.DECODE``, or ``gpu_jpeg`` without ``AUG_BACKEND batched``
            or with in-memory (``synthetic``) data.
    """
    check_view_cfg(cfg)
    d = cfg.DATA
    size, scale = d.IMAGE_SIZE, d.CROP_SCALE
    if d.AUG_BACKEND == "pil":
        return ViewPipeline(build_moco_v2_transform(size, scale), None)
    augment = BatchAugment(channels_last=cfg.TRAIN.CHANNELS_LAST).to(device)
    if d.DECODE == "gpu_jpeg" and device.type != "cuda" and not decode_on_cpu:
        logger.warning("DATA.DECODE gpu_jpeg: no CUDA device (running on %s); decoding the JPEGs with PIL in the "
                       "workers instead (DATA.DECODE pil). GPU decoding needs a CUDA build of torchvision.", device)
    elif d.DECODE == "gpu_jpeg":
        return ViewPipeline(EncodedCropTransform(size, scale), DecodeAugment(size, augment), read_encoded,
                            collate_encoded)
    return ViewPipeline(build_crop_transform(size, scale), augment)


def check_view_cfg(cfg) -> None:
    """Validate DATA.AUG_BACKEND / DATA.DECODE before anything is created (see ``build_view_pipeline``)."""
    d = cfg.DATA
    if d.AUG_BACKEND not in ("pil", "batched"):
        raise ConfigError(f"DATA.AUG_BACKEND must be 'pil' or 'batched', got {d.AUG_BACKEND!r}")
    if d.DECODE not in DECODERS:
        raise ConfigError(f"DATA.DECODE must be one of {DECODERS}, got {d.DECODE!r}")
    if d.DECODE == "gpu_jpeg":
        if d.AUG_BACKEND != "batched":
            raise ConfigError("DATA.DECODE gpu_jpeg needs DATA.AUG_BACKEND batched (the crops are cut on the "
                              "device); set DATA.AUG_BACKEND batched or DATA.DECODE pil")
        if d.get("CACHE_IN_MEMORY", False):
            raise ConfigError("DATA.CACHE_IN_MEMORY keeps decoded pixels, so DATA.DECODE gpu_jpeg would have "
                              "nothing to decode: set one of them (CACHE_IN_MEMORY False or DECODE pil)")
        if d.DATASET != "imagefolder":
            raise ConfigError(f"DATA.DECODE gpu_jpeg decodes JPEG files; DATA.DATASET {d.DATASET!r} has none: "
                              "use DATA.DECODE pil")
