"""A directory of numbered checkpoints: the ``last_checkpoint`` pointer, resume with fallback, retention.

Pretraining (``checkpoint_0007.pth``, :mod:`siambench.pretrain.checkpoint`) and detectron2
transfer (``model_0000499.pth``, :mod:`siambench.transfer.checkpoint`) keep their
checkpoints the same way:

* ``last_checkpoint`` holds the name of the newest complete file (detectron2's format:
  the bare name; readers strip whitespace), written atomically after that file;
* :func:`find_resume_file` resumes from the file it names if that loads, else from the
  newest loadable one, with a warning naming what was skipped and why (an empty or
  damaged pointer included);
* :func:`prune` keeps the newest ``keep_last`` numbered files and every ``keep_every``-th,
  never the one ``last_checkpoint`` names, deleting only after the new file and the
  pointer are written.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

from .errors import CheckpointError, UserError
from .io import atomic_write_text, load_weights_only

__all__ = ["LAST_CHECKPOINT", "read_last_checkpoint", "tag_last_checkpoint", "numbered_files", "unreadable_reason",
           "find_resume_file", "prune"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


def read_last_checkpoint(directory: str | os.PathLike) -> str | None:
    """The file name ``last_checkpoint`` holds; ``""`` if it is empty, None if there is none."""
    marker = Path(directory) / LAST_CHECKPOINT
    return marker.read_text(encoding="utf-8", errors="replace").strip() if marker.is_file() else None


def tag_last_checkpoint(directory: str | os.PathLike, name: str) -> None:
    """Point ``last_checkpoint`` at ``name`` (a file in ``directory``) atomically."""
    atomic_write_text(Path(directory) / LAST_CHECKPOINT, name)


def numbered_files(directory: str | os.PathLike, pattern: re.Pattern[str]) -> list[Path]:
    """Files of ``directory`` whose name ``pattern`` matches (its group 1: the number), newest first."""
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := pattern.match(p.name))] \
        if Path(directory).is_dir() else []
    return [p for _, p in sorted(found, reverse=True)]


def unreadable_reason(path: str | os.PathLike, required: Sequence[str] = (), what: str = "a checkpoint") -> str | None:
    """None if ``path`` loads (weights-only, memory-mapped: cheap) as a dict holding ``required``, else why not."""
    path = Path(path)
    if not path.is_file():
        return "does not exist"
    try:
        data = load_weights_only(path, mmap=True)
    except (UserError, OSError) as e:  # damaged, code-carrying, or a disk error: not usable either way
        return str(e).removeprefix(f"{path}: ")  # the caller names the file
    missing = [k for k in required if not isinstance(data, dict) or k not in data]
    return f"not {what} (no {', '.join(map(repr, missing))})" if missing else None


def find_resume_file(directory: str | os.PathLike, pattern: re.Pattern[str], required: Sequence[str] = (),
                     also: Sequence[str] = (), fix: str = "delete it to start over",
                     what: str = "a checkpoint", files: str = "numbered checkpoint",
                     log: logging.Logger = logger) -> Path | None:
    """The file to resume from: the one ``last_checkpoint`` names if it loads, else the newest that does.

    Candidates after the named file: the files ``also`` names (e.g. ``model_final.pth``), then
    the ``pattern`` files, newest first. ``required``: keys a loadable checkpoint must hold;
    ``what`` and ``files`` (e.g. ``"checkpoint_*.pth"``) name the checkpoints in messages;
    warnings go to ``log`` (the caller's logger: its run log shows them).

    Returns:
        None if there is no ``last_checkpoint`` and no numbered file (a new run).

    Raises:
        CheckpointError: checkpoints (or the pointer) exist but none of them loads; ends with ``fix``.
    """
    directory = Path(directory)
    named = read_last_checkpoint(directory)
    candidates = [directory / n for n in also if (directory / n).is_file()] + numbered_files(directory, pattern)
    if named:
        candidates = [directory / named] + [p for p in candidates if p.name != named]
    elif named == "":
        log.warning("%s is empty; looking for the newest readable checkpoint instead", directory / LAST_CHECKPOINT)
    skipped: list[str] = []
    for path in candidates:
        reason = unreadable_reason(path, required, what)
        if reason is None:
            if skipped:
                log.warning("resuming from %s instead of the damaged %s", path.name, "; ".join(skipped))
            return path
        skipped.append(f"{path.name} ({reason})")
        log.warning("cannot resume from %s: %s", path, reason)
    if skipped or named is not None:
        none = f"{LAST_CHECKPOINT} is empty and no {files} exists"
        raise CheckpointError(f"no readable checkpoint in {directory} to resume from ({'; '.join(skipped) or none}); "
                              f"{fix}")
    return None


def prune(directory: str | os.PathLike, pattern: re.Pattern[str], keep_last: int, keep_every: int = 0,
          setting: str = "", log: logging.Logger = logger) -> list[Path]:
    """Delete ``pattern`` files but the newest ``keep_last`` and those numbered a multiple of ``keep_every``.

    ``keep_last`` 0 keeps everything; the file ``last_checkpoint`` names is never deleted.
    Call only after the newest checkpoint and ``last_checkpoint`` are written. ``setting``
    names the config keys in the line logged to ``log``. Returns the deleted paths.
    """
    if keep_last <= 0:
        return []
    current = read_last_checkpoint(directory) or ""
    removed = []
    for i, path in enumerate(numbered_files(directory, pattern)):
        number = int(pattern.match(path.name).group(1))
        if i < keep_last or path.name == current or (keep_every > 0 and number % keep_every == 0):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("checkpoint retention (%s): removed %s", setting or f"keep the last {keep_last}",
                    ", ".join(p.name for p in removed))
    return removed
