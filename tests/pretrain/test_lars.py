"""LARS update math against hand computations (apex LARC, clip off, as in SimSiam lincls)."""
from __future__ import annotations

import math

import pytest
import torch

from siambench.pretrain.lars import LARS

LR, TRUST, EPS = 0.5, 0.001, 1e-8


def _step(p0: list[float], g: list[float], **kw) -> torch.Tensor:
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = LARS([p], lr=kw.pop("lr", LR), **kw)
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    return p.detach()


def test_update_without_weight_decay_matches_hand_computation():
    # ||p|| = 5, ||g|| = 13: local lr = 0.001 * 5 / (13 + 1e-8)
    new = _step([3.0, 4.0], [5.0, 12.0], momentum=0.9)
    local = TRUST * 5.0 / (13.0 + EPS)
    expected = torch.tensor([3.0 - LR * local * 5.0, 4.0 - LR * local * 12.0], dtype=torch.float64)
    torch.testing.assert_close(new, expected, rtol=0, atol=1e-15)


def test_weight_decay_is_folded_into_gradient_and_denominator():
    wd = 0.1
    new = _step([3.0, 4.0], [5.0, 12.0], momentum=0.9, weight_decay=wd)
    local = TRUST * 5.0 / (13.0 + wd * 5.0 + EPS)
    d = torch.tensor([5.0 + wd * 3.0, 12.0 + wd * 4.0], dtype=torch.float64) * local
    torch.testing.assert_close(new, torch.tensor([3.0, 4.0], dtype=torch.float64) - LR * d, rtol=0, atol=1e-15)


def test_zero_norm_parameter_takes_a_plain_sgd_step_without_weight_decay():
    # The classifier bias starts at 0: LARC leaves its gradient unscaled (and adds no decay).
    new = _step([0.0, 0.0], [1.0, -2.0], momentum=0.9, weight_decay=0.5)
    torch.testing.assert_close(new, torch.tensor([-LR * 1.0, LR * 2.0], dtype=torch.float64))


def test_zero_gradient_leaves_parameter_unchanged_even_with_weight_decay():
    new = _step([3.0, 4.0], [0.0, 0.0], momentum=0.9, weight_decay=0.5)
    torch.testing.assert_close(new, torch.tensor([3.0, 4.0], dtype=torch.float64))


def test_momentum_accumulates_scaled_gradients():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([p], lr=LR, momentum=0.9)
    g1, g2 = torch.tensor([5.0, 12.0], dtype=torch.float64), torch.tensor([-1.0, 2.0], dtype=torch.float64)
    p.grad = g1.clone()
    opt.step()
    p1 = p.detach().clone()
    d1 = g1 * TRUST * 5.0 / (13.0 + EPS)
    p.grad = g2.clone()
    opt.step()
    d2 = g2 * TRUST * p1.norm() / (g2.norm() + EPS)
    torch.testing.assert_close(p.detach(), p1 - LR * (0.9 * d1 + d2), rtol=0, atol=1e-14)


def test_clip_mode_caps_the_rate_at_the_global_lr():
    # Huge trust ratio: clipping limits the effective rate to lr (local factor 1).
    new = _step([3.0, 4.0], [5.0, 12.0], momentum=0.0, trust_coefficient=100.0, clip=True)
    torch.testing.assert_close(new, torch.tensor([3.0 - LR * 5.0, 4.0 - LR * 12.0], dtype=torch.float64))
    # Small trust ratio: clipped mode scales the gradient by local/lr, i.e. an effective rate of local.
    new = _step([3.0, 4.0], [5.0, 12.0], momentum=0.0, clip=True)
    local = TRUST * 5.0 / (13.0 + EPS)
    torch.testing.assert_close(new, torch.tensor([3.0 - local * 5.0, 4.0 - local * 12.0], dtype=torch.float64))


def test_each_tensor_gets_its_own_trust_ratio_and_none_grads_are_skipped():
    w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    b = torch.nn.Parameter(torch.tensor([2.0]))
    frozen = torch.nn.Parameter(torch.tensor([7.0]))
    opt = LARS([w, b, frozen], lr=1.0, momentum=0.0)
    w.grad, b.grad = torch.full((2, 2), 0.5), torch.tensor([4.0])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.eye(2) - TRUST * math.sqrt(2) / 1.0 * 0.5)
    torch.testing.assert_close(b.detach(), torch.tensor([2.0 - TRUST * 2.0 / 4.0 * 4.0]))
    assert frozen.item() == 7.0 and frozen not in opt.state


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(0)
    grads = [torch.randn(4, 3) for _ in range(4)]
    init = torch.randn(4, 3)

    def run(resume_after: int | None) -> torch.Tensor:
        p = torch.nn.Parameter(init.clone())
        opt = LARS([p], lr=0.3, weight_decay=1e-4)
        for i, g in enumerate(grads):
            if i == resume_after:  # rebuild the optimizer from its state, as --resume does
                state = opt.state_dict()
                opt = LARS([p], lr=0.3, weight_decay=1e-4)
                opt.load_state_dict(state)
            p.grad = g.clone()
            opt.step()
        return p.detach()

    torch.testing.assert_close(run(None), run(2), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(lr=0.1, momentum=1.0), dict(lr=0.1, weight_decay=-1.0),
                                    dict(lr=0.1, trust_coefficient=0.0)])
def test_invalid_hyperparameters_are_rejected(kwargs):
    with pytest.raises(ValueError, match="LARS"):
        LARS([torch.nn.Parameter(torch.ones(1))], **kwargs)


def test_rule_and_clip_are_validated():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="rule must be one of larc, byol, simclr"):
        LARS([p], lr=0.1, rule="lamb")
    with pytest.raises(ValueError, match="clip is LARC's mode"):
        LARS([p], lr=0.1, rule="simclr", clip=True)


def test_vectorised_step_equals_the_per_parameter_loop_with_far_fewer_ops():
    from siambench.benchmarks.speed.bench_lars import bench

    r = bench("resnet18", width=8, rule="larc", repeats=1)
    assert r["max_abs_diff"] == 0.0  # bit-identical to the per-parameter LARC loop
    assert r["loop_ops"] >= 15 * r["params"] and r["foreach_ops"] < 2 * r["params"]  # 62 tensors: 1000+ vs ~190


def test_state_dict_saved_without_a_rule_loads_and_steps():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([p], lr=0.1, rule="simclr")
    state = opt.state_dict()
    del state["param_groups"][0]["rule"]  # as written by the LARS that had one rule
    opt.load_state_dict(state)
    p.grad = torch.tensor([1.0, 1.0])
    opt.step()
    assert opt.param_groups[0]["rule"] == "simclr" and torch.isfinite(p).all()
