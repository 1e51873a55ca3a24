"""detectron2 checkpoints that a kill cannot corrupt, resume that skips a damaged one, and retention.

detectron2 (fvcore) writes ``model_*.pth`` and ``last_checkpoint`` in place, so a kill
during a save leaves a truncated file that the next resume (or ``--eval-only``) trips
over. :class:`AtomicCheckpointer` is the safe ``DetectionCheckpointer`` of
:mod:`siambench.convert.safe_pickle` with

* ``save`` / ``tag_last_checkpoint`` written to a temp file and renamed
  (:mod:`siambench.pretrain.utils.io`);
* ``get_checkpoint_file``: the file ``last_checkpoint`` names if it loads, else the
  newest loadable ``model_*.pth``, with a warning naming the damaged one (an empty
  ``last_checkpoint`` included);
* ``_load_file``: ``.pkl`` in any case (``.PKL``) through the restricted unpickler, and
  one clear error for a ``.pth``/``.pyth`` that is empty, truncated or carries code.

:class:`RetainingPeriodicCheckpointer` replaces detectron2's periodic checkpointer hook:
it keeps the newest ``SIAMBENCH.KEEP_CHECKPOINTS`` periodic files (deleting older ones
only after the new one is written) and at the last iteration writes ``model_final.pth``
only -- detectron2 writes ``model_{max_iter-1}.pth`` *and* ``model_final.pth`` there
when the period divides ``MAX_ITER``, two copies of one model.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from siambench.convert.errors import UnsafeCheckpointError
from siambench.convert.safe_pickle import SafeDetectionCheckpointer, load_weights_pkl
from detectron2.engine import hooks
from detectron2.utils.file_io import PathManager
from siambench.pretrain.checkpoint import CheckpointError
from siambench.pretrain.utils.io import atomic_torch_save, atomic_write_text

__all__ = ["AtomicCheckpointer", "RetainingPeriodicCheckpointer", "unreadable_reason", "check_weights_file",
           "LAST_CHECKPOINT"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
_PERIODIC_RE = re.compile(r"^model_(\d{7})\.pth$")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _torch_load(path: str, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``, its failures turned into one-line errors naming the file.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling (it could run code).
        CheckpointError: the file is empty, truncated or not a torch file.
    """
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes; a run killed while saving it?); delete it, or rerun "
                              "the trial that wrote it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refused: loading it needs arbitrary unpickling, which could run code hidden in the file "
            f"({_first_line(e)}). Pass weights converted by `siambench convert` (.pkl) or a checkpoint written "
            "by `siambench transfer`") from None
    except (EOFError, RuntimeError, ValueError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # permissions, disk errors: reported as such
        raise CheckpointError(f"cannot read {path} ({_first_line(e)}): truncated or not a torch checkpoint; "
                              "delete it, or rerun the trial that wrote it") from None


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """None if ``path`` loads as a detectron2 checkpoint (memory-mapped, cheap), else why not."""
    path = str(path)
    if not os.path.isfile(path):
        return "does not exist"
    try:
        data = _torch_load(path, mmap=True)
    except (CheckpointError, UnsafeCheckpointError) as e:
        return str(e)
    if not isinstance(data, dict) or "model" not in data:
        return f"{path} holds no 'model' state dict"
    return None


def check_weights_file(path: str | os.PathLike) -> None:
    """Refuse unreadable or code-carrying ``--weights`` before anything is created.

    ``.pkl`` (any case) goes through the restricted unpickler; other files through
    ``torch.load(weights_only=True)``.

    Raises:
        UnsafeCheckpointError, CheckpointError: one line naming the file and the fix.
    """
    path = str(path)
    if path.lower().endswith(".pkl"):
        load_weights_pkl(path)
    else:
        _torch_load(path, mmap=True)


class AtomicCheckpointer(SafeDetectionCheckpointer):
    """``SafeDetectionCheckpointer`` with atomic writes and a resume that survives a damaged file."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        path = Path(self.save_dir) / f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(path.name)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(Path(self.save_dir) / LAST_CHECKPOINT, last_filename_basename)

    def has_checkpoint(self) -> bool:
        return (Path(self.save_dir) / LAST_CHECKPOINT).is_file()

    def get_checkpoint_file(self) -> str:
        """The checkpoint to resume from: ``last_checkpoint``'s if it loads, else the newest that does.

        Raises:
            CheckpointError: checkpoints exist but none of them loads.
        """
        save_dir = Path(self.save_dir)
        marker = save_dir / LAST_CHECKPOINT
        named = marker.read_text(encoding="utf-8", errors="replace").strip() if marker.is_file() else ""
        periodic = sorted((p for p in save_dir.glob("model_*.pth") if _PERIODIC_RE.match(p.name)), reverse=True)
        candidates = [save_dir / "model_final.pth"] if (save_dir / "model_final.pth").is_file() else []
        candidates = ([save_dir / named] if named else []) + [p for p in candidates + periodic if p.name != named]
        if not named:
            logger.warning("%s is empty; looking for the newest readable checkpoint instead", marker)
        skipped = []
        for path in candidates:
            reason = unreadable_reason(path)
            if reason is None:
                if skipped:
                    logger.warning("resuming from %s instead of the damaged %s", path.name, "; ".join(skipped))
                return str(path)
            skipped.append(f"{path.name} ({reason})")
            logger.warning("cannot resume from %s: %s", path, reason)
        raise CheckpointError(f"no readable checkpoint in {save_dir} to resume from "
                              f"({'; '.join(skipped) or 'last_checkpoint is empty and no model_*.pth exists'}); "
                              f"delete {save_dir} to rerun the trial from the start")

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            return super()._load_file(filename)
        local = PathManager.get_local_path(filename)
        if filename.lower().endswith(".pkl"):  # .PKL: the same restricted unpickler, not torch.load
            return self._load_pkl(local)
        data = _torch_load(local)
        if filename.endswith(".pyth"):  # pycls, as detectron2 reads it
            if not isinstance(data, dict) or "model_state" not in data:
                raise CheckpointError(f"{filename}: a .pyth (pycls) checkpoint must hold 'model_state'")
            model = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": model, "__author__": "pycls", "matching_heuristics": True}
        return data if isinstance(data, dict) and "model" in data else {"model": data}

    def _load_pkl(self, local: str) -> dict[str, Any]:
        """The ``.pkl`` branch of ``SafeDetectionCheckpointer`` for names it does not match (``.PKL``)."""
        data = load_weights_pkl(local)
        if not isinstance(data, dict):
            raise UnsafeCheckpointError(f"{local}: holds a {type(data).__name__}, not a weights dict")
        if "model" in data and "__author__" in data:
            return data
        blobs = data.get("blobs", data)
        return {"model": {k: v for k, v in blobs.items() if not k.endswith("_momentum")}, "__author__": "Caffe2",
                "matching_heuristics": True}


class RetainingPeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's periodic checkpointer hook, keeping the newest ``max_to_keep`` periodic files
    and writing only ``model_final.pth`` at the last iteration (nothing there with ``keep_final``
    False: ``SIAMBENCH.KEEP_FINAL_MODEL``, for runs that keep only their numbers)."""

    def __init__(self, *args: Any, keep_final: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_final = keep_final

    def step(self, iteration: int, **kwargs: Any) -> None:
        iteration = int(iteration)
        state = {"iteration": iteration, **kwargs}
        if self.max_iter is not None and iteration >= self.max_iter - 1:
            if self.keep_final:
                self.checkpointer.save(f"{self.file_prefix}_final", **state)
            else:
                logger.info("SIAMBENCH.KEEP_FINAL_MODEL False: %s_final.pth not written", self.file_prefix)
        elif (iteration + 1) % self.period == 0:
            self.checkpointer.save(f"{self.file_prefix}_{iteration:07d}", **state)
            self._prune()

    def _prune(self) -> None:
        """Delete periodic checkpoints beyond the newest ``max_to_keep`` (after the new one is written)."""
        if not self.max_to_keep:
            return
        save_dir = Path(self.checkpointer.save_dir)
        marker = save_dir / LAST_CHECKPOINT
        current = marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""
        periodic = sorted((p for p in save_dir.glob(f"{self.file_prefix}_*.pth") if _PERIODIC_RE.match(p.name)),
                          reverse=True)
        for path in periodic[self.max_to_keep:]:
            if path.name != current:
                path.unlink(missing_ok=True)
                logger.info("checkpoint retention (SIAMBENCH.KEEP_CHECKPOINTS %d): removed %s", self.max_to_keep,
                            path.name)
