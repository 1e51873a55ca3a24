"""SimSiam loss: values equal the formulas; stop-grad blocks the target branch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from siambench.pretrain.builder import SimSiam, build_encoder
from siambench.pretrain.losses import SimSiamLoss, cross_entropy_similarity, negative_cosine



def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.dot(x, y) / (x.norm() * y.norm()) for x, y in zip(a, b)])


def test_negative_cosine_equals_formula():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert negative_cosine(p, z).item() == pytest.approx(-_cos(p, z).mean().item(), abs=1e-6)
    assert negative_cosine(p, 3 * p).item() == pytest.approx(-1.0, abs=1e-6)
    assert negative_cosine(p, -p).item() == pytest.approx(1.0, abs=1e-6)


def test_symmetrized_loss_and_variants():
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2, p3, z4 = (torch.randn(4, 6, generator=g) for _ in range(6))
    expected = -_cos(p1, z2).mean() / 2 - _cos(p2, z1).mean() / 2
    assert SimSiamLoss()([p1, p2], [z1, z2]).item() == pytest.approx(expected.item(), abs=1e-6)
    assert SimSiamLoss(symmetry="asym")([p1, p2], [z1, z2]).item() == pytest.approx(-_cos(p1, z2).mean().item(), abs=1e-6)
    asym2x = SimSiamLoss(symmetry="asym2x")
    assert asym2x.num_views == 4
    got = asym2x([p1, p2, p3, p2], [z1, z2, z1, z4]).item()
    assert got == pytest.approx((-_cos(p1, z2).mean() / 2 - _cos(p3, z4).mean() / 2).item(), abs=1e-6)
    with pytest.raises(ValueError, match="4 views"):
        asym2x([p1, p2], [z1, z2])


def test_cross_entropy_similarity_formula():
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    manual = -sum((F.softmax(z[i], 0) * F.log_softmax(p[i], 0)).sum() for i in range(3)) / 3
    assert cross_entropy_similarity(p, z).item() == pytest.approx(manual.item(), abs=1e-6)
    # minimised (= entropy of softmax(z)) when p = z
    entropy = -(F.softmax(z, 1) * F.log_softmax(z, 1)).sum(1).mean()
    assert cross_entropy_similarity(z, z).item() == pytest.approx(entropy.item(), abs=1e-6)


def test_bad_loss_names_are_rejected():
    with pytest.raises(ValueError, match="LOSS.SIMILARITY"):
        SimSiamLoss(similarity="l2")
    with pytest.raises(ValueError, match="LOSS.SYMMETRY"):
        SimSiamLoss(symmetry="both")


@pytest.mark.parametrize("stop_grad", [True, False])
def test_stop_grad_blocks_the_target_branch(stop_grad):
    torch.manual_seed(0)
    model = SimSiam(build_encoder("resnet18", num_classes=32), dim=32, pred_dim=8, stop_grad=stop_grad)
    x1 = torch.randn(4, 3, 32, 32, requires_grad=True)
    x2 = torch.randn(4, 3, 32, 32, requires_grad=True)
    ps, zs = model([x1, x2])
    assert zs[0].requires_grad is (not stop_grad)
    # asymmetric D(p1, z2): x2 reaches the loss only through the target z2
    SimSiamLoss(symmetry="asym")(ps, zs).backward()
    assert x1.grad.abs().sum() > 0
    if stop_grad:
        assert x2.grad is None or x2.grad.abs().sum() == 0
    else:
        assert x2.grad.abs().sum() > 0
    assert math.isfinite(x1.grad.sum().item())
