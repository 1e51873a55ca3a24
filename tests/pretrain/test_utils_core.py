"""The suite's core (pretrain/utils): config as data, the _BASE_ walk, errors -> exit 2, the weights-only reader."""
import hashlib
import os
from pathlib import Path

import pytest
import torch

from siambench.pretrain.utils.config import (CfgNode, ConfigError, base_chain, config_diff, flatten, load_config,
                                             load_yaml_chain)
from siambench.pretrain.utils.errors import (CheckpointError, ConversionError, UnsafeCheckpointError, UserError,
                                             exit_2_on_user_error)
from siambench.pretrain.utils.io import load_weights_only, sha256_file



def test_flatten_nested_mappings_and_cfgnodes_alike():
    cfg = CfgNode({"SOLVER": {"BASE_LR": 0.05, "STEPS": (3, 4)}, "SEED": 1})
    plain = {"SOLVER": {"BASE_LR": 0.05, "STEPS": [3, 4]}, "SEED": 1}
    assert flatten(cfg) == flatten(plain) == {"SOLVER.BASE_LR": 0.05, "SOLVER.STEPS": [3, 4], "SEED": 1}


def test_config_diff_union_ignore_and_old_keys_only():
    old = {"SOLVER": {"BASE_LR": 0.05, "EPOCHS": 100}, "MONITOR": {"KNN": True}, "SEED": 0}
    new = {"SOLVER": {"BASE_LR": 0.1, "EPOCHS": 200}, "MONITOR": {"KNN": False}, "SEED": 0, "NEW": 1}
    assert config_diff(old, new) == ["MONITOR.KNN: True -> False", "NEW: '<absent>' -> 1",
                                     "SOLVER.BASE_LR: 0.05 -> 0.1", "SOLVER.EPOCHS: 100 -> 200"]
    assert config_diff(old, new, ignore=("SOLVER.EPOCHS", "MONITOR."), old_keys_only=True) == [
        "SOLVER.BASE_LR: 0.05 -> 0.1"]
    assert config_diff(old, old) == []


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chain_follows_relative_bases_and_merges_like_the_loader(tmp_path):
    _write(tmp_path / "base.yaml", "SOLVER:\n  EPOCHS: 200\n  BASE_LR: 0.1\nSEED: 3\n")
    _write(tmp_path / "mid" / "mid.yaml", "_BASE_: ../base.yaml\nSOLVER:\n  EPOCHS: 300\n")
    child = _write(tmp_path / "mid" / "sub" / "child.yaml", "_BASE_: ../mid.yaml\nSOLVER:\n  BASE_LR: 0.2\n")
    assert [p.resolve() for p in base_chain(child)] == [child, tmp_path / "mid" / "mid.yaml", tmp_path / "base.yaml"]
    assert base_chain(child)[1] == tmp_path / "mid" / "sub" / ".." / "mid.yaml"  # joined as fvcore joins it
    assert load_yaml_chain(child) == {"SOLVER": {"EPOCHS": 300, "BASE_LR": 0.2}, "SEED": 3}
    defaults = CfgNode({"SOLVER": {"EPOCHS": 1, "BASE_LR": 0.0}, "SEED": 0})
    loaded = load_config(defaults, child)  # fvcore's own walk agrees
    assert flatten(load_yaml_chain(child)) == flatten(loaded)


def test_base_chain_stops_at_a_missing_or_broken_file(tmp_path):
    a = _write(tmp_path / "a.yaml", "_BASE_: gone.yaml\nX: 1\n")
    assert base_chain(a) == [a] and load_yaml_chain(a) == {"X": 1}
    broken = _write(tmp_path / "b.yaml", "X: [1\n")
    assert base_chain(broken) == [broken] and load_yaml_chain(broken) == {}
    assert base_chain(tmp_path / "nope.yaml") == [] and load_yaml_chain(tmp_path / "nope.yaml") == {}


def test_base_chain_loop_is_one_config_error(tmp_path):
    a = _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a.yaml: the _BASE_ chain loops \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"):
        base_chain(a)
    with pytest.raises(ConfigError, match="loops"):
        load_yaml_chain(a)
    with pytest.raises(ConfigError, match="loops"):  # the loader says so too (fvcore alone would recurse)
        load_config(CfgNode(), a)
    self_loop = _write(tmp_path / "s.yaml", "_BASE_: s.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        base_chain(self_loop)
    up = _write(tmp_path / "d" / "u.yaml", "_BASE_: ../d/u.yaml\n")  # the same file by a longer path each time
    with pytest.raises(ConfigError, match="loops"):
        base_chain(up)


def test_every_bad_input_error_is_a_user_error():
    from siambench.convert.errors import VerificationError
    from siambench.pretrain.data.folder import CorruptDataError, DataRootError
    from siambench.pretrain.utils.run_dir import RunDirError

    for cls in (ConfigError, CheckpointError, ConversionError, UnsafeCheckpointError, DataRootError, RunDirError,
                CorruptDataError, VerificationError):
        assert issubclass(cls, UserError), cls
    # the old bases stay, so every existing ``except`` still catches them
    assert issubclass(UnsafeCheckpointError, CheckpointError) and issubclass(UnsafeCheckpointError, ConversionError)
    assert issubclass(ConfigError, ValueError) and issubclass(CorruptDataError, RuntimeError)


def test_exit_2_on_user_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    @exit_2_on_user_error("siambench demo")
    def main(argv=None):
        if argv == ["bad"]:
            raise ConfigError("X.Y: bad value; set it to 1")
        if argv == ["bug"]:
            raise KeyError("a bug")
        return 0

    assert main([]) == 0
    assert main(["bad"]) == 2
    assert capsys.readouterr().err == "siambench demo: error: X.Y: bad value; set it to 1\n"
    with pytest.raises(KeyError):  # not bad input: the traceback stays
        main(["bug"])
    monkeypatch.setenv("SIAMBENCH_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["bad"])


def test_sha256_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path, chunk=4096) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_load_weights_only_reads_and_refuses_in_one_line(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(load_weights_only(good)["w"], torch.ones(2))
    assert torch.equal(load_weights_only(good, mmap=True)["w"], torch.ones(2))
    cases = {"missing.pth": (None, "no such checkpoint file"), "empty.pth": (b"", "is empty"),
             "text.pth": (b"hello", "not a PyTorch checkpoint"),
             "cut.pth": (good.read_bytes()[:60], "not a readable PyTorch checkpoint .*truncated")}
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(ConversionError, match=message) as e:
            load_weights_only(tmp_path / name, error=ConversionError, fix="re-save it")
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)
    marker = tmp_path / "pwned"
    torch.save({"x": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="refused.*arbitrary unpickling.*do this instead"):
        load_weights_only(tmp_path / "evil.pth", unsafe_fix="do this instead")
    assert not marker.exists()
