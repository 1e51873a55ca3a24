"""Pretraining checkpoints: atomic writes, official key names, exact resume.

A checkpoint (``docs/design.md``) is a dict with ``state_dict`` (keys
``module.encoder.*`` / ``module.predictor.*`` as the official SimSiam checkpoints,
whatever the wrapping), ``arch``, ``epoch`` (epochs completed), ``optimizer``,
``scaler``, ``rng``, ``config`` (YAML), ``siambench_version``; plus ``monitor`` and
``hypothesis`` states this package needs to resume exactly. Everything is plain
tensors/containers so ``torch.load(weights_only=True)`` reads it.

Retention (``TRAIN.KEEP_LAST``, ``TRAIN.KEEP_EVERY``): after a checkpoint and
``last_checkpoint`` are safely written, older ``checkpoint_*.pth`` beyond the newest
``KEEP_LAST`` are deleted, except every ``KEEP_EVERY``-th epoch; ``last_checkpoint``
always names a file that exists. Resuming (:func:`find_resume_checkpoint`) falls back
to the newest readable checkpoint, with a warning naming the damaged one. Both rules
are those of every siambench checkpoint directory (:mod:`siambench.pretrain.utils.checkpoint_dir`).
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .utils import checkpoint_dir
from .utils.checkpoint_dir import LAST_CHECKPOINT
from .utils.env import siambench_version
from .utils.errors import CheckpointError
from .utils.io import atomic_torch_save, load_weights_only

__all__ = [
    "PREFIX",
    "LAST_CHECKPOINT",
    "CheckpointError",
    "prune_checkpoints",
    "checkpoint_name",
    "official_state_dict",
    "load_official_state_dict",
    "get_rng_state",
    "set_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "load_optimizer_state",
    "find_resume_checkpoint",
]

logger = logging.getLogger(__name__)

PREFIX = "module."  # the official checkpoints come from a DDP-wrapped model
_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)\.pth$")


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint_{epoch:04d}.pth"


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s (the bare SimSiam module's) state dict with the official ``module.`` prefix."""
    return {PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}


def load_official_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load ``module.*`` keys into the bare SimSiam module (strict: every key must match)."""
    stripped = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state_dict.items()}
    try:
        model.load_state_dict(stripped)
    except RuntimeError as e:  # missing/unexpected keys or shape mismatches: another architecture
        first = str(e).splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
        raise CheckpointError("the checkpoint does not fit this model (another MODEL.ARCH, MODEL.WIDTH or head "
                              f"config?): {detail[:300]}; resume with the config it was written with, or start a new "
                              "OUTPUT_DIR") from None


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states (weights_only-loadable types)."""
    algo, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"algo": algo, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["algo"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | os.PathLike, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, cfg, extra: dict[str, Any] | None = None,
                    name: str | None = None) -> Path:
    """Write ``checkpoint_{epoch:04d}.pth`` (or ``name``) atomically, then point ``last_checkpoint`` at it.

    Call on rank 0 only. ``epoch`` is the number of completed epochs.
    """
    ckpt = {
        "state_dict": official_state_dict(model),
        "arch": cfg.MODEL.ARCH,
        "width": cfg.MODEL.WIDTH,
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": get_rng_state(),
        "config": cfg.dump(),
        "siambench_version": siambench_version(),
        **(extra or {}),
    }
    path = Path(output_dir) / (name or checkpoint_name(epoch))
    atomic_torch_save(ckpt, path)
    if name is None:  # model_final.pth is not a resume point of its own: it copies the last one
        checkpoint_dir.tag_last_checkpoint(output_dir, path.name)
        train = cfg.get("TRAIN", None)
        if train is not None:
            prune_checkpoints(output_dir, int(train.get("KEEP_LAST", 0)), int(train.get("KEEP_EVERY", 0)))
    return path


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete ``checkpoint_*.pth`` but the newest ``keep_last`` and every ``keep_every``-th epoch.

    ``keep_last`` 0 keeps everything. The file ``last_checkpoint`` names is never deleted.
    Call only after the newest checkpoint and ``last_checkpoint`` are written.
    """
    return checkpoint_dir.prune(output_dir, _CHECKPOINT_RE, keep_last, keep_every,
                                setting=f"TRAIN.KEEP_LAST {keep_last}, KEEP_EVERY {keep_every}", log=logger)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with an error that names the file and the fix.

    Raises:
        CheckpointError: the file is missing, unreadable (truncated, empty) or not a
            pretraining checkpoint; UnsafeCheckpointError (a CheckpointError): it carries code.
    """
    ckpt = load_weights_only(path, fix=f"delete it (and fix {LAST_CHECKPOINT}) to resume from an earlier one")
    if not isinstance(ckpt, dict) or {"state_dict", "epoch", "optimizer"} - set(ckpt):
        missing = sorted({"state_dict", "epoch", "optimizer"} - set(ckpt)) if isinstance(ckpt, dict) else "all keys"
        raise CheckpointError(f"{path} is not a pretraining checkpoint: missing {missing}")
    return ckpt


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(saved)``, also for an official SimSiam checkpoint.

    The official ``main_simsiam.py`` gives SGD all of ``encoder.parameters()``, including
    the projector's last fc bias that it freezes (``requires_grad=False``); we leave frozen
    parameters out (e.g. ResNet-50: 68 tensors there, 67 here). A frozen parameter never has
    optimizer state, so the saved entries without state are dropped when that makes each
    group match ours, parameter shapes checked. Our group names (``fix_pred_lr`` reads them)
    are kept; anything else that does not match raises a ValueError naming the sizes.
    """
    ours = optimizer.param_groups
    groups = saved["param_groups"]
    if [len(g["params"]) for g in groups] == [len(g["params"]) for g in ours]:
        optimizer.load_state_dict(saved)
        return
    state = saved["state"]
    kept_groups, kept_state = [], {}
    for mine, theirs in zip(ours, groups):
        ids = [i for i in theirs["params"] if i in state]  # frozen parameters never got a gradient
        if len(ids) != len(mine["params"]) or any(
                state[i].get("momentum_buffer") is not None and state[i]["momentum_buffer"].shape != p.shape
                for i, p in zip(ids, mine["params"])):
            break
        hyper = {k: v for k, v in theirs.items() if k not in ("params", "fix_lr")}
        kept_groups.append({**hyper, **{k: v for k, v in mine.items() if k == "name"}, "params": ids})
        kept_state.update({i: state[i] for i in ids})
    if len(kept_groups) != len(ours) or len(groups) != len(ours):
        raise ValueError(
            f"the checkpoint's optimizer has parameter groups of {[len(g['params']) for g in groups]} tensors, this "
            f"model's of {[len(g['params']) for g in ours]}: it was written for another model (MODEL.* differs)")
    optimizer.load_state_dict({"state": kept_state, "param_groups": kept_groups})
    logger.warning("optimizer state of an official SimSiam checkpoint: dropped %d frozen parameter(s) it listed",
                   sum(map(len, (g["params"] for g in groups))) - len(kept_state))


def find_resume_checkpoint(output_dir: str | os.PathLike, resume: str) -> Path | None:
    """``resume`` = "auto" (latest readable in ``output_dir``, None if there is none yet) or a file path.

    With "auto", the file ``last_checkpoint`` names is used when it loads; when it is
    damaged (a kill mid-write of a non-atomic copy, a full disk), missing, or
    ``last_checkpoint`` itself is empty, the newest readable ``checkpoint_*.pth`` is used
    instead, with a warning naming what was skipped.

    Raises:
        CheckpointError: ``resume`` is a path that does not exist, or checkpoints exist
            but none of them is readable.
    """
    if resume != "auto":
        if not Path(resume).is_file():
            raise CheckpointError(f"--resume {resume}: no such checkpoint (use --resume auto to continue the "
                                  "run in OUTPUT_DIR)")
        return Path(resume)
    return checkpoint_dir.find_resume_file(output_dir, _CHECKPOINT_RE, required=("state_dict", "epoch"),
                                           fix=f"delete {output_dir} (or its {LAST_CHECKPOINT}) to start over",
                                           what="a pretraining checkpoint", files="checkpoint_*.pth", log=logger)
