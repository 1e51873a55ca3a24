"""SwAV's multi-crop forward, loss, LARC step and warmup against transcriptions of the official code.

Source: facebookresearch/swav at commit 06b1b7cbaf6ba2a792300d79c7299db98b93b7f9, files
``src/resnet50.py`` (``ResNet.forward``: ``forward_backbone`` per run of same-size crops, then
``forward_head`` once on the concatenation), ``main_swav.py`` (``distributed_sinkhorn``, the
swapped loss loop, ``LARC(trust_coefficient=0.001, clip=False)`` around SGD with weight
decay, the ``np.linspace`` warmup + cosine ``lr_schedule``), and NVIDIA apex
``apex/parallel/LARC.py`` (``LARC.step``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from siambench.pretrain.lars import LARS
from siambench.pretrain.methods.encoders import build_encoder
from siambench.pretrain.methods.swav import SwAV
from siambench.pretrain.schedule import cosine_lr


def _backbone(enc, x):
    x = enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))
    for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4):
        x = layer(x)
    return torch.flatten(enc.avgpool(x), 1)


def official_forward(model, inputs):
    """resnet50.ResNet.forward: idx_crops from unique_consecutive sizes; head and prototypes once."""
    sizes = torch.tensor([inp.shape[-1] for inp in inputs])
    idx_crops = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0)
    start, output = 0, None
    for end in idx_crops.tolist():
        out = _backbone(model.encoder, torch.cat(inputs[start:end]))
        output = out if output is None else torch.cat((output, out))
        start = end
    z = F.normalize(model.encoder.fc(output), dim=1, p=2)
    return z, model.prototypes(z)


def official_sinkhorn(out, epsilon, iters):
    Q = torch.exp(out / epsilon).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iters):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def official_loss(output, bs, nmb_crops, crops_for_assign, temperature=0.1):
    loss = 0
    for crop_id in crops_for_assign:
        with torch.no_grad():
            q = official_sinkhorn(output[bs * crop_id: bs * (crop_id + 1)].detach(), 0.05, 3)[-bs:]
        subloss = 0
        for v in np.delete(np.arange(np.sum(nmb_crops)), crop_id):
            x = output[bs * v: bs * (v + 1)] / temperature
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (np.sum(nmb_crops) - 1)
    return loss / len(crops_for_assign)


def _pair(small=2):
    torch.manual_seed(0)
    a = SwAV(build_encoder("resnet18", width=8), dim=8, hidden_dim=16, num_prototypes=10, num_small_crops=small)
    b = SwAV(build_encoder("resnet18", width=8), dim=8, hidden_dim=16, num_prototypes=10, num_small_crops=small)
    b.load_state_dict(a.state_dict())
    return a.train(), b.train()


def test_multicrop_runs_the_head_once_on_all_crops_as_official():
    ours, ref = _pair()
    gen = torch.Generator().manual_seed(6)
    crops = [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(2)] + \
        [torch.randn(4, 3, 16, 16, generator=gen) for _ in range(2)]
    z, scores = ours(crops)
    z_ref, scores_ref = official_forward(ref, crops)
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, scores_ref, rtol=1e-5, atol=1e-6)
    head_bn = ours.encoder.fc[1]
    assert int(head_bn.num_batches_tracked) == 1  # one head pass per step
    torch.testing.assert_close(head_bn.running_mean, ref.encoder.fc[1].running_mean)
    loss, _ = ours.loss((z, scores), None)
    torch.testing.assert_close(loss, official_loss(scores_ref, 4, [2, 2], [0, 1]), rtol=1e-5, atol=1e-6)


def official_larc_sgd_step(params, grads, bufs, lr, wd, momentum=0.9, trust=1e-3, eps=1e-8):
    """apex LARC.step (clip=False) then torch SGD (weight decay already folded in by LARC)."""
    new_p, new_b = [], []
    for p, g, buf in zip(params, grads, bufs):
        pn, gn = torch.norm(p), torch.norm(g)
        if pn != 0 and gn != 0:
            adaptive_lr = trust * pn / (gn + pn * wd + eps)
            g = (g + wd * p) * adaptive_lr
        buf = g.clone() if buf is None else buf * momentum + g
        new_p.append(p - lr * buf)
        new_b.append(buf)
    return new_p, new_b


def test_lars_larc_steps_match_apex_larc_around_sgd():
    gen = torch.Generator().manual_seed(7)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=gen, dtype=torch.float64)),
              torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))]  # zero norm: plain SGD, no decay
    opt = LARS(params, lr=1.0, momentum=0.9, weight_decay=1e-2, rule="larc")
    ref, bufs = [p.detach().clone() for p in params], [None, None]
    for lr in (0.5, 2.0):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.param_groups[0]["lr"] = lr
        opt.step()
        ref, bufs = official_larc_sgd_step(ref, grads, bufs, lr, 1e-2)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)


def test_warmup_is_the_official_linspace_then_cosine():
    steps, epochs, warmup, base, start, final = 7, 12, 3, 4.8, 0.3, 0.0048
    warm = np.linspace(start, base, steps * warmup)
    iters = np.arange(steps * (epochs - warmup))
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    official = np.concatenate((warm, cos))
    ours = [cosine_lr(base, i / steps, epochs, warmup, start, final, linspace_steps_per_epoch=steps)
            for i in range(steps * epochs)]
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-12)
    assert ours[steps * warmup - 1] == base  # peak on the last warmup step
