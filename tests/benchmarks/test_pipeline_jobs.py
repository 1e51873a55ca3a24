"""`siambench run` with JOBS > 1: independent steps at once, never before what they need."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from siambench.benchmarks.pipeline.pipeline import SubprocessRunner, run_pipeline
from siambench.benchmarks.pipeline.pipeline_config import load_pipeline
from siambench.benchmarks.pipeline.steps import Step
from siambench.pretrain.utils.config import ConfigError

# test_pipeline.py's pipeline and fake steps (tests/ is no package: --import-mode=importlib).
_spec = importlib.util.spec_from_file_location("_test_pipeline", Path(__file__).with_name("test_pipeline.py"))
_tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tp)  # type: ignore[union-attr]
PIPELINE, FakeSteps = _tp.PIPELINE, _tp.FakeSteps


class SlowFakeSteps(FakeSteps):
    """FakeSteps that take a moment and record when each step ran and how many ran at once."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.lock = threading.Lock()
        self.live = self.most = 0
        self.spans: dict[str, tuple[float, float]] = {}
        self.envs: list[dict[str, str]] = []

    def __call__(self, step: Step, log: Path, env: dict[str, str]) -> int:
        with self.lock:
            self.live += 1
            self.most = max(self.most, self.live)
            self.envs.append(env)
        t0 = time.monotonic()
        try:
            time.sleep(0.05)
            return super().__call__(step, log, env)
        finally:
            with self.lock:
                self.live -= 1
                self.spans[step.key] = (t0, time.monotonic())


def _pipeline(tmp_path: Path, jobs: int):
    path = tmp_path / "pipe.yaml"
    path.write_text(PIPELINE.format(out=tmp_path / "runs") + f"JOBS: {jobs}\n")
    return load_pipeline(path)


def test_two_jobs_run_at_once_after_their_dependencies(tmp_path: Path) -> None:
    cfg = _pipeline(tmp_path, 2)
    fake = SlowFakeSteps()
    lines: list[str] = []
    status = run_pipeline(cfg, fake, log=lines.append)
    assert set(status.values()) == {"done"} and len(fake.calls) == 15
    assert fake.most == 2  # never more than JOBS, and parallel where the plan allows it
    from siambench.benchmarks.pipeline.steps import build_steps

    for step in build_steps(cfg):
        for dep in step.deps:  # a step starts only after every step it needs has ended
            assert fake.spans[dep][1] <= fake.spans[step.key][0], (dep, step.key)
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert {e["OMP_NUM_THREADS"] for e in fake.envs} == {threads}
    state = json.loads((Path(cfg.OUTPUT_DIR) / "pipeline_state.json").read_text())
    step_sum = sum(s["wall_s"] for s in state["steps"].values())
    assert 0 < state["wall_s"] < step_sum  # the run's wall time counts overlapping steps once
    assert state["written_bytes"] >= 0  # the fakes run in-process: nothing of children's to count
    assert sum("] " in line and (" done in " in line) for line in lines) == 15
    assert any("| running: sup/pretrain" in line for line in lines)  # the console says what runs meanwhile


def test_one_job_keeps_the_plan_order(tmp_path: Path) -> None:
    cfg = _pipeline(tmp_path, 1)
    fake = SlowFakeSteps()
    run_pipeline(cfg, fake, log=lambda *_: None)
    from siambench.benchmarks.pipeline.steps import build_steps

    assert [s.key for s in fake.calls] == [s.key for s in build_steps(cfg)] and fake.most == 1
    assert all("OMP_NUM_THREADS" not in e or e["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
               for e in fake.envs)


def test_a_failure_blocks_only_its_dependents_with_two_jobs(tmp_path: Path) -> None:
    cfg = _pipeline(tmp_path, 2)
    status = run_pipeline(cfg, SlowFakeSteps(fail_at="simsiam/pretrain"), log=lambda *_: None)
    assert status["simsiam/pretrain"] == "failed"
    assert {status[k] for k in status if k.startswith("simsiam/") and k != "simsiam/pretrain"} == {"blocked"}
    assert {status[k] for k in status if k.startswith(("sup/", "scr/"))} == {"done"}


def test_interrupt_inside_a_step_marks_it_and_propagates(tmp_path: Path) -> None:
    cfg = _pipeline(tmp_path, 2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, SlowFakeSteps(interrupt_at="sup/pretrain"), log=lambda *_: None)
    state = json.loads((Path(cfg.OUTPUT_DIR) / "pipeline_state.json").read_text())
    assert state["steps"]["sup/pretrain"]["status"] == "interrupted"
    again = SlowFakeSteps()
    status = run_pipeline(cfg, again, log=lambda *_: None)  # resumes: runs what is not done, nothing twice
    assert set(status.values()) <= {"done", "skipped"} and "sup/pretrain" in [s.key for s in again.calls]


SLEEPER = r"""
import os, sys, time
open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


class SleepingSteps(SubprocessRunner):
    """Real subprocesses: the data step finishes at once, every other step sleeps (writes its pid)."""

    def __init__(self, files: Path) -> None:
        super().__init__(tail_on_failure=0)
        self.pids = files  # where the steps write their files
        files.mkdir()

    def command(self, step: Step) -> list[str]:  # type: ignore[override]
        if step.key == "synth":
            root = step.argv[step.argv.index("--out") + 1]
            return [sys.executable, "-c", f"import os; os.makedirs({root!r}); open({root!r} + '/synth.json', 'w')"]
        return [sys.executable, "-c", SLEEPER, str(self.pids / step.key.replace("/", "."))]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler for the test: a shell starts a background job (`make test &`) with SIGINT
    ignored, and Python then installs none, so a Ctrl-C sent to the tests would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_ctrl_c_stops_every_running_step(tmp_path: Path, ctrl_c_raises) -> None:
    cfg = _pipeline(tmp_path, 2)
    runner = SleepingSteps(tmp_path / "pids")

    def interrupt_when_two_run() -> None:
        deadline = time.time() + 60
        while len(list(runner.pids.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C (SIGTERM does the same via the runner's handlers)

    threading.Thread(target=interrupt_when_two_run, daemon=True).start()
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, runner, log=lambda *_: None)
    pids = [int(p.read_text()) for p in runner.pids.iterdir()]
    assert len(pids) == 2 and time.time() - t0 < 40
    assert not any(_alive(pid) for pid in pids)  # both steps' processes ended with the runner
    state = json.loads((Path(cfg.OUTPUT_DIR) / "pipeline_state.json").read_text())
    assert sorted(k for k, s in state["steps"].items() if s["status"] == "interrupted") == \
        ["simsiam/pretrain", "sup/pretrain"]


@pytest.mark.parametrize("extra, match", [("JOBS: 0\n", "JOBS must be >= 1"),
                                          ("JOBS: 2\nNUM_GPUS: 2\n", "set JOBS 1")])
def test_bad_jobs_are_refused(tmp_path: Path, extra: str, match: str) -> None:
    path = tmp_path / "pipe.yaml"
    path.write_text(PIPELINE.format(out=tmp_path / "runs") + extra)
    with pytest.raises(ConfigError, match=match):
        load_pipeline(path)
    assert not (tmp_path / "runs").exists()


class WritingSteps(SleepingSteps):
    """Real subprocesses: the data step, then every step writes 256 kB (and deletes it) and ends."""

    def command(self, step: Step) -> list[str]:  # type: ignore[override]
        if step.key == "synth":
            return super().command(step)
        path = str(self.pids / step.key.replace("/", "."))
        code = f"import os\nwith open({path!r}, 'wb') as f:\n    f.write(os.urandom(256_000))\nos.remove({path!r})"
        return [sys.executable, "-c", code]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="block output counters")
def test_bytes_written_by_the_steps_are_recorded(tmp_path: Path) -> None:
    cfg = _pipeline(tmp_path, 2)
    runner = WritingSteps(tmp_path / "out")
    run_pipeline(cfg, runner, log=lambda *_: None)  # every step but synth "fails" (no outputs): 1 + 2 ran
    state = json.loads((Path(cfg.OUTPUT_DIR) / "pipeline_state.json").read_text())
    ran = sum(s["status"] == "failed" for s in state["steps"].values())
    assert ran >= 2 and state["written_bytes"] >= ran * 256_000  # deleted files count: they were written
