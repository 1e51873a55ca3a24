"""Per-image targets eta_x of the paper's hypothesis (Sec. 5): SimSiam as alternation.

SimSiam approximately solves ``min_{theta, eta} E ||F_theta(T(x)) - eta_x||^2`` by
alternating ``eta_x <- F_theta(T'(x))`` and an SGD step on theta. Two variants:

* ``KStepTargets`` (k-step alternation, Table "k-step"): every k SGD steps, the
  targets of the next k batches are precomputed with the current theta from a
  fresh view T'(x) (a second loader walking the same sample order) and cached;
  the k steps then regress both views' predictions onto them.
* ``MovingAverageTargets`` (no predictor): ``eta_x <- m eta_x + (1-m) F_theta(T'(x))``
  kept for every image, updated from the current views' (detached) projections.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .utils.dist import all_gather_cat

__all__ = ["KStepTargets", "MovingAverageTargets"]


class KStepTargets:
    """Targets cached for k steps; ``k = -1`` means one epoch.

    Args:
        k: SGD steps per alternation.
        encode: views -> NxC projections with the current theta (no grad, same device/AMP as training).
    """

    def __init__(self, k: int, encode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if k == 0 or k < -1:
            raise ValueError(f"HYPOTHESIS.K_STEPS must be >= 1 or -1 (one epoch), got {k}")
        self.k, self.encode = k, encode
        self._source: Iterator | None = None
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    def begin_epoch(self, target_batches: Iterator) -> None:
        """``target_batches`` yields ``(view, index)`` in the training loader's sample order."""
        self._source, self._cache = iter(target_batches), []

    @torch.no_grad()
    def _refresh(self) -> None:
        assert self._source is not None, "KStepTargets.begin_epoch was not called"
        n = self.k if self.k > 0 else -1
        while n != 0:
            try:
                view, index = next(self._source)
            except StopIteration:
                break
            self._cache.append((index, self.encode(view).float()))  # eta_x = F_theta^t(T'(x)), NxC
            n -= 1

    def __call__(self, index: torch.Tensor, zs: list[torch.Tensor]) -> torch.Tensor:
        if not self._cache:
            self._refresh()
        cached_index, eta = self._cache.pop(0)
        if not torch.equal(cached_index.cpu(), index.cpu()):
            raise RuntimeError("k-step targets out of step with the training batches (different sample order)")
        return eta

    def state_dict(self) -> dict:
        return {}  # caches are rebuilt at each epoch start; checkpoints are written between epochs

    def load_state_dict(self, state: dict) -> None:
        pass


class MovingAverageTargets:
    """One target per image, an exponential moving average of its (normalised) projections.

    Args:
        num_images: dataset size N (the bank is NxC on every rank).
        dim: C.
        momentum: m.
        device: where the bank lives.
    """

    def __init__(self, num_images: int, dim: int, momentum: float, device: torch.device | str) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"HYPOTHESIS.MOMENTUM must be in [0, 1), got {momentum}")
        self.m = momentum
        self.bank = torch.zeros(num_images, dim, device=device)  # NxC
        self.seen = torch.zeros(num_images, dtype=torch.bool, device=device)

    def begin_epoch(self, target_batches: Iterator | None = None) -> None:
        pass

    @torch.no_grad()
    def __call__(self, index: torch.Tensor, zs: list[torch.Tensor]) -> torch.Tensor:
        # F_theta(T'(x)) estimated by the mean of this step's (detached) view projections, NxC
        new = torch.stack([F.normalize(z.detach().float(), dim=1) for z in zs]).mean(0).to(self.bank.device)
        idx = index.to(self.bank.device, non_blocking=True)  # the loader's (pinned) indices: an asynchronous copy
        all_idx, all_new = all_gather_cat(idx), all_gather_cat(new)  # every rank keeps the whole bank
        old, seen = self.bank[all_idx], self.seen[all_idx].unsqueeze(1)
        self.bank[all_idx] = torch.where(seen, self.m * old + (1 - self.m) * all_new, all_new)
        self.seen[all_idx] = True
        return self.bank[idx].to(zs[0].device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"bank": self.bank.cpu(), "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.bank.copy_(state["bank"])
        self.seen.copy_(state["seen"])
