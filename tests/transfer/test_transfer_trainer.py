"""TransferTrainer loads weights only through the restricted unpickler and uses our evaluators."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from siambench.convert.errors import UnsafeCheckpointError
from siambench.transfer.checkpoint import SafeDetectionCheckpointer
from detectron2.engine import DefaultTrainer, hooks
from siambench.transfer.evaluation import FastCOCOEvaluator
from siambench.transfer.main import build_parser, make_plan
from siambench.transfer.checkpoint import RetainingPeriodicCheckpointer
from siambench.transfer.trainer import StopAtSignal, TransferTrainer


class _RunsCode:
    """Unpickling this calls os.system: what plain pickle.load would do with a crafted .pkl."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _cfg(tmp_path: Path, weights: Path, task: str = "synth_coco"):
    args = build_parser().parse_args(["--task", task, "--weights", str(weights), "OUTPUT_DIR", str(tmp_path / "out")])
    return make_plan(args, cuda_available=False).trial_cfg(0)


def test_crafted_pkl_is_refused_before_running_code(synth_root: Path, tmp_path: Path) -> None:
    weights = tmp_path / "evil.pkl"
    weights.write_bytes(pickle.dumps({"model": {"x": _RunsCode()}, "__author__": "x"}))
    trainer = TransferTrainer(_cfg(tmp_path, weights))
    assert isinstance(trainer.checkpointer, SafeDetectionCheckpointer)
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert periodic and periodic[0].checkpointer is trainer.checkpointer  # saving and resuming use it too
    with pytest.raises(UnsafeCheckpointError):
        trainer.resume_or_load(resume=True)
    evaluator = TransferTrainer.build_evaluator(trainer.cfg, "synth_coco_val")
    assert isinstance(evaluator, FastCOCOEvaluator)


def test_train_returns_what_the_evaluation_hook_computed(synth_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args([
        "--task", "synth_voc07", "--weights", "scratch", "OUTPUT_DIR", str(tmp_path / "out"),
        "SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0", "DATALOADER.NUM_WORKERS", "0",
        "TEST.PRECISE_BN.ENABLED", "False", "INPUT.MIN_SIZE_TRAIN", "(64,)", "SIAMBENCH.KEEP_FINAL_MODEL", "False"])
    cfg = make_plan(args, cuda_available=False).trial_cfg(0)
    tested = []

    def test(cls, cfg, model):  # stands in for inference on the test set
        tested.append(model)
        return {"bbox": {"AP": 12.5, "AP50": 25.0}}

    monkeypatch.setattr(TransferTrainer, "test", classmethod(test))
    trainer = TransferTrainer(cfg)
    stock = [type(h) for h in DefaultTrainer(cfg)._hooks]
    assert [type(h) for h in trainer._hooks] == [RetainingPeriodicCheckpointer if t is hooks.PeriodicCheckpointer
                                                 else t for t in stock] + [StopAtSignal]  # same order, + ours
    trainer.resume_or_load(resume=False)
    assert trainer.train() == {"bbox": {"AP": 12.5, "AP50": 25.0}} == trainer.eval_results
    assert tested == [trainer.model]  # once, after the last iteration
