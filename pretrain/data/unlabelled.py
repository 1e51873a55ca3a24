"""Unlabelled pretraining data: a folder of images at any depth, or a text file listing images.

Self-supervised pretraining uses no labels, so ``DATA.ROOT`` of ``siambench pretrain`` may be

* a directory *without* ``train/``: every image under it, at any depth, is one sample
  (sorted by path, symbolic links followed, hidden entries skipped);
* a text file: one image path per line, absolute or relative to the file's directory;
  blank lines and lines starting with ``#`` are skipped.

The images go through the built-in loader (:func:`siambench.pretrain.data.folder.pil_loader`:
JPEG/PNG/WebP/TIFF/BMP, greyscale/CMYK/palette converted to RGB, 16-bit scaled to 8 bits,
truncated or corrupt files replaced and counted up to ``DATA.MAX_BAD_FRACTION``), plus
the EXIF orientation, which detectron2's reader also applies when the same photos are
fine-tuned on (ImageNet keeps the official loader, which ignores it; so does
``DATA.DECODE gpu_jpeg``, which replaces the loader). The scan logs how
many images of each format, and a header census of a sample of them how many of each
mode and how many carry an EXIF rotation.

kNN and linear evaluation need labels: they refuse such a root in one line
(:func:`unlabelled_root_error`), and the pretraining kNN monitor is skipped with a note.
"""
from __future__ import annotations

import collections
import logging
import os
from pathlib import Path
from typing import Any, Callable

from PIL import Image, ImageOps

from ..utils.paths import is_unlabelled_root
from .folder import SafeImageFolder, pil_loader
from .roots import list_images

__all__ = ["UnlabelledImages", "exif_loader", "census", "without_knn_monitor"]

logger = logging.getLogger(__name__)

_CENSUS_SAMPLE = 1000  # image headers opened by the census (evenly spaced over the dataset)
_EXIF_ORIENTATION = 0x0112


def exif_loader(path: str) -> Image.Image:
    """:func:`pil_loader` with the EXIF orientation applied (a camera's rotated JPEG comes upright)."""
    img = pil_loader(path)
    return ImageOps.exif_transpose(img) if img.getexif().get(_EXIF_ORIENTATION, 1) != 1 else img


def census(paths: list[str], sample: int = _CENSUS_SAMPLE) -> dict[str, Any]:
    """Counts of formats (all paths, by extension) and of modes / EXIF rotations / unreadable
    headers in an evenly spaced sample of at most ``sample`` images (headers only, no decode)."""
    formats = collections.Counter(Path(p).suffix.lower().lstrip(".") for p in paths)
    step = max(1, len(paths) // sample)
    modes: collections.Counter = collections.Counter()
    rotated = unreadable = 0
    for path in paths[::step][:sample]:
        try:
            with Image.open(path) as img:
                modes[img.mode] += 1
                rotated += img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
        except (OSError, SyntaxError, ValueError):
            unreadable += 1
    return {"images": len(paths), "formats": dict(formats), "sampled": min(sample, len(paths[::step])),
            "modes": dict(modes), "exif_rotated": rotated, "unreadable_headers": unreadable}


class UnlabelledImages(SafeImageFolder):
    """Every image of an unlabelled root as one sample (target 0), with ``SafeImageFolder``'s
    corrupt-image replacement and accounting; ``classes`` is empty."""

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, strict: bool = False,
                 max_bad_fraction: float = 0.01, loader: Callable[[str], Any] = exif_loader) -> None:
        super().__init__(root, transform, strict, max_bad_fraction, loader)
        c = census([p for p, _ in self.samples])
        logger.info("unlabelled images under %s: %d (%s); in a sample of %d headers: modes %s, %d EXIF-rotated, "
                    "%d unreadable (replaced when met)", self.root, c["images"],
                    ", ".join(f"{k or '?'} {v}" for k, v in sorted(c["formats"].items())), c["sampled"],
                    ", ".join(f"{k} {v}" for k, v in sorted(c["modes"].items())), c["exif_rotated"],
                    c["unreadable_headers"])

    @staticmethod
    def _scan(root: Path) -> tuple[list[str], dict[str, int], list[tuple[str, int]]]:
        return [], {}, [(p, 0) for p in list_images(root)]


def without_knn_monitor(cfg) -> tuple[Any, str | None]:
    """(cfg, note): ``MONITOR.KNN_PERIOD`` turned off, with the note to log, when ``DATA.ROOT``
    is unlabelled (the monitor needs labelled train/val splits); else ``cfg`` unchanged and None."""
    from .roots import resolve_data_root

    root = resolve_data_root(cfg.DATA.ROOT)
    if not cfg.MONITOR.KNN_PERIOD or cfg.DATA.DATASET != "imagefolder" or not is_unlabelled_root(root):
        return cfg, None
    note = (f"MONITOR.KNN_PERIOD {cfg.MONITOR.KNN_PERIOD}: DATA.ROOT {root} holds unlabelled images, the kNN "
            "monitor needs labels: skipped (evaluate with `siambench knn` on a labelled DATA.ROOT)")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MONITOR.KNN_PERIOD = 0
    cfg.freeze()
    return cfg, note
