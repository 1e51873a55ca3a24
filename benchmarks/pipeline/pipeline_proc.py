"""How ``siambench run`` starts a step and makes sure it ends with the runner.

Each step is a ``python -m siambench.benchmarks.cli ...`` (or torchrun) child in its own process
group, so the runner can stop the whole tree of a step (torchrun's ranks, DataLoader
workers) with one ``killpg``. On Linux the child also asks the kernel for
``PR_SET_PDEATHSIG``: if the runner dies without running any handler (SIGKILL, OOM
killer), the child gets SIGTERM at once instead of training on unsupervised. The
runner turns SIGTERM and SIGHUP into the same clean stop as Ctrl-C
(:func:`install_signal_handlers`).
"""
from __future__ import annotations

import ctypes
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from .steps import Step

__all__ = ["SubprocessRunner", "install_signal_handlers", "child_setup"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_setup(parent_pid: int) -> Callable[[], None]:
    """``preexec_fn`` of a step: own process group, and die with the runner (Linux)."""

    def setup() -> None:
        os.setpgid(0, 0)
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            except (OSError, AttributeError):
                pass  # no prctl: the signal handlers of the runner still stop the step
        if os.getppid() != parent_pid:  # the runner died between fork and prctl
            os._exit(1)

    return setup


def _stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the step's process group, SIGKILL it after ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> dict[int, Any]:
    """SIGTERM (a scheduler's stop, e.g. SLURM) and SIGHUP (terminal closed) act like Ctrl-C.

    Returns the previous handlers, for :func:`restore_signal_handlers`.
    """
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, _raise_interrupt)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class SubprocessRunner:
    """Runs ``python -m siambench.benchmarks.cli ARGV`` (or torchrun) with its output in a log file.

    Args:
        echo: also copy the step's output to this process's stdout (``--verbose``); by
            default the console gets one line per step and the logs keep everything.
        tail_on_failure: lines of the log shown on the console when a step fails.
    """

    def __init__(self, echo: bool = False, tail_on_failure: int = 15) -> None:
        self.echo = echo
        self.tail_on_failure = tail_on_failure
        self._live: set[subprocess.Popen] = set()  # steps running now (``siambench run`` with JOBS > 1: several)
        self._lock = threading.Lock()

    def stop_all(self) -> None:
        """Stop every running step's process tree (the runner was interrupted in another thread)."""
        with self._lock:
            live = list(self._live)
        for proc in live:
            _stop_group(proc)

    @staticmethod
    def command(step: Step) -> list[str]:
        if step.nproc > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={step.nproc}", "-m", "siambench.benchmarks.cli", *step.argv]
        return [sys.executable, "-m", "siambench.benchmarks.cli", *step.argv]

    def __call__(self, step: Step, log: Path, env: dict[str, str]) -> int:
        cmd = self.command(step)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            start = f.tell()
            f.write(f"\n===== {dt.datetime.now().isoformat(timespec='seconds')} $ {shlex.join(cmd)}\n".encode())
            f.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=child_setup(os.getpid()))
            assert proc.stdout is not None
            with self._lock:
                self._live.add(proc)
            try:
                # Chunks, not lines: progress bars redraw with \r and must show up live.
                while chunk := proc.stdout.read1(65536):
                    f.write(chunk)
                    if self.echo:
                        sys.stdout.buffer.write(chunk)
                        sys.stdout.buffer.flush()
                rc = proc.wait()
            except BaseException:  # Ctrl-C / SIGTERM: stop the step's tree, leave its checkpoints to resume from
                _stop_group(proc)
                raise
            finally:
                with self._lock:
                    self._live.discard(proc)
                proc.stdout.close()
        if rc != 0 and not self.echo and self.tail_on_failure:
            text = log.read_bytes()[start:].decode("utf-8", errors="replace").replace("\r", "\n")
            lines = [line for line in text.splitlines() if line.strip()][-self.tail_on_failure:]
            sys.stdout.write("".join(f"    | {line}\n" for line in lines))
        return rc
