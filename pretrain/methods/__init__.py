"""Pretraining methods of the SimSiam paper's comparison (Tables 4-5), one file each.

``MODEL.METHOD`` selects one; every method implements ``base.Method`` so the engine,
checkpoints, resume, monitors, AMP/compile/DDP and the pipeline are shared.

=========  ======================================  =========================================
method     paper                                   official code
=========  ======================================  =========================================
simsiam    Chen & He, CVPR 2021                    facebookresearch/simsiam
moco_v2    He et al. 2020; Chen et al. 2020 (v2)   facebookresearch/moco (builder.py)
simclr     Chen et al., ICML 2020                  google-research/simclr (TF)
byol       Grill et al., NeurIPS 2020              deepmind/deepmind-research byol (JAX)
swav       Caron et al., NeurIPS 2020              facebookresearch/swav (main_swav.py)
=========  ======================================  =========================================
"""
from __future__ import annotations

import importlib
from typing import Callable

from .base import Method

__all__ = ["METHODS", "Method", "build_method"]

# name -> module under pretrain.methods exposing ``build(cfg) -> Method`` (imported on use)
METHODS: dict[str, str] = {
    "simsiam": "simsiam",
    "moco_v2": "moco_v2",
    "simclr": "simclr",
    "byol": "byol",
    "swav": "swav",
}


def builder_of(name: str) -> Callable:
    if name not in METHODS:
        raise ValueError(f"MODEL.METHOD must be one of {', '.join(METHODS)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{METHODS[name]}").build


def build_method(cfg) -> Method:
    """The ``cfg.MODEL.METHOD`` model, randomly initialised (seed the RNG first)."""
    return builder_of(cfg.MODEL.METHOD)(cfg)
