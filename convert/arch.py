"""The ResNet family both torchvision and Detectron2 build, and how to tell them apart.

A :class:`ResNetSpec` is the few numbers that fix a ResNet's tensors: block type,
blocks per stage, groups and width per group. torchvision names the variants
(``resnet50``, ``wide_resnet50_2``, ...); Detectron2 builds the same networks from
``MODEL.RESNETS.{DEPTH, NUM_GROUPS, WIDTH_PER_GROUP, RES2_OUT_CHANNELS}``.

A narrow ResNet (siambench's ``MODEL.WIDTH`` < 64: stem ``W`` channels, every stage scaled by
``W / 64``) is the same spec with ``width = W``; for Detectron2 it sets ``STEM_OUT_CHANNELS W``,
``RES2_OUT_CHANNELS 4W`` and ``WIDTH_PER_GROUP`` scaled by ``W / 64``. Detectron2 builds
BasicBlock ResNets (R18/R34) only at width 64, so narrow ones cannot be converted.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Mapping

import torch
from siambench.pretrain.data.transforms import IMAGENET_MEAN, IMAGENET_STD

from .errors import ConversionError

__all__ = ["ResNetSpec", "RESNETS", "TORCHVISION_WIDTH", "PIXEL_MEAN", "PIXEL_STD", "INPUT_FORMAT", "spec_for",
           "infer_spec", "check_detectron2_buildable"]

TORCHVISION_WIDTH = 64  # stem channels of torchvision's ResNets (siambench MODEL.WIDTH default)
# What torchvision-trained ResNets expect in Detectron2 (MODEL.PIXEL_MEAN/STD, INPUT.FORMAT): RGB in
# [0, 255], normalised with the ImageNet statistics of the pretraining transforms scaled by 255
# (123.675, 116.28, 103.53 / 58.395, 57.12, 57.375). SimSiam, MoCo and the supervised baseline all
# train with these. Written into every converted file (export) and checked against it (verify).
PIXEL_MEAN = tuple(round(255 * m, 3) for m in IMAGENET_MEAN)
PIXEL_STD = tuple(round(255 * s, 3) for s in IMAGENET_STD)
INPUT_FORMAT = "RGB"


@dataclass(frozen=True)
class ResNetSpec:
    """One torchvision ResNet variant and its Detectron2 ``MODEL.RESNETS`` settings."""

    arch: str  # torchvision builder name, e.g. "resnet50"
    bottleneck: bool  # BottleneckBlock (1x1-3x3-1x1) or BasicBlock (3x3-3x3)
    blocks_per_stage: tuple[int, int, int, int]  # res2..res5 (torchvision layer1..layer4)
    num_groups: int = 1  # groups of the 3x3 conv (ResNeXt)
    width_per_group: int = 64  # 3x3 conv width per group in res2 (128 for wide ResNets; scaled when narrow)
    width: int = TORCHVISION_WIDTH  # stem channels (MODEL.WIDTH); every stage scales by width / 64

    @property
    def name(self) -> str:
        """``arch``, with ``-w<W>`` for a narrow network (e.g. ``resnet50-w16``)."""
        return self.arch if self.width == TORCHVISION_WIDTH else f"{self.arch}-w{self.width}"

    def narrowed(self, width: int) -> "ResNetSpec":
        """This variant with ``width`` stem channels (``build_encoder(arch, width=width)``)."""
        base = RESNETS[self.arch]
        return dataclasses.replace(base, width=width, width_per_group=base.width_per_group * width // TORCHVISION_WIDTH)

    @property
    def depth(self) -> int:
        """Detectron2's ``RESNETS.DEPTH``: the depth of the plain ResNet with these block counts."""
        return sum(self.blocks_per_stage) * (3 if self.bottleneck else 2) + 2

    @property
    def res2_out_channels(self) -> int:
        """Detectron2's ``RESNETS.RES2_OUT_CHANNELS`` (block expansion 4 for bottlenecks)."""
        return (4 if self.bottleneck else 1) * self.width

    def detectron2_resnets(self) -> dict[str, int]:
        """The Detectron2 ``MODEL.RESNETS`` keys that build this network (besides STRIDE_IN_1X1)."""
        return {"DEPTH": self.depth, "STEM_OUT_CHANNELS": self.width, "RES2_OUT_CHANNELS": self.res2_out_channels,
                "NUM_GROUPS": self.num_groups, "WIDTH_PER_GROUP": self.width_per_group}

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


def check_detectron2_buildable(spec: ResNetSpec) -> None:
    """Refuse what Detectron2's ``build_resnet_backbone`` cannot build (it asserts
    ``RES2_OUT_CHANNELS == 64`` for R18/R34).

    Raises:
        ConversionError: a narrow BasicBlock ResNet.
    """
    if not spec.bottleneck and spec.width != TORCHVISION_WIDTH:
        raise ConversionError(
            f"{spec.name} is a narrow BasicBlock ResNet (stem width {spec.width}); Detectron2 builds "
            f"{spec.arch} only at width {TORCHVISION_WIDTH} (RES2_OUT_CHANNELS 64): pretrain it with MODEL.WIDTH "
            f"{TORCHVISION_WIDTH}, or use a narrow bottleneck ResNet (e.g. resnet50) for transfer"
        )


def infer_spec(state_dict: Mapping[str, torch.Tensor]) -> ResNetSpec:
    """Recognise the ResNet variant from torchvision-named backbone tensors.

    Block counts come from the ``layerN.i`` indices, the block type from the presence
    of ``conv3``, the width from the stem (``conv1.weight`` is ``width x 3 x 7 x 7``) and
    groups/width per group from the shape of the first 3x3 conv
    (``layer1.0.conv2.weight`` is ``width' x width'/groups x 3 x 3``).

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
    stem = state_dict.get("conv1.weight")
    width = int(stem.shape[0]) if stem is not None and stem.ndim == 4 else TORCHVISION_WIDTH
    num_groups, width_per_group = 1, width  # BasicBlock: no groups; scaled like a bottleneck's for matching
    conv2 = state_dict.get("layer1.0.conv2.weight")
    if bottleneck and conv2 is not None:
        channels, per_group = int(conv2.shape[0]), int(conv2.shape[1])
        num_groups = max(channels // max(per_group, 1), 1)
        width_per_group = channels // num_groups
    found = (bottleneck, tuple(blocks), num_groups, width_per_group)
    for spec in RESNETS.values():
        narrow = spec.narrowed(width)
        if (narrow.bottleneck, narrow.blocks_per_stage, narrow.num_groups, narrow.width_per_group) == found:
            return narrow
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    raise ConversionError(
        f"the weights form a {kind} ResNet with blocks per stage {tuple(blocks)}, stem width {width}, "
        f"{num_groups} group(s) x width {width_per_group}, which is none of {', '.join(RESNETS)} (at any width)"
    )
