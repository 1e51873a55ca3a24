"""Image transforms: MoCo v2 augmentation (SimSiam's), evaluation, two-view wrapper.

Two pretraining paths produce the same distribution of views:

* ``build_moco_v2_transform`` -- the reference: every op per sample on PIL images
  (exactly the official SimSiam/MoCo v2 list).
* ``build_crop_transform`` + ``data.gpu_aug.BatchAugment`` -- the fast path: the
  workers only decode, random-resized-crop and flip (cheap on PIL, uint8 out);
  colour jitter, grayscale, blur and normalisation run batched on the device.
  With ``DATA.DECODE gpu_jpeg`` even the decoding and the crop move there
  (``data.gpu_decode``; the crop boxes are still drawn in the workers).

``data.views.build_view_pipeline`` picks among them from the config.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "GaussianBlur",
    "TwoCropsTransform",
    "PILToUint8Tensor",
    "build_moco_v2_transform",
    "build_crop_transform",
    "build_eval_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# MoCo v2 / SimSiam augmentation parameters (official code).
CROP_SCALE = (0.2, 1.0)
JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
JITTER_P = 0.8
GRAYSCALE_P = 0.2
BLUR_SIGMA = (0.1, 2.0)
BLUR_P = 0.5


class GaussianBlur:
    """PIL Gaussian blur with sigma ~ U(sigma_min, sigma_max), as in SimCLR/MoCo v2."""

    def __init__(self, sigma: Sequence[float] = BLUR_SIGMA) -> None:
        self.sigma = tuple(sigma)

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class TwoCropsTransform:
    """Independent views of one image: the Siamese pair (x1, x2), or more (asym 2x uses 4)."""

    def __init__(self, base_transform: Callable[[Any], Any], num_views: int = 2) -> None:
        self.base_transform = base_transform
        self.num_views = num_views

    def __call__(self, img: Any) -> list[Any]:
        return [self.base_transform(img) for _ in range(self.num_views)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_transform}, num_views={self.num_views})"


class PILToUint8Tensor:
    """PIL RGB -> 3xHxW uint8 tensor (a quarter of float32's bytes through the worker queue)."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)  # HxWx3
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_moco_v2_transform(size: int = 224, scale: Sequence[float] = CROP_SCALE) -> T.Compose:
    """The official SimSiam (MoCo v2) augmentation of one view, per sample on PIL images."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(scale)),
        T.RandomApply([T.ColorJitter(*JITTER)], p=JITTER_P),  # not strengthened
        T.RandomGrayscale(p=GRAYSCALE_P),
        T.RandomApply([GaussianBlur(BLUR_SIGMA)], p=BLUR_P),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def build_crop_transform(size: int = 224, scale: Sequence[float] = CROP_SCALE) -> T.Compose:
    """Geometric part of the MoCo v2 augmentation, uint8 out (fast path; see ``gpu_aug``).

    The flip commutes with the photometric ops that follow on the device, so moving
    it before them does not change the distribution of views.
    """
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(scale)),
        T.RandomHorizontalFlip(),
        PILToUint8Tensor(),
    ])


def build_eval_transform(size: int = 224) -> T.Compose:
    """Resize the short side to size*256/224, center-crop ``size``, normalise (linear eval / kNN)."""
    return T.Compose([
        T.Resize(int(round(size * 256 / 224))),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
