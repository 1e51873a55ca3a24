"""LARS: layer-wise adaptive rate scaling on top of SGD with momentum.

The SimSiam linear-evaluation recipe trains the classifier with SGD wrapped in
apex's ``LARC`` (``trust_coefficient=0.001``, ``clip=False``). This module
reimplements exactly that update as a plain ``torch.optim.Optimizer`` so it needs
no apex, works with ``state_dict``/resume and with per-group learning rates.

For every parameter ``p`` with gradient ``g``, weight decay ``wd`` and ``eps``:

    if ||p|| > 0 and ||g|| > 0:
        g <- (g + wd * p) * trust * ||p|| / (||g|| + wd * ||p|| + eps)
    else:                              # e.g. a zero-initialised bias on step 1
        g <- g                         # no scaling and, as in LARC, no weight decay

    buf <- g                      on the first step, else  momentum * buf + g
    p   <- p - lr * buf

A group with ``lars_exclude: True`` skips the trust ratio (plain SGD with momentum and its
own weight decay), as BYOL and SimCLR do for biases and BN parameters.

With ``clip=True`` the local rate is ``min(local_lr / lr, 1)`` instead (LARC's
clipping mode, so the effective rate never exceeds the global ``lr``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

__all__ = ["LARS"]


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-tensor step is scaled by LARS' trust ratio.

    Args:
        params: parameters or parameter groups, as for ``torch.optim.SGD``.
        lr: global learning rate (the schedule multiplies this).
        momentum: SGD momentum (0.9 in the SimSiam linear-evaluation recipe).
        weight_decay: L2 penalty folded into the gradient before scaling (0 in the recipe).
        trust_coefficient: LARS' trust coefficient ``eta`` (0.001 as in the official code).
        eps: added to the denominator of the trust ratio for stability.
        clip: LARC's clipping mode; ``False`` (the recipe) scales the rate directly.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        clip: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"LARS: learning rate must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if trust_coefficient <= 0:
            raise ValueError(f"LARS: trust_coefficient must be > 0, got {trust_coefficient}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, clip=clip)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                if group.get("lars_exclude", False):  # plain SGD (biases/BN in BYOL and SimCLR)
                    d_p = p.grad.add(p, alpha=wd) if wd else p.grad.clone()
                else:
                    d_p = self._scaled_grad(p, p.grad, lr, wd, group)
                if momentum:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d_p.clone()
                    else:
                        buf.mul_(momentum).add_(d_p)
                    d_p = buf
                p.add_(d_p, alpha=-lr)
        return loss

    @staticmethod
    def _scaled_grad(p: torch.Tensor, grad: torch.Tensor, lr: float, wd: float, group: dict) -> torch.Tensor:
        """The gradient after weight decay and trust-ratio scaling (a new tensor).

        Written with ``torch.where`` rather than ``if norm == 0`` so that a step never
        synchronises the GPU with the host.
        """
        param_norm = torch.linalg.vector_norm(p)
        grad_norm = torch.linalg.vector_norm(grad)
        # LARC leaves tensors with a zero norm untouched, weight decay included.
        adapt = (param_norm > 0) & (grad_norm > 0)
        local_lr = group["trust_coefficient"] * param_norm / (grad_norm + wd * param_norm + group["eps"])
        if group["clip"]:
            local_lr = torch.clamp(local_lr / lr, max=1.0) if lr > 0 else torch.ones_like(local_lr)
        scale = torch.where(adapt, local_lr, torch.ones_like(local_lr))
        if wd:
            grad = torch.where(adapt, grad + wd * p, grad)
        return grad * scale
