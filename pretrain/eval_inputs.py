"""What ``lincls``, ``knn`` and ``supervised`` read, checked before their OUTPUT_DIR exists.

Each check is passed to :func:`siambench.pretrain.run_setup.setup_run` as its ``check``, which
runs it after ``DATA.ROOT`` is resolved and before the output directory is created, locked or
written: a refused run (unreadable weights, one class, splits with different classes) creates
and rewrites nothing and exits 2 with one line.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .classification import read_backbone
from .data.folder import DataRootError, _class_dirs, _has_image
from .utils.config import CfgNode
from .utils.errors import CheckpointError, ConfigError

__all__ = ["check_classes", "check_weights", "check_eval_inputs"]

logger = logging.getLogger(__name__)


def check_classes(cfg: CfgNode, command: str) -> list[str]:
    """The class folders of ``DATA.ROOT/train``, which ``DATA.ROOT/val`` must share; at least 2 of them hold images.

    Raises:
        DataRootError: fewer than 2 classes, or train and val name different classes.
    """
    root = Path(cfg.DATA.ROOT)
    train, val = _class_dirs(root / "train"), _class_dirs(root / "val")
    with_images = [c for c in train if _has_image(root / "train" / c)]
    if len(with_images) < 2:
        raise DataRootError(f"{command}: {root}/train has {len(with_images)} class folder(s) with images "
                            f"({', '.join(with_images) or 'none'}); classification needs at least 2 (one "
                            "sub-directory per class): add the other classes' folders")
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise DataRootError(f"{command}: {root}/train and {root}/val have different class folders (only in train: "
                            f"{only_train[:5] or 'none'}, only in val: {only_val[:5] or 'none'}); give both splits "
                            "the same class sub-directories")
    return train


def check_weights(cfg: CfgNode, command: str) -> CfgNode:
    """``cfg`` with ``MODEL.WIDTH`` the checkpoint's, once ``MODEL.WEIGHTS`` loaded as a ``MODEL.ARCH`` encoder.

    The width is read from the tensors (the stem's channels), as ``siambench convert`` reads it.

    Raises:
        ConfigError: MODEL.WEIGHTS is empty, or holds another architecture than MODEL.ARCH.
        CheckpointError: MODEL.WEIGHTS does not exist.
        ConversionError: it cannot be read as an encoder (truncated, empty, garbage, no backbone).
    """
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise ConfigError(f"{command}: MODEL.WEIGHTS is empty; pass the checkpoint to evaluate: MODEL.WEIGHTS path")
    if not Path(weights).is_file():
        raise CheckpointError(f"MODEL.WEIGHTS {weights} does not exist; pass the checkpoint to evaluate")
    _, info = read_backbone(weights, cfg.MODEL.WEIGHTS_FORMAT)
    if info["arch"] != cfg.MODEL.ARCH:
        raise ConfigError(f"MODEL.WEIGHTS {weights} holds a {info['arch']} encoder but MODEL.ARCH is "
                          f"{cfg.MODEL.ARCH}; set MODEL.ARCH {info['arch']}")
    if info["width"] == cfg.MODEL.WIDTH:
        return cfg
    logger.info("%s: MODEL.WIDTH %d from %s (the config said %d)", command, info["width"], weights, cfg.MODEL.WIDTH)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WIDTH = info["width"]
    cfg.freeze()
    return cfg


def check_eval_inputs(cfg: CfgNode, command: str) -> CfgNode:
    """:func:`check_classes` and :func:`check_weights` for ``lincls``/``knn``; the config to run."""
    check_classes(cfg, command)
    return check_weights(cfg, command)
