"""Recognising ResNet variants from their tensors."""
from __future__ import annotations

import pytest
import torch

from convert.arch import RESNETS, infer_spec, spec_for
from convert.checkpoints import expected_shapes
from convert.errors import ConversionError


@pytest.mark.parametrize("arch", sorted(RESNETS))
def test_every_variant_is_recognised_from_its_shapes(arch):
    fake = {k: torch.empty(shape, device="meta") for k, shape in expected_shapes(arch).items()}
    assert infer_spec(fake).arch == arch


@pytest.mark.parametrize(
    "arch, depth, res2", [("resnet18", 18, 64), ("resnet34", 34, 64), ("resnet50", 50, 256),
                          ("resnet101", 101, 256), ("resnet152", 152, 256), ("wide_resnet50_2", 50, 256)]
)
def test_detectron2_depth_and_widths(arch, depth, res2):
    spec = spec_for(arch)
    assert (spec.depth, spec.res2_out_channels) == (depth, res2)
    assert spec.feature_channels["res5"] == res2 * 8


def test_unknown_layout_is_named():
    fake = {k: torch.empty(s, device="meta") for k, s in expected_shapes("resnet18").items() if "layer4.1" not in k}
    fake |= {"layer4.1.conv1.weight": torch.empty(1), "layer4.2.conv1.weight": torch.empty(1)}
    with pytest.raises(ConversionError, match=r"BasicBlock ResNet with blocks per stage \(2, 2, 2, 3\)"):
        infer_spec(fake)
    with pytest.raises(ConversionError, match=r"no weights for ResNet stage\(s\) layer2 \(res3\)"):
        infer_spec({k: v for k, v in fake.items() if not k.startswith("layer2.")})
