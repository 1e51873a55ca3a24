"""BYOL (Grill et al., NeurIPS 2020): online network + predictor regress an EMA target network.

Reads like the paper (Sec. 3.1, Algorithm 1)::

    z1, z2 = g(f(v1)), g(f(v2))                  # online projections, NxC
    p1, p2 = q(z1), q(z2)                        # online predictions
    t1, t2 = g'(f'(v1)), g'(f'(v2))              # target projections, no gradient
    L = ||p1/|p1| - t2/|t2|||^2 + ||p2/|p2| - t1/|t1|||^2     # symmetrized (Eq. 2-4)
    xi <- tau xi + (1 - tau) theta,  tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2

||a - b||^2 of unit vectors is 2 - 2 cos; the loss is averaged over the batch and summed over
the two directions, as the paper's L + L~. Projector and predictor: Linear(4096), BN, ReLU,
Linear(256), no BN and no bias on the output (deepmind-research ``byol/utils/networks.py`` ``MLP``;
its hidden Linear's bias, which BN removes, is left out). Keys: ``encoder.*`` (online ResNet + projector, the
one transferred), ``predictor.*``, ``target_encoder.*``.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Method, momentum_update
from .encoders import build_encoder, feature_dim
from .simclr import bn_mlp

__all__ = ["BYOL", "byol_tau", "regression_loss", "build"]


def byol_tau(step: int, total_steps: int, tau_base: float = 0.996) -> float:
    """EMA rate at step k of K: from tau_base at k = 0 to 1 at k = K (cosine; BYOL Sec. 3.2)."""
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


def regression_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t); p, t: NxC, t already detached."""
    return (2.0 - 2.0 * (F.normalize(p, dim=1) * F.normalize(t, dim=1)).sum(dim=1)).mean()


class BYOL(Method):
    """Online encoder + projector + predictor; EMA target encoder + projector.

    Args:
        encoder: a torchvision ResNet; its ``fc`` becomes the projector g.
        hidden_dim, dim: MLP widths (4096, 256). tau_base: 0.996.
    """

    name = "byol"

    def __init__(self, encoder: nn.Module, hidden_dim: int = 4096, dim: int = 256, tau_base: float = 0.996) -> None:
        super().__init__()
        encoder.fc = bn_mlp(feature_dim(encoder), hidden_dim, dim, num_layers=2, last_bn=False, out_bias=False)
        self.encoder = encoder
        self.predictor = bn_mlp(dim, hidden_dim, dim, num_layers=2, last_bn=False, out_bias=False)
        self.target_encoder = copy.deepcopy(encoder)  # xi initialised as theta
        self.target_encoder.requires_grad_(False)
        self.tau_base = tau_base
        self.tau = tau_base  # the rate of the last update (logged)
        self.monitor_dim = dim

    def forward(self, views: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x1, x2 = views[0], views[1]
        ps = [self.predictor(self.encoder(x)) for x in (x1, x2)]  # online predictions, NxC
        with torch.no_grad():
            ts = [self.target_encoder(x).detach() for x in (x1, x2)]  # target projections: stop-grad
        return ps, ts

    def loss(self, out: tuple[list[torch.Tensor], list[torch.Tensor]],
             index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        (p1, p2), (t1, t2) = [p.float() for p in out[0]], [t.float() for t in out[1]]
        return regression_loss(p1, t2) + regression_loss(p2, t1), t1

    def after_step(self, step: int, total_steps: int) -> None:
        self.tau = byol_tau(step, total_steps, self.tau_base)
        momentum_update(self.target_encoder, self.encoder, self.tau)  # xi <- tau xi + (1 - tau) theta


def build(cfg) -> BYOL:
    m, c = cfg.MODEL, cfg.MODEL.BYOL
    encoder = build_encoder(m.ARCH, zero_init_residual=m.ZERO_INIT_RESIDUAL, width=m.WIDTH)
    return BYOL(encoder, hidden_dim=c.HIDDEN_DIM, dim=c.DIM, tau_base=c.TAU_BASE)
