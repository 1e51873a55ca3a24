"""Each method's loss against its formula on hand-made tensors; MoCo queue and momentum;
BYOL's EMA schedule; SimCLR's NT-Xent; SwAV's Sinkhorn (marginals, textbook formula)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from siambench.pretrain.methods import METHODS, build_method
from siambench.pretrain.methods.base import momentum_update
from siambench.pretrain.methods.byol import BYOL, byol_tau, regression_loss
from siambench.pretrain.methods.encoders import build_encoder
from siambench.pretrain.methods.moco_v2 import MoCoV2, info_nce
from siambench.pretrain.methods.simclr import nt_xent
from siambench.pretrain.methods.simsiam import SimSiam
from siambench.pretrain.methods.swav import sinkhorn, swav_loss

g = torch.Generator().manual_seed(0)


def _randn(*shape):
    return torch.randn(*shape, generator=g)


# ---------------------------------------------------------------- SimSiam: the method == Algorithm 1
def test_simsiam_loss_and_gradients_equal_the_paper_pseudocode(tiny_cfg):
    torch.manual_seed(0)
    model = build_method(tiny_cfg())
    assert isinstance(model, SimSiam) and {k.split(".")[0] for k in model.state_dict()} == {"encoder", "predictor"}
    x1, x2 = _randn(4, 3, 32, 32), _randn(4, 3, 32, 32)
    loss, z = model.loss(model([x1, x2]), None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def D(p, z):  # Algorithm 1
        z = z.detach()
        return -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1).mean()

    model.zero_grad()
    z1, z2 = model.encoder(x1), model.encoder(x2)
    p1, p2 = model.predictor(z1), model.predictor(z2)
    direct = D(p1, z2) / 2 + D(p2, z1) / 2
    direct.backward()
    assert torch.equal(loss, direct) and torch.equal(z, z1.detach())
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.equal(grads[n], p.grad), n


# ---------------------------------------------------------------- MoCo v2
def test_info_nce_equals_the_formula():
    q, k = F.normalize(_randn(3, 4), dim=1), F.normalize(_randn(3, 4), dim=1)
    queue = F.normalize(_randn(4, 5), dim=0)
    t = 0.2
    expected = torch.stack([-torch.log(torch.exp(q[i] @ k[i] / t) /
                                       (torch.exp(q[i] @ k[i] / t) + torch.exp(q[i] @ queue / t).sum()))
                            for i in range(3)]).mean()
    torch.testing.assert_close(info_nce(q, k, queue, t), expected)


def _tiny_moco(K=8, dim=4, symmetric=False):
    torch.manual_seed(0)
    return MoCoV2(build_encoder("resnet18"), dim=dim, queue_size=K, momentum=0.99, temperature=0.2,
                  symmetric=symmetric)


def test_moco_queue_enqueue_dequeue_and_pointer():
    moco = _tiny_moco(K=8)
    keys = [F.normalize(_randn(4, 4), dim=1) for _ in range(3)]
    moco._dequeue_and_enqueue(keys[0])
    assert torch.equal(moco.queue[:, :4], keys[0].T) and int(moco.queue_ptr) == 4
    moco._dequeue_and_enqueue(keys[1])
    assert torch.equal(moco.queue, torch.cat([keys[0], keys[1]]).T) and int(moco.queue_ptr) == 0
    moco._dequeue_and_enqueue(keys[2])  # the oldest keys are replaced first
    assert torch.equal(moco.queue, torch.cat([keys[2], keys[1]]).T) and int(moco.queue_ptr) == 4


def test_moco_loss_uses_the_queue_before_enqueueing_its_keys():
    moco = _tiny_moco(K=8).eval()  # eval: BN with running stats, so keys are per-sample
    x1, x2 = _randn(4, 3, 32, 32), _randn(4, 3, 32, 32)
    queue_before = moco.queue.clone()
    with torch.no_grad():
        q = F.normalize(moco.encoder_q(x1), dim=1)
        k = F.normalize(moco.encoder_k(x2), dim=1)
        loss, z = moco.loss(moco([x1, x2]), None)
    torch.testing.assert_close(loss, info_nce(q, k, queue_before, 0.2))
    assert torch.equal(moco.queue[:, :4], k.T) and torch.equal(moco.queue[:, 4:], queue_before[:, 4:])


def test_moco_momentum_update_matches_the_official_formula():
    moco = _tiny_moco()
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(torch.randn_like(p))
    expected = [pk * 0.99 + pq * (1.0 - 0.99) for pk, pq in zip(moco.encoder_k.parameters(), moco.encoder_q.parameters())]
    moco.before_forward(0)
    assert all(torch.equal(a, b) for a, b in zip(moco.encoder_k.parameters(), expected))
    assert not any(p.requires_grad for p in moco.encoder_k.parameters())


def test_moco_steps_equal_the_official_forward_order():
    """Two SGD steps through the engine's hooks == builder.py's forward (update, q, k, logits, enqueue)."""
    ours, ref = _tiny_moco(K=8), _tiny_moco(K=8)
    views = [[_randn(4, 3, 32, 32), _randn(4, 3, 32, 32)] for _ in range(2)]
    opt_ours = torch.optim.SGD(ours.encoder_q.parameters(), lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD(ref.encoder_q.parameters(), lr=0.1, momentum=0.9)
    for step, (x1, x2) in enumerate(views):
        ours.before_forward(step)  # engine order: hook, forward, loss, backward, step
        loss, _ = ours.loss(ours([x1, x2]), None)
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()
        with torch.no_grad():  # official forward
            for pk, pq in zip(ref.encoder_k.parameters(), ref.encoder_q.parameters()):
                pk.data = pk.data * ref.m + pq.data * (1.0 - ref.m)
        q = F.normalize(ref.encoder_q(x1), dim=1)
        with torch.no_grad():
            k = F.normalize(ref.encoder_k(x2), dim=1)
        logits = torch.cat([torch.einsum("nc,nc->n", q, k).unsqueeze(-1),
                            torch.einsum("nc,ck->nk", q, ref.queue.clone().detach())], dim=1) / ref.T
        ref_loss = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
        ptr = int(ref.queue_ptr)
        ref.queue[:, ptr:ptr + 4] = k.T
        ref.queue_ptr[0] = (ptr + 4) % ref.K
        opt_ref.zero_grad()
        ref_loss.backward()
        opt_ref.step()
        assert torch.equal(loss, ref_loss)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


def test_moco_state_dict_has_the_official_keys():
    keys = set(_tiny_moco().state_dict())
    assert {"queue", "queue_ptr", "encoder_q.fc.0.weight", "encoder_q.fc.2.weight", "encoder_k.conv1.weight"} <= keys
    assert all(k.split(".")[0] in ("encoder_q", "encoder_k", "queue", "queue_ptr") for k in keys)


# ---------------------------------------------------------------- BYOL
def test_byol_tau_schedule():
    assert byol_tau(0, 100) == pytest.approx(0.996)
    assert byol_tau(50, 100) == pytest.approx(0.998)
    assert byol_tau(100, 100) == pytest.approx(1.0)
    taus = [byol_tau(k, 100) for k in range(101)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))


def test_byol_loss_and_ema_update():
    p, t = _randn(5, 6), _randn(5, 6)
    expected = ((p / p.norm(dim=1, keepdim=True) - t / t.norm(dim=1, keepdim=True)) ** 2).sum(dim=1).mean()
    torch.testing.assert_close(regression_loss(p, t), expected)
    torch.manual_seed(0)
    byol = BYOL(build_encoder("resnet18"), hidden_dim=16, dim=8)
    with torch.no_grad():
        for q in byol.encoder.parameters():
            q.add_(1.0)
    before = [x.clone() for x in byol.target_encoder.parameters()]
    byol.after_step(25, 100)
    tau = byol_tau(25, 100)
    for xi, old, theta in zip(byol.target_encoder.parameters(), before, byol.encoder.parameters()):
        torch.testing.assert_close(xi, tau * old + (1 - tau) * theta)


# ---------------------------------------------------------------- SimCLR
def _nt_xent_direct(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    sim = z @ z.T / t
    losses = []
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denom = sum(torch.exp(sim[i, k]) for k in range(n2) if k != i)
        losses.append(-torch.log(torch.exp(sim[i, j]) / denom))
    return torch.stack(losses[: n2 // 2]).mean() + torch.stack(losses[n2 // 2:]).mean()  # loss_a + loss_b


def test_nt_xent_equals_direct_computation():
    z1, z2 = _randn(4, 3), _randn(4, 3)
    torch.testing.assert_close(nt_xent(z1, z2, 0.5), _nt_xent_direct(z1, z2, 0.5))
    # identical views of identical images: log(2N - 1) per anchor, for each of the two views
    same = torch.ones(4, 3)
    torch.testing.assert_close(nt_xent(same, same, 0.5), torch.tensor(2 * math.log(7.0)))


# ---------------------------------------------------------------- SwAV
def _sinkhorn_textbook(scores, eps, iters):
    """Sinkhorn-Knopp as alternating row/column scalings of P = exp(S/eps): rows -> 1/K, columns -> 1/B."""
    P = torch.exp(scores.double() / eps).T  # KxB
    K, B = P.shape
    P = P / P.sum()
    for _ in range(iters):
        P = P * ((1.0 / K) / P.sum(dim=1, keepdim=True))
        P = P * ((1.0 / B) / P.sum(dim=0, keepdim=True))
    return (P * B).T.float()


def test_sinkhorn_marginals_and_textbook_formula():
    scores = F.normalize(_randn(12, 8), dim=1) @ F.normalize(_randn(5, 8), dim=1).T  # B=12, K=5
    q = sinkhorn(scores, 0.05, 3)
    torch.testing.assert_close(q, _sinkhorn_textbook(scores, 0.05, 3), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(12))  # each sample: one unit of assignment
    q_conv = sinkhorn(scores, 0.05, 200)  # at convergence the prototypes are equipartitioned
    torch.testing.assert_close(q_conv.sum(dim=0), torch.full((5,), 12 / 5), rtol=1e-3, atol=1e-3)


def test_swav_loss_is_the_swapped_cross_entropy():
    s1, s2 = _randn(4, 5), _randn(4, 5)
    q1, q2 = torch.softmax(_randn(4, 5), 1), torch.softmax(_randn(4, 5), 1)
    t = 0.1
    ce = lambda q, s: -(q * torch.log_softmax(s / t, dim=1)).sum(dim=1).mean()  # noqa: E731
    torch.testing.assert_close(swav_loss([s1, s2], {0: q1, 1: q2}, t), (ce(q1, s2) + ce(q2, s1)) / 2)


def test_swav_freezes_prototypes_then_trains_them(tiny_cfg):
    torch.manual_seed(0)
    swav = build_method(tiny_cfg("MODEL.METHOD", "swav", "MODEL.SWAV.NUM_PROTOTYPES", "6",
                                 "MODEL.SWAV.FREEZE_PROTOTYPES_ITERS", "1"))
    views = [_randn(4, 3, 32, 32), _randn(4, 3, 32, 32)]
    for step in (0, 1):
        swav.zero_grad()
        swav.before_forward(step)
        torch.testing.assert_close(swav.prototypes.weight.norm(dim=1), torch.ones(6))
        swav.loss(swav(views), None)[0].backward()
        swav.after_backward(step)
        assert (swav.prototypes.weight.grad is None) == (step == 0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_builds_and_reports_its_views(tiny_cfg, method):
    model = build_method(tiny_cfg("MODEL.METHOD", method))
    assert model.name == method and model.num_views >= 2
    assert hasattr(model.eval_encoder(), "layer4")
