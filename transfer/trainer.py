"""detectron2's ``DefaultTrainer`` extended through its hooks: siambench's data mapper and
evaluators, the evaluation results kept, safe weight loading and safe checkpoints.

* ``build_train_loader``/``build_test_loader``: detectron2's loaders with
  :class:`siambench.transfer.mapper.TransferDatasetMapper` (16-bit images scaled, not clipped).
* ``build_evaluator``: :func:`siambench.transfer.evaluation.build_evaluator`.
* The evaluation hook keeps what ``test`` returned in :attr:`TransferTrainer.eval_results`, and
  :meth:`TransferTrainer.train` returns it.
* :class:`StopAtSignal`, the last hook: after the iteration in which SLURM's stop signal came
  (:attr:`TransferTrainer.stop`, see :mod:`siambench.pretrain.utils.stop`) it saves that
  iteration's checkpoint and ends the trial; resuming continues from it.

Checkpoints go through :class:`siambench.transfer.checkpoint.AtomicCheckpointer` (restricted ``.pkl``
unpickler, atomic writes, resume that skips a damaged file) and
:class:`siambench.transfer.checkpoint.RetainingPeriodicCheckpointer` (``SIAMBENCH.KEEP_CHECKPOINTS``,
no duplicate of ``model_final.pth``). Everything else -- model/optimizer/scheduler/data
loader construction, DDP, precise BN, resuming -- is detectron2's own.
"""
from __future__ import annotations

from typing import Any

import torch
from siambench.pretrain.utils.stop import StopRequest
from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import DatasetEvaluator

from . import roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm, named by our configs)
from .checkpoint import AtomicCheckpointer, RetainingPeriodicCheckpointer
from .evaluation import build_evaluator
from .mapper import TransferDatasetMapper

__all__ = ["TransferTrainer", "StopAtSignal", "safe_checkpointer", "load_model_for_eval"]


def safe_checkpointer(model: torch.nn.Module, save_dir: str = "", **checkpointables: Any) -> AtomicCheckpointer:
    """A ``DetectionCheckpointer`` whose ``.pkl`` loading uses the restricted unpickler and whose
    writes are atomic (:class:`siambench.transfer.checkpoint.AtomicCheckpointer`)."""
    return AtomicCheckpointer(model, save_dir, **checkpointables)


class StopAtSignal(hooks.HookBase):
    """After each iteration but the last: when a rank received a stop signal, save ``model_{iter:07d}``
    (the name and ``iteration`` detectron2's periodic checkpointer writes, which ``resume_or_load``
    continues from) and raise :class:`siambench.pretrain.utils.stop.StopRequested`."""

    def after_step(self) -> None:
        trainer = self.trainer
        if not trainer.stop.enabled or trainer.iter + 1 >= trainer.max_iter:
            return
        signum = trainer.stop.agreed()
        if signum:
            trainer.checkpointer.save(f"model_{trainer.iter:07d}", iteration=trainer.iter)  # rank 0 writes
            trainer.stop.stop_if(signum, f"iteration {trainer.iter + 1}")


class TransferTrainer(DefaultTrainer):
    """``DefaultTrainer`` + siambench's mapper and evaluators + kept results + safe ``.pkl`` loading
    + a checkpoint and stop on SLURM's stop signal."""

    eval_results: dict[str, Any] | None = None  # what the last evaluation returned ({} on ranks > 0)
    stop: StopRequest = StopRequest()  # disabled; the trial sets the one of its stop_on_signal block

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        return build_detection_train_loader(cfg, mapper=TransferDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Any:
        return build_detection_test_loader(cfg, dataset_name, mapper=TransferDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> DatasetEvaluator:
        return build_evaluator(cfg, dataset_name, output_folder)

    def build_hooks(self) -> list:
        # DefaultTrainer.__init__ creates a plain DetectionCheckpointer (whose .pkl loading is
        # pickle.load) just before it builds the hooks that capture it; swap in the safe
        # one first so that both resume_or_load and the periodic checkpointer use it.
        plain = self.checkpointer
        self.checkpointer = safe_checkpointer(plain.model, plain.save_dir, save_to_disk=plain.save_to_disk,
                                              **plain.checkpointables)
        built = super().build_hooks()
        keep = self.cfg.get("SIAMBENCH", {}).get("KEEP_CHECKPOINTS", 0) or None  # 0: keep all
        keep_final = bool(self.cfg.get("SIAMBENCH", {}).get("KEEP_FINAL_MODEL", True))
        return [RetainingPeriodicCheckpointer(h.checkpointer, h.period, max_to_keep=keep, keep_final=keep_final)
                if type(h) is hooks.PeriodicCheckpointer
                else hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._test_and_keep_results)
                if type(h) is hooks.EvalHook else h for h in built] + [StopAtSignal()]

    def _test_and_keep_results(self) -> dict[str, Any]:
        """The evaluation ``DefaultTrainer``'s hook runs (``test`` of the trained model), its result kept
        in :attr:`eval_results` (the stock hook keeps it in a private attribute)."""
        self.eval_results = self.test(self.cfg, self.model)
        return self.eval_results

    def train(self) -> dict[str, Any] | None:
        """Train with detectron2's loop and hooks; return the results of the evaluation after the last
        iteration (also run when a resumed trial had finished training), or None if nothing was
        evaluated (``DefaultTrainer.train`` returns them only when ``TEST.EXPECTED_RESULTS`` is set)."""
        super().train()
        return self.eval_results


def load_model_for_eval(cfg: CfgNode, weights: str) -> torch.nn.Module:
    """Build ``cfg``'s model in eval mode with ``weights`` loaded through the safe checkpointer."""
    model = TransferTrainer.build_model(cfg)
    safe_checkpointer(model, cfg.OUTPUT_DIR).resume_or_load(weights, resume=False)
    return model.eval()
