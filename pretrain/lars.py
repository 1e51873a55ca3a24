"""LARS: layer-wise adaptive rate scaling on top of SGD with momentum, in three official flavours.

``rule`` picks whose update is reproduced (``SOLVER.LARS_RULE``); for a parameter ``p`` with
gradient ``g``, weight decay ``wd``, trust coefficient ``eta``, momentum ``m``, rate ``lr``:

``larc`` -- apex ``LARC(clip=False)`` around ``torch.optim.SGD`` (SimSiam's linear evaluation,
SwAV's ``main_swav.py``)::

    if ||p|| > 0 and ||g|| > 0:  d = (g + wd p) * eta ||p|| / (||g|| + wd ||p|| + eps)
    else:                        d = g                       # no scaling, no weight decay
    buf = m buf + d;  p -= lr buf

``byol`` -- deepmind-research ``byol/utils/optimizers.py`` (``add_weight_decay``,
``scale_by_lars``, ``optax.scale(-lr)``): the lr multiplies the momentum buffer::

    d = g + wd p;  t = eta ||p|| / ||d||  (1 when ||p|| = 0 or ||d|| = 0)
    buf = m buf + t d;  p -= lr buf

``simclr`` -- google-research/simclr ``lars_optimizer.py`` (``classic_momentum=True``): the
same trust ratio, with the lr *inside* the momentum (a changing lr does not rescale the
history)::

    d = g + wd p;  t = as for byol
    v = m v + lr t d;  p -= v

A group with ``lars_exclude: True`` gets t = 1 (biases and BN parameters of SimCLR and BYOL,
whose weight decay is 0 through the group's own ``weight_decay``). ``clip=True`` is LARC's
clipping mode (rate ``min(local / lr, 1)``), ``larc`` only. Buffers start at zero, as in all
three codes (so the first ``buf`` is ``d``, torch SGD's first step).

The step is vectorised over each group (``torch._foreach_*`` and one stacked vector of norms):
a fixed number of kernel launches per group instead of a dozen per parameter, and no host
synchronisation.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

__all__ = ["LARS", "LARS_RULES"]

LARS_RULES = ("larc", "byol", "simclr")


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-tensor step is scaled by a LARS trust ratio.

    Args:
        params: parameters or parameter groups, as for ``torch.optim.SGD``.
        lr: global learning rate (the schedule multiplies this).
        momentum: SGD momentum (0.9 in every recipe here).
        weight_decay: L2 penalty folded into the gradient before scaling.
        trust_coefficient: LARS' ``eta`` (0.001 in all three official codes).
        eps: LARC's denominator epsilon (``larc`` only; the other rules have none).
        clip: LARC's clipping mode (``larc`` only).
        rule: ``larc``, ``byol`` or ``simclr`` (see the module docstring).
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float,
                 momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 0.001,
                 eps: float = 1e-8, clip: bool = False, rule: str = "larc") -> None:
        if lr < 0:
            raise ValueError(f"LARS: learning rate must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if trust_coefficient <= 0:
            raise ValueError(f"LARS: trust_coefficient must be > 0, got {trust_coefficient}")
        if rule not in LARS_RULES:
            raise ValueError(f"LARS: rule must be one of {', '.join(LARS_RULES)}, got {rule!r}")
        if clip and rule != "larc":
            raise ValueError(f"LARS: clip is LARC's mode; rule {rule!r} has none")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, clip=clip, rule=rule)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        """Groups saved before ``rule`` existed (``load_state_dict`` of an older checkpoint) get this LARS's."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LARS does not support sparse gradients")
            grads = [p.grad for p in params]
            if group["rule"] == "larc":
                d = self._larc_direction(params, grads, group)
            else:
                d = self._trust_scaled_direction(params, grads, group)
            self._apply(params, d, group)
        return loss

    @staticmethod
    def _larc_direction(params: list[torch.Tensor], grads: list[torch.Tensor], group: dict) -> list[torch.Tensor]:
        """apex LARC: ``(g + wd p) * eta ||p|| / (||g|| + wd ||p|| + eps)`` where both norms are > 0, else ``g``."""
        wd, lr = group["weight_decay"], group["lr"]
        if group.get("lars_exclude", False):
            return torch._foreach_add(grads, params, alpha=wd) if wd else [g.clone() for g in grads]
        p_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        adapt = (p_norm > 0) & (g_norm > 0)
        local = group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + group["eps"])
        if group["clip"]:
            local = torch.clamp(local / lr, max=1.0) if lr > 0 else torch.ones_like(local)
        scale = torch.where(adapt, local, torch.ones_like(local))
        d = grads
        if wd:  # LARC adds no weight decay where it does not adapt: d = g there
            decay = wd * adapt.to(p_norm.dtype)
            d = torch._foreach_add(grads, torch._foreach_mul(params, list(decay.unbind(0))))
        return torch._foreach_mul(d, list(scale.unbind(0)))

    @staticmethod
    def _trust_scaled_direction(params: list[torch.Tensor], grads: list[torch.Tensor],
                                group: dict) -> list[torch.Tensor]:
        """SimCLR / BYOL: ``t (g + wd p)``, ``t = eta ||p|| / ||g + wd p||`` (1 at a zero norm or if excluded)."""
        wd = group["weight_decay"]
        d = torch._foreach_add(grads, params, alpha=wd) if wd else [g.clone() for g in grads]
        if group.get("lars_exclude", False):
            return d
        p_norm = torch.stack(torch._foreach_norm(params))
        d_norm = torch.stack(torch._foreach_norm(d))
        trust = group["trust_coefficient"] * p_norm / d_norm
        trust = torch.where((p_norm > 0) & (d_norm > 0), trust, torch.ones_like(trust))
        torch._foreach_mul_(d, list(trust.unbind(0)))
        return d

    def _apply(self, params: list[torch.Tensor], d: list[torch.Tensor], group: dict) -> None:
        """Momentum and the parameter update (lr inside the momentum for ``simclr``, outside otherwise)."""
        lr, momentum = group["lr"], group["momentum"]
        if group["rule"] == "simclr":
            torch._foreach_mul_(d, lr)
        if momentum:
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, d)
            d = bufs
        torch._foreach_add_(params, d, alpha=-1.0 if group["rule"] == "simclr" else -lr)
