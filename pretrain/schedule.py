"""Learning rate: linear scaling with the batch, cosine decay, fixed predictor lr."""
from __future__ import annotations

import math

import torch

__all__ = ["scaled_lr", "cosine_lr", "adjust_learning_rate"]


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule: ``base_lr x batch / 256`` (0.05 x 512/256 = 0.1 for the baseline)."""
    return base_lr * batch_size / 256


def cosine_lr(init_lr: float, epoch: float, epochs: int) -> float:
    """Cosine decay from ``init_lr`` at epoch 0 to 0 at ``epochs`` (``epoch`` may be fractional)."""
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def adjust_learning_rate(optimizer: torch.optim.Optimizer, init_lr: float, epoch: float, epochs: int,
                         fix_pred_lr: bool) -> float:
    """Set every group's lr for ``epoch``; the predictor group keeps ``init_lr`` if ``fix_pred_lr``.

    Returns:
        The decayed (encoder) lr.
    """
    lr = cosine_lr(init_lr, epoch, epochs)
    for group in optimizer.param_groups:
        group["lr"] = init_lr if fix_pred_lr and group.get("name") == "predictor" else lr
    return lr
