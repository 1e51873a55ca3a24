"""Learning rate of every engine (pretraining, linear evaluation, supervised baseline).

Linear scaling with the batch, an optional linear warmup, then cosine (or step, or
constant) decay per (fractional) epoch; the predictor group may keep a fixed lr.
"""
from __future__ import annotations

import math

import torch

__all__ = ["SCHEDULES", "scaled_lr", "cosine_lr", "lr_at", "adjust_learning_rate"]

SCHEDULES = ("cosine", "step", "constant")


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule: ``base_lr x batch / 256`` (0.05 x 512/256 = 0.1 for the baseline)."""
    return base_lr * batch_size / 256


def cosine_lr(init_lr: float, epoch: float, epochs: int, warmup_epochs: float = 0.0, start_lr: float = 0.0,
              final_lr: float = 0.0, linspace_steps_per_epoch: int = 0) -> float:
    """Cosine decay from ``init_lr`` at epoch 0 to 0 at ``epochs`` (``epoch`` may be fractional).

    With ``warmup_epochs`` > 0 (SimCLR, BYOL, SwAV): linear from ``start_lr`` to ``init_lr`` over
    the warmup, then cosine from ``init_lr`` to ``final_lr`` over the remaining epochs (SwAV's
    ``main_swav.py`` schedule; ``final_lr`` 0 and ``start_lr`` 0 give SimCLR's and BYOL's).
    The ramp reaches ``init_lr`` at the first step after the warmup (SimCLR's and BYOL's
    ``step / warmup_steps``), or, with ``linspace_steps_per_epoch`` > 0, on the last of the
    W = warmup_epochs x steps warmup steps (SwAV's ``np.linspace(start, base, W)``).
    """
    if warmup_epochs > 0:
        if epoch < warmup_epochs:
            if linspace_steps_per_epoch > 0:
                last = round(warmup_epochs * linspace_steps_per_epoch) - 1
                return start_lr + (init_lr - start_lr) * round(epoch * linspace_steps_per_epoch) / max(last, 1)
            return start_lr + (init_lr - start_lr) * epoch / warmup_epochs
        t = (epoch - warmup_epochs) / (epochs - warmup_epochs)
        return final_lr + 0.5 * (init_lr - final_lr) * (1.0 + math.cos(math.pi * t))
    if final_lr:
        return final_lr + 0.5 * (init_lr - final_lr) * (1.0 + math.cos(math.pi * epoch / epochs))
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def lr_at(init_lr: float, epoch: float, epochs: int, schedule: str = "cosine", warmup_epochs: float = 0.0,
          start_lr: float = 0.0, final_lr: float = 0.0, step_size: int = 30,
          linspace_steps_per_epoch: int = 0) -> float:
    """The lr at (fractional) ``epoch`` for ``schedule`` (SOLVER.SCHEDULE).

    ``cosine``: ``cosine_lr`` (warmup, then cosine); ``step``: the same warmup, then x0.1
    every ``step_size`` epochs (torchvision's recipe); ``constant``: ``init_lr``.
    """
    if schedule == "cosine" or (schedule == "step" and epoch < warmup_epochs):
        return cosine_lr(init_lr, epoch, epochs, warmup_epochs, start_lr, final_lr, linspace_steps_per_epoch)
    if schedule == "step":
        return init_lr * 0.1 ** (int(epoch) // step_size)
    if schedule == "constant":
        return init_lr
    raise ValueError(f"SOLVER.SCHEDULE must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def adjust_learning_rate(optimizer: torch.optim.Optimizer, init_lr: float, epoch: float, epochs: int,
                         fix_pred_lr: bool = False, warmup_epochs: float = 0.0, start_lr: float = 0.0,
                         final_lr: float = 0.0, schedule: str = "cosine", step_size: int = 30,
                         linspace_steps_per_epoch: int = 0) -> float:
    """Set every group's lr for ``epoch`` (``lr_at``); the predictor group keeps ``init_lr`` if ``fix_pred_lr``.

    Returns:
        The decayed (encoder) lr.
    """
    lr = lr_at(init_lr, epoch, epochs, schedule, warmup_epochs, start_lr, final_lr, step_size, linspace_steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = init_lr if fix_pred_lr and group.get("name") == "predictor" else lr
    return lr
