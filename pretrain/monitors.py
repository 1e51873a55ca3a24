"""Training health monitors (paper Fig. 2): output std for collapse, kNN accuracy.

* ``z_std``: per-channel std over the batch of the l2-normalised projector output,
  averaged over channels. With z spread over the unit sphere it is about 1/sqrt(d);
  a collapsed encoder (constant output) gives 0.
* ``CollapseMonitor`` (``siambench.pretrain.collapse``): warns (and optionally aborts)
  after ``patience`` consecutive steps below ``threshold / sqrt(d)``.
* ``KnnMonitor``: weighted kNN top-1 of frozen backbone features on a labelled split,
  through ``siambench.pretrain.knn``'s feature extraction and (sharded) voting.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .collapse import CollapseDetected, CollapseMonitor

__all__ = ["z_std", "CollapseDetected", "CollapseMonitor", "backbone_of", "KnnMonitor"]


@torch.no_grad()
def z_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the batch std of ``z / |z|``; z: NxC. Healthy ~1/sqrt(C), collapsed 0.

    Returns a 0-d tensor on z's device, so the caller can fetch it with the loss in one sync.
    """
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


class _Backbone(nn.Module):
    """A ResNet without its ``fc`` (the projector): pooled NxC features. Shares the modules."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*[m for name, m in resnet.named_children() if name != "fc"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)  # NxC


def backbone_of(encoder: nn.Module) -> nn.Module:
    return _Backbone(encoder)


class KnnMonitor:
    """Weighted kNN top-1 (%) of ``val_set`` against ``train_set`` on frozen backbone features.

    The datasets (their file lists) and loaders are built once, at construction, and reused
    at every call. Each rank embeds a shard of both sets; the train features stay sharded,
    in float16 (``knn_scores_sharded``), and only the val features are gathered to every rank.
    Memory per rank: ``N_train / world x D x 2`` bytes for the bank (ImageNet, ResNet-50:
    1.28M x 2048 x 2 B = 5.2 GB on one GPU, 0.66 GB each on 8), ``N_val x D x 2`` for the
    queries (0.2 GB) and ``1024 x N_train / world x 4`` for one similarity chunk (0.66 GB on 8).
    """

    def __init__(self, train_set, val_set, device: torch.device, num_classes: int, k: int = 200, t: float = 0.1,
                 batch_size: int = 256, num_workers: int = 0, train_subset: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if train_subset and train_subset < len(train_set):
            g = torch.Generator().manual_seed(0)  # a fixed subset so epochs are comparable
            train_set = Subset(train_set, torch.randperm(len(train_set), generator=g)[:train_subset].tolist())
        self.loaders = [_eval_loader(s, batch_size, num_workers, rank, world_size, device) for s in (train_set, val_set)]
        self.device, self.num_classes, self.k, self.t = device, num_classes, k, t
        self.distributed = world_size > 1

    @torch.no_grad()
    def __call__(self, encoder: nn.Module) -> float:
        from .knn import extract_features, knn_scores_sharded  # the same protocol as `siambench knn`

        backbone = backbone_of(encoder)
        bank, bank_labels = extract_features(backbone, self.loaders[0], self.device, dtype=torch.float16)
        query, labels = extract_features(backbone, self.loaders[1], self.device, gather=self.distributed,
                                         dtype=torch.float16)
        pred = knn_scores_sharded(bank, bank_labels, query, self.num_classes, self.k, self.t).argmax(dim=1)
        return 100.0 * (pred == labels).float().mean().item()


def _eval_loader(dataset, batch_size: int, num_workers: int, rank: int, world_size: int,
                 device: torch.device) -> DataLoader:
    sampler = DistributedSampler(dataset, world_size, rank, shuffle=False) if world_size > 1 else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=device.type == "cuda")  # pinned: the non_blocking copies are asynchronous
