"""The synthetic shapes as an in-memory labelled image dataset that needs no files.

Each image is a flat background with a few flat-coloured shapes; its label is the class of
the largest one. The classes and their outlines are those of the on-disk dataset of
``siambench data synth`` (:mod:`.shapes`: ``SYNTH_CLASSES``, :func:`.shapes.outline`), but
the drawing is simpler, on purpose: PIL fills each outline in one call (0.1-0.2 ms per image
against 1.7-5 ms for :func:`.shapes.render_scene`'s rasterised, textured, noisy scenes at
32-96 px, measured), because a loader redraws every image every epoch; and flat colours are
what the pixel-equivalence tests of the batched augmentations compare against PIL.
Image ``i`` depends only on ``(seed, i)``, so every worker and rank agrees.
``DATA.DATASET synthetic`` (the tiny configs and the tests) reads it.
"""
from __future__ import annotations

import random
from typing import Any, Callable

import torch
from PIL import Image, ImageDraw

from .shapes import SYNTH_CLASSES, outline

__all__ = ["SyntheticShapes"]


def _draw_shape(draw: ImageDraw.ImageDraw, label: int, cx: float, cy: float, r: float, color: tuple) -> None:
    draw.polygon([(cx + x * r, cy + y * r) for x, y in outline(label)], fill=color)


class SyntheticShapes(torch.utils.data.Dataset):
    """``length`` RGB images of ``size`` px; target = class of the largest object.

    Args:
        length: number of images.
        size: side of the square images in pixels.
        num_classes: how many of the synthetic classes to use (the first 2-6 of ``SYNTH_CLASSES``).
        seed: dataset seed; the train and val splits use different seeds.
        transform: applied to the PIL image.
    """

    def __init__(self, length: int = 512, size: int = 64, num_classes: int = 4, seed: int = 0,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        if not 2 <= num_classes <= len(SYNTH_CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(SYNTH_CLASSES)}], got {num_classes}")
        self.length, self.size, self.seed, self.transform = length, size, seed, transform
        self.classes = list(SYNTH_CLASSES[:num_classes])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [random.Random(self._key(i)).randrange(num_classes) for i in range(length)]

    def _key(self, index: int) -> int:
        return self.seed * 1_000_003 + index

    def image(self, index: int) -> Image.Image:
        rng = random.Random(self._key(index))
        target = rng.randrange(len(self.classes))  # same first draw as self.targets
        s = self.size
        bg = tuple(rng.randrange(256) for _ in range(3))
        img = Image.new("RGB", (s, s), bg)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randrange(0, 3)):  # small distractors
            _draw_shape(draw, rng.randrange(len(self.classes)), rng.uniform(0, s), rng.uniform(0, s),
                        rng.uniform(0.05, 0.12) * s, tuple(rng.randrange(256) for _ in range(3)))
        _draw_shape(draw, target, rng.uniform(0.3, 0.7) * s, rng.uniform(0.3, 0.7) * s,
                    rng.uniform(0.18, 0.3) * s, tuple(rng.randrange(256) for _ in range(3)))
        return img

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = self.image(index)
        return (self.transform(img) if self.transform is not None else img), self.targets[index]
