"""One run setup for every command: guarded OUTPUT_DIR, config.yaml, log file, seeds."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from siambench.pretrain.data.folder import DataRootError
from siambench.pretrain.eval_config import get_lincls_defaults
from siambench.pretrain.utils.run_dir import RunDirError
from siambench.pretrain.run_setup import load_run, setup_run
from siambench.pretrain.utils.dist import DistInfo


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_setup_run_writes_config_log_and_seeds(tiny_cfg, tmp_path):
    cfg = tiny_cfg("OUTPUT_DIR", str(tmp_path / "a"), "SEED", "7")
    run = setup_run(cfg, DistInfo(), "pretrain", splits=("train",))
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"config.yaml", "log.txt"}
    assert "SEED: 7" in (tmp_path / "a" / "config.yaml").read_text()
    assert "rank 0 of world size 1 on cpu" in (tmp_path / "a" / "log.txt").read_text()
    assert run.is_main and run.device == torch.device("cpu") and "torch" in str(run.env)
    first = _draws()
    setup_run(tiny_cfg("OUTPUT_DIR", str(tmp_path / "b"), "SEED", "7"), DistInfo(), "pretrain", splits=("train",))
    assert _draws() == first  # Python, NumPy and torch seeded alike (SEED + rank)
    (tmp_path / "b" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunDirError, match="Refusing to replace it"):  # another run's files are never replaced
        setup_run(tiny_cfg("OUTPUT_DIR", str(tmp_path / "b")), DistInfo(), "pretrain", splits=("train",))


def test_load_run_bad_data_root_creates_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataRootError):
        load_run(get_lincls_defaults(), None, ["DATA.ROOT", str(tmp_path / "missing"), "OUTPUT_DIR", str(out),
                                               "MODEL.DEVICE", "cpu"], command="lincls")
    assert not out.exists()
