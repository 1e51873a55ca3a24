"""SimSiam's MLP heads: the projector (end of the encoder f) and the predictor h.

BatchNorm placement follows the paper's Table 3 cases, named by ``MODEL.BN_CASE``:

======== ================= ================= ============= ==============
case     proj. hidden      proj. output      pred. hidden  pred. output
======== ================= ================= ============= ==============
none     (a)               -                 -             -
hidden   (b) yes           -                 yes           -
default  (c) yes           yes               yes           -
all      (d) yes           yes               yes           yes
======== ================= ================= ============= ==============

In the default case the layer indices match the official code, so state-dict keys
(``encoder.fc.{0,1,3,4,6,7}``, ``predictor.{0,1,3}``) equal the official checkpoints'.
A Linear followed by BN has no (trainable) bias: BN removes it.
"""
from __future__ import annotations

import torch.nn as nn

__all__ = ["BN_CASES", "BNPlacement", "build_projector", "build_predictor"]


class BNPlacement:
    """Which head layers carry BatchNorm."""

    def __init__(self, proj_hidden: bool, proj_output: bool, pred_hidden: bool, pred_output: bool) -> None:
        self.proj_hidden, self.proj_output = proj_hidden, proj_output
        self.pred_hidden, self.pred_output = pred_hidden, pred_output


BN_CASES: dict[str, BNPlacement] = {
    "none": BNPlacement(False, False, False, False),  # Table 3 (a): 34.6
    "hidden": BNPlacement(True, False, True, False),  # Table 3 (b): 67.4
    "default": BNPlacement(True, True, True, False),  # Table 3 (c): 68.1
    "all": BNPlacement(True, True, True, True),  # Table 3 (d): unstable
}
_ALIASES = {"a": "none", "b": "hidden", "c": "default", "d": "all"}


def get_bn_case(name: str) -> BNPlacement:
    key = _ALIASES.get(name, name)
    if key not in BN_CASES:
        raise ValueError(f"MODEL.BN_CASE must be one of {sorted(BN_CASES) + sorted(_ALIASES)}, got {name!r}")
    return BN_CASES[key]


def _linear_bn(in_dim: int, out_dim: int, bn: bool, relu: bool, affine: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=affine))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def build_projector(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3,
                    bn_case: str = "default") -> nn.Sequential:
    """(Linear, BN, ReLU) x (num_layers - 1), Linear, BN(affine=False): ``in_dim`` -> ``out_dim``.

    Args:
        in_dim: encoder feature dim (2048 for ResNet-50).
        hidden_dim: width of the hidden layers (the official code uses ``in_dim``).
        out_dim: dimension d of z (2048).
        num_layers: 3 on ImageNet (the paper uses 2 on CIFAR).
        bn_case: see the module docstring.
    """
    if num_layers < 1:
        raise ValueError(f"MODEL.PROJ_LAYERS must be >= 1, got {num_layers}")
    bn = get_bn_case(bn_case)
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += _linear_bn(dim, hidden_dim, bn.proj_hidden, relu=True)
        dim = hidden_dim
    out = nn.Linear(dim, out_dim)
    if bn.proj_output:
        # The official code keeps this bias (so its checkpoint keys exist) but freezes it: BN follows.
        out.bias.requires_grad_(False)
        layers += [out, nn.BatchNorm1d(out_dim, affine=False)]
    else:
        layers.append(out)
    return nn.Sequential(*layers)


def build_predictor(dim: int, pred_dim: int, bn_case: str = "default") -> nn.Sequential:
    """Bottleneck MLP h: Linear(dim, pred_dim), BN, ReLU, Linear(pred_dim, dim)."""
    bn = get_bn_case(bn_case)
    layers = _linear_bn(dim, pred_dim, bn.pred_hidden, relu=True)
    layers += _linear_bn(pred_dim, dim, bn.pred_output, relu=False, affine=True)
    return nn.Sequential(*layers)
