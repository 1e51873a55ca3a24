"""Console/file logging, step metrics with ETA, JSON lines and TensorBoard writers.

Only rank 0 logs to the console; every writer here is a no-op elsewhere, so the
training loop calls them unconditionally.
"""
from __future__ import annotations

import collections
import datetime
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from .dist import all_reduce_mean, is_main_process

__all__ = [
    "setup_logger",
    "SmoothedValue",
    "MetricLogger",
    "JSONLinesWriter",
    "TensorboardWriter",
    "format_seconds",
]


def setup_logger(output_dir: str | os.PathLike | None = None, rank: int = 0, name: str = "siambench",
                 filename: str = "log.txt") -> logging.Logger:
    """Configure the ``name`` logger: console on rank 0, ``output_dir/filename`` per rank.

    The loggers of ``pretrain.*`` modules propagate to the root logger, which this
    also configures once, so library messages (e.g. corrupt images) are shown too.
    """
    fmt = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    log = logging.getLogger(name)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_siambench", False):
            root.removeHandler(h)
            h.close()
    handlers: list[logging.Handler] = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stdout))
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        fname = filename if rank == 0 else f"{filename}.rank{rank}"
        handlers.append(logging.FileHandler(Path(output_dir) / fname))
    for h in handlers:
        h.setFormatter(fmt)
        h._siambench = True  # type: ignore[attr-defined]  # so a second call replaces, not duplicates
        root.addHandler(h)
    return log


def format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class SmoothedValue:
    """Track a series: windowed median/avg for display, global average for the epoch."""

    def __init__(self, window_size: int = 20, fmt: str = "{median:.4f} ({global_avg:.4f})") -> None:
        self.deque: collections.deque[float] = collections.deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value: float, n: int = 1) -> None:
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self) -> None:
        """Average the global statistics over ranks (the window stays local)."""
        t = all_reduce_mean(torch.tensor([self.count, self.total], dtype=torch.float64))
        self.count, self.total = float(t[0]), float(t[1])

    @property
    def median(self) -> float:
        return statistics.median_low(self.deque) if self.deque else math.nan  # as torch.median: the lower middle

    @property
    def avg(self) -> float:
        return sum(self.deque) / len(self.deque) if self.deque else math.nan

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def value(self) -> float:
        return self.deque[-1] if self.deque else math.nan

    def __str__(self) -> str:
        return self.fmt.format(median=self.median, avg=self.avg, global_avg=self.global_avg, value=self.value)


class MetricLogger:
    """Named ``SmoothedValue``s plus a progress line with ETA every ``print_freq`` steps."""

    def __init__(self, delimiter: str = "  ", logger: logging.Logger | None = None) -> None:
        self.meters: dict[str, SmoothedValue] = collections.defaultdict(SmoothedValue)
        self.delimiter = delimiter
        self.logger = logger or logging.getLogger("siambench")

    def update(self, **kwargs: float | torch.Tensor) -> None:
        for k, v in kwargs.items():
            self.meters[k].update(float(v.item() if isinstance(v, torch.Tensor) else v))

    def synchronize_between_processes(self) -> None:
        for m in self.meters.values():
            m.synchronize_between_processes()

    def global_averages(self) -> dict[str, float]:
        return {k: m.global_avg for k, m in self.meters.items()}

    def __str__(self) -> str:
        return self.delimiter.join(f"{k}: {m}" for k, m in self.meters.items())

    def log_every(self, iterable: Iterable[Any], print_freq: int, header: str = "",
                  total: int | None = None) -> Iterator[Any]:
        """Yield from ``iterable``; on rank 0 log progress, meters, ETA and timings."""
        total = total if total is not None else len(iterable)  # type: ignore[arg-type]
        iter_time, data_time = SmoothedValue(fmt="{avg:.3f}"), SmoothedValue(fmt="{avg:.3f}")
        start = end = time.time()
        width = len(str(total))
        i = 0
        for i, obj in enumerate(iterable):
            data_time.update(time.time() - end)
            yield obj
            iter_time.update(time.time() - end)
            if is_main_process() and (i % print_freq == 0 or i == total - 1):
                eta = iter_time.global_avg * (total - i - 1)
                mem = f"  max mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}M" if torch.cuda.is_available() else ""
                self.logger.info(
                    f"{header} [{i:>{width}}/{total}]  eta: {format_seconds(eta)}  {self}"
                    f"  time: {iter_time}  data: {data_time}{mem}"
                )
            end = time.time()
        if is_main_process() and total:
            elapsed = time.time() - start
            self.logger.info(f"{header} total time: {format_seconds(elapsed)} ({elapsed / max(i + 1, 1):.4f} s / it)")


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


class JSONLinesWriter:
    """Append one JSON object per line to ``path`` (rank 0 only), flushed each write.

    Lines are appended, so a resumed run continues the same file; ``truncate_after``
    drops records newer than the checkpoint it resumes from.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool | None = None) -> None:
        self.path = Path(path)
        self.enabled = is_main_process() if enabled is None else enabled
        self._f = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(_finite_or_none(record), allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "JSONLinesWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def truncate_after(path: str | os.PathLike, epoch: int) -> None:
        """Keep only records with ``epoch < epoch`` (records of epochs a resume will redo go)."""
        path = Path(path)
        if not path.is_file():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if rec.get("epoch", -1) < epoch:
                keep.append(line)
        from .io import atomic_write_text

        atomic_write_text(path, "".join(line + "\n" for line in keep))


class TensorboardWriter:
    """Scalars to TensorBoard on rank 0; silently disabled if tensorboard is missing."""

    def __init__(self, log_dir: str | os.PathLike, enabled: bool | None = None) -> None:
        self._w = None
        if is_main_process() if enabled is None else enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional dependency
                logging.getLogger(__name__).warning("tensorboard not installed: no TensorBoard logs")
                return
            self._w = SummaryWriter(log_dir=str(log_dir))

    def add_scalars(self, scalars: dict[str, float], step: int, prefix: str = "") -> None:
        if self._w is None:
            return
        for k, v in scalars.items():
            if v is not None and math.isfinite(v):
                self._w.add_scalar(prefix + k, v, step)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None
