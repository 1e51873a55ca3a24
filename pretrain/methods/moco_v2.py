"""MoCo v2 (He et al., CVPR 2020; Chen et al., "Improved Baselines", 2020).

Follows the official ``facebookresearch/moco`` ``moco/builder.py`` (``--mlp --moco-t 0.2``)::

    f_k <- m f_k + (1 - m) f_q                 # momentum update, no gradient (start of the step)
    q = normalize(f_q(x_q))                    # queries, NxC
    k = normalize(f_k(shuffle(x_k))).detach()  # keys, NxC; shuffle BN across ranks
    logits = [q.k, q.queue] / T                # Nx(1+K): positive first
    L = CrossEntropy(logits, 0)
    enqueue(k); dequeue the oldest             # FIFO of K keys from the whole global batch

Keys: ``encoder_q.*``, ``encoder_k.*``, ``queue`` (CxK), ``queue_ptr`` as the official
checkpoints. The momentum update runs at the start of each step, as the official forward
(``before_forward``, outside the DDP forward: the same arithmetic). Difference: the queue
pointer advances on the device (no ``int(ptr)`` host sync; same values). With ``symmetric`` (the SimSiam paper's
"repro.+"), each view is the query once: L = (L(q1, k2) + L(q2, k1)) / 2, and both views'
keys are enqueued (2N per step; the paper does not say which, see the configs).

Shuffle BN with one process: nothing to shuffle across (the key encoder's BN sees the
same batch as the query encoder's) -- a documented no-op; use several ranks, or
``MODEL.SYNC_BN True`` with ``SHUFFLE_BN False`` (SyncBN, MoCo v3's choice).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..utils.dist import all_gather_cat, get_rank, get_world_size
from .base import Method, momentum_update
from .encoders import build_encoder, feature_dim

__all__ = ["MoCoV2", "moco_head", "info_nce", "build"]


def moco_head(in_dim: int, dim: int = 128) -> nn.Sequential:
    """MoCo v2's MLP head replacing ``fc``: Linear(2048, 2048), ReLU, Linear(2048, 128) (keys fc.0, fc.2)."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, dim))


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    """InfoNCE with the positive key first: q, k NxC (unit), queue CxK (unit) -> scalar."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # Nx1
    l_neg = torch.einsum("nc,ck->nk", q, queue.clone().detach())  # NxK
    logits = torch.cat([l_pos, l_neg], dim=1) / t  # Nx(1+K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


class MoCoV2(Method):
    """Query encoder, momentum key encoder, queue of K keys.

    Args:
        encoder: a torchvision ResNet; its ``fc`` becomes the MLP head (the key encoder is a copy).
        dim: C of the keys (128). queue_size: K (65536). momentum: m (0.999). temperature: T (0.2).
        shuffle_bn: shuffle the key batch across ranks for the key encoder's BN (official).
        symmetric: symmetrized loss (SimSiam's repro.+).
    """

    name = "moco_v2"

    def __init__(self, encoder: nn.Module, dim: int = 128, queue_size: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.2, shuffle_bn: bool = True, symmetric: bool = False) -> None:
        super().__init__()
        self.K, self.m, self.T = queue_size, momentum, temperature
        self.shuffle_bn, self.symmetric = shuffle_bn, symmetric
        self.monitor_dim = dim
        encoder.fc = moco_head(feature_dim(encoder), dim)
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)  # initialised as f_q
        self.encoder_k.requires_grad_(False)  # updated by momentum only
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))  # CxK
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def eval_encoder(self) -> nn.Module:
        return self.encoder_q

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """normalize(f_k(x)), NxC, with the batch shuffled across ranks for BN (official ``_batch_shuffle_ddp``)."""
        world = get_world_size()
        if not self.shuffle_bn or world == 1:
            return F.normalize(self.encoder_k(x), dim=1)
        x_all = all_gather_cat(x)  # (world N)x3xHxW
        idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
        dist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        mine = idx_shuffle.view(world, -1)[get_rank()]
        k = F.normalize(self.encoder_k(x_all[mine]), dim=1)
        return all_gather_cat(k)[idx_unshuffle.view(world, -1)[get_rank()]]  # undo the shuffle

    def forward(self, views: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Queries (with gradient) and keys (without) of the views used: ``[q1, (q2)], [k2, (k1)]``."""
        x1, x2 = views[0], views[1]
        qs = [F.normalize(self.encoder_q(x1), dim=1)]  # NxC
        ks = [self._keys(x2)]  # NxC, no gradient
        if self.symmetric:
            qs.append(F.normalize(self.encoder_q(x2), dim=1))
            ks.append(self._keys(x1))
        return qs, ks

    def loss(self, out: tuple[list[torch.Tensor], list[torch.Tensor]],
             index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        qs, ks = [q.float() for q in out[0]], [k.float() for k in out[1]]
        loss = sum(info_nce(q, k, self.queue, self.T) for q, k in zip(qs, ks)) / len(qs)
        self._dequeue_and_enqueue(torch.cat(ks))  # after the logits used the current queue
        return loss, qs[0]  # type: ignore[return-value]

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        keys = all_gather_cat(keys)  # every rank enqueues the whole global batch: identical queues
        n = keys.shape[0]
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % self.K  # replace the oldest n keys
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % self.K)

    def before_forward(self, step: int) -> None:
        momentum_update(self.encoder_k, self.encoder_q, self.m)  # theta_k <- m theta_k + (1 - m) theta_q

    def param_groups(self, exclude_bias_bn: bool = False) -> list[dict]:
        return super().param_groups(exclude_bias_bn)  # encoder_q only: encoder_k has no gradient


def build(cfg) -> MoCoV2:
    m, c = cfg.MODEL, cfg.MODEL.MOCO
    encoder = build_encoder(m.ARCH, zero_init_residual=m.ZERO_INIT_RESIDUAL, width=m.WIDTH)
    return MoCoV2(encoder, dim=c.DIM, queue_size=c.QUEUE, momentum=c.MOMENTUM, temperature=c.TEMPERATURE,
                  shuffle_bn=c.SHUFFLE_BN, symmetric=c.SYMMETRIC)
