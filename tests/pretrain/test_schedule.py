"""lr scaling, cosine schedule, fixed predictor lr."""
from __future__ import annotations

import math

import pytest
import torch

from siambench.pretrain.builder import build_model
from siambench.pretrain.schedule import adjust_learning_rate, cosine_lr, scaled_lr



def test_linear_scaling_rule():
    assert scaled_lr(0.05, 512) == pytest.approx(0.1)
    assert scaled_lr(0.05, 256) == pytest.approx(0.05)
    assert scaled_lr(0.05, 64) == pytest.approx(0.0125)


def test_cosine_values():
    assert cosine_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert cosine_lr(0.1, 50, 100) == pytest.approx(0.05)
    assert cosine_lr(0.1, 25, 100) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(0.1, 100, 100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fix_pred_lr", [True, False])
def test_fixed_predictor_lr(fix_pred_lr, tiny_cfg):
    model = build_model(tiny_cfg())
    opt = torch.optim.SGD(model.param_groups(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for epoch in (0, 30, 90):
        lr = adjust_learning_rate(opt, 0.1, epoch, 100, fix_pred_lr)
        enc, pred = opt.param_groups
        assert enc["name"] == "encoder" and enc["lr"] == pytest.approx(cosine_lr(0.1, epoch, 100)) == lr
        assert pred["lr"] == pytest.approx(0.1 if fix_pred_lr else lr)


def test_every_pretrain_config_loads():
    from pathlib import Path

    from siambench.pretrain.config import get_cfg
    from siambench.pretrain.utils.config import load_config

    files = sorted((Path(__file__).resolve().parents[2] / "configs" / "pretrain").rglob("*.yaml"))
    assert len(files) >= 20
    cfgs = {f.stem: load_config(get_cfg(), f) for f in files}
    base = cfgs["simsiam_r50_100ep"]
    assert (base.MODEL.ARCH, base.SOLVER.BATCH_SIZE, base.SOLVER.BASE_LR, base.SOLVER.FIX_PRED_LR) == (
        "resnet50", 512, 0.05, True)
    assert cfgs["simsiam_r50_800ep"].SOLVER.EPOCHS == 800 and cfgs["simsiam_r50_100ep_b256"].SOLVER.BATCH_SIZE == 256
    assert not cfgs["no_stop_grad"].MODEL.STOP_GRAD and cfgs["kstep_epoch"].HYPOTHESIS.K_STEPS == -1
