"""SimCLR (Chen et al., ICML 2020): NT-Xent over the 2N views of the global batch.

Reads like the paper's Algorithm 1::

    z = normalize(g(f(x)))  for both views      # 2N x C over all ranks (gathered with gradient)
    s_ij = z_i . z_j / tau                      # 2N x 2N, the diagonal masked out
    l(i, j) = -log exp(s_ij) / sum_{k != i} exp(s_ik)   for each positive pair (i, j)
    L = mean over the view-1 anchors + mean over the view-2 anchors   # official loss_a + loss_b

The projector g is MLP with BN on every layer (SimCLR App. B.9: "BN ... in the projection
head"); the SimSiam paper's "repro.+" uses 3 layers (``MODEL.SIMCLR.PROJ_LAYERS``). Negatives
come from every rank: each rank's anchors are its own 2 x N/world views, contrasted with the
2N gathered ones (``base.gather_with_grad``), the loss averaged over ranks by DDP.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.dist import get_rank
from .base import Method, gather_with_grad
from .encoders import build_encoder, feature_dim

__all__ = ["SimCLR", "bn_mlp", "nt_xent", "build"]


def bn_mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, last_bn: bool = True,
           out_bias: bool = True) -> nn.Sequential:
    """(Linear, BN, ReLU) x (num_layers - 1), Linear (+ BN): the SimCLR/BYOL/SwAV-style projector.

    A Linear followed by BN has no bias (BN removes it). With ``last_bn`` the output BN has a
    scale and no trainable shift (SimCLR ``model_util.projection_head``: ``center=False`` on the
    last layer; its beta stays 0, frozen); without it the output Linear has a bias iff ``out_bias``
    (SwAV: yes; BYOL ``networks.MLP``: no).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=out_bias and not last_bn))
    if last_bn:
        bn = nn.BatchNorm1d(out_dim)
        bn.bias.requires_grad_(False)  # center=False: no beta
        layers.append(bn)
    return nn.Sequential(*layers)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of this rank's anchors ``z1``, ``z2`` (NxC each, unnormalised) against all ranks' views.

    The sum of the two N-anchor cross-entropies, as google-research/simclr ``objective.py``
    ``add_contrastive_loss`` (``loss_a + loss_b``), i.e. twice the mean over the 2N anchors.
    """
    n = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2]), dim=1)  # 2N x C, this rank: [view 1; view 2]
    z1_all = gather_with_grad(local[:n])  # (world N) x C
    z2_all = gather_with_grad(local[n:])
    candidates = torch.cat([z1_all, z2_all])  # 2 world N x C: [all view 1; all view 2]
    total = z1_all.shape[0]
    logits = local @ candidates.T / temperature  # 2N x 2(world N)
    offset = get_rank() * n
    rows = torch.arange(n, device=z1.device) + offset  # my anchors' positions among the candidates
    self_idx = torch.cat([rows, rows + total])  # anchor i itself: masked out
    pos_idx = torch.cat([rows + total, rows])  # its other view: the positive
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * total).bool(), float("-inf"))
    per_anchor = F.cross_entropy(logits, pos_idx, reduction="none")
    return per_anchor[:n].mean() + per_anchor[n:].mean()  # official loss_a + loss_b


class SimCLR(Method):
    """Shared encoder f + projector g, NT-Xent loss.

    Args:
        encoder: a torchvision ResNet; its ``fc`` becomes the projector.
        dim, hidden_dim, proj_layers: projector (128, 2048, 2 in SimCLR v1; SimSiam repro.+: 3 layers).
        temperature: tau.
    """

    name = "simclr"

    def __init__(self, encoder: nn.Module, dim: int = 128, hidden_dim: int = 2048, proj_layers: int = 2,
                 temperature: float = 0.1) -> None:
        super().__init__()
        encoder.fc = bn_mlp(feature_dim(encoder), hidden_dim, dim, proj_layers)
        self.encoder = encoder
        self.temperature = temperature
        self.monitor_dim = dim

    def forward(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.encoder(x) for x in views[:2]]  # z1, z2: NxC

    def loss(self, out: list[torch.Tensor], index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = out[0].float(), out[1].float()
        return nt_xent(z1, z2, self.temperature), z1


def build(cfg) -> SimCLR:
    m, c = cfg.MODEL, cfg.MODEL.SIMCLR
    encoder = build_encoder(m.ARCH, zero_init_residual=m.ZERO_INIT_RESIDUAL, width=m.WIDTH)
    return SimCLR(encoder, dim=c.DIM, hidden_dim=c.HIDDEN_DIM, proj_layers=c.PROJ_LAYERS, temperature=c.TEMPERATURE)
