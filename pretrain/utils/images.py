"""Decoding rules shared by pretraining's loader and the transfer trainer's data mapper.

16-bit greyscale images (PNG/TIFF, which Pillow decodes as ``I;16``/``I``) hold
0..65535; ``Image.convert("RGB")`` clips them at 255, so a 0..65535 ramp comes out
99.6 % white. :func:`to_8bit` scales them instead. :func:`header_problem` finds, from the
header alone, an image Pillow will refuse to decode (transfer's checks before training,
``transfer/annotations.py``). numpy and Pillow only: imported by pretraining's loader
(``pretrain/data/folder.py``) and ``transfer/mapper.py``.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = ["HIGH_DEPTH_MODES", "to_8bit", "header_problem"]

HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit greyscale (and 32-bit int) images


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit int) greyscale -> 8-bit "L" by scaling the full range, not clipping it."""
    a = np.asarray(img).astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if img.mode == "I" and (hi > 65535 or lo < 0):  # real 32-bit data: min-max scale
        a = (a - lo) * (255.0 / max(hi - lo, 1.0))
    elif img.mode != "I" or hi > 255:  # 16-bit: 0..65535 -> 0..255 (x * 255 / 65535)
        a = a * (255.0 / 65535.0)
    # else: an "I" image holding 8-bit values (e.g. some PGMs): keep them
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def header_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be decoded, as far as its header tells (it is not decoded); None if it can.

    Pillow refuses an image of more than ``2 * Image.MAX_IMAGE_PIXELS`` pixels when it opens it
    (``DecompressionBombError``: a decompression bomb, e.g. a PNG header claiming 20000 x 20000),
    and a file it cannot identify; checks that read datasets before training call this for
    each image, so training never meets one.
    """
    try:
        with Image.open(path) as img:
            img.size
    except Image.DecompressionBombError as e:
        return (f"image {path} is too large to decode ({e}); replace it with a smaller image or remove it "
                "from the dataset")
    except (OSError, SyntaxError, ValueError) as e:
        return f"image {path} is not a readable image ({e}); replace or remove it"
    return None
