"""One run setup for every command that writes an ``OUTPUT_DIR`` (pretrain, supervised, lincls, knn).

``setup_run`` checks ``DATA.ROOT``, refuses to replace another run and locks ``OUTPUT_DIR``
(``siambench.pretrain.utils.run_dir``), saves ``config.yaml``, logs to ``OUTPUT_DIR`` and seeds
the process. Bad input stops before anything is created. ``load_run`` adds the config
loading and the process group in front of it, for the commands that need nothing between.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .data.folder import resolve_cfg_data_root
from .utils.run_dir import RUN_MARKERS, prepare_run_dir
from .utils.config import CfgNode, load_config, save_config
from .utils.dist import DistInfo, init_distributed_mode
from .utils.env import environment
from .utils.logger import setup_logger

__all__ = ["Run", "seed_all", "setup_run", "load_run"]


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


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators of this process."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_run(cfg: CfgNode, info: DistInfo, command: str, resume: str | None = None,
              splits: Sequence[str] = ("train", "val"), markers: Sequence[str] = RUN_MARKERS,
              log_file: str = "log.txt", check: Callable[[CfgNode], CfgNode] | None = None) -> Run:
    """Resolve DATA.ROOT (``splits`` must exist), run ``check``, guard and lock OUTPUT_DIR, save
    config.yaml, log to OUTPUT_DIR/``log_file`` and seed with ``SEED + rank``.

    Args:
        resume: the command's ``--resume`` argument (None: a new run).
        markers: file patterns that mark a run in OUTPUT_DIR; if any exists, the run is refused
            unless resumed with the same config. Empty: only lock OUTPUT_DIR.
        check: validates the command's own inputs (weights, classes) and returns the config to run,
            before OUTPUT_DIR is created: its ``UserError`` leaves nothing behind.
    """
    cfg = resolve_cfg_data_root(cfg, tuple(splits))
    if check is not None:
        cfg = check(cfg)
    prepare_run_dir(cfg, info, resume, markers=markers)  # refuse to replace another run; lock; sweep temp files
    out = Path(cfg.OUTPUT_DIR)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
    setup_logger(out, rank=info.rank, filename=log_file)
    seed_all(cfg.SEED + info.rank)
    logging.getLogger(f"siambench.{command}").info("rank %d of world size %d on %s, output %s; config:\n%s",
                                                  info.rank, info.world_size, info.device, out, cfg.dump())
    return Run(cfg=cfg, dist=info, env=environment())


def load_run(defaults: CfgNode, config_file: str | None, opts: Sequence[str], command: str,
             resume: str | None = None, markers: Sequence[str] = (),
             check: Callable[[CfgNode], CfgNode] | None = None) -> Run:
    """``load_config`` + join the process group + ``setup_run`` (log file ``log_<command>.txt``)."""
    cfg = load_config(defaults, config_file, opts)
    info = init_distributed_mode(device=cfg.MODEL.DEVICE)
    return setup_run(cfg, info, command, resume, markers=markers, log_file=f"log_{command}.txt", check=check)
