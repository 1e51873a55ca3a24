"""The collapse rule, shared by the training monitor and the benchmark verdict.

A representation has collapsed when ``z_std`` (``siambench.pretrain.monitors.z_std``) stays
below ``MONITOR.COLLAPSE_THRESHOLD / sqrt(d)`` for ``MONITOR.COLLAPSE_PATIENCE``
consecutive steps (healthy ~ 1/sqrt(d), d = ``MODEL.DIM``). The engine feeds the monitor
once per print period with the period's mean and its number of steps; ``replay`` feeds it
the same way from the step records of a ``metrics.jsonl``. Pure Python: reading a run's
records imports no torch.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping

from .config import get_cfg

__all__ = ["CollapseDetected", "CollapseMonitor"]

logger = logging.getLogger(__name__)


class CollapseDetected(RuntimeError):
    """The representation collapsed and ``MONITOR.COLLAPSE_ABORT`` is on."""


def _key(cfg: Mapping[str, Any], section: str, key: str) -> Any:
    """``cfg[section][key]``, or the pretraining default where a (partial) config lacks it."""
    value = (cfg.get(section) or {}).get(key)
    return get_cfg()[section][key] if value is None else value


class CollapseMonitor:
    """Flag a collapse when ``z_std`` stays below ``threshold / sqrt(dim)`` for ``patience`` steps.

    Args:
        dim: output dimension d of z.
        threshold: fraction of the healthy level 1/sqrt(d).
        patience: consecutive low steps before acting.
        abort: raise ``CollapseDetected`` instead of only warning.
    """

    def __init__(self, dim: int, threshold: float = 0.1, patience: int = 20, abort: bool = False) -> None:
        self.dim = dim
        self.healthy = 1 / math.sqrt(dim)
        self.limit = threshold * self.healthy
        self.patience, self.abort = patience, abort
        self.low_steps = 0
        self.collapsed = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], dim: int | None = None) -> "CollapseMonitor":
        """The monitor of a pretraining config (a CfgNode, or the dict of a saved ``config.yaml``).

        Args:
            dim: C of the monitored z; None: ``MODEL.DIM`` (SimSiam's; other methods pass their own).
        """
        return cls(int(dim if dim is not None else _key(cfg, "MODEL", "DIM")),
                   float(_key(cfg, "MONITOR", "COLLAPSE_THRESHOLD")), int(_key(cfg, "MONITOR", "COLLAPSE_PATIENCE")),
                   bool(_key(cfg, "MONITOR", "COLLAPSE_ABORT")))

    def _count(self, std: float, steps: int) -> bool:
        """Add ``steps`` low steps (or restart the count); True once the count reaches the patience."""
        self.low_steps = self.low_steps + steps if std < self.limit else 0
        return self.low_steps >= self.patience

    def update(self, std: float, step: int, steps: int = 1) -> None:
        """``std``: mean over the last ``steps`` steps (the engine reads it once per print period)."""
        if not self._count(std, steps) or self.collapsed and not self.abort:
            return
        msg = (f"representation collapse at step {step}: std(z/|z|) = {std:.2e} < {self.limit:.2e} "
               f"for {self.low_steps} steps (healthy ~ 1/sqrt(d) = {self.healthy:.2e})")
        if self.abort:
            raise CollapseDetected(msg + "; stopping (MONITOR.COLLAPSE_ABORT True)")
        self.collapsed = True
        logger.warning(msg + "; set MONITOR.COLLAPSE_ABORT True to stop such runs early")

    def replay(self, records: Iterable[Mapping[str, Any]]) -> bool:
        """Feed the ``"step"`` records of a ``metrics.jsonl`` (finite ``z_std``, weight ``steps``, default 1)
        through the rule without logging; True if it fired."""
        for r in records:
            std = r.get("z_std")
            if r.get("type", "step") == "step" and isinstance(std, (int, float)) and math.isfinite(std):
                self.collapsed = self._count(std, int(r.get("steps") or 1)) or self.collapsed
        return self.collapsed

    def state_dict(self) -> dict:
        return {"low_steps": self.low_steps, "collapsed": self.collapsed}

    def load_state_dict(self, state: dict) -> None:
        self.low_steps, self.collapsed = int(state["low_steps"]), bool(state["collapsed"])
