"""ResNet encoders shared by every method: a torchvision ResNet whose ``fc`` becomes the
method's projector (so its backbone keys stay torchvision's under ``<prefix>.``).

``width`` (``MODEL.WIDTH``) narrows the network: the stem has ``width`` channels instead of
64 and every stage scales by ``width / 64`` (res2..res5 output ``width x (1, 2, 4, 8) x
expansion``), keeping torchvision's module names (``conv1, bn1, layer1..4, fc``) so the
checkpoints convert like any ResNet. ``width = 64`` is torchvision's own constructor.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision
from torchvision.models import resnet as tv_resnet

__all__ = ["RESNET_ARCHS", "TORCHVISION_WIDTH", "build_encoder", "feature_dim"]

# torchvision ResNet-family constructors (any of them can be the encoder).
RESNET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
TORCHVISION_WIDTH = 64  # stem channels of every torchvision ResNet (res2's planes)


class NarrowResNet(tv_resnet.ResNet):
    """torchvision's ResNet with ``width`` stem channels and every stage scaled by ``width / 64``.

    Same modules, names and initialisation rules as ``torchvision.models.ResNet`` (kaiming
    fan-out convs, BN gamma 1 / beta 0, optional zero-init of each block's last BN).
    """

    def __init__(self, block: type, layers: tuple[int, ...], width: int, num_classes: int = 1000,
                 zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64) -> None:
        self._width = width
        super().__init__(block, list(layers), num_classes=num_classes, zero_init_residual=zero_init_residual,
                         groups=groups, width_per_group=width_per_group)
        # torchvision hard-codes the 64-channel stem and the 512 x expansion fc input: rebuild them narrow.
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        if planes == TORCHVISION_WIDTH:  # layer1: its input is the narrow stem
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // TORCHVISION_WIDTH, blocks, stride, dilate)


def build_encoder(arch: str, num_classes: int = 1000, zero_init_residual: bool = False,
                  width: int = TORCHVISION_WIDTH) -> nn.Module:
    """A randomly initialised torchvision ResNet ``arch`` (its ``fc`` is replaced by callers).

    Args:
        arch: torchvision name, e.g. ``resnet50`` (``MODEL.ARCH``).
        num_classes: width of ``fc`` (SimSiam replaces it by the projector; lincls by a
            linear classifier; ``fc = nn.Identity()`` gives the pooled features).
        zero_init_residual: zero-init the last BN gamma of each residual block (SimSiam does).
        width: stem channels (``MODEL.WIDTH``); 64 = torchvision's network exactly, fewer gives
            the same ResNet with every stage narrowed by ``width / 64`` (tiny test models).

    Raises:
        ValueError: ``arch`` is not a torchvision ResNet, or ``width`` does not divide its stages.
    """
    if arch not in RESNET_ARCHS:
        raise ValueError(f"MODEL.ARCH {arch!r} is not a torchvision ResNet; choose one of {', '.join(RESNET_ARCHS)}")
    if width == TORCHVISION_WIDTH:
        return torchvision.models.__dict__[arch](weights=None, num_classes=num_classes,
                                                 zero_init_residual=zero_init_residual)
    with torch.device("meta"):  # torchvision's own layout of ``arch``: block, blocks per stage, groups, width
        ref = torchvision.models.__dict__[arch]()
    block, groups, width_per_group = type(ref.layer1[0]), ref.groups, ref.base_width
    layers = tuple(len(stage) for stage in (ref.layer1, ref.layer2, ref.layer3, ref.layer4))
    if width < 1 or (width * width_per_group) % TORCHVISION_WIDTH:
        step = TORCHVISION_WIDTH // min(width_per_group, TORCHVISION_WIDTH)
        raise ValueError(f"MODEL.WIDTH {width} does not fit {arch} (its 3x3 convs have {width_per_group} "
                         f"channels per group at width 64); use a multiple of {step}")
    return NarrowResNet(block, layers, width, num_classes=num_classes, zero_init_residual=zero_init_residual,
                        groups=groups, width_per_group=width_per_group)


def feature_dim(encoder: nn.Module) -> int:
    """Width of the pooled features entering ``encoder.fc`` (2048 for ResNet-50)."""
    fc = encoder.fc
    if isinstance(fc, nn.Linear):
        return fc.in_features
    if isinstance(fc, nn.Sequential) and isinstance(fc[0], nn.Linear):
        return fc[0].in_features
    return encoder.layer4[-1].conv1.in_channels  # type: ignore[index]  # any ResNet: block input = output
