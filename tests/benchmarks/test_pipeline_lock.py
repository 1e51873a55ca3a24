"""One runner per pipeline OUTPUT_DIR: a second `siambench run --force` while the first still runs
is refused in one line and removes nothing (a real second process holds the lock)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siambench.benchmarks.pipeline.pipeline import run_pipeline
from siambench.benchmarks.pipeline.pipeline_config import load_pipeline
from siambench.benchmarks.pipeline.steps import build_steps
from siambench.pretrain.utils.config import ConfigError

_spec = importlib.util.spec_from_file_location("_test_pipeline", Path(__file__).with_name("test_pipeline.py"))
_tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tp)  # type: ignore[union-attr]

FIRST_RUNNER = r"""
import sys, time
from pathlib import Path
from siambench.benchmarks.pipeline.pipeline import run_pipeline
from siambench.benchmarks.pipeline.pipeline_config import load_pipeline

def sleeping_step(step, log, env):  # every step "runs" for a minute
    Path(sys.argv[2]).write_text(step.key)
    time.sleep(60)
    return 0

run_pipeline(load_pipeline(sys.argv[1]), sleeping_step, log=lambda *a: None)
"""


def test_a_second_runner_is_refused_and_removes_nothing(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(_tp.PIPELINE.format(out=tmp_path / "runs"))
    cfg = load_pipeline(pipe)
    markers = []
    for step in build_steps(cfg):  # every step's directory holds work of the first runner
        if step.out_dir is not None:
            step.out_dir.mkdir(parents=True, exist_ok=True)
            (step.out_dir / "work").write_text("in progress")
            markers.append(step.out_dir / "work")
    running = tmp_path / "running"
    first = subprocess.Popen([sys.executable, "-c", FIRST_RUNNER, str(pipe), str(running)])
    try:
        deadline = time.time() + 120
        while not running.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert running.exists(), "the first runner never started a step"
        with pytest.raises(ConfigError, match=r"runs is in use by another siambench process \(pid "
                                              rf"{first.pid} on .*\); wait for it"):
            run_pipeline(cfg, _tp.FakeSteps(), force=["all"], log=lambda *a: None)
        assert all(m.read_text() == "in progress" for m in markers)  # nothing removed
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
