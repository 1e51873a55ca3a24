"""Steps end with the runner and the console stays short."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siambench.benchmarks.pipeline.pipeline_proc import SubprocessRunner
from siambench.benchmarks.pipeline.steps import Step

# A runner whose one step is a process that writes its pid (and its own child's) and sleeps.
RUNNER = r"""
import os, pathlib, sys
from siambench.benchmarks.pipeline.pipeline_proc import SubprocessRunner, install_signal_handlers
from siambench.benchmarks.pipeline.steps import Step

STEP = '''
import os, subprocess, sys, time
grand = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {grand.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
'''

class Runner(SubprocessRunner):
    @staticmethod
    def command(step):
        return [sys.executable, "-c", STEP, sys.argv[1]]

install_signal_handlers()
try:
    Runner()(Step("x", "x", "knn", [], lambda: False), pathlib.Path(sys.argv[2]), dict(os.environ))
except KeyboardInterrupt:
    sys.exit(130)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its parent's wait is missing


def _start(tmp_path: Path) -> tuple[subprocess.Popen, int, int]:
    pids = tmp_path / "pids"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(pids), str(tmp_path / "step.log")],
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    deadline = time.time() + 60
    while not pids.exists():
        assert time.time() < deadline and runner.poll() is None, "the step never started"
        time.sleep(0.1)
    child, grand = map(int, pids.read_text().split())
    return runner, child, grand


def _gone(*pids: int, within: float = 15.0) -> bool:
    deadline = time.time() + within
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
def test_killing_the_runner_ends_its_step(tmp_path: Path) -> None:
    runner, child, grand = _start(tmp_path)
    try:
        runner.kill()  # SIGKILL: no handler of the runner runs
        runner.wait()
        assert _gone(child), "the step kept running after its runner was killed"
    finally:
        for pid in (child, grand):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux")
def test_sigterm_to_the_runner_stops_the_whole_step_tree(tmp_path: Path) -> None:
    runner, child, grand = _start(tmp_path)
    try:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=40) == 130
        assert _gone(child, grand), "the step or its own children outlived the runner"
    finally:
        for pid in (child, grand):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_console_gets_no_step_output_but_a_failure_tail(tmp_path: Path, capfd) -> None:
    """Regression: the demo printed ~3,000 lines (full model prints) on the console."""
    class Runner(SubprocessRunner):
        @staticmethod
        def command(step: Step) -> list[str]:
            return [sys.executable, "-c", "import sys\nfor i in range(500): print('model line', i)\nsys.exit(step_rc)"
                    .replace("step_rc", step.argv[0])]

    log = tmp_path / "a.log"
    assert Runner()(Step("a", "a", "knn", ["0"], lambda: True), log, dict(os.environ)) == 0
    assert "model line" not in capfd.readouterr().out and "model line 499" in log.read_text()
    assert Runner()(Step("b", "b", "knn", ["3"], lambda: True), tmp_path / "b.log", dict(os.environ)) == 3
    shown = capfd.readouterr().out.splitlines()
    assert len(shown) == 15 and shown[-1] == "    | model line 499"  # the end of the log, to see why
    assert Runner(echo=True)(Step("c", "c", "knn", ["0"], lambda: True), tmp_path / "c.log", dict(os.environ)) == 0
    assert capfd.readouterr().out.count("model line") == 500  # --verbose
