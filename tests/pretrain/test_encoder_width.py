"""MODEL.WIDTH: narrow ResNets keep torchvision's names; width 64 is torchvision's network exactly."""
from __future__ import annotations

import pytest
import torch
import torchvision

from siambench.pretrain.config import get_cfg
from siambench.pretrain.methods import build_method
from siambench.pretrain.methods.encoders import RESNET_ARCHS, build_encoder, feature_dim


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", RESNET_ARCHS)
def test_default_width_is_torchvision_exactly(arch):
    with torch.device("meta"):
        ours, theirs = build_encoder(arch), getattr(torchvision.models, arch)()
    assert type(ours) is type(theirs) is torchvision.models.ResNet
    assert [(n, type(m)) for n, m in ours.named_modules()] == [(n, type(m)) for n, m in theirs.named_modules()]
    assert _shapes(ours) == _shapes(theirs)


def test_default_width_has_torchvisions_init_bit_for_bit():
    torch.manual_seed(3)
    ours = build_encoder("resnet18", zero_init_residual=True)
    torch.manual_seed(3)
    theirs = torchvision.models.resnet18(zero_init_residual=True)
    a, b = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("arch,width,stem,res2,res5,conv2", [
    ("resnet18", 8, 8, 8, 64, (8, 8, 3, 3)),
    ("resnet50", 16, 16, 64, 512, (16, 16, 3, 3)),
    ("resnext50_32x4d", 16, 16, 64, 512, (32, 1, 3, 3)),  # 32 groups x 1 channel
    ("wide_resnet50_2", 8, 8, 32, 256, (16, 16, 3, 3)),
])
def test_narrow_resnet_shapes_and_names(arch, width, stem, res2, res5, conv2):
    with torch.device("meta"):
        full = getattr(torchvision.models, arch)(num_classes=10)
    model = build_encoder(arch, num_classes=10, width=width)
    assert list(model.state_dict()) == list(full.state_dict())  # same names, same order: convert reads them
    assert tuple(model.conv1.weight.shape) == (stem, 3, 7, 7) and model.bn1.num_features == stem
    last = "conv3" if hasattr(model.layer1[0], "conv3") else "conv2"
    assert getattr(model.layer1[-1], last).out_channels == res2
    assert getattr(model.layer4[-1], last).out_channels == res5 == feature_dim(model)
    assert tuple(model.layer1[0].conv2.weight.shape) == conv2
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters()) / 10


def test_narrow_resnet_keeps_torchvisions_init_rules():
    model = build_encoder("resnet50", width=16, zero_init_residual=True)
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for layer in (model.layer1, model.layer4) for b in layer)
    assert torch.equal(model.bn1.weight, torch.ones(16)) and torch.equal(model.bn1.bias, torch.zeros(16))
    std = float(model.conv1.weight.detach().std())  # kaiming normal, fan_out = 16 * 7 * 7
    assert abs(std - (2 / (16 * 49)) ** 0.5) < 0.01


def test_width_that_does_not_divide_the_groups_is_refused():
    with pytest.raises(ValueError, match=r"MODEL.WIDTH 8 does not fit resnext50_32x4d.*multiple of 16"):
        build_encoder("resnext50_32x4d", width=8)


@pytest.mark.parametrize("method", ["simsiam", "moco_v2", "simclr", "byol", "swav"])
def test_model_width_reaches_every_methods_encoder(method):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.METHOD", method, "MODEL.ARCH", "resnet18", "MODEL.WIDTH", 8])
    model = build_method(cfg)
    encoder = model.eval_encoder()
    assert tuple(encoder.conv1.weight.shape) == (8, 3, 7, 7)
    assert encoder.layer4[-1].conv2.out_channels == 64
