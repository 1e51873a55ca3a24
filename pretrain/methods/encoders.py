"""ResNet encoders shared by every method: a torchvision ResNet whose ``fc`` becomes the
method's projector (so its backbone keys stay torchvision's under ``<prefix>.``)."""
from __future__ import annotations

import torch.nn as nn
import torchvision

__all__ = ["RESNET_ARCHS", "build_encoder", "feature_dim"]

# torchvision ResNet-family constructors (any of them can be the encoder).
RESNET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


def build_encoder(arch: str, num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """A randomly initialised torchvision ResNet ``arch`` (its ``fc`` is replaced by callers).

    Args:
        arch: torchvision name, e.g. ``resnet50`` (``MODEL.ARCH``).
        num_classes: width of ``fc`` (SimSiam replaces it by the projector; lincls by a
            linear classifier; ``fc = nn.Identity()`` gives the pooled features).
        zero_init_residual: zero-init the last BN gamma of each residual block (SimSiam does).

    Raises:
        ValueError: ``arch`` is not a torchvision ResNet.
    """
    if arch not in RESNET_ARCHS:
        raise ValueError(f"MODEL.ARCH {arch!r} is not a torchvision ResNet; choose one of {', '.join(RESNET_ARCHS)}")
    return torchvision.models.__dict__[arch](weights=None, num_classes=num_classes,
                                             zero_init_residual=zero_init_residual)


def feature_dim(encoder: nn.Module) -> int:
    """Width of the pooled features entering ``encoder.fc`` (2048 for ResNet-50)."""
    fc = encoder.fc
    if isinstance(fc, nn.Linear):
        return fc.in_features
    if isinstance(fc, nn.Sequential) and isinstance(fc[0], nn.Linear):
        return fc[0].in_features
    return encoder.layer4[-1].conv1.in_channels  # type: ignore[index]  # any ResNet: block input = output
