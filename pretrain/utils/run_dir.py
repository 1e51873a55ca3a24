"""One run per OUTPUT_DIR: refuse to replace another run, lock the directory, sweep stale temp files.

:func:`prepare_run_dir` is called at the top of a command, before ``setup_logger`` and
``save_config``, so a refused run creates and overwrites nothing: by ``pretrain``
(``pretrain/main.py``, :data:`RUN_MARKERS`) and, through ``lincls.setup_run``, by
``supervised`` (:data:`RUN_MARKERS`), ``lincls`` (its checkpoint and results) and ``knn``
(no markers: the lock only). ``transfer`` (``transfer/main.py``) takes the lock and sweeps
(:func:`lock_dir`, :func:`sweep_temp_files`); its trials guard their own directories. The
``siambench run`` runner locks the pipeline's OUTPUT_DIR (:func:`lock_dir`) before ``--force`` removes anything.
What :func:`prepare_run_dir` refuses:

* **another run** -- an OUTPUT_DIR with checkpoints, ``last_checkpoint``,
  ``model_final.pth`` or ``metrics.jsonl`` is never replaced: without ``--resume`` the
  run is refused (continue it with ``--resume auto``, or choose another OUTPUT_DIR);
* **resume with another config** -- the saved ``config.yaml`` is compared with the new
  resolved config; only the keys of :data:`RESUMABLE` (bookkeeping, hardware, the
  length of the run) may change on resume, any other change (``SEED``,
  ``SOLVER.BASE_LR``, ``MODEL.ARCH``, ...) is refused with the changed keys;
* **two processes** -- ``OUTPUT_DIR/.lock`` is held with ``fcntl.flock`` for the life of
  the process, so a second run on the same directory stops with one line;
* **stale temp files** -- once the lock is ours, no other siambench process writes into
  the directory, so every temp file of our naming (``.<name>.<random>.tmp`` from
  :func:`siambench.pretrain.utils.io.atomic_open`) is a leftover of a killed run and is removed.

Under DDP rank 0 checks and locks; the others wait for its verdict (a broadcast, which
is also the barrier) and raise the same error.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from .config import config_diff
from .dist import DistInfo, broadcast_object
from .errors import ConfigError

__all__ = ["RunDirError", "RESUMABLE", "RUN_MARKERS", "LOCK_NAME", "prepare_run_dir", "lock_dir",
           "release_dir", "sweep_temp_files", "config_diffs"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# Keys that may change when a run is resumed: where it runs and how it logs, not what it computes.
# SOLVER.EPOCHS too, to extend a finished run (as the official code's --epochs with --resume;
# note that it stretches the cosine schedule of the epochs still to run).
RESUMABLE: tuple[str, ...] = (
    "OUTPUT_DIR", "SOLVER.EPOCHS", "MODEL.DEVICE", "DATA.ROOT", "DATA.NUM_WORKERS", "DATA.PIN_MEMORY",
    "DATA.PERSISTENT_WORKERS", "DATA.STRICT", "DATA.MAX_BAD_FRACTION", "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_PERIOD", "TRAIN.KEEP_LAST", "TRAIN.KEEP_EVERY", "TRAIN.COMPILE", "MONITOR.", "TEST.",
)
# Files that mean "a run happened here" (pretraining and supervised checkpoints and metrics).
RUN_MARKERS: tuple[str, ...] = ("last_checkpoint", "model_final.pth", "metrics.jsonl", "checkpoint_*.pth")
# Our temp files: atomic_open's ".<name>.<random>.tmp" and ".<name>.tmp".
_TEMP_RE = re.compile(r"^\..+\.tmp$")

_HELD: dict[str, int] = {}  # resolved directory -> fd of its lock file, held by this process


class RunDirError(ConfigError):
    """OUTPUT_DIR holds another run, or another process is using it; the message says what to do."""


def config_diffs(saved_yaml: str, cfg, ignore: Sequence[str] = ()) -> list[str]:
    """``KEY: old -> new`` for every key of the saved config whose value differs in ``cfg``.

    Keys absent from the saved config (added by a newer siambench with their defaults) are
    not differences; keys matched by ``ignore`` (exact, or a prefix ending in ".") are skipped.
    """
    return config_diff(yaml.safe_load(saved_yaml) or {}, yaml.safe_load(cfg.dump()) or {}, ignore,
                       old_keys_only=True)


def _run_files(out: Path, markers: Iterable[str]) -> list[str]:
    found: list[str] = []
    for pattern in markers:
        found += sorted(p.name for p in out.glob(pattern) if p.is_file() and p.stat().st_size > 0)
    return found


def lock_dir(out: str | os.PathLike) -> None:
    """Hold ``out/.lock`` (creating ``out``) until :func:`release_dir` or the end of the process.

    Re-entrant within one process (sequential runs in one process share the lock).

    Raises:
        RunDirError: another process holds the lock.
    """
    import fcntl

    out = Path(out)
    key = str(out.resolve())
    if key in _HELD:
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(f"OUTPUT_DIR {out} is in use by another siambench process ({holder}); wait for it to "
                          "finish (or stop it), or choose another OUTPUT_DIR") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _HELD[key] = fd


def release_dir(out: str | os.PathLike) -> None:
    """Release the lock of ``out`` if this process holds it."""
    fd = _HELD.pop(str(Path(out).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def sweep_temp_files(out: str | os.PathLike) -> list[str]:
    """Delete our temp files in ``out`` (call only while holding its lock); return their names."""
    removed = []
    for p in sorted(Path(out).iterdir()) if Path(out).is_dir() else []:
        if p.is_file() and _TEMP_RE.match(p.name) and p.name != LOCK_NAME:
            with contextlib.suppress(FileNotFoundError):
                size = p.stat().st_size
                p.unlink()
                removed.append(p.name)
                logger.warning("removed %s (%.1f MB), a temp file left by a killed run", p, size / 2**20)
    return removed


def _check(cfg, resume: str | None, markers: Sequence[str], resumable: Sequence[str]) -> None:
    out = Path(cfg.OUTPUT_DIR)
    if not out.is_dir():
        return
    files = _run_files(out, markers)
    saved = out / "config.yaml"
    if not files:  # at most a config.yaml and a log of a run that never wrote a result: nothing to lose
        return
    state = "finished" if any(f == "model_final.pth" or f.endswith("results.json") for f in files) else "started"
    diffs = config_diffs(saved.read_text(encoding="utf-8"), cfg, resumable) if saved.is_file() else []
    changed = f"; changed keys: {'; '.join(diffs[:20])}" if diffs else ""
    may_change = ", ".join(k.rstrip(".") + ("*" if k.endswith(".") else "") for k in resumable if k != "OUTPUT_DIR")
    if not resume:
        raise RunDirError(
            f"OUTPUT_DIR {out} holds a {state} run ({', '.join(files[:4])}{', ...' if len(files) > 4 else ''})"
            f"{changed}. Refusing to replace it: continue it with --resume auto (only {may_change} may change), "
            f"choose another OUTPUT_DIR, or delete {out} to start over")
    if diffs:
        raise RunDirError(
            f"--resume {resume}: OUTPUT_DIR {out} holds a run with another config{changed}. On resume only "
            f"{may_change} may change; use another OUTPUT_DIR for the new config")


def prepare_run_dir(cfg, info: DistInfo | None = None, resume: str | None = None,
                    markers: Sequence[str] = RUN_MARKERS, resumable: Sequence[str] = RESUMABLE) -> None:
    """Refuse to replace another run, lock ``cfg.OUTPUT_DIR`` and sweep its stale temp files.

    Call it on every rank (rank 0 does the work, the others wait for its verdict).

    Raises:
        RunDirError: the directory holds another run (or one with another config), or is locked.
    """
    error = None
    if info is None or info.is_main:
        try:
            _check(cfg, resume, markers, resumable)
            lock_dir(cfg.OUTPUT_DIR)
            sweep_temp_files(cfg.OUTPUT_DIR)
        except RunDirError as e:
            error = str(e)
    if info is not None and info.distributed:
        error = broadcast_object(error)
    if error:
        raise RunDirError(error)
