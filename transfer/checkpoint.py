"""detectron2 checkpoints that a kill cannot corrupt, resume that skips a damaged one, and retention.

:class:`SafeDetectionCheckpointer` is detectron2's ``DetectionCheckpointer`` reading files
safely: ``.pkl`` in any case (``.PKL``) through the restricted unpickler
(:func:`siambench.convert.safe_pickle.load_detectron2_weights`, which also holds the
Caffe2 layout), ``.pth``/``.pyth`` through the suite's one weights-only reader, with one
clear error for a file that is empty, truncated or carries code.

detectron2 (fvcore) writes ``model_*.pth`` and ``last_checkpoint`` in place, so a kill
during a save leaves a truncated file that the next resume (or ``--eval-only``) trips
over. :class:`AtomicCheckpointer` adds, for a local ``save_dir``:

* ``save`` / ``tag_last_checkpoint`` written to a temp file, fsynced and renamed
  (:mod:`siambench.pretrain.utils.io`). iopath's ``PathManager`` has no rename onto an
  existing file (its ``mv`` refuses one), so local writes cannot be atomic through it; a
  ``save_dir`` that a ``PathManager`` handler serves (``scheme://...``) is written through
  ``PathManager`` as detectron2 does;
* ``get_checkpoint_file``: the file ``last_checkpoint`` names if it loads, else the
  newest loadable ``model_final.pth`` / ``model_*.pth``, with a warning naming the damaged
  one (an empty ``last_checkpoint`` included) -- the rule of every siambench checkpoint
  directory (:mod:`siambench.pretrain.utils.checkpoint_dir`).

:class:`RetainingPeriodicCheckpointer` replaces detectron2's periodic checkpointer hook:
it keeps the newest ``SIAMBENCH.KEEP_CHECKPOINTS`` periodic files (deleting older ones
only after the new one is written) and at the last iteration writes ``model_final.pth``
only -- detectron2 writes ``model_{max_iter-1}.pth`` *and* ``model_final.pth`` there
when the period divides ``MAX_ITER``, two copies of one model.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.utils.file_io import PathManager
from siambench.convert.safe_pickle import load_detectron2_weights
from siambench.pretrain.utils import checkpoint_dir
from siambench.pretrain.utils.checkpoint_dir import LAST_CHECKPOINT
from siambench.pretrain.utils.errors import CheckpointError
from siambench.pretrain.utils.io import atomic_torch_save, load_weights_only

__all__ = ["SafeDetectionCheckpointer", "AtomicCheckpointer", "RetainingPeriodicCheckpointer", "unreadable_reason",
           "check_weights_file", "LAST_CHECKPOINT"]

logger = logging.getLogger(__name__)

_PERIODIC_RE = re.compile(r"^model_(\d{7})\.pth$")
_FIX = "delete it, or rerun the trial that wrote it"
_UNSAFE_FIX = "pass weights converted by `siambench convert` (.pkl) or a checkpoint written by `siambench transfer`"


def _torch_load(path: str, mmap: bool = False) -> Any:
    return load_weights_only(path, mmap=mmap, fix=_FIX, unsafe_fix=_UNSAFE_FIX)


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """None if ``path`` loads as a detectron2 checkpoint (memory-mapped, cheap), else why not."""
    return checkpoint_dir.unreadable_reason(path, required=("model",), what="a detectron2 checkpoint")


def check_weights_file(path: str | os.PathLike) -> None:
    """Refuse unreadable or code-carrying ``--weights`` before anything is created.

    ``.pkl`` (any case) goes through the restricted unpickler; other files through
    ``torch.load(weights_only=True)``.

    Raises:
        UnsafeCheckpointError, CheckpointError: one line naming the file and the fix.
    """
    path = str(path)
    if path.lower().endswith(".pkl"):
        load_detectron2_weights(path)
    else:
        _torch_load(path, mmap=True)


def _is_local(path: str) -> bool:
    """A plain file path: iopath's native handler, which serves every path no ``scheme://`` handler claims."""
    return "://" not in path


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that never runs code from a file and fails in one line.

    Same results as detectron2's loader for model-zoo, Caffe2 and ``siambench convert``
    ``.pkl`` files, ``.pyth`` (pycls) and ``.pth`` checkpoints; a file that needs arbitrary
    unpickling raises :class:`~siambench.pretrain.utils.errors.UnsafeCheckpointError` instead.
    """

    def _load_file(self, filename: str) -> dict[str, Any]:
        local = PathManager.get_local_path(filename)
        if filename.lower().endswith(".pkl"):
            data = load_detectron2_weights(local)
            self.logger.info("Reading a file from '%s'", data["__author__"])
            return data
        data = _torch_load(local)
        if filename.endswith(".pyth"):  # pycls, as detectron2 reads it
            if not isinstance(data, dict) or "model_state" not in data:
                raise CheckpointError(f"{filename}: a .pyth (pycls) checkpoint must hold 'model_state'")
            model = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": model, "__author__": "pycls", "matching_heuristics": True}
        return data if isinstance(data, dict) and "model" in data else {"model": data}


class AtomicCheckpointer(SafeDetectionCheckpointer):
    """``SafeDetectionCheckpointer`` with atomic writes and a resume that survives a damaged file."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not _is_local(self.save_dir):
            super().save(name, **kwargs)  # through PathManager (calls our tag_last_checkpoint)
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        path = Path(self.save_dir) / f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(path.name)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if _is_local(self.save_dir):
            checkpoint_dir.tag_last_checkpoint(self.save_dir, last_filename_basename)
        else:
            super().tag_last_checkpoint(last_filename_basename)

    def get_checkpoint_file(self) -> str:
        """The checkpoint to resume from: ``last_checkpoint``'s if it loads, else the newest that does.

        Raises:
            CheckpointError: checkpoints exist but none of them loads.
        """
        if not _is_local(self.save_dir):
            return super().get_checkpoint_file()
        path = checkpoint_dir.find_resume_file(
            self.save_dir, _PERIODIC_RE, required=("model",), also=("model_final.pth",),
            fix=f"delete {self.save_dir} to rerun the trial from the start", what="a detectron2 checkpoint",
            files="model_*.pth", log=logger)
        return str(path) if path is not None else ""


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
        if self.max_to_keep and _is_local(self.checkpointer.save_dir):
            pattern = re.compile(rf"^{re.escape(self.file_prefix)}_(\d{{7}})\.pth$")
            checkpoint_dir.prune(self.checkpointer.save_dir, pattern, self.max_to_keep,
                                 setting=f"SIAMBENCH.KEEP_CHECKPOINTS {self.max_to_keep}", log=logger)
