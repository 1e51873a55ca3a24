"""An encoder whose residual branches are off (every block's last-BN gamma near 0) is converted with a warning."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from siambench.convert.cli import main
from siambench.convert.residual import NEAR_ZERO, last_bn_gammas, residual_warning


def _checkpoint(tmp_path: Path, resnet_state, gamma: float | None) -> Path:
    state = dict(resnet_state("resnet50", seed=0))
    if gamma is not None:  # the official zero-init after a short run: each block's bn3 gamma stays small
        for k in state:
            if k.endswith("bn3.weight"):
                state[k] = torch.full_like(state[k], gamma)
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.encoder.{k}": v for k, v in state.items()}, "arch": "resnet50"}, path)
    return path


def test_convert_warns_with_the_gamma_statistics_and_the_measured_consequence(tmp_path, resnet_state, capsys):
    src = _checkpoint(tmp_path, resnet_state, gamma=0.02)
    assert main([str(src), str(tmp_path / "off.pkl")]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "residual branches are off" in err
    assert "0.02-0.02 (median 0.02) over 16 blocks" in err and "3.8 AP50" in err and "45.5" in err
    assert "MODEL.ZERO_INIT_RESIDUAL False" in err and len(err.strip().splitlines()) == 1
    with open(tmp_path / "off.pkl", "rb") as f:
        prov = pickle.load(f)["provenance"]
    assert prov["last_bn_gamma"]["blocks"] == 16 and prov["last_bn_gamma"]["max"] == pytest.approx(0.02)


def test_no_warning_for_trained_branches(tmp_path, resnet_state, capsys):
    assert main([str(_checkpoint(tmp_path, resnet_state, gamma=None)), str(tmp_path / "on.pkl")]) == 0
    assert "residual" not in capsys.readouterr().err


def test_one_block_with_a_live_branch_is_enough():
    model = {f"res{s}.{b}.conv{c}.norm.weight": torch.full((4,), 0.01).numpy()
             for s in (2, 3) for b in (0, 1) for c in (1, 2, 3)}
    model["res2.0.conv1.norm.weight"] = torch.ones(4).numpy()  # not a last BN: ignored
    assert residual_warning(model, "w.pkl") is not None
    model["res3.1.conv3.norm.weight"] = torch.full((4,), 2 * NEAR_ZERO).numpy()
    assert residual_warning(model, "w.pkl") is None
    basic = {"backbone.res2.0.conv1.norm.weight": torch.ones(4).numpy(),
             "backbone.res2.0.conv2.norm.weight": torch.zeros(4).numpy()}  # a BasicBlock: conv2 is the last
    assert last_bn_gammas(basic).per_block == {"res2.0": 0.0}
