"""BYOL's colour jitter, as deepmind-research ``byol/utils/augmentations.py`` computes it.

It differs from torchvision's ``ColorJitter`` in three of its four operations:

* brightness adds ``delta ~ U(-b, b)`` to every channel (torchvision multiplies by ``U(1-b, 1+b)``);
* contrast scales each channel around its own spatial mean (torchvision: the grayscale mean);
* saturation scales HSV's S and clips it (torchvision blends with the grayscale image).

Hue shifts HSV's H by ``U(-h, h)`` (as torchvision). The four run in a random order, each
followed by a clip to [0, 1]. The image goes PIL -> float in [0, 1] -> PIL, so the result is
rounded to 8 bits for the PIL blur and solarize that follow (official keeps floats: a named
difference of at most 1/255 per pixel after this step).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

__all__ = ["ByolColorJitter", "rgb_to_hsv", "hsv_to_rgb", "byol_jitter_tensor"]


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """3xHxW RGB in [0, 1] -> HSV with H, S, V in [0, 1]."""
    r, g, b = rgb
    v, _ = rgb.max(dim=0)
    rng = v - rgb.min(dim=0).values
    s = torch.where(v > 0, rng / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    safe = torch.where(rng > 0, rng, torch.ones_like(rng))
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(rng > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h % 1.0, s, v])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_hsv``."""
    h, s, v = hsv
    k = torch.stack([(5.0 + h * 6.0) % 6.0, (3.0 + h * 6.0) % 6.0, (1.0 + h * 6.0) % 6.0])  # r, g, b
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def _brightness(x: torch.Tensor, delta: float) -> torch.Tensor:
    return x + delta


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = x.mean(dim=(-2, -1), keepdim=True)  # per channel
    return factor * (x - mean) + mean


def _saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb(torch.stack([h, torch.clamp(s * factor, 0.0, 1.0), v]))


def _hue(x: torch.Tensor, delta: float) -> torch.Tensor:
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb(torch.stack([(h + delta) % 1.0, s, v]))


def byol_jitter_tensor(x: torch.Tensor, params: list[tuple[Callable, float]]) -> torch.Tensor:
    """Apply ``(op, value)`` pairs in order to a 3xHxW float image, clipping to [0, 1] after each."""
    for op, value in params:
        x = torch.clamp(op(x, value), 0.0, 1.0)
    return x


class ByolColorJitter:
    """PIL -> PIL colour jitter of BYOL (brightness, contrast, saturation, hue strengths)."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        self.strengths = (brightness, contrast, saturation, hue)

    def sample(self) -> list[tuple[Callable, float]]:
        """The ops in a random order with their random values (deltas for brightness/hue, factors else)."""
        b, c, s, h = self.strengths
        ops = [(_brightness, b, 0.0), (_contrast, c, 1.0), (_saturation, s, 1.0), (_hue, h, 0.0)]
        chosen = []
        for k in torch.randperm(4).tolist():
            op, strength, centre = ops[k]
            if strength > 0:
                chosen.append((op, centre + float(torch.empty(()).uniform_(-strength, strength))))
        return chosen

    def __call__(self, img: Image.Image) -> Image.Image:
        x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        y = byol_jitter_tensor(x, self.sample())
        return Image.fromarray((y.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))

    def __repr__(self) -> str:
        b, c, s, h = self.strengths
        return f"{type(self).__name__}(brightness={b}, contrast={c}, saturation={s}, hue={h})"
