"""Projector / predictor shapes, BN placement per Table 3 case, official key names."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from siambench.pretrain.builder import SimSiam, build_encoder, build_model, feature_dim
from siambench.pretrain.heads import build_predictor, build_projector



def _bn_dims(seq: nn.Sequential) -> list[tuple[int, bool]]:
    return [(m.num_features, m.affine) for m in seq if isinstance(m, nn.BatchNorm1d)]


@pytest.mark.parametrize("case,proj_bn,pred_bn", [
    ("none", [], []),
    ("hidden", [(40, True), (40, True)], [(8, True)]),
    ("default", [(40, True), (40, True), (32, False)], [(8, True)]),
    ("all", [(40, True), (40, True), (32, False)], [(8, True), (32, True)]),
    ("c", [(40, True), (40, True), (32, False)], [(8, True)]),
])
def test_bn_placement_per_case(case, proj_bn, pred_bn):
    proj = build_projector(in_dim=24, hidden_dim=40, out_dim=32, num_layers=3, bn_case=case)
    pred = build_predictor(dim=32, pred_dim=8, bn_case=case)
    assert _bn_dims(proj) == proj_bn
    assert _bn_dims(pred) == pred_bn
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(24, 40), (40, 40), (40, 32)]
    # a Linear followed by BN has no trainable bias
    for i, m in enumerate(proj):
        if isinstance(m, nn.Linear) and i + 1 < len(proj) and isinstance(proj[i + 1], nn.BatchNorm1d):
            assert m.bias is None or not m.bias.requires_grad
    proj.train(), pred.train()
    z = proj(torch.randn(6, 24))
    assert z.shape == (6, 32) and pred(z).shape == (6, 32)


def test_unknown_bn_case():
    with pytest.raises(ValueError, match="MODEL.BN_CASE"):
        build_projector(8, 8, 8, bn_case="sometimes")


def test_model_keys_match_official_and_zero_init(tiny_cfg):
    model = build_model(tiny_cfg())
    keys = set(model.state_dict())
    for k in ["encoder.conv1.weight", "encoder.fc.0.weight", "encoder.fc.1.running_mean", "encoder.fc.3.weight",
              "encoder.fc.4.weight", "encoder.fc.6.weight", "encoder.fc.6.bias", "encoder.fc.7.running_var",
              "predictor.0.weight", "predictor.1.weight", "predictor.3.weight", "predictor.3.bias"]:
        assert k in keys, k
    assert "encoder.fc.7.weight" not in keys  # output BN without affine
    assert not model.encoder.fc[6].bias.requires_grad
    assert model.encoder.fc[0].in_features == 64 == feature_dim(build_encoder("resnet18", width=8))  # tiny: 8 x 8
    assert feature_dim(build_encoder("resnet18")) == 512
    # zero-init residual: the last BN of every block starts at gamma = 0
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for b in model.encoder.layer1)
    ps, zs = model([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    assert [p.shape for p in ps] == [(4, 64), (4, 64)] and [z.shape for z in zs] == [(4, 64), (4, 64)]


def test_predictor_ablations():
    enc = lambda: build_encoder("resnet18", num_classes=16)  # noqa: E731
    none = SimSiam(enc(), dim=16, pred_dim=4, predictor="none")
    assert isinstance(none.predictor, nn.Identity)
    assert [g["name"] for g in none.param_groups()] == ["encoder"]
    fixed = SimSiam(enc(), dim=16, pred_dim=4, predictor="fixed_random")
    assert not any(p.requires_grad for p in fixed.predictor.parameters())
    assert [g["name"] for g in fixed.param_groups()] == ["encoder"]
    mlp = SimSiam(enc(), dim=16, pred_dim=4)
    groups = mlp.param_groups()
    assert [g["name"] for g in groups] == ["encoder", "predictor"]
    assert sum(p.numel() for p in groups[1]["params"]) == sum(p.numel() for p in mlp.predictor.parameters())
    with pytest.raises(ValueError, match="MODEL.PREDICTOR"):
        SimSiam(enc(), dim=16, pred_dim=4, predictor="linear")


def test_bad_arch_is_named():
    with pytest.raises(ValueError, match="MODEL.ARCH 'vit_b_16'"):
        build_encoder("vit_b_16")
