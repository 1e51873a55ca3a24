"""A procedurally generated labelled image dataset that needs no files.

Each image is a textured background with a few coloured shapes; its label is the
shape of the largest one (like the on-disk dataset of ``siambench data synth``).
Image ``i`` depends only on ``(seed, i)``, so every worker and rank agrees.
Used by the tiny configs, the tests and the throughput benchmark.
"""
from __future__ import annotations

import random
from typing import Any, Callable

import torch
from PIL import Image, ImageDraw

__all__ = ["SyntheticShapes", "SHAPES"]

SHAPES = ("circle", "square", "triangle", "cross")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, color: tuple) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    else:  # cross
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=color)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=color)


class SyntheticShapes(torch.utils.data.Dataset):
    """``length`` RGB images of ``size`` px; target = shape index of the largest object.

    Args:
        length: number of images.
        size: side of the square images in pixels.
        num_classes: how many of ``SHAPES`` to use (2-4).
        seed: dataset seed; the train and val splits use different seeds.
        transform: applied to the PIL image.
    """

    def __init__(self, length: int = 512, size: int = 64, num_classes: int = 4, seed: int = 0,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
        self.length, self.size, self.seed, self.transform = length, size, seed, transform
        self.classes = list(SHAPES[:num_classes])
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
            shape = rng.choice(self.classes)
            _draw_shape(draw, shape, rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.05, 0.12) * s,
                        tuple(rng.randrange(256) for _ in range(3)))
        _draw_shape(draw, self.classes[target], rng.uniform(0.3, 0.7) * s, rng.uniform(0.3, 0.7) * s,
                    rng.uniform(0.18, 0.3) * s, tuple(rng.randrange(256) for _ in range(3)))
        return img

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = self.image(index)
        return (self.transform(img) if self.transform is not None else img), self.targets[index]
