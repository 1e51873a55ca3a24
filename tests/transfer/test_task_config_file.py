"""`siambench run` fingerprints configs/transfer/TASK.yaml as resolved from the working directory; the
transfer step must run that same file (a user's copy in the working directory wins, as for every config)."""
from __future__ import annotations

from pathlib import Path

import pytest

from siambench.transfer import d2compat  # noqa: F401
from siambench.benchmarks.pipeline.pipeline_config import load_pipeline  # noqa: E402
from siambench.benchmarks.pipeline.pipeline_guard import fingerprint  # noqa: E402
from siambench.benchmarks.pipeline.steps import build_steps  # noqa: E402
from siambench.transfer.config import CONFIG_DIR  # noqa: E402
from siambench.transfer.main import build_parser, make_plan  # noqa: E402


def test_the_transfer_step_runs_the_task_file_it_fingerprints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "configs" / "transfer" / "synth_voc07.yaml"
    own.parent.mkdir(parents=True)  # its _BASE_ is not copied: the shipped one is used
    own.write_text((CONFIG_DIR / "synth_voc07.yaml").read_text() + "SOLVER:\n  MAX_ITER: 7\n")
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(f"OUTPUT_DIR: {tmp_path / 'runs'}\nSYNTH: {{ENABLED: False}}\nDATA: {{ROOT: {tmp_path}}}\n"
                    "ENTRIES:\n  scr: {KIND: scratch, LABEL: scratch}\nTRANSFER: {TASKS: [synth_voc07], TRIALS: 1}\n"
                    "EVAL: {KNN: {ENABLED: False}, LINCLS: {ENABLED: False}}\nREPORT: False\n")
    (step,) = [s for s in build_steps(load_pipeline(pipe)) if s.key.endswith("transfer/synth_voc07")]
    fingerprinted = [Path(f).resolve() for f in fingerprint(step)["files"]]
    assert own.resolve() in fingerprinted
    argv = step.argv[1:]  # what the step runs: `siambench transfer ...`
    plan = make_plan(build_parser().parse_intermixed_args(argv), cuda_available=False)
    assert plan.cfg.SOLVER.MAX_ITER == 7  # the working directory's file, not the shipped 400 iterations
