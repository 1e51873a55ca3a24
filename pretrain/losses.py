"""SimSiam's loss: the (symmetrized) distance D between predictions p and targets z.

``D(p, z) = -cos(p, z)`` (default) or the cross-entropy variant of the paper
(Sec. 4.5): ``D(p, z) = -softmax(z) . log softmax(p)``. Targets arrive already detached
when stop-grad is on (``methods.simsiam.SimSiam`` detaches them), so D never detaches itself.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["negative_cosine", "cross_entropy_similarity", "SIMILARITIES", "SimSiamLoss"]


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -<p/|p|, z/|z|>; p, z: NxC. In [-1, 1], -1 = aligned."""
    return -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1).mean()


def cross_entropy_similarity(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -softmax(z) . log softmax(p) along channels; p, z: NxC."""
    return -(F.softmax(z, dim=1) * F.log_softmax(p, dim=1)).sum(dim=1).mean()


SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": negative_cosine,
    "cross_entropy": cross_entropy_similarity,
}

# Symmetrization modes: (prediction view, target view, weight) terms over the views.
_PAIRS = {
    "sym": ((0, 1, 0.5), (1, 0, 0.5)),  # D(p1, z2)/2 + D(p2, z1)/2
    "asym": ((0, 1, 1.0),),  # D(p1, z2)
    "asym2x": ((0, 1, 0.5), (2, 3, 0.5)),  # two asymmetric pairs per image (4 views)
}


class SimSiamLoss:
    """Combine D over views.

    Args:
        similarity: ``"cosine"`` or ``"cross_entropy"``.
        symmetry: ``"sym"`` (paper), ``"asym"`` or ``"asym2x"`` (needs 4 views).
    """

    def __init__(self, similarity: str = "cosine", symmetry: str = "sym") -> None:
        if similarity not in SIMILARITIES:
            raise ValueError(f"LOSS.SIMILARITY must be one of {sorted(SIMILARITIES)}, got {similarity!r}")
        if symmetry not in _PAIRS:
            raise ValueError(f"LOSS.SYMMETRY must be one of {sorted(_PAIRS)}, got {symmetry!r}")
        self.D = SIMILARITIES[similarity]
        self.pairs = _PAIRS[symmetry]
        self.num_views = 4 if symmetry == "asym2x" else 2

    def __call__(self, ps: Sequence[torch.Tensor], zs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Loss from per-view predictions ``ps`` and targets ``zs``."""
        if len(ps) < self.num_views:
            raise ValueError(f"this loss needs {self.num_views} views, got {len(ps)} (DATA.NUM_VIEWS)")
        return sum(w * self.D(ps[i], zs[j]) for i, j, w in self.pairs)  # type: ignore[return-value]

    def to_targets(self, ps: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Loss against one per-image target for every view (the hypothesis variants, Sec. 5)."""
        return sum(self.D(p, target) for p in ps) / len(ps)  # type: ignore[return-value]
