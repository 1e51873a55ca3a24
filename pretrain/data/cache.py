"""Decode an image folder once and serve it from memory (``DATA.CACHE_IN_MEMORY``).

Small datasets (the built-in synthetic one: a few thousand 32-px images) are read
every epoch; on a 2-core CPU, JPEG decoding then costs as much as the network. With
the cache every image is decoded once, at start-up, and each epoch only runs the
transforms on the stored pixels. The views are the same as without the cache: a
decoded JPEG is the same array whenever it is decoded.

Only for datasets that fit in memory (ImageNet would need ~140 GB): the decoded size
is logged, and the default stays off.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from PIL import Image

__all__ = ["MemoryLoader", "cache_in_memory"]

logger = logging.getLogger(__name__)


class MemoryLoader:
    """``path -> PIL image`` from decoded HxWx3 uint8 arrays; unknown paths go to ``fallback``.

    Unreadable files are not cached, so asking for one calls ``fallback``, which raises
    as before and lets ``SafeImageFolder`` count and replace it.
    """

    def __init__(self, arrays: dict[str, np.ndarray], fallback: Callable[[str], Any]) -> None:
        self.arrays = arrays
        self.fallback = fallback

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def __call__(self, path: str) -> Image.Image:
        arr = self.arrays.get(path)
        return Image.fromarray(arr) if arr is not None else self.fallback(path)


def cache_in_memory(dataset: Any) -> Any:
    """Decode every image of ``dataset`` (a ``SafeImageFolder``) once and keep the pixels.

    Replaces ``dataset.loader`` by a :class:`MemoryLoader` and returns ``dataset``.
    Images that fail to decode are left to the dataset's own corrupt-image handling.
    """
    if isinstance(dataset.loader, MemoryLoader):
        return dataset
    arrays: dict[str, np.ndarray] = {}
    for path, _ in dataset.samples:
        try:
            arrays[path] = np.asarray(dataset.loader(path).convert("RGB"), dtype=np.uint8)
        except Exception:  # noqa: BLE001 - reported (once, with its path) when the sample is used
            continue
    dataset.loader = MemoryLoader(arrays, dataset.loader)
    logger.info("cached %d decoded images of %s in memory (%.1f MB)", len(arrays), dataset.root,
                dataset.loader.nbytes / 2**20)
    return dataset
