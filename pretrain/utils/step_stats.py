"""Per-step training statistics kept on the device, read once per print period.

Reading a scalar (``loss.item()``, ``float(t)``, ``t.tolist()``, ``if t:``) makes the
host wait for the device to finish every queued kernel; doing it every step stalls a
GPU's launch queue. torchvision's classification references therefore only read their
meters when they print. ``DeviceStepStats`` does the same: each step adds its scalars
to a small tensor on the device (no sync), and ``flush`` reads the sums of the period
in one ``tolist()`` -- at the steps where ``MetricLogger.log_every`` prints, so the
console shows current numbers -- feeds the meters, and checks that the loss is finite.
Every engine uses it: pretraining (loss, z_std), supervised and linear evaluation (loss, accuracy).

A non-finite loss is therefore detected at the end of its print period (not at its
own step); since checkpoints are written only after an epoch returns, and the last
step of an epoch always flushes, a NaN never reaches a checkpoint.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .logger import MetricLogger

__all__ = ["DeviceStepStats", "is_print_step"]

NOT_FINITE = ("{where}: {name} is not finite ({value}) in the last {n} steps (checked once per TRAIN.PRINT_FREQ); "
              "stopping before any checkpoint is written")


def is_print_step(i: int, print_freq: int, total: int) -> bool:
    """True at the steps where ``MetricLogger.log_every`` prints (and ``flush`` must run before)."""
    return i % print_freq == 0 or i == total - 1


class DeviceStepStats:
    """Running sums of named per-step scalars on ``device``.

    Args:
        names: the statistics, in the order ``add`` receives them; the first is the loss
            checked for finiteness.
        device: where the sums live (the training device).
        error: the message of a non-finite loss, formatted with ``where`` (``flush``'s),
            ``name`` (the loss's), ``value`` (its period mean) and ``n`` (the period's steps).
    """

    def __init__(self, names: Sequence[str], device: torch.device, error: str = NOT_FINITE) -> None:
        self.names = tuple(names)
        self.error = error
        self._sum = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self._steps = 0

    def add(self, *values: torch.Tensor) -> None:
        """Accumulate one step's 0-d tensors (device-side add, no host sync)."""
        self._sum += torch.stack([v.detach().reshape(()).to(torch.float64) for v in values])
        self._steps += 1

    @property
    def pending(self) -> int:
        return self._steps

    def flush(self, meters: MetricLogger, where: str) -> dict[str, float]:
        """One host sync: the period's means go to ``meters`` (weighted by its steps).

        Raises:
            FloatingPointError: the loss was not finite at some step of the period.
        """
        if not self._steps:
            return {}
        sums = self._sum.tolist()  # the one device->host read of the period
        n, self._steps = self._steps, 0
        self._sum.zero_()
        means = {k: s / n for k, s in zip(self.names, sums)}
        if not math.isfinite(sums[0]):
            raise FloatingPointError(self.error.format(where=where, name=self.names[0], value=means[self.names[0]], n=n))
        for k, v in means.items():
            meters.meters[k].update(v, n)
        return means
