"""Fixtures shared by the transfer tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, writable copy of the session dataset, active via $SIAMBENCH_SYNTH."""
    root = tmp_path / "synth"
    shutil.copytree(synth_root, root)
    monkeypatch.setenv("SIAMBENCH_SYNTH", str(root))
    return root


@pytest.fixture(autouse=True, scope="session")
def _registered_datasets() -> None:
    """The ``synth_*`` names, registered as siambench's entry points do (importing registers nothing)."""
    from siambench.transfer.datasets import register_datasets

    register_datasets()
