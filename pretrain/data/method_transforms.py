"""The view recipes of the compared methods (``DATA.AUGMENTATION``), per view, on PIL images.

===========  =======================  =================  ======  ===========  ===========
recipe       crop scale               jitter (b,c,s,h)   gray p  blur p/view  solarize p
===========  =======================  =================  ======  ===========  ===========
moco_v2      (0.2, 1) (DATA.CROP..)   0.4,0.4,0.4,0.1    0.2     0.5          -
simclr       (0.08, 1)                0.8,0.8,0.8,0.2    0.2     0.5          -
byol         (0.08, 1)                0.4,0.4,0.2,0.1    0.2     1.0 / 0.1    0.0 / 0.2
swav         (0.14, 1); small crops   0.8,0.8,0.8,0.2    0.2     0.5          -
swav_2x224   (0.08, 1)                0.8,0.8,0.8,0.2    0.2     0.5          -
===========  =======================  =================  ======  ===========  ===========

Sources: moco_v2 = SimSiam's official list (``transforms.build_moco_v2_transform``, used as is);
SimCLR App. A (colour strength s = 1, jitter p 0.8, blur p 0.5, sigma in [0.1, 2]); BYOL
App. B Table 6 (asymmetric blur and solarization; solarize threshold 0.5 = 128 on uint8);
SwAV ``src/multicropdataset.py`` (``get_color_distortion(s=1)``, ``PILRandomGaussianBlur``,
``--min_scale_crops 0.14``; small crops ``(0.05, 0.14)`` at 96 px; ``swav_2x224``: the
2x224 script ``scripts/swav_400ep_2x224_pretrain.sh``, ``--min_scale_crops 0.08``). Every recipe flips with
p 0.5 and normalises with the ImageNet mean/std (SwAV's code has std 0.228 for red, a typo we
do not copy). Jitter is applied in torchvision's random order, as all four official codes do; BYOL's
jitter is its own (``byol_color.ByolColorJitter``: additive brightness, per-channel contrast, HSV
saturation, as deepmind-research ``byol/utils/augmentations.py``), torchvision's for the others.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from PIL import Image, ImageOps
from torchvision import transforms as T

from .byol_color import ByolColorJitter
from .transforms import (BLUR_SIGMA, IMAGENET_MEAN, IMAGENET_STD, GaussianBlur, TwoCropsTransform,
                         build_moco_v2_transform)

__all__ = ["AUGMENTATIONS", "Solarize", "MultiViewTransform", "build_view_transform", "build_multi_view_transform"]

# recipe -> (crop scale or None = DATA.CROP_SCALE, jitter, jitter p, grayscale p, blur p per view, solarize p per view)
AUGMENTATIONS: dict[str, tuple[Any, ...]] = {
    "moco_v2": (None, (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, (0.5, 0.5), (0.0, 0.0)),
    "simclr": ((0.08, 1.0), (0.8, 0.8, 0.8, 0.2), 0.8, 0.2, (0.5, 0.5), (0.0, 0.0)),
    "byol": ((0.08, 1.0), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, (1.0, 0.1), (0.0, 0.2)),
    "swav": ((0.14, 1.0), (0.8, 0.8, 0.8, 0.2), 0.8, 0.2, (0.5, 0.5), (0.0, 0.0)),
    "swav_2x224": ((0.08, 1.0), (0.8, 0.8, 0.8, 0.2), 0.8, 0.2, (0.5, 0.5), (0.0, 0.0)),
}


class Solarize:
    """Invert pixels >= ``threshold`` (BYOL: x -> x if x < 0.5 else 1 - x)."""

    def __init__(self, threshold: int = 128) -> None:
        self.threshold = threshold

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img, self.threshold)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold})"


class MultiViewTransform:
    """One transform per view (asymmetric recipes such as BYOL's, or SwAV's multi-crop)."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> list[Any]:
        return [t(img) for t in self.transforms]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


def _view(size: int, scale: Sequence[float], jitter: Sequence[float], jitter_p: float, gray_p: float,
          blur_p: float, solarize_p: float, jitter_cls: Callable[..., Any] = T.ColorJitter) -> T.Compose:
    ops: list[Any] = [T.RandomResizedCrop(size, scale=tuple(scale)), T.RandomHorizontalFlip(),
                      T.RandomApply([jitter_cls(*jitter)], p=jitter_p), T.RandomGrayscale(p=gray_p)]
    if blur_p > 0:
        ops.append(T.RandomApply([GaussianBlur(BLUR_SIGMA)], p=blur_p) if blur_p < 1 else GaussianBlur(BLUR_SIGMA))
    if solarize_p > 0:
        ops.append(T.RandomApply([Solarize()], p=solarize_p))
    return T.Compose(ops + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def build_view_transform(name: str, size: int = 224, scale: Sequence[float] = (0.2, 1.0), view: int = 0,
                         crop_scale: Sequence[float] | None = None) -> Callable[[Any], Any]:
    """View ``view`` (0 or 1) of recipe ``name``; moco_v2 is exactly ``build_moco_v2_transform``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"DATA.AUGMENTATION must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")
    if name == "moco_v2":
        return build_moco_v2_transform(size, scale)
    own_scale, jitter, jitter_p, gray_p, blur_p, sol_p = AUGMENTATIONS[name]
    jitter_cls = ByolColorJitter if name == "byol" else T.ColorJitter  # BYOL's own additive-brightness jitter
    return _view(size, crop_scale or own_scale, jitter, jitter_p, gray_p, blur_p[view % 2], sol_p[view % 2],
                 jitter_cls)


def build_multi_view_transform(cfg, num_views: int) -> Callable[[Any], list[Any]]:
    """The pretraining views of ``cfg.DATA.AUGMENTATION`` (plus SwAV's small crops if any)."""
    name, size, scale = cfg.DATA.AUGMENTATION, cfg.DATA.IMAGE_SIZE, cfg.DATA.CROP_SCALE
    small = cfg.MODEL.SWAV.NUM_SMALL_CROPS if cfg.MODEL.METHOD == "swav" else 0
    large = num_views - small
    if name == "moco_v2":  # symmetric: one transform for every view, as SimSiam's TwoCropsTransform
        views: Callable[[Any], list[Any]] = TwoCropsTransform(build_moco_v2_transform(size, scale), large)
    else:
        views = MultiViewTransform([build_view_transform(name, size, scale, v) for v in range(large)])
    if small <= 0:
        return views
    s = cfg.MODEL.SWAV
    small_tf = build_view_transform("swav" if name in ("moco_v2", "swav_2x224") else name, s.SMALL_CROP_SIZE, view=0,
                                    crop_scale=s.SMALL_CROP_SCALE)
    return _Concat(views, MultiViewTransform([small_tf] * small))


class _Concat:
    def __init__(self, *parts: Callable[[Any], list[Any]]) -> None:
        self.parts = parts

    def __call__(self, img: Any) -> list[Any]:
        return [v for part in self.parts for v in part(img)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.parts}"
