"""The ResNet family both torchvision and Detectron2 build, and how to tell them apart.

A :class:`ResNetSpec` is the few numbers that fix a ResNet's tensors: block type,
blocks per stage, groups and width per group. torchvision names the variants
(``resnet50``, ``wide_resnet50_2``, ...); Detectron2 builds the same networks from
``MODEL.RESNETS.{DEPTH, NUM_GROUPS, WIDTH_PER_GROUP, RES2_OUT_CHANNELS}``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch

from .errors import ConversionError

__all__ = ["ResNetSpec", "RESNETS", "spec_for", "infer_spec"]


@dataclass(frozen=True)
class ResNetSpec:
    """One torchvision ResNet variant and its Detectron2 ``MODEL.RESNETS`` settings."""

    arch: str  # torchvision builder name, e.g. "resnet50"
    bottleneck: bool  # BottleneckBlock (1x1-3x3-1x1) or BasicBlock (3x3-3x3)
    blocks_per_stage: tuple[int, int, int, int]  # res2..res5 (torchvision layer1..layer4)
    num_groups: int = 1  # groups of the 3x3 conv (ResNeXt)
    width_per_group: int = 64  # 3x3 conv width per group in res2 (128 for wide ResNets)

    @property
    def depth(self) -> int:
        """Detectron2's ``RESNETS.DEPTH``: the depth of the plain ResNet with these block counts."""
        return sum(self.blocks_per_stage) * (3 if self.bottleneck else 2) + 2

    @property
    def res2_out_channels(self) -> int:
        """Detectron2's ``RESNETS.RES2_OUT_CHANNELS`` (block expansion 4 for bottlenecks)."""
        return 256 if self.bottleneck else 64

    @property
    def feature_channels(self) -> dict[str, int]:
        """Output channels of res2..res5."""
        return {f"res{i + 2}": self.res2_out_channels * 2**i for i in range(4)}


# The variants torchvision ships; each is also a Detectron2 ResNet.
RESNETS: dict[str, ResNetSpec] = {
    s.arch: s
    for s in (
        ResNetSpec("resnet18", False, (2, 2, 2, 2)),
        ResNetSpec("resnet34", False, (3, 4, 6, 3)),
        ResNetSpec("resnet50", True, (3, 4, 6, 3)),
        ResNetSpec("resnet101", True, (3, 4, 23, 3)),
        ResNetSpec("resnet152", True, (3, 8, 36, 3)),
        ResNetSpec("resnext50_32x4d", True, (3, 4, 6, 3), 32, 4),
        ResNetSpec("resnext101_32x8d", True, (3, 4, 23, 3), 32, 8),
        ResNetSpec("resnext101_64x4d", True, (3, 4, 23, 3), 64, 4),
        ResNetSpec("wide_resnet50_2", True, (3, 4, 6, 3), 1, 128),
        ResNetSpec("wide_resnet101_2", True, (3, 4, 23, 3), 1, 128),
    )
}

_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def spec_for(arch: str) -> ResNetSpec:
    """The spec of a torchvision ResNet name.

    Raises:
        ConversionError: ``arch`` is not a ResNet variant both libraries build.
    """
    try:
        return RESNETS[arch]
    except KeyError:
        raise ConversionError(
            f"unsupported architecture {arch!r}; convert handles the torchvision ResNets "
            f"Detectron2 builds: {', '.join(RESNETS)}"
        ) from None


def infer_spec(state_dict: Mapping[str, torch.Tensor]) -> ResNetSpec:
    """Recognise the ResNet variant from torchvision-named backbone tensors.

    Block counts come from the ``layerN.i`` indices, the block type from the presence
    of ``conv3``, and groups/width from the shape of the first 3x3 conv
    (``layer1.0.conv2.weight`` is ``width x width/groups x 3 x 3``).

    Raises:
        ConversionError: a stage is missing or the numbers match no known variant.
    """
    blocks = [0, 0, 0, 0]
    for key in state_dict:
        m = _BLOCK_KEY.match(key)
        if m:
            stage, index = int(m.group(1)) - 1, int(m.group(2))
            blocks[stage] = max(blocks[stage], index + 1)
    empty = [f"layer{i + 1} (res{i + 2})" for i, n in enumerate(blocks) if n == 0]
    if empty:
        raise ConversionError(f"no weights for ResNet stage(s) {', '.join(empty)}")
    bottleneck = "layer1.0.conv3.weight" in state_dict
    num_groups, width_per_group = 1, 64
    conv2 = state_dict.get("layer1.0.conv2.weight")
    if bottleneck and conv2 is not None:
        width, per_group = int(conv2.shape[0]), int(conv2.shape[1])
        num_groups = max(width // max(per_group, 1), 1)
        width_per_group = width // num_groups
    found = (bottleneck, tuple(blocks), num_groups, width_per_group)
    for spec in RESNETS.values():
        if (spec.bottleneck, spec.blocks_per_stage, spec.num_groups, spec.width_per_group) == found:
            return spec
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    raise ConversionError(
        f"the weights form a {kind} ResNet with blocks per stage {tuple(blocks)}, "
        f"{num_groups} group(s) x width {width_per_group}, which is none of {', '.join(RESNETS)}"
    )
