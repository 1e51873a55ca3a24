"""Batched photometric half of the MoCo v2 augmentation, on the training device.

Workers hand over uint8 crops (``transforms.build_crop_transform``); ``BatchAugment``
applies, per sample and with the official probabilities and ranges, colour jitter
(brightness, contrast, saturation, hue in a random order per sample), grayscale,
Gaussian blur and ImageNet normalisation to the whole batch with a handful of
kernels -- instead of ~10 PIL calls per image on the CPU.

No host<->device synchronisation: the per-sample parameters are drawn on the CPU with
torch's global generator (cheap, N numbers each; runs are reproducible, identical on
every device, and a checkpoint's RNG state covers them), the host derives from them
which samples each op touches, and everything the device needs -- factors, sigmas and
index lists -- travels in **one** (pinned, non-blocking) host-to-device copy per call.
The device only gathers/scatters with those indices; nothing is read back.

Where it helps: on a GPU, where the photometric ops cost ~nothing and the CPU workers
are the bottleneck (ColorJitter + blur are ~60 % of the PIL pipeline's time). On a
CPU-only run the same ops on float tensors are slower than PIL's uint8 ones, so
CPU runs keep ``DATA.AUG_BACKEND pil`` (the default).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .transforms import BLUR_P, BLUR_SIGMA, GRAYSCALE_P, IMAGENET_MEAN, IMAGENET_STD, JITTER, JITTER_P

__all__ = ["AugParams", "BatchAugment", "rgb_to_hsv", "hsv_to_rgb", "grayscale"]

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL (torchvision's tensor op: 0.2989)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW -> Nx1xHxW luma (Python-scalar weights: no constant tensor copied to the device)."""
    wr, wg, wb = _GRAY_WEIGHTS
    return (wr * x[:, 0:1]).add_(x[:, 1:2], alpha=wg).add_(x[:, 2:3], alpha=wb)


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
    """Nx3xHxW HSV in [0, 1] -> RGB in [0, 1].

    Closed form of the sector table: channel n (r: 5, g: 3, b: 1) is
    ``v - v*s*clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6h) mod 6`` -- elementwise,
    without the 18-way gather of the table lookup.
    """
    h6, vs, v = 6.0 * x[:, 0], x[:, 1] * x[:, 2], x[:, 2]
    channels = []
    for n in (5.0, 3.0, 1.0):  # r, g, b
        k = (h6 + n) % 6.0
        channels.append(v - vs * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(channels, dim=1)


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
    """Separable blur of each image with its own sigma (grouped conv).

    Edge pixels are replicated, as PIL's ``GaussianBlur`` (the paper's path) does; measured
    against it: mean |diff| < 0.2/255, interior max < 5/255 (PIL approximates the Gaussian
    with box blurs). torchvision's tensor op pads by reflection, so only the interior equals it.
    """
    n, c, h, w = x.shape
    radius = min(int(math.ceil(3 * max_sigma)), (min(h, w) - 1) // 2)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1).to(x)) ** 2)  # NxK
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C)xK
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


@dataclasses.dataclass
class AugParams:
    """The random parameters of one batch, per sample (host tensors).

    Attributes:
        jitter: N bool, colour jitter applied (probability ``jitter_p``).
        factors: Nx4, brightness/contrast/saturation factors in 1 +- strength and the hue shift in +- strength.
        order: Nx4 long, ``order[k, pos]`` is the op (0 b, 1 c, 2 s, 3 h) applied at position ``pos``:
            a uniformly random permutation per sample, as ``ColorJitter.get_params``' ``randperm(4)``.
        gray: N bool, grayscale applied (probability ``grayscale_p``).
        blur: N bool, Gaussian blur applied (probability ``blur_p``).
        sigma: N, blur standard deviation ~ U(blur_sigma).
    """

    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor


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

    def sample_params(self, n: int) -> AugParams:
        """Draw the parameters of ``n`` samples on the CPU, in a fixed order (reproducible)."""
        jitter = torch.rand(n) < self.jitter_p
        u = torch.rand(n, 4) * 2 - 1
        strength = torch.tensor(self.jitter)
        factors = torch.cat([1 + u[:, :3] * strength[:3], u[:, 3:] * strength[3:]], dim=1)
        order = torch.argsort(torch.rand(n, 4), dim=1)  # a uniformly random permutation of the 4 ops
        gray = torch.rand(n) < self.grayscale_p
        blur = torch.rand(n) < self.blur_p
        sigma = torch.empty(n).uniform_(*self.blur_sigma)
        return AugParams(jitter, factors, order, gray, blur, sigma)

    @staticmethod
    def _pack(p: AugParams, pin: bool) -> tuple[torch.Tensor, list[tuple[int, int, int]], tuple[int, int], tuple[int, int]]:
        """One float32 host buffer [factors Nx4 | sigma N | index lists] and where each list starts.

        Indices (< 2^24) are exact in float32. Returns (buffer, [(op, start, length)] of the
        jitter positions in order, (start, length) of grayscale, (start, length) of blur).
        """
        n = p.factors.shape[0]
        parts, offset = [p.factors.reshape(-1).float(), p.sigma.float()], 5 * n
        jitter_plan = []
        for pos in range(4):
            for op_id in range(4):
                idx = torch.nonzero(p.jitter & (p.order[:, pos] == op_id)).flatten()  # host tensors: no device sync
                if len(idx):
                    jitter_plan.append((op_id, offset, len(idx)))
                    parts.append(idx.float())
                    offset += len(idx)
        spans = []
        for mask in (p.gray, p.blur):
            idx = torch.nonzero(mask).flatten()
            spans.append((offset, len(idx)))
            parts.append(idx.float())
            offset += len(idx)
        buf = torch.empty(offset, dtype=torch.float32, pin_memory=pin)
        torch.cat(parts, out=buf)
        return buf, jitter_plan, spans[0], spans[1]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, params: AugParams | None = None) -> torch.Tensor:
        """Augment ``x`` (uint8 Nx3xHxW on the device) with ``params`` (drawn here if None)."""
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"BatchAugment expects uint8 Nx3xHxW crops, got {x.dtype} {tuple(x.shape)}")
        n, dev = x.shape[0], x.device
        p = params if params is not None else self.sample_params(n)
        buf, jitter_plan, gray_span, blur_span = self._pack(p, pin=dev.type == "cuda")
        buf = buf.to(dev, non_blocking=True)  # the one host->device copy of the call
        factors, sigma = buf[:4 * n].view(n, 4), buf[4 * n:5 * n]

        def index(start: int, length: int) -> torch.Tensor:
            return buf[start:start + length].long()  # a device-side cast; offsets are host ints

        x = x.float().div_(255)
        for op_id, start, length in jitter_plan:  # positions 0..3, each op's samples at that position
            idx = index(start, length)
            x[idx] = _JITTER_OPS[op_id](x[idx], factors[idx, op_id])
        if gray_span[1]:
            idx = index(*gray_span)
            x[idx] = grayscale(x[idx]).expand(-1, 3, -1, -1)
        if blur_span[1]:
            idx = index(*blur_span)
            x[idx] = _gaussian_blur(x[idx], sigma[idx], self.blur_sigma[1])
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
