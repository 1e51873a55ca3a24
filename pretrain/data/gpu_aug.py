"""Batched photometric half of the MoCo v2 augmentation, on the training device.

Workers hand over uint8 crops (``transforms.build_crop_transform``); ``BatchAugment``
applies, per sample and with the official probabilities and ranges, colour jitter
(brightness, contrast, saturation, hue in a random order per sample), grayscale,
Gaussian blur and ImageNet normalisation to the whole batch with a handful of
kernels -- instead of ~10 PIL calls per image on the CPU.

Random parameters are drawn on the CPU with torch's global generator (cheap, N
numbers each), so runs are reproducible and a checkpoint's RNG state covers them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .transforms import BLUR_P, BLUR_SIGMA, GRAYSCALE_P, IMAGENET_MEAN, IMAGENET_STD, JITTER, JITTER_P

__all__ = ["BatchAugment", "rgb_to_hsv", "hsv_to_rgb", "grayscale"]

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL and torchvision


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW -> Nx1xHxW luma."""
    w = x.new_tensor(_GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW RGB in [0, 1] -> HSV in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    v = maxc
    s = delta / maxc.clamp_min(1e-12)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW HSV in [0, 1] -> RGB in [0, 1]."""
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # sector i -> (r, g, b) picks from (v, t, p, q)
    choices = torch.stack([v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q], dim=1).view(
        x.shape[0], 3, 6, *x.shape[2:])
    return choices.gather(2, i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)).squeeze(2)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), f)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), f)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + f.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(hsv)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable blur of each image with its own sigma (grouped conv, reflect padding)."""
    n, c, h, w = x.shape
    radius = min(int(math.ceil(3 * max_sigma)), (min(h, w) - 1) // 2)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1).to(x)) ** 2)  # NxK
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C)xK
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


class BatchAugment(torch.nn.Module):
    """uint8 Nx3xHxW crops -> augmented, normalised float views (MoCo v2 photometric ops).

    Args:
        jitter: (brightness, contrast, saturation, hue) strengths, as ``ColorJitter``.
        jitter_p, grayscale_p, blur_p: probabilities of each op (per sample).
        blur_sigma: range of the blur's standard deviation in pixels.
        channels_last: return channels-last memory format (faster convs on GPU).
    """

    def __init__(self, jitter: Sequence[float] = JITTER, jitter_p: float = JITTER_P,
                 grayscale_p: float = GRAYSCALE_P, blur_sigma: Sequence[float] = BLUR_SIGMA,
                 blur_p: float = BLUR_P, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.jitter = tuple(jitter)
        self.jitter_p, self.grayscale_p, self.blur_p = jitter_p, grayscale_p, blur_p
        self.blur_sigma = tuple(blur_sigma)
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def _factors(self, n: int) -> torch.Tensor:
        """Nx4 jitter factors: 1 +- strength for b/c/s, +- strength for hue."""
        u = torch.rand(n, 4) * 2 - 1
        strength = torch.tensor(self.jitter)
        return torch.cat([1 + u[:, :3] * strength[:3], u[:, 3:] * strength[3:]], dim=1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"BatchAugment expects uint8 Nx3xHxW crops, got {x.dtype} {tuple(x.shape)}")
        n, dev = x.shape[0], x.device
        x = x.float().div_(255)
        # All random draws first, on the CPU, in a fixed order (reproducible across devices).
        do_jitter = torch.rand(n) < self.jitter_p
        factors = self._factors(n)
        order = torch.argsort(torch.rand(n, 4), dim=1)  # a random permutation of the 4 ops per sample
        do_gray = torch.rand(n) < self.grayscale_p
        do_blur = torch.rand(n) < self.blur_p
        sigma = torch.empty(n).uniform_(*self.blur_sigma)

        for pos in range(4):
            for op_id, op in enumerate(_JITTER_OPS):
                idx = torch.nonzero(do_jitter & (order[:, pos] == op_id)).flatten()
                if len(idx):
                    idx_d = idx.to(dev)
                    x[idx_d] = op(x[idx_d], factors[idx, op_id].to(dev))
        idx = torch.nonzero(do_gray).flatten().to(dev)
        if len(idx):
            x[idx] = grayscale(x[idx]).expand(-1, 3, -1, -1)
        idx = torch.nonzero(do_blur).flatten()
        if len(idx):
            x[idx.to(dev)] = _gaussian_blur(x[idx.to(dev)], sigma[idx].to(dev), self.blur_sigma[1])
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
