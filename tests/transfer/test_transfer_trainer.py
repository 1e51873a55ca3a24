"""TransferTrainer loads weights only through the restricted unpickler and uses our evaluators."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from siambench.convert.errors import UnsafeCheckpointError
from siambench.transfer.checkpoint import SafeDetectionCheckpointer
from detectron2.engine import hooks
from siambench.transfer.evaluation import FastCOCOEvaluator
from siambench.transfer.main import build_parser, make_plan
from siambench.transfer.trainer import TransferTrainer


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
