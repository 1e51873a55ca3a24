"""Weighted kNN evaluation of a frozen encoder (``siambench knn``).

The protocol of InstDisc (Wu et al., 2018), used by SimSiam's kNN monitor
(paper Fig. 2): every image is embedded by the frozen encoder and L2-normalised;
a test image's ``k`` nearest training images (cosine similarity ``s``) each vote
for their label with weight ``exp(s / t)``; the class with the largest total wins.

``extract_features`` and ``knn_predict`` are reused by the pretraining kNN monitor, which
keeps the bank sharded over the ranks (``knn_scores_sharded``: each rank searches its shard
for every query, and only the k best candidates per query travel between ranks).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .classification import build_backbone, build_eval_loader, load_backbone
from .eval_config import get_knn_defaults
from .eval_inputs import check_eval_inputs
from .run_setup import load_run
from .utils.config import add_config_args
from .utils.io import atomic_write_json
from .utils.logger import MetricLogger

__all__ = ["extract_features", "knn_scores", "shard_topk", "merge_topk_votes", "knn_scores_sharded", "knn_predict",
           "knn_accuracy", "main"]

logger = logging.getLogger("siambench.knn")


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    *,
    gather: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every image of ``loader`` with ``model`` in eval mode.

    Args:
        model: maps an NxCxHxW batch to NxD features (e.g. a ResNet with ``fc = Identity``).
            It is put in eval mode for the pass and given back in its previous mode.
        loader: yields ``(images, labels)`` batches.
        device: where the model runs; features are returned there.
        gather: each rank iterated over a disjoint shard of the data; concatenate all
            ranks' features (the order of samples is irrelevant to kNN).
        dtype: of the returned features (float16 halves a kNN bank's memory).

    Returns:
        ``(features, labels)``: NxD L2-normalised ``dtype`` features and N int64 labels.
    """
    was_training = model.training
    model.eval()
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        for images, targets in loader:
            out = model(images.to(device, non_blocking=True))  # NxD
            feats.append(F.normalize(out.flatten(1).float(), dim=1).to(dtype))
            labels.append(torch.as_tensor(targets).to(device, non_blocking=True))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_features: the loader yielded no batches (empty dataset?)")
    features, targets = torch.cat(feats), torch.cat(labels).long()
    if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        features, targets = _all_gather_rows(features), _all_gather_rows(targets)
    return features, targets


def _all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (a different number of rows on each rank) over all ranks."""
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    max_rows = int(max(s.item() for s in sizes))
    padded = x.new_zeros((max_rows, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)])


@torch.no_grad()
def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores of weighted kNN: the sum of ``exp(sim / t)`` over each class's neighbours.

    Args:
        train_feats: MxD L2-normalised bank features.
        train_labels: M labels in ``[0, num_classes)``.
        test_feats: NxD L2-normalised query features (on the bank's device).
        num_classes: number of classes C.
        k: neighbours per query (clipped to M).
        t: temperature of the vote weights.
        chunk_size: queries compared against the bank at once (bounds memory to chunk x M).

    Returns:
        NxC float64 scores (zero for classes without a neighbour).
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"knn: features must be MxD and NxD, got {tuple(train_feats.shape)} "
                         f"and {tuple(test_feats.shape)}")
    if train_labels.shape != (train_feats.shape[0],):
        raise ValueError(f"knn: {train_feats.shape[0]} train features but labels of shape "
                         f"{tuple(train_labels.shape)}")
    if t <= 0 or k < 1:
        raise ValueError(f"knn: need k >= 1 and t > 0, got k={k}, t={t}")
    k = min(k, train_feats.shape[0])
    labels = train_labels.to(train_feats.device).long()
    scores = []
    for query in test_feats.split(chunk_size):
        sim = query @ train_feats.T  # BxM cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # Bxk
        weights = (top_sim.double() / t).exp()  # Bxk; float64: exp(1/t) overflows float32 below t = 0.0113
        votes = torch.zeros(query.shape[0], num_classes, device=query.device, dtype=weights.dtype)
        votes.scatter_add_(1, labels[top_idx], weights)  # BxC
        scores.append(votes)
    return torch.cat(scores) if scores else test_feats.new_zeros((0, num_classes), dtype=torch.float64)


def shard_topk(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar bank entries of each query on this shard: (Bxk float32 similarities, Bxk labels),
    padded with -inf similarity where the shard has fewer than ``k`` entries (they get no vote)."""
    sim = (query.to(bank.dtype) @ bank.T).float()  # BxM
    top_sim, top_idx = sim.topk(min(k, sim.shape[1]), dim=1)
    top_lab = bank_labels.to(bank.device).long()[top_idx]
    if top_sim.shape[1] < k:
        pad = k - top_sim.shape[1]
        top_sim = F.pad(top_sim, (0, pad), value=float("-inf"))
        top_lab = F.pad(top_lab, (0, pad))
    return top_sim, top_lab


def merge_topk_votes(sims: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int, t: float) -> torch.Tensor:
    """BxC class scores from the candidates of every shard (Bx(k*shards) similarities and labels)."""
    top_sim, pos = sims.topk(min(k, sims.shape[1]), dim=1)
    weights = (top_sim.double() / t).exp()  # -inf padding -> weight 0
    votes = torch.zeros(sims.shape[0], num_classes, device=sims.device, dtype=weights.dtype)
    return votes.scatter_add_(1, labels.gather(1, pos), weights)


def knn_scores_sharded(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                       k: int = 200, t: float = 0.1, chunk_size: int = 1024) -> torch.Tensor:
    """``knn_scores`` with the bank split over the ranks: every rank holds one shard and the same queries.

    Per chunk of queries each rank finds its shard's ``k`` best candidates, the ranks exchange
    them (``chunk x k x world`` similarities and labels) and all vote alike. Memory per rank: the
    shard plus one ``chunk_size x shard`` float32 similarity matrix. In one process it is ``knn_scores``.
    """
    if t <= 0 or k < 1:
        raise ValueError(f"knn: need k >= 1 and t > 0, got k={k}, t={t}")
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    scores = []
    for query in queries.split(chunk_size):
        sims, labels = shard_topk(bank, bank_labels, query, k)
        if distributed:
            sims = torch.cat(_all_gather_same(sims), 1)
            labels = torch.cat(_all_gather_same(labels), 1)
        scores.append(merge_topk_votes(sims, labels, num_classes, k, t))
    return torch.cat(scores) if scores else queries.new_zeros((0, num_classes), dtype=torch.float64)


def _all_gather_same(x: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return out


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
) -> torch.Tensor:
    """Predicted label (N int64) of each query by weighted kNN; see ``knn_scores``."""
    return knn_scores(train_feats, train_labels, test_feats, num_classes, k, t).argmax(dim=1)


def knn_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracies in percent from NxC ``scores`` (a k above C counts as C)."""
    labels = labels.to(scores.device)
    ranked = scores.topk(min(max(topk), scores.shape[1]), dim=1).indices  # Nxk
    hits = ranked == labels[:, None]
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in topk}


def main(argv: Sequence[str] | None = None) -> int:
    """``siambench knn --config-file C MODEL.WEIGHTS ckpt OUTPUT_DIR d`` -> d/knn_results.json."""
    parser = argparse.ArgumentParser(prog="siambench knn", description=__doc__.split("\n\n")[0])
    add_config_args(parser, "MODEL.WEIGHTS runs/pretrain/model_final.pth OUTPUT_DIR runs/x KNN.K 20")
    args = parser.parse_intermixed_args(argv)  # flags anywhere, also after the overrides
    run = load_run(get_knn_defaults(), args.config_file, args.opts, command="knn",
                   check=lambda cfg: check_eval_inputs(cfg, "knn"))  # weights and classes, before OUTPUT_DIR
    cfg, device = run.cfg, run.device

    encoder = build_backbone(cfg.MODEL.ARCH, width=cfg.MODEL.WIDTH)
    info = load_backbone(encoder, cfg.MODEL.WEIGHTS, cfg.MODEL.ARCH, cfg.MODEL.WEIGHTS_FORMAT, cfg.MODEL.WIDTH)
    encoder.fc = nn.Identity()  # pooled features: NxD, D = 2048 for ResNet-50
    encoder.to(device)
    train_loader, classes = build_eval_loader(cfg, "train", cfg.KNN.BATCH_SIZE)
    val_loader, _ = build_eval_loader(cfg, "val", cfg.KNN.BATCH_SIZE)  # the same classes (checked)

    start = time.time()
    feats = {}
    for split, loader in (("train", train_loader), ("val", val_loader)):
        batches = MetricLogger().log_every(loader, cfg.TRAIN.PRINT_FREQ, f"knn {split} features", total=len(loader))
        feats[split] = extract_features(encoder, batches, device, gather=True)
    (train_feats, train_labels), (val_feats, val_labels) = feats["train"], feats["val"]
    scores = knn_scores(train_feats, train_labels, val_feats, len(classes), cfg.KNN.K, cfg.KNN.TEMPERATURE,
                        cfg.KNN.CHUNK_SIZE)
    acc = knn_accuracy(scores, val_labels, (1, 5))
    results = {
        "top1": acc[1],
        "top5": acc[5],
        "k": cfg.KNN.K,
        "temperature": cfg.KNN.TEMPERATURE,
        "checkpoint": str(Path(cfg.MODEL.WEIGHTS).resolve()),
        "checkpoint_sha256": info["sha256"],
        "arch": cfg.MODEL.ARCH, "width": cfg.MODEL.WIDTH,
        "pretrain_epochs": info.get("epoch"),
        "num_train": int(train_feats.shape[0]),
        "num_val": int(val_feats.shape[0]),
        "wall_time_s": round(time.time() - start, 2),
        "env": run.env,
    }
    if run.is_main:
        path = Path(cfg.OUTPUT_DIR) / "knn_results.json"
        atomic_write_json(path, results)
        logger.info("knn: top-1 %.2f%%, top-5 %.2f%% (k=%d, t=%g, %d train / %d val images) -> %s", acc[1],
                    acc[5], cfg.KNN.K, cfg.KNN.TEMPERATURE, results["num_train"], results["num_val"], path)
    run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
