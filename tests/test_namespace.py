"""Our code lives in the `siambench` namespace: a user's own pretrain/ cannot shadow it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_users_pretrain_folder_does_not_shadow_ours(tmp_path: Path) -> None:
    for name in ("pretrain", "transfer", "benchmarks", "convert"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    run = subprocess.run([sys.executable, "-m", "siambench.pretrain", "--help"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "siambench pretrain" in run.stdout


def test_packages_are_under_the_namespace() -> None:
    import siambench.benchmarks.cli as cli

    for module, _ in cli.COMMANDS.values():
        assert module.startswith("siambench.")
