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


def _full_disk(monkeypatch):
    """Every atomic write goes to /dev/full (ENOSPC on write/flush), as on a full disk."""
    def to_dev_full(fd, mode, **kw):
        os.close(fd)
        return open("/dev/full", mode, **kw)

    monkeypatch.setattr(os, "fdopen", to_dev_full)


def test_full_disk_error_names_the_target(tmp_path, monkeypatch):
    import errno

    import torch

    from siambench.benchmarks.cli import _os_error_line
    from siambench.pretrain.utils.io import atomic_torch_save

    _full_disk(monkeypatch)
    for write, target in ((lambda p: atomic_write_json(p, {"a": 1}), tmp_path / "r.json"),
                          (lambda p: atomic_torch_save({"w": torch.zeros(100_000)}, p), tmp_path / "c.pth")):
        with pytest.raises(OSError) as info:
            write(target)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
        assert str(target) in _os_error_line(info.value) and "no space left" in _os_error_line(info.value)
        assert list(tmp_path.iterdir()) == []  # no temp file left


def test_read_only_target_is_named_not_the_temp_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(prefix, suffix, dir):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, f"{prefix}abc{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as info:
        atomic_write_json(tmp_path / "config.json", {})
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "config.json")
