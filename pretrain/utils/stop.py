"""Stop a SLURM job's training at its next safe point when SLURM signals it, so that it resumes there.

SLURM ends a job early with SIGTERM (``scontrol requeue``, preemption, ``scancel``; ``KillWait``,
30 s by default, before SIGKILL) and, asked with ``--signal``, warns of the time limit with a
signal (siambench's batch script forwards that warning to the command as SIGTERM; SIGUSR1 is
taken too, for scripts that pass it on). Inside a SLURM job (``SLURM_JOB_ID`` set)
:func:`stop_on_signal` turns both into a request that the loops read at their safe points:
pretraining, linear evaluation and supervised training at the end of the current epoch (where a
checkpoint resumes bit-identically), a transfer trial after the current iteration. They save a
checkpoint there and raise :class:`StopRequested`, a ``SystemExit`` with code 128 + the signal
(what a shell reports for a process the signal ended): the job is requeued and the command,
run again with ``--resume auto``, continues from that checkpoint. The granularity is one epoch:
an epoch that does not finish before SIGKILL loses what it did since the last checkpoint.
Outside SLURM the signals keep their default action (the process ends at once).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["STOP_SIGNALS", "StopRequest", "StopRequested", "stop_on_signal"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequested(SystemExit):
    """Raised at a safe point after a stop signal; exits with 128 + the signal's number."""

    def __init__(self, signum: int, where: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.where = signum, where

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name} after {self.where} (checkpoint saved; resumes there)"


class StopRequest:
    """The first stop signal received (``signum``, 0 if none); :meth:`agreed` tells every rank alike."""

    def __init__(self, enabled: bool = False) -> None:
        self.signum, self.enabled = 0, enabled

    def handle(self, signum: int, frame: object = None) -> None:
        """The signal handler: remember the signal (a repeat changes nothing; the loop stops once)."""
        if not self.signum:
            logger.warning("%s received: stopping after the current epoch/iteration, with a checkpoint",
                           signal.Signals(signum).name)
        self.signum = self.signum or signum

    def agreed(self) -> int:
        """The signal any rank received (0: none), the same on every rank (one small all-reduce when
        distributed; ranks signalled a moment apart stop at the same point)."""
        if not self.enabled or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.signum
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def stop_if(self, signum: int, where: str) -> None:
        """After the checkpoint of ``where``: when ``signum`` (from :meth:`agreed`), wait for every rank
        (none ends while rank 0 still saves: ``srun --kill-on-bad-exit`` would kill it), then raise
        :class:`StopRequested`."""
        if not signum:
            return
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        stopped = StopRequested(signum, where)
        logger.warning("%s", stopped)
        raise stopped


@contextlib.contextmanager
def stop_on_signal(enabled: bool | None = None) -> Iterator[StopRequest]:
    """Install the handlers of :data:`STOP_SIGNALS` for the block (default: inside a SLURM job, from
    the main thread), restore the previous ones after it; yield the :class:`StopRequest`."""
    if enabled is None:
        enabled = "SLURM_JOB_ID" in os.environ
    request = StopRequest(enabled and threading.current_thread() is threading.main_thread())
    if not request.enabled:
        yield request
        return
    previous = {s: signal.signal(s, request.handle) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
