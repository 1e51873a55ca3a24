"""SimCLR's loss, projection head and LARS step against direct transcriptions of the official code.

Source: google-research/simclr at commit 383d4143fd8cf7879ae10f1046a9baeb753ff438, files
``objective.py`` (``add_contrastive_loss``), ``model_util.py`` (``projection_head``,
``linear_layer``, ``get_optimizer``: exclusions ``batch_normalization``, ``bias``) and
``lars_optimizer.py`` (``LARSOptimizer.apply_gradients``, ``classic_momentum=True``).
The transcriptions below are written from those files in float64 torch, not from our code.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siambench.pretrain.lars import LARS
from siambench.pretrain.methods.base import split_decay_groups
from siambench.pretrain.methods.encoders import build_encoder
from siambench.pretrain.methods.simclr import SimCLR, nt_xent

LARGE_NUM = 1e9


def official_contrastive_loss(hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """``add_contrastive_loss`` on one replica: hidden is (2N)xC, [view 1; view 2]."""
    hidden = F.normalize(hidden, dim=-1)
    h1, h2 = hidden.chunk(2)
    n = h1.shape[0]
    labels = F.one_hot(torch.arange(n), 2 * n).to(hidden.dtype)
    masks = F.one_hot(torch.arange(n), n).to(hidden.dtype)
    logits_aa = h1 @ h1.T / temperature - masks * LARGE_NUM
    logits_bb = h2 @ h2.T / temperature - masks * LARGE_NUM
    logits_ab = h1 @ h2.T / temperature
    logits_ba = h2 @ h1.T / temperature

    def softmax_ce(lab, logits):  # tf.losses.softmax_cross_entropy: mean over the batch
        return -(lab * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()

    return softmax_ce(labels, torch.cat([logits_ab, logits_aa], 1)) + \
        softmax_ce(labels, torch.cat([logits_ba, logits_bb], 1))


def official_lars_step(params, grads, momenta, lr, wd, excluded, momentum=0.9, eeta=1e-3):
    """``apply_gradients`` with classic momentum: v = m v + lr * trust * (g + wd w); w -= v."""
    new_p, new_v = [], []
    for w, g, v, ex in zip(params, grads, momenta, excluded):
        if not ex and wd:
            g = g + wd * w
        trust = 1.0
        if not ex:
            w_norm, g_norm = torch.linalg.norm(w), torch.linalg.norm(g)
            trust = torch.where(w_norm > 0, torch.where(g_norm > 0, eeta * w_norm / g_norm, 1.0), 1.0)
        nv = momentum * v + lr * trust * g
        new_p.append(w - nv)
        new_v.append(nv)
    return new_p, new_v


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_loss_is_the_official_sum_of_two_cross_entropies(temperature):
    gen = torch.Generator().manual_seed(1)
    z1, z2 = (torch.randn(6, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    ours = nt_xent(z1, z2, temperature)
    official = official_contrastive_loss(torch.cat([z1, z2]), temperature)
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-12)


def test_projection_head_last_bn_has_no_beta_and_matches_official_layers():
    torch.manual_seed(0)
    model = SimCLR(build_encoder("resnet18", width=8), dim=4, hidden_dim=16, proj_layers=3).double()
    head = model.encoder.fc
    trainable = [n for n, p in head.named_parameters() if p.requires_grad]
    # nl_0, nl_1: dense (no bias) + BN(gamma, beta); nl_2: dense (no bias) + BN(gamma only, center=False)
    assert trainable == ["0.weight", "1.weight", "1.bias", "3.weight", "4.weight", "4.bias", "6.weight", "7.weight"]
    x = torch.randn(8, head[0].in_features, dtype=torch.float64)

    def bn(h, layer, center):  # tf.layers.batch_normalization in training mode, eps 1e-5
        out = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5) * layer.weight
        return out + layer.bias if center else out

    h = torch.relu(bn(x @ head[0].weight.T, head[1], True))
    h = torch.relu(bn(h @ head[3].weight.T, head[4], True))
    expected = bn(h @ head[6].weight.T, head[7], False)
    torch.testing.assert_close(head(x), expected, rtol=1e-10, atol=1e-10)


def test_lars_steps_match_official_classic_momentum_with_a_changing_lr():
    gen = torch.Generator().manual_seed(2)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    gamma = torch.nn.Parameter(torch.rand(4, generator=gen, dtype=torch.float64) + 0.5)  # a BN scale: excluded
    zero = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))  # zero norm: trust 1
    named = [("w", w), ("bn.weight", gamma), ("z", zero)]
    wd = 1e-2
    groups = split_decay_groups(named)
    for grp in groups:
        grp.setdefault("weight_decay", wd)
    opt = LARS(groups, lr=1.0, momentum=0.9, weight_decay=wd, rule="simclr")
    ref_p = [p.detach().clone() for _, p in named]
    ref_v = [torch.zeros_like(p) for p in ref_p]
    for lr in (0.5, 2.0, 0.1):  # warmup-like changes: lr inside the momentum matters
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in ref_p]
        for (_, p), gr in zip(named, grads):
            p.grad = gr.clone()
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.step()
        ref_p, ref_v = official_lars_step(ref_p, grads, ref_v, lr, wd, excluded=[False, True, False])
    for (_, p), r in zip(named, ref_p):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)
