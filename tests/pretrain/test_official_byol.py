"""BYOL's loss, MLP heads, LARS step, presets and colour jitter against transcriptions of the official code.

Source: deepmind/deepmind-research at commit d8df4155dc72fc3dfff9f857412168993348ca23, files
``byol/byol_experiment.py`` (loss: ``regression_loss`` of both directions, averaged over the
batch; optimizer filters ``exclude_bias_and_norm``), ``byol/utils/helpers.py``
(``regression_loss``, ``l2_normalize``), ``byol/utils/networks.py`` (``MLP``: Linear with bias,
BN, ReLU, Linear without bias), ``byol/utils/optimizers.py`` (``lars``: ``add_weight_decay``,
``scale_by_lars``, ``optax.scale(-lr)``), ``byol/configs/byol.py`` (``_LR_PRESETS``,
``_WD_PRESETS``, ``_EMA_PRESETS``) and ``byol/utils/augmentations.py`` (colour jitter).
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import pytest
import torch

from siambench.pretrain.config import get_cfg
from siambench.pretrain.data.byol_color import ByolColorJitter, byol_jitter_tensor
from siambench.pretrain.lars import LARS
from siambench.pretrain.methods.base import split_decay_groups
from siambench.pretrain.methods.byol import BYOL
from siambench.pretrain.methods.encoders import build_encoder

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain"


def official_regression_loss(x, y, eps=1e-12):
    """helpers.regression_loss: l2_normalize both (x * rsqrt(max(sum x^2, eps))), then sum of squares."""
    nx = x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=eps))
    ny = y * torch.rsqrt(torch.clamp((y * y).sum(-1, keepdim=True), min=eps))
    return ((nx - ny) ** 2).sum(-1)


def official_lars_step(params, grads, mus, lr, wd, filt, momentum=0.9, eta=1e-3):
    """optax.chain(add_weight_decay, scale_by_lars, scale(-lr)), filter False = bias or norm."""
    new_p, new_mu = [], []
    for p, g, mu, f in zip(params, grads, mus, filt):
        u = g + wd * p if f else g
        if f:
            pn, un = torch.linalg.norm(p), torch.linalg.norm(u)
            u = u * torch.where(pn > 0.0, torch.where(un > 0, eta * pn / un, 1.0), 1.0)
        m = momentum * mu + u
        new_p.append(p + (-lr) * m)
        new_mu.append(m)
    return new_p, new_mu


def _tiny_byol():
    torch.manual_seed(0)
    return BYOL(build_encoder("resnet18", width=8), hidden_dim=16, dim=8).double()


def test_loss_is_the_official_symmetrised_regression_loss():
    model = _tiny_byol()
    gen = torch.Generator().manual_seed(3)
    p1, p2, t1, t2 = (torch.randn(5, 8, generator=gen, dtype=torch.float64) for _ in range(4))
    loss, _ = model.loss(([p1, p2], [t1, t2]), None)
    official = (official_regression_loss(p1, t2) + official_regression_loss(p2, t1)).mean()
    torch.testing.assert_close(loss, official.float(), rtol=1e-6, atol=1e-6)


def test_projector_and_predictor_output_linear_has_no_bias_and_matches_official_mlp():
    model = _tiny_byol()
    for mlp in (model.encoder.fc, model.predictor):
        assert mlp[-1].bias is None
        x = torch.randn(6, mlp[0].in_features, dtype=torch.float64)
        h = x @ mlp[0].weight.T  # official hidden bias: 0 at init and removed by the BN (gradient 0)
        h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5) * mlp[1].weight + mlp[1].bias
        torch.testing.assert_close(mlp(x), torch.relu(h) @ mlp[3].weight.T, rtol=1e-10, atol=1e-10)


def test_lars_steps_match_official_optax_chain():
    gen = torch.Generator().manual_seed(4)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, generator=gen, dtype=torch.float64))  # a bias: no wd, no adaptation
    named = [("w", w), ("b", b)]
    wd = 1e-2
    opt = LARS(split_decay_groups(named), lr=1.0, momentum=0.9, weight_decay=wd, rule="byol")
    ref_p, ref_mu = [p.detach().clone() for _, p in named], [torch.zeros(4, 3, dtype=torch.float64),
                                                              torch.zeros(4, dtype=torch.float64)]
    for lr in (0.5, 2.0, 0.1):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in ref_p]
        for (_, p), g in zip(named, grads):
            p.grad = g.clone()
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.step()
        ref_p, ref_mu = official_lars_step(ref_p, grads, ref_mu, lr, wd, filt=[True, False])
    for (_, p), r in zip(named, ref_p):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, lr, wd, ema", [("byol_r50_100ep", 0.45, 1e-6, 0.99),
                                               ("byol_r50_200ep", 0.375, 1e-6, 0.99)])
def test_paper_configs_use_the_official_presets(name, lr, wd, ema):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    s = cfg.SOLVER
    assert (s.BASE_LR, s.WEIGHT_DECAY, cfg.MODEL.BYOL.TAU_BASE) == (pytest.approx(lr), pytest.approx(wd), ema)
    assert s.LARS_RULE == "byol" and s.EXCLUDE_BIAS_BN and cfg.MODEL.ZERO_INIT_RESIDUAL


def _official_hsv(x):  # the TF adjust_saturation kernel's HSV, as colorsys computes it
    flat = x.permute(1, 2, 0).reshape(-1, 3).tolist()
    return torch.tensor([colorsys.rgb_to_hsv(*px) for px in flat], dtype=x.dtype).T.reshape(x.shape)


def _from_hsv(hsv):
    flat = hsv.permute(1, 2, 0).reshape(-1, 3).tolist()
    return torch.tensor([colorsys.hsv_to_rgb(*px) for px in flat], dtype=hsv.dtype).T.reshape(hsv.shape)


def test_colour_jitter_ops_match_official_formulas():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 6, 7, generator=gen, dtype=torch.float64)
    ops = {op.__name__.strip("_"): op for op, _ in _sampled_ops()}
    clip = lambda t: t.clamp(0.0, 1.0)  # noqa: E731
    brightness = clip(x + 0.3)  # adjust_brightness: x + delta
    mean = x.mean(dim=(1, 2), keepdim=True)
    contrast = clip(1.2 * (x - mean) + mean)  # adjust_contrast: per-channel mean
    h, s, v = _official_hsv(x)
    saturation = clip(_from_hsv(torch.stack([h, (s * 0.7).clamp(0, 1), v])))
    hue = clip(_from_hsv(torch.stack([(h + 0.05) % 1.0, s, v])))
    for key, value, expected in [("brightness", 0.3, brightness), ("contrast", 1.2, contrast),
                                 ("saturation", 0.7, saturation), ("hue", 0.05, hue)]:
        torch.testing.assert_close(byol_jitter_tensor(x, [(ops[key], value)]), expected, rtol=0, atol=1e-6)


def _sampled_ops():
    torch.manual_seed(0)
    return ByolColorJitter(0.4, 0.4, 0.2, 0.1).sample()


def test_brightness_is_an_additive_delta_within_the_official_range():
    torch.manual_seed(0)
    deltas = [v for _ in range(200) for op, v in ByolColorJitter(0.4, 0.0, 0.0, 0.0).sample()]
    assert len(deltas) == 200 and -0.4 <= min(deltas) < -0.3 and 0.3 < max(deltas) <= 0.4
    assert {op.__name__ for op, _ in _sampled_ops()} == {"_brightness", "_contrast", "_saturation", "_hue"}
