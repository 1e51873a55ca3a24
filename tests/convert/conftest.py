"""Checkpoints in every layout ``convert`` reads, built from random torchvision ResNets.

BatchNorm statistics are randomised too, so a mapping that mixes up ``running_mean``
and ``running_var`` (or two BNs) changes the features and fails verification.
"""
from __future__ import annotations

import functools
from typing import Callable

import pytest
import torch

from siambench.pretrain.methods.encoders import build_encoder

# Stem width of the tiny ResNets most convert tests use (MODEL.WIDTH; 64 = torchvision's).
TINY_WIDTH = 8


@functools.lru_cache(maxsize=None)
def _random_resnet_state(arch: str, seed: int, width: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_encoder(arch, width=width)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.num_batches_tracked.fill_(1000)
    return model.state_dict()


@pytest.fixture(scope="session")
def resnet_state() -> Callable[..., dict[str, torch.Tensor]]:
    """``resnet_state(arch, seed=0, width=TINY_WIDTH)``: a random torchvision-named state dict (fc and
    counters included) of the narrow ResNet of ``MODEL.WIDTH`` (tiny files); ``width=64`` is torchvision's."""

    def make(arch: str = "resnet18", seed: int = 0, width: int = TINY_WIDTH) -> dict[str, torch.Tensor]:
        return dict(_random_resnet_state(arch, seed, width))

    return make


def simsiam_ckpt(tv: dict[str, torch.Tensor], *, siambench: bool = False, arch: str = "resnet18") -> dict:
    """Official SimSiam layout: encoder with the projector at fc.*, predictor, epoch/arch/optimizer."""
    sd = {f"module.encoder.{k}": v for k, v in tv.items() if not k.startswith("fc.")}
    dim = tv["fc.weight"].shape[1]
    sd |= {
        "module.encoder.fc.0.weight": torch.randn(dim, dim),
        "module.encoder.fc.1.weight": torch.ones(dim),
        "module.encoder.fc.1.bias": torch.zeros(dim),
        "module.encoder.fc.6.weight": torch.randn(16, dim),
        "module.predictor.0.weight": torch.randn(8, 16),
        "module.predictor.3.weight": torch.randn(16, 8),
        "module.predictor.3.bias": torch.zeros(16),
    }
    ckpt = {"epoch": 100, "arch": arch, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}
    if siambench:
        ckpt |= {"siambench_version": "0.1.0", "config": "MODEL:\n  ARCH: resnet18\n"}
    return ckpt


def moco_ckpt(tv: dict[str, torch.Tensor], arch: str = "resnet18") -> dict:
    """MoCo v2 layout: query/key encoders with an MLP head, and the queue."""
    dim = tv["fc.weight"].shape[1]
    body = {k: v for k, v in tv.items() if not k.startswith("fc.")}
    head = {"fc.0.weight": torch.randn(dim, dim), "fc.0.bias": torch.zeros(dim),
            "fc.2.weight": torch.randn(16, dim), "fc.2.bias": torch.zeros(16)}
    sd = {f"module.encoder_q.{k}": v for k, v in (body | head).items()}
    sd |= {f"module.encoder_k.{k}": v.clone() for k, v in (body | head).items()}
    sd |= {"module.queue": torch.randn(16, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"epoch": 200, "arch": arch, "state_dict": sd, "optimizer": {}}


@pytest.fixture
def save(tmp_path):
    """``save(obj, name)``: torch.save into tmp_path and return the path."""

    def _save(obj, name: str = "ckpt.pth"):
        path = tmp_path / name
        torch.save(obj, path)
        return path

    return _save


@pytest.fixture(scope="session")
def simsiam_factory():
    return simsiam_ckpt


@pytest.fixture(scope="session")
def moco_factory():
    return moco_ckpt
