"""Fixtures of the benchmarks tests: fixture runs directories (see results_fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from results_fixtures import make_synth_runs


@pytest.fixture
def synth_runs(tmp_path: Path) -> Path:
    """A synthetic-data runs dir: SimSiam (3 trials), supervised, scratch, lincls/knn, metrics."""
    return make_synth_runs(tmp_path)
