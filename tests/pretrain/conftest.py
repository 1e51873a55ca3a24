"""Fixtures of the pretraining tests: tiny SimSiam configs, single-threaded torch."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest
import torch

# Tiny synthetic run: resnet18 narrowed to width 8 (0.18M parameters, checkpoints < 2 MB) at 32 px,
# small heads, 2 steps of 16 images per epoch.
TINY_WIDTH = ["MODEL.WIDTH", "8"]
# A convertible tiny encoder: Detectron2 builds narrow bottleneck ResNets only (not narrow R18/R34);
# width 4 (0.1M parameters) as it is saved with optimizer state, EMA/key encoders and queues.
TINY_CONVERTIBLE = ["MODEL.ARCH", "resnet50", "MODEL.WIDTH", "4"]
TINY_OPTS = [
    "MODEL.ARCH", "resnet18", *TINY_WIDTH, "MODEL.DEVICE", "cpu", "MODEL.DIM", "64", "MODEL.PRED_DIM", "16",
    "DATA.DATASET", "synthetic", "DATA.SYNTHETIC.TRAIN_SIZE", "32", "DATA.SYNTHETIC.VAL_SIZE", "16",
    "DATA.SYNTHETIC.IMAGE_SIZE", "32", "DATA.IMAGE_SIZE", "32", "DATA.NUM_WORKERS", "0",
    "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "2", "TRAIN.PRINT_FREQ", "100", "MONITOR.TENSORBOARD", "False",
]


@pytest.fixture
def tiny_opts() -> list[str]:
    """KEY VALUE overrides of a tiny CPU pretraining run on in-memory synthetic data."""
    return list(TINY_OPTS)


@pytest.fixture
def tiny_convertible() -> list[str]:
    """Overrides of ``tiny_opts`` for runs whose checkpoint is converted to Detectron2 (narrow R50)."""
    return list(TINY_CONVERTIBLE)


@pytest.fixture
def tiny_cfg() -> Callable:
    """``tiny_cfg(*opts)``: the pretraining defaults with ``TINY_OPTS`` and ``opts`` merged."""
    from siambench.pretrain.config import get_cfg

    def make(*opts: str):
        cfg = get_cfg()
        cfg.merge_from_list(TINY_OPTS + list(opts))
        return cfg

    return make
