"""pytest's temporary directories: a passing run leaves nothing, a failing test's files stay."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
def test_passes(tmp_path):
    (tmp_path / "big.bin").write_bytes(bytes(1 << 20))

def test_{outcome}(tmp_path):
    (tmp_path / "evidence.txt").write_text("look at me")
    assert {ok}
'''


def _run(tmp_path: Path, ok: bool) -> tuple[int, list[Path]]:
    (tmp_path / "test_sample.py").write_text(TESTS.format(outcome="passes_too" if ok else "fails", ok=ok))
    temproot = tmp_path / "temproot"
    temproot.mkdir()
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": str(temproot)}  # pytest's default base lives here
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "pytest.ini"), "--rootdir",
                          str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_sample.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    return run.returncode, [p for p in temproot.rglob("*") if p.is_file() and p.name != ".lock"]


def test_a_passing_run_leaves_no_files(tmp_path: Path) -> None:
    rc, left = _run(tmp_path, ok=True)
    assert rc == 0 and left == []


def test_a_failing_test_keeps_its_files_only(tmp_path: Path) -> None:
    rc, left = _run(tmp_path, ok=False)
    assert rc == 1 and [p.name for p in left] == ["evidence.txt"]
