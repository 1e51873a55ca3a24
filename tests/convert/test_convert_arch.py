"""Recognising ResNet variants from their tensors."""
from __future__ import annotations

import pytest
import torch

from siambench.convert.arch import RESNETS, infer_spec, spec_for
from siambench.convert.checkpoints import expected_shapes
from siambench.convert.errors import ConversionError


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


@pytest.mark.parametrize("arch", sorted(RESNETS))
def test_detectron2_builds_the_same_tensors_for_every_variant(arch):
    """Names and shapes after mapping equal Detectron2's ResNet from our MODEL.RESNETS settings."""
    from siambench.transfer import d2compat  # noqa: F401
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    from siambench.convert.naming import to_detectron2_name
    from siambench.convert.verify import d2_config

    with torch.device("meta"):  # shapes only
        backbone = build_resnet_backbone(d2_config(spec_for(arch), "backbone"), ShapeSpec(channels=3))
    d2 = {k: tuple(v.shape) for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    mapped = {to_detectron2_name(k): s for k, s in expected_shapes(arch).items()}
    assert mapped == d2
