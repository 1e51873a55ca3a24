"""lr scaling, cosine schedule, fixed predictor lr."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from siambench.pretrain.builder import build_model
from siambench.pretrain.schedule import adjust_learning_rate, cosine_lr, lr_at, scaled_lr
from siambench.pretrain.utils.config import load_config


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


# ----------------------------------------------------------------------------- one schedule for every engine
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _old_lincls_lr(init_lr: float, epoch: int, epochs: int, schedule: str) -> float:
    """lincls.py's own per-epoch cosine before the schedule was shared (transcribed)."""
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) if schedule == "cosine" else init_lr


def _old_supervised_lr(s, epoch: float) -> float:
    """supervised.py's own warm-up + step/cosine before the schedule was shared (transcribed)."""
    base = s.BASE_LR * s.BATCH_SIZE / 256
    if epoch < s.WARMUP_EPOCHS:
        return base * epoch / s.WARMUP_EPOCHS
    if s.SCHEDULE == "step":
        return base * 0.1 ** (int(epoch) // s.STEP_SIZE)
    t = (epoch - s.WARMUP_EPOCHS) / max(s.EPOCHS - s.WARMUP_EPOCHS, 1e-8)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def _fractional_epochs(epochs: int, steps: int = 7) -> list[float]:
    return [e + i / steps for e in range(epochs) for i in range(steps)]


@pytest.mark.parametrize("name", ["imagenet_r50", "synth_r18"])
@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_lincls_lr_sequence_unchanged(name, schedule):
    from siambench.pretrain.eval_config import get_lincls_defaults

    cfg = load_config(get_lincls_defaults(), CONFIGS / "lincls" / f"{name}.yaml", ["SOLVER.SCHEDULE", schedule])
    init_lr, epochs = scaled_lr(cfg.SOLVER.BASE_LR, cfg.SOLVER.BATCH_SIZE), cfg.SOLVER.EPOCHS
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=init_lr)
    new = [adjust_learning_rate(opt, init_lr, e, epochs, schedule=cfg.SOLVER.SCHEDULE) for e in range(epochs)]
    assert new == [_old_lincls_lr(init_lr, e, epochs, schedule) for e in range(epochs)]  # bit for bit
    assert opt.param_groups[0]["lr"] == new[-1]


@pytest.mark.parametrize("name", ["imagenet_r50_90ep", "synth_r18"])
@pytest.mark.parametrize("opts", [[], ["SOLVER.SCHEDULE", "cosine", "SOLVER.WARMUP_EPOCHS", "5"],
                                  ["SOLVER.SCHEDULE", "step", "SOLVER.WARMUP_EPOCHS", "2", "SOLVER.STEP_SIZE", "3"]])
def test_supervised_lr_sequence_unchanged(name, opts):
    from siambench.pretrain.eval_config import get_supervised_defaults
    from siambench.pretrain.supervised import lr_at_epoch

    cfg = load_config(get_supervised_defaults(), CONFIGS / "supervised" / f"{name}.yaml", opts)
    epochs = _fractional_epochs(cfg.SOLVER.EPOCHS)
    assert [lr_at_epoch(cfg, e) for e in epochs] == [_old_supervised_lr(cfg.SOLVER, e) for e in epochs]


def test_pretrain_lr_sequence_is_cosine_lr_for_every_config(tiny_cfg):
    from siambench.pretrain.config import get_cfg
    from siambench.pretrain.engine import TrainContext

    model = build_model(tiny_cfg())
    for f in sorted((CONFIGS / "pretrain").rglob("*.yaml")):
        s = load_config(get_cfg(), f).SOLVER
        init_lr = scaled_lr(s.BASE_LR, s.BATCH_SIZE)
        ctx = TrainContext(device=torch.device("cpu"), init_lr=init_lr, epochs=s.EPOCHS, fix_pred_lr=s.FIX_PRED_LR,
                           warmup_epochs=s.WARMUP_EPOCHS, start_lr=s.START_LR, final_lr=s.FINAL_LR)
        opt = torch.optim.SGD(model.param_groups(), lr=init_lr)
        for e in _fractional_epochs(s.EPOCHS, steps=3):
            lr = ctx.lr_at(opt, e)
            assert lr == cosine_lr(init_lr, e, s.EPOCHS, s.WARMUP_EPOCHS, s.START_LR, s.FINAL_LR), (f.name, e)
            assert opt.param_groups[1]["lr"] == (init_lr if s.FIX_PRED_LR else lr)


def test_lr_at_rejects_an_unknown_schedule():
    with pytest.raises(ValueError, match="SOLVER.SCHEDULE must be one of cosine, step, constant, got 'poly'"):
        lr_at(0.1, 0, 10, "poly")
