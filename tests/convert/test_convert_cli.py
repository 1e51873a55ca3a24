"""``siambench convert`` on bad input: one line naming the file, exit code 2, nothing written."""
from pathlib import Path

import pytest
import torch

from siambench.benchmarks import cli
from siambench.convert.cli import main


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"module.encoder.conv1.weight": torch.zeros(8, 3, 7, 7)}}, good)
    files = {"empty": b"", "garbage": b"not a checkpoint at all\n", "truncated": good.read_bytes()[:100]}
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.pth"
        out[name].write_bytes(content)
    out["missing"] = tmp_path / "missing.pth"
    return out


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "missing"])
def test_bad_checkpoint_exits_2_in_one_line_and_writes_nothing(kind, tmp_path, capsys):
    src = _bad_files(tmp_path)[kind]
    out = tmp_path / "out" / "w.pkl"
    assert main([str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siambench convert: error: ") and str(src) in err and err.count("\n") == 1
    assert "Traceback" not in err and not out.parent.exists()
    assert cli.main(["convert", str(src), str(out)]) == 2  # the same through the dispatcher


def test_wrong_output_suffix_exits_2(tmp_path, capsys):
    src = _bad_files(tmp_path)["garbage"]
    assert main([str(src), str(tmp_path / "w.pth")]) == 2
    assert "must end in .pkl" in capsys.readouterr().err
