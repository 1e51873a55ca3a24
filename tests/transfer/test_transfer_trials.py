"""Trial bookkeeping: seeds, results.json schema, skipping, resuming, refusing changed configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from siambench.pretrain.utils.config import save_config
from siambench.transfer.main import build_parser, main, make_plan
from siambench.transfer.trials import TrialConfigMismatch, TrialPlan, trial_record, trial_state, write_results

# docs/design.md: the fields every transfer results.json has.
DESIGN_FIELDS = {"task", "label", "weights", "weights_sha256", "config_hash", "seed", "iterations", "norm",
                 "ims_per_batch", "base_lr", "results", "wall_time_s", "env", "status"}


def _plan(tmp_path: Path, *opts: str, weights: str | None = None, trials: int = 3) -> TrialPlan:
    if weights is None:
        weights = str(tmp_path / "w.pkl")
        Path(weights).write_bytes(b"weights v1")
    args = ["--task", "synth_voc07", "--weights", weights, "--trials", str(trials),
            "OUTPUT_DIR", str(tmp_path / "out"), *opts]
    return make_plan(build_parser().parse_args(args), cuda_available=False)


def _complete(plan: TrialPlan, k: int, ap: float = 50.0) -> dict:
    save_config(plan.trial_cfg(k), plan.trial_dir(k))
    record = trial_record(plan, k, "complete", {"bbox": {"AP": ap, "AP50": 80.0, "AP75": float("nan"),
                                                          "AP-circle": 1.0}}, wall_time_s=1.5)
    write_results(plan.trial_dir(k) / "results.json", record)
    return record


def test_trials_use_distinct_seeds_and_dirs(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "SEED", "10")
    cfgs = [plan.trial_cfg(k) for k in range(plan.trials)]
    assert [c.SEED for c in cfgs] == [10, 11, 12]
    assert [Path(c.OUTPUT_DIR).name for c in cfgs] == ["trial0", "trial1", "trial2"]
    assert len({Path(c.OUTPUT_DIR) for c in cfgs}) == 3


def test_results_json_schema(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    _complete(plan, 0)
    record = json.loads((plan.trial_dir(0) / "results.json").read_text())
    assert DESIGN_FIELDS <= set(record)
    assert record["status"] == "complete" and record["task"] == "synth_voc07" and record["label"] == "w"
    assert record["seed"] == 0 and record["iterations"] == plan.cfg.SOLVER.MAX_ITER
    assert record["norm"] == "BN" and record["ims_per_batch"] == 8 and record["base_lr"] == 0.02
    assert len(record["weights_sha256"]) == 64 and record["lr_scaled"] is False
    # NaN (e.g. no small objects) is stored as null, per-class AP kept apart from the summary.
    assert record["results"] == {"bbox": {"AP": 50.0, "AP50": 80.0, "AP75": None}}
    assert record["per_class"] == {"bbox": {"circle": 1.0}}
    assert {"torch", "detectron2", "python"} <= set(record["env"])
    assert record["env"]["detectron2"]["version"].startswith("0.6")


def test_complete_trial_is_skipped_and_others_are_new(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    _complete(plan, 1)
    assert [trial_state(plan, k) for k in range(3)] == ["new", "complete", "new"]


def test_changed_config_is_refused_with_the_changed_key(tmp_path: Path) -> None:
    _complete(_plan(tmp_path), 0)
    changed = _plan(tmp_path, "SOLVER.BASE_LR", "0.05")
    with pytest.raises(TrialConfigMismatch) as e:
        trial_state(changed, 0)
    msg = str(e.value)
    assert "SOLVER.BASE_LR: 0.02 -> 0.05" in msg and "new OUTPUT_DIR" in msg


def test_changed_weights_are_refused(tmp_path: Path) -> None:
    _complete(_plan(tmp_path), 0)
    other = tmp_path / "other.pkl"
    other.write_bytes(b"weights v2")
    with pytest.raises(TrialConfigMismatch, match="weights sha256"):
        trial_state(_plan(tmp_path, weights=str(other)), 0)


def test_interrupted_trial_resumes(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    tdir = plan.trial_dir(0)
    save_config(plan.trial_cfg(0), tdir)
    write_results(tdir / "results.json", trial_record(plan, 0, "running"))
    assert trial_state(plan, 0) == "new"  # nothing to resume from yet
    (tdir / "last_checkpoint").write_text("model_0000049.pth")
    assert trial_state(plan, 0) == "resume"
    # Killed before results.json was written: the saved config still guards the resume.
    (tdir / "results.json").unlink()
    with pytest.raises(TrialConfigMismatch, match="SOLVER.MAX_ITER"):
        trial_state(_plan(tmp_path, "SOLVER.MAX_ITER", "7"), 0)


def test_rerun_of_finished_trials_trains_nothing(tmp_path: Path, synth_root: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    plan = _plan(tmp_path, trials=2)
    records = [_complete(plan, k, ap=10.0 + k) for k in range(2)]
    argv = ["--task", "synth_voc07", "--weights", plan.weights, "--trials", "2", "OUTPUT_DIR", str(plan.output_dir)]
    assert main(argv) == 0  # would train for minutes if it did not skip
    for k, record in enumerate(records):
        assert json.loads((plan.trial_dir(k) / "results.json").read_text()) == record
        assert not (plan.trial_dir(k) / "model_final.pth").exists()
    assert main([*argv, "SOLVER.BASE_LR", "0.05"]) == 2
    assert "SOLVER.BASE_LR" in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SIAMBENCH_SYNTH", str(tmp_path / "nowhere"))
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"x")
    rc = main(["--task", "synth_coco", "--weights", str(weights), "OUTPUT_DIR", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "synth_coco_train" in err and "siambench data synth" in err
    assert not (tmp_path / "out").exists()

