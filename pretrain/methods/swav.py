"""SwAV (Caron et al., NeurIPS 2020): swapped prediction of online cluster assignments.

Follows the official ``facebookresearch/swav`` ``main_swav.py``::

    normalize the prototypes C                       # every step, before the forward
    h = f(x) per run of same-size crops; z = normalize(g(cat(h)))   # head once on all crops, NxD each
    scores = z @ C.T                                 # NxK prototype scores
    q_s = sinkhorn(scores_s) for the two 224 crops   # codes, no gradient (optionally with a queue)
    L = sum_s sum_{v != s} -mean(q_s . log softmax(scores_v / T)) / (V - 1) / 2
    prototypes get no gradient for the first FREEZE_PROTOTYPES_ITERS steps

``sinkhorn`` is the official ``distributed_sinkhorn`` (same operations in the same order, so
the same numbers). The queue (``QUEUE_LENGTH`` > 0, from ``QUEUE_START_EPOCH``) keeps the
official per-rank semantics -- each rank's codes are computed with its own last
QUEUE_LENGTH / world embeddings -- but is held as one global FIFO on every rank (a buffer
of the state dict, so it resumes from the single checkpoint). Keys: ``encoder.*`` (ResNet +
projection head) and ``prototypes.weight``; the official layout (``module.projection_head``,
``module.prototypes``) converts with ``siambench convert`` (format ``swav``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..utils.dist import all_gather_cat, get_rank, get_world_size, is_dist_avail_and_initialized
from .base import Method
from .encoders import build_encoder, feature_dim
from .simclr import bn_mlp

__all__ = ["SwAV", "sinkhorn", "swav_loss", "build"]


def _all_reduce(t: torch.Tensor) -> None:
    if is_dist_avail_and_initialized():
        dist.all_reduce(t)


@torch.no_grad()
def sinkhorn(out: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Codes Q (BxK) from scores (BxK) by Sinkhorn-Knopp: rows sum to 1, prototypes equipartitioned.

    Equal-partition marginals over the global batch (sums all-reduced across ranks), as official.
    """
    Q = torch.exp(out / epsilon).t()  # KxB
    B = Q.shape[1] * get_world_size()  # samples to assign
    K = Q.shape[0]  # prototypes
    sum_Q = torch.sum(Q)
    _all_reduce(sum_Q)
    Q /= sum_Q  # the matrix sums to 1
    for _ in range(iterations):
        sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
        _all_reduce(sum_of_rows)
        Q /= sum_of_rows
        Q /= K  # every prototype gets total weight 1/K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B  # every sample gets total weight 1/B
    Q *= B  # columns sum to 1: an assignment
    return Q.t()


def swav_loss(scores: Sequence[torch.Tensor], codes: dict[int, torch.Tensor], temperature: float) -> torch.Tensor:
    """Swapped prediction: codes of crop s predicted from every other crop v's scores (each BxK)."""
    loss = torch.zeros((), device=scores[0].device)
    for s, q in codes.items():
        sub = sum(-torch.mean(torch.sum(q * F.log_softmax(scores[v] / temperature, dim=1), dim=1))
                  for v in range(len(scores)) if v != s)
        loss = loss + sub / (len(scores) - 1)
    return loss / len(codes)


def _trunk(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features of a torchvision ResNet, its ``fc`` (the projection head) left out."""
    e = encoder
    x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
    x = e.layer4(e.layer3(e.layer2(e.layer1(x))))
    return torch.flatten(e.avgpool(x), 1)


class SwAV(Method):
    """ResNet + projection head, l2-normalised embeddings, prototypes, Sinkhorn codes.

    Args:
        encoder: a torchvision ResNet; its ``fc`` becomes the projection head.
        dim, hidden_dim, proj_layers: head (128, 2048, 2 official; SimSiam repro.+: 3).
        num_prototypes: K (3000). temperature: 0.1. epsilon, sinkhorn_iters: 0.05, 3.
        freeze_iters: steps without prototype updates (313). queue_length, queue_start_epoch: 0, 15.
        num_small_crops: multi-crop low-resolution views after the two large ones (0 = 2x224).
        crops_for_assign: crops whose codes are predicted (0, 1).
    """

    name = "swav"

    def __init__(self, encoder: nn.Module, dim: int = 128, hidden_dim: int = 2048, proj_layers: int = 2,
                 num_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iters: int = 3, freeze_iters: int = 313, queue_length: int = 0,
                 queue_start_epoch: int = 15, num_small_crops: int = 0,
                 crops_for_assign: Sequence[int] = (0, 1)) -> None:
        super().__init__()
        encoder.fc = bn_mlp(feature_dim(encoder), hidden_dim, dim, proj_layers, last_bn=False)
        self.encoder = encoder
        self.prototypes = nn.Linear(dim, num_prototypes, bias=False)
        self.temperature, self.epsilon, self.sinkhorn_iters = temperature, epsilon, sinkhorn_iters
        self.freeze_iters = freeze_iters
        self.crops_for_assign = tuple(crops_for_assign)
        self.num_views = 2 + num_small_crops
        self.monitor_dim = dim
        self.queue_length, self.queue_start_epoch = queue_length, queue_start_epoch
        if queue_length:
            self.register_buffer("queue", torch.zeros(len(self.crops_for_assign), queue_length, dim))
        self.queue_active = False  # from QUEUE_START_EPOCH on
        self.queue_fills = 0  # global batches enqueued so far

    def begin_epoch(self, epoch: int) -> None:
        self.queue_active = bool(self.queue_length) and epoch >= self.queue_start_epoch

    @torch.no_grad()
    def before_forward(self, step: int) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1, p=2))  # C on the unit sphere

    def forward(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, scores) of all crops stacked crop after crop: (V N)xD and (V N)xK.

        As official ``src/resnet50.py`` ``forward``: the trunk runs once per run of same-size
        crops, the projection head once on all crops' features concatenated (its BN normalises
        large and small crops together and updates its statistics once per step).
        """
        feats, start = [], 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
                end += 1
            feats.append(_trunk(self.encoder, torch.cat(list(views[start:end]))))
            start = end
        z = F.normalize(self.encoder.fc(torch.cat(feats)), dim=1, p=2)
        return z, self.prototypes(z)

    def loss(self, out: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        z, scores = out[0].float(), out[1].float()
        n = z.shape[0] // self.num_views
        crops = list(scores.split(n))  # V x (NxK)
        embedding = z.detach()
        codes = {}
        for i, s in enumerate(self.crops_for_assign):
            with torch.no_grad():
                out_s = crops[s].detach()
                if self.queue_active:
                    if self.queue_fills * n * get_world_size() >= self.queue_length:  # full: use it
                        out_s = torch.cat((self._my_queue(i, n) @ self.prototypes.weight.t(), out_s))
                    self._enqueue(i, embedding[s * n:(s + 1) * n])
                codes[s] = sinkhorn(out_s, self.epsilon, self.sinkhorn_iters)[-n:]  # this batch's codes
        if self.queue_active:
            self.queue_fills += 1
        return swav_loss(crops, codes, self.temperature), z[:n]

    def _my_queue(self, i: int, n: int) -> torch.Tensor:
        """This rank's rows of the global FIFO (the embeddings it enqueued itself): official per-rank queue."""
        world, q = get_world_size(), self.queue[i]  # L x D, newest block first, blocks of world x N (rank order)
        return q.view(-1, world, n, q.shape[1])[:, get_rank()].reshape(-1, q.shape[1])  # (L / world) x D

    @torch.no_grad()
    def _enqueue(self, i: int, emb: torch.Tensor) -> None:
        gathered = all_gather_cat(emb)  # (world N) x D, rank after rank
        b = gathered.shape[0]
        self.queue[i, b:] = self.queue[i, :-b].clone()
        self.queue[i, :b] = gathered

    def after_backward(self, step: int) -> None:
        if step < self.freeze_iters:  # cancel the prototypes' gradient (official, first iterations)
            self.prototypes.weight.grad = None

    def extra_state(self) -> dict:
        return {"queue_fills": self.queue_fills}

    def load_extra_state(self, state: dict) -> None:
        self.queue_fills = int(state.get("queue_fills", 0))


def build(cfg) -> SwAV:
    m, c = cfg.MODEL, cfg.MODEL.SWAV
    encoder = build_encoder(m.ARCH, zero_init_residual=m.ZERO_INIT_RESIDUAL, width=m.WIDTH)
    queue = c.QUEUE_LENGTH - c.QUEUE_LENGTH % cfg.SOLVER.BATCH_SIZE  # divisible by the global batch (official)
    return SwAV(encoder, dim=c.DIM, hidden_dim=c.HIDDEN_DIM, proj_layers=c.PROJ_LAYERS,
                num_prototypes=c.NUM_PROTOTYPES, temperature=c.TEMPERATURE, epsilon=c.EPSILON,
                sinkhorn_iters=c.SINKHORN_ITERS, freeze_iters=c.FREEZE_PROTOTYPES_ITERS, queue_length=queue,
                queue_start_epoch=c.QUEUE_START_EPOCH, num_small_crops=c.NUM_SMALL_CROPS)
