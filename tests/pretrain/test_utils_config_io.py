"""siambench.pretrain.utils: the suite-wide config loader and atomic writes."""
import json
import os
import stat

import pytest

from siambench.pretrain.utils.config import CfgNode, ConfigError, load_config, save_config
from siambench.pretrain.utils.io import atomic_open, atomic_write_json


def _defaults() -> CfgNode:
    cfg = CfgNode()
    cfg.OUTPUT_DIR = "out"
    cfg.SOLVER = CfgNode()
    cfg.SOLVER.EPOCHS = 100
    cfg.SOLVER.BASE_LR = 0.05
    return cfg


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  EPOCHS: 200\n  BASE_LR: 0.1\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  EPOCHS: 400\n")
    cfg = load_config(_defaults(), tmp_path / "child.yaml", ["OUTPUT_DIR", "runs/x", "SOLVER.BASE_LR", "0.2"])
    assert (cfg.SOLVER.EPOCHS, cfg.SOLVER.BASE_LR, cfg.OUTPUT_DIR) == (400, 0.2, "runs/x")
    assert cfg.is_frozen()
    saved = save_config(cfg, tmp_path / "run")
    assert load_config(_defaults(), saved).SOLVER.EPOCHS == 400


def test_config_errors_name_the_culprit(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(_defaults(), tmp_path / "missing.yaml")
    (tmp_path / "typo.yaml").write_text("SOLVER:\n  EPOCS: 3\n")
    with pytest.raises(ConfigError, match="typo.yaml"):
        load_config(_defaults(), tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="KEY VALUE"):
        load_config(_defaults(), None, ["SOLVER.EPOCHS"])
    with pytest.raises(ConfigError, match="SOLVER.NOPE"):
        load_config(_defaults(), None, ["SOLVER.NOPE", "1"])


def test_atomic_write_keeps_last_good_file_on_crash(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"AP": 1.0})
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write('{"AP": 2')
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"AP": 1.0}
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()


def test_atomic_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"AP": float("nan")})
    assert not (tmp_path / "r.json").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
