"""The SimSiam model: encoder f (ResNet + projector) and predictor h.

Reads like the paper's pseudocode::

    z1, z2 = f(x1), f(x2)        # projections, NxC
    p1, p2 = h(z1), h(z2)        # predictions, NxC
    L = D(p1, z2)/2 + D(p2, z1)/2, with z detached (stop-grad)
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torchvision

from .heads import build_predictor, build_projector

__all__ = ["RESNET_ARCHS", "build_encoder", "feature_dim", "SimSiam", "build_model"]

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


class SimSiam(nn.Module):
    """Siamese network: shared encoder (backbone + projector), predictor on both branches.

    Args:
        encoder: a torchvision ResNet; its ``fc`` becomes the projector.
        dim: output dimension d of the projector and predictor (2048).
        pred_dim: predictor bottleneck (512).
        proj_hidden_dim: projector width (0 = the encoder's feature dim, as official).
        proj_layers: projector depth (3).
        bn_case: BN placement, Table 3 (``heads.BN_CASES``).
        predictor: ``"mlp"`` (trained), ``"none"`` (h = identity; collapses) or
            ``"fixed_random"`` (random init, never updated; collapses).
        stop_grad: detach the targets z (False collapses).
    """

    def __init__(self, encoder: nn.Module, dim: int = 2048, pred_dim: int = 512, proj_hidden_dim: int = 0,
                 proj_layers: int = 3, bn_case: str = "default", predictor: str = "mlp",
                 stop_grad: bool = True) -> None:
        super().__init__()
        in_dim = feature_dim(encoder)
        self.encoder = encoder
        self.encoder.fc = build_projector(in_dim, proj_hidden_dim or in_dim, dim, proj_layers, bn_case)
        if predictor == "none":
            self.predictor: nn.Module = nn.Identity()
        elif predictor in ("mlp", "fixed_random"):
            self.predictor = build_predictor(dim, pred_dim, bn_case)
            if predictor == "fixed_random":
                self.predictor.requires_grad_(False)
        else:
            raise ValueError(f"MODEL.PREDICTOR must be 'mlp', 'none' or 'fixed_random', got {predictor!r}")
        self.stop_grad = stop_grad

    def forward(self, views: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Predictions and (stop-grad) projections of each view: ``[p1, p2, ...], [z1, z2, ...]``."""
        zs = [self.encoder(x) for x in views]  # projections, each NxC
        ps = [self.predictor(z) for z in zs]  # predictions, each NxC
        if self.stop_grad:
            zs = [z.detach() for z in zs]  # stop-gradient: z is a constant target
        return ps, zs

    def param_groups(self) -> list[dict]:
        """Encoder and predictor parameters in separate groups (for ``fix_pred_lr``)."""
        groups = [{"name": "encoder", "params": [p for p in self.encoder.parameters() if p.requires_grad]}]
        pred = [p for p in self.predictor.parameters() if p.requires_grad]
        if pred:
            groups.append({"name": "predictor", "params": pred})
        return groups


def build_model(cfg) -> SimSiam:
    """SimSiam from ``cfg.MODEL`` (zero-init residual, as the official code)."""
    m = cfg.MODEL
    encoder = build_encoder(m.ARCH, num_classes=m.DIM, zero_init_residual=m.ZERO_INIT_RESIDUAL)
    return SimSiam(encoder, dim=m.DIM, pred_dim=m.PRED_DIM, proj_hidden_dim=m.PROJ_HIDDEN_DIM,
                   proj_layers=m.PROJ_LAYERS, bn_case=m.BN_CASE, predictor=m.PREDICTOR, stop_grad=m.STOP_GRAD)
