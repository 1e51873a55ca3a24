"""`siambench run` checks GPUs, datasets and weights before the first launch."""
from __future__ import annotations

from pathlib import Path

import pytest

from siambench.benchmarks.pipeline import preflight
from siambench.benchmarks.pipeline.pipeline import main
from siambench.benchmarks.pipeline.pipeline_config import REPO_ROOT, load_pipeline
from siambench.benchmarks.pipeline.steps import build_steps

IN1K = str(REPO_ROOT / "configs" / "benchmarks" / "simsiam_in1k_200ep.yaml")


@pytest.fixture
def no_gpus(monkeypatch) -> None:
    monkeypatch.setattr(preflight, "_gpus", lambda: 0)


def test_paper_pipeline_on_a_cpu_machine_stops_before_launching(tmp_path: Path, no_gpus, capsys,
                                                                monkeypatch) -> None:
    out = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)  # no datasets/ here
    assert main([IN1K, "OUTPUT_DIR", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("siambench run: error: this machine cannot run the plan")
    assert "NUM_GPUS 8: this machine has 0 CUDA GPU(s)" in err
    assert "DATA.ROOT datasets/imagenet does not exist" in err
    assert "transfer voc07: dataset 'voc_2007_trainval'" in err and "transfer coco: dataset 'coco_2017_train'" in err
    assert "Traceback" not in err and not out.exists()  # nothing launched, nothing created


def test_dry_run_shows_the_problems_and_gpu_hours(tmp_path: Path, no_gpus, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([IN1K, "OUTPUT_DIR", str(tmp_path / "runs"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "warning: NUM_GPUS 8: this machine has 0 CUDA GPU(s)" in printed
    row = next(line for line in printed.splitlines() if line.startswith("simsiam_200ep/pretrain "))
    assert row.split()[1] == f"{200 * 2.12 * 1.5:.1f}"  # 200 ep at MoCo's 53 h / 200 ep x 1.5
    voc = next(line for line in printed.splitlines() if line.startswith("scratch/transfer/voc07 "))
    assert voc.split()[1] == f"{5 * 0.551 * 24000 * 8 / 3600:.1f}"  # 5 trials of 24k iterations, detectron2 timing
    assert "total (steps to run)" in printed and "MoCo README" in printed
    assert not (tmp_path / "runs").exists()


def test_demo_needs_nothing_it_does_not_make(tmp_path: Path) -> None:
    cfg = load_pipeline(REPO_ROOT / "configs" / "benchmarks" / "demo.yaml", ["OUTPUT_DIR", str(tmp_path / "d")])
    steps = build_steps(cfg)
    assert preflight.problems(cfg, steps) == []  # the synth step makes the data first; NUM_GPUS 1
    hours, basis = preflight.estimate(steps[1], cfg)
    assert hours is None and "measured" in basis


def test_missing_checkpoint_and_weights_are_named(tmp_path: Path, no_gpus) -> None:
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cls").mkdir(parents=True)
        (tmp_path / "data" / split / "cls" / "a.jpg").write_bytes(b"x")
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"OUTPUT_DIR: {tmp_path / 'r'}\nDATA: {{ROOT: {tmp_path / 'data'}}}\nTRANSFER: {{TASKS: []}}\n"
                    f"ENTRIES: {{a: {{KIND: checkpoint, CHECKPOINT: {tmp_path / 'gone.pth'}}}}}\n")
    cfg = load_pipeline(pipe)
    found = preflight.problems(cfg, build_steps(cfg))
    assert found == [f"a/knn: weights {tmp_path / 'gone.pth'} not found",
                     f"a/lincls: weights {tmp_path / 'gone.pth'} not found"]


def test_checks_leave_the_callers_environment_as_it_was(tmp_path: Path, monkeypatch) -> None:
    # the pre-flight checks point $SIAMBENCH_SYNTH at the pipeline's synthetic root; that must not
    # leak into the caller (it made later tests in the same process look in a deleted directory)
    monkeypatch.setenv("SIAMBENCH_SYNTH", "/somewhere/else")
    demo = str(REPO_ROOT / "configs" / "benchmarks" / "demo.yaml")
    assert main([demo, "OUTPUT_DIR", str(tmp_path / "d"), "--dry-run"]) == 0
    assert preflight.os.environ["SIAMBENCH_SYNTH"] == "/somewhere/else"
    monkeypatch.delenv("SIAMBENCH_SYNTH")
    assert main([demo, "OUTPUT_DIR", str(tmp_path / "d"), "--dry-run"]) == 0
    assert "SIAMBENCH_SYNTH" not in preflight.os.environ
