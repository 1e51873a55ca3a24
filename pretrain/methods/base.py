"""The interface every pretraining method implements, so that one engine trains them all.

A method is an ``nn.Module`` (what DDP wraps and what checkpoints save) with:

* ``forward(views)``: the network outputs of one step (any structure), run under autocast;
* ``loss(out, index) -> (loss, z)``: the scalar loss, computed in fp32 outside autocast,
  and an NxC projection whose spread the collapse monitor watches;
* hooks the engine calls around the update: ``before_forward(step)`` (SwAV normalises
  its prototypes), ``after_backward(step)`` (SwAV freezes them at the start) and
  ``after_step(step, total_steps)`` (momentum/EMA encoders of MoCo and BYOL);
* ``eval_encoder()``: the ResNet whose backbone is evaluated (kNN monitor), fc = projector;
* ``param_groups(exclude_bias_bn)``: optimizer groups (SimSiam's predictor gets its own group).

``state_dict`` keys follow each method's official checkpoints where one exists
(SimSiam ``encoder``/``predictor``, MoCo ``encoder_q``/``encoder_k``/``queue``), so
``siambench convert`` finds the query/online encoder of every method.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.distributed as dist

__all__ = ["Method", "split_decay_groups", "gather_with_grad", "momentum_update"]


class Method(nn.Module):
    """Base class of the pretraining methods (see the module docstring)."""

    name: str = ""
    num_views: int = 2  # views per image the data pipeline must produce
    monitor_dim: int = 2048  # C of the z that ``loss`` returns (collapse threshold ~ 1/sqrt(C))

    def forward(self, views: Sequence[torch.Tensor]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, out: Any, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scalar loss, NxC monitored projection) from ``forward``'s output, in fp32."""
        raise NotImplementedError  # pragma: no cover - abstract

    def eval_encoder(self) -> nn.Module:
        return self.encoder  # type: ignore[return-value]

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch (SwAV starts its queue at an epoch)."""

    def before_forward(self, step: int) -> None:
        """Called before the step's forward (``step`` = global step, 0-based)."""

    def after_backward(self, step: int) -> None:
        """Called between ``backward`` and ``optimizer.step``."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after ``optimizer.step`` (``total_steps`` = steps of the whole run)."""

    def param_groups(self, exclude_bias_bn: bool = False) -> list[dict]:
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        return split_decay_groups(params) if exclude_bias_bn else [{"name": "all", "params": [p for _, p in params]}]

    def extra_state(self) -> dict:
        """Python-side state to checkpoint besides the state dict (e.g. queue fill counters)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def split_decay_groups(named_params: Sequence[tuple[str, nn.Parameter]]) -> list[dict]:
    """Weights in one group; biases and BN parameters (1-d tensors) in another with no weight
    decay and no LARS adaptation (BYOL App. C; SimCLR's ``exclude_from_weight_decay``)."""
    decay = [p for n, p in named_params if p.ndim > 1]
    no_decay = [p for n, p in named_params if p.ndim <= 1]
    groups = [{"name": "decay", "params": decay}]
    if no_decay:
        groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (NxC) from all ranks along dim 0, keeping the gradient to every rank's
    slice (SimCLR's negatives from the whole global batch). Identity in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """theta_target <- m * theta_target + (1 - m) * theta_online, parameter by parameter
    (MoCo ``_momentum_update_key_encoder``; BYOL's EMA). Buffers (BN statistics) are not averaged."""
    t, o = list(target.parameters()), [p.detach() for p in online.parameters()]
    # same rounding as the official ``k * m + q * (1 - m)``; foreach = one kernel per op, no host sync
    torch._foreach_mul_(t, m)
    torch._foreach_add_(t, torch._foreach_mul(o, 1.0 - m))
