"""Device-side settings of a pretraining run that only matter on GPUs (and cannot be seen on a CPU).

* ``set_cudnn_benchmark``: cuDNN autotuning on wherever CUDA runs, as the official
  ``main_simsiam.py`` (``cudnn.benchmark = True``): the steps have fixed shapes, so the
  fastest convolution algorithms are picked once.
* ``check_compile``: ``TRAIN.COMPILE`` is refused with SyncBN under DDP: TorchDynamo
  graph-breaks at every ``nn.SyncBatchNorm`` (57 in SimSiam's ResNet-50 + heads), so the
  compiled step is a chain of small graphs and its one-GPU gain does not carry over,
  and compile + DDP + SyncBN has open error reports. MoCo v2 under DDP (shuffle BN, no
  SyncBN) is allowed, with a warning: its shuffle's ``dist.broadcast`` of the permutation
  breaks the graph twice per step.
* ``ddp_kwargs``: DDP without buffer broadcasts where SyncBN already makes every rank's BN
  statistics identical, and with gradients as views of the all-reduce buckets (no copy
  of the gradients into and out of the buckets each step).
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from .utils.config import ConfigError
from .utils.dist import DistInfo

__all__ = ["set_cudnn_benchmark", "check_compile", "ddp_kwargs"]

logger = logging.getLogger(__name__)


def set_cudnn_benchmark(device: torch.device) -> bool:
    """Turn cuDNN autotuning on for a CUDA ``device`` (off otherwise); return the setting."""
    torch.backends.cudnn.benchmark = device.type == "cuda"
    return torch.backends.cudnn.benchmark


def check_compile(cfg, info: DistInfo) -> None:
    """Refuse TRAIN.COMPILE with SyncBN under DDP (one line); warn for MoCo's shuffle broadcast."""
    if not (cfg.TRAIN.COMPILE and info.distributed):
        return
    if cfg.MODEL.SYNC_BN:
        raise ConfigError(f"TRAIN.COMPILE True with MODEL.SYNC_BN True under DDP ({info.world_size} ranks): "
                          "torch.compile breaks the graph at every SyncBatchNorm, so it would not speed the step "
                          "up; set TRAIN.COMPILE False (or MODEL.SYNC_BN False, which changes the method)")
    if cfg.MODEL.METHOD == "moco_v2" and cfg.MODEL.MOCO.SHUFFLE_BN:
        logger.warning("TRAIN.COMPILE with MoCo v2 under DDP: the shuffle BN's dist.broadcast of the permutation "
                       "breaks the compiled graph twice per step")


def ddp_kwargs(cfg, info: DistInfo) -> dict[str, Any]:
    """Keyword arguments of ``DistributedDataParallel`` for this run."""
    return {"device_ids": [info.device.index] if info.device.type == "cuda" else None,
            "broadcast_buffers": not cfg.MODEL.SYNC_BN,  # SyncBN: the BN buffers already agree on every rank
            "gradient_as_bucket_view": True}
