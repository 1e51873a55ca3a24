"""SimSiam (Chen & He, CVPR 2021): encoder f (ResNet + projector) and predictor h.

Reads like the paper's Algorithm 1::

    z1, z2 = f(x1), f(x2)        # projections, NxC
    p1, p2 = h(z1), h(z2)        # predictions, NxC
    L = D(p1, z2)/2 + D(p2, z1)/2, with z detached (stop-grad)

State-dict keys ``encoder.*`` / ``predictor.*`` are the official checkpoints'.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..heads import build_predictor, build_projector
from ..losses import SimSiamLoss
from .base import Method
from .encoders import build_encoder, feature_dim

__all__ = ["SimSiam", "build"]


class SimSiam(Method):
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
        criterion: D combined over views (``losses.SimSiamLoss``; default: cosine, symmetrized).
    """

    name = "simsiam"

    def __init__(self, encoder: nn.Module, dim: int = 2048, pred_dim: int = 512, proj_hidden_dim: int = 0,
                 proj_layers: int = 3, bn_case: str = "default", predictor: str = "mlp",
                 stop_grad: bool = True, criterion: SimSiamLoss | None = None) -> None:
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
        self.monitor_dim = dim
        self.criterion = criterion or SimSiamLoss()
        self.num_views = self.criterion.num_views
        # hypothesis variants (paper Sec. 5): index, zs -> per-image targets eta_x; set by pretrain.main
        self.targets: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor] | None = None

    def forward(self, views: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Predictions and (stop-grad) projections of each view: ``[p1, p2, ...], [z1, z2, ...]``."""
        zs = [self.encoder(x) for x in views]  # projections, each NxC
        ps = [self.predictor(z) for z in zs]  # predictions, each NxC
        if self.stop_grad:
            zs = [z.detach() for z in zs]  # stop-gradient: z is a constant target
        return ps, zs

    def loss(self, out: tuple[list[torch.Tensor], list[torch.Tensor]],
             index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        ps, zs = [p.float() for p in out[0]], [z.float() for z in out[1]]
        if self.targets is not None:
            loss = self.criterion.to_targets(ps, self.targets(index, zs))  # D(p_v, eta_x) averaged over views
        else:
            loss = self.criterion(ps, zs)  # D(p1, z2)/2 + D(p2, z1)/2
        return loss, zs[0]

    def param_groups(self, exclude_bias_bn: bool = False) -> list[dict]:
        """Encoder and predictor parameters in separate groups (for ``fix_pred_lr``)."""
        groups = [{"name": "encoder", "params": [p for p in self.encoder.parameters() if p.requires_grad]}]
        pred = [p for p in self.predictor.parameters() if p.requires_grad]
        if pred:
            groups.append({"name": "predictor", "params": pred})
        return groups


def build(cfg) -> SimSiam:
    """SimSiam from ``cfg.MODEL`` / ``cfg.LOSS`` (zero-init residual, as the official code)."""
    m = cfg.MODEL
    encoder = build_encoder(m.ARCH, num_classes=m.DIM, zero_init_residual=m.ZERO_INIT_RESIDUAL, width=m.WIDTH)
    return SimSiam(encoder, dim=m.DIM, pred_dim=m.PRED_DIM, proj_hidden_dim=m.PROJ_HIDDEN_DIM,
                   proj_layers=m.PROJ_LAYERS, bn_case=m.BN_CASE, predictor=m.PREDICTOR, stop_grad=m.STOP_GRAD,
                   criterion=SimSiamLoss(cfg.LOSS.SIMILARITY, cfg.LOSS.SYMMETRY))
