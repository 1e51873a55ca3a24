"""ImageNet-layout image folder that survives corrupt files.

``root/<class>/<image>`` as torchvision's ``ImageFolder`` (same ``classes``,
``class_to_idx``, ``samples``, ``targets`` attributes), but

* a wrong layout (missing dir, images directly in ``root``, no images at all,
  ``root`` pointing at the parent of ``train/``) is a clear error naming the fix;
* an image that fails to decode is logged with its path, counted once, and
  replaced by the next good sample; past ``max_bad_fraction`` of the dataset (or
  at the first one with ``strict=True``) it raises ``CorruptDataError``, whose
  message stays the one line naming the image even when raised in a DataLoader
  worker (torch re-raises worker errors with the worker's whole traceback);
* 16-bit greyscale images (PNG/TIFF ``I;16``/``I`` modes) are scaled to 8 bits,
  not clipped as ``Image.convert("RGB")`` would do.

:func:`.roots.resolve_data_root` and :func:`.roots.check_data_root` validate ``DATA.ROOT``
before a command creates anything (``DATA.ROOT ""`` means ImageNet:
``$SIAMBENCH_IMAGENET``, else ``$DETECTRON2_DATASETS/imagenet``, else
``datasets/imagenet``, the same rule as ``siambench doctor``).

The bad-image flags live in a shared-memory tensor so DataLoader workers and the
main process see the same count.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from ..utils.config import ConfigError
from ..utils.errors import UserError
from ..utils.images import HIGH_DEPTH_MODES, to_8bit
from ..utils.paths import IMAGENET_ENV, imagenet_root

__all__ = ["SafeImageFolder", "CorruptDataError", "DataRootError", "IMG_EXTENSIONS", "IMAGENET_ENV", "pil_loader",
           "imagenet_root", "is_image", "class_dirs", "has_image"]

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Exceptions PIL raises on truncated/corrupt files (SyntaxError and ValueError from some plugins).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_MAX_REPLACEMENT_TRIES = 64


class CorruptDataError(UserError, RuntimeError):
    """Too many unreadable images (or one, in strict mode).

    A DataLoader worker's exception is re-raised in the main process as
    ``CorruptDataError("Caught CorruptDataError in DataLoader worker process 0.\n
    Original Traceback ...")``; the constructor keeps only the original one-line
    message, so the user sees the path and the fix, not 38 lines of traceback.
    """

    def __init__(self, message: str = "", *args: Any) -> None:
        marker = f"{type(self).__name__}: "
        if isinstance(message, str) and message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message, *args)


class DataRootError(ConfigError):
    """``DATA.ROOT`` is missing, empty or not an ImageFolder; the message names the path and the fix."""


def pil_loader(path: str) -> Image.Image:
    """Decode fully (``convert`` forces the lazy decode) so corrupt files fail here.

    16-bit greyscale PNGs decode as ``I;16``; ``convert("RGB")`` would clip them at 255
    (a 0..65535 ramp comes out 99.6 % white), so they are scaled to 8 bits first.
    """
    with open(path, "rb") as f:
        img = Image.open(f)
        if img.mode in HIGH_DEPTH_MODES:
            img = to_8bit(img)
        return img.convert("RGB")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def class_dirs(root: Path) -> list[str]:
    """The class sub-directories of ``root``, or an error naming what is wrong with its layout.

    Raises:
        FileNotFoundError: ``root`` does not exist. ValueError: not ``root/<class>/<image>``.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (set DATA.ROOT to a directory "
                                "with train/<class>/*.jpg and val/<class>/*.jpg)")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and is_image(e.name)]
    if loose and not classes:
        raise ValueError(f"{root} holds images directly ({loose[0]}, ...); expected ImageNet layout "
                         f"{root}/<class>/<image>: put the images in one sub-directory per class")
    if not classes:
        raise ValueError(f"{root} has no class sub-directories; expected {root}/<class>/<image>")
    if len(classes) >= 2 and set(classes) <= {"train", "val", "test"}:
        raise ValueError(f"{root} holds {classes}: that is the dataset root (DATA.ROOT); "
                         f"pass the split directory, e.g. {root}/train")
    return classes


def has_image(directory: Path) -> bool:
    """Whether any image lies under ``directory`` (stops at the first one: cheap on ImageNet)."""
    for _dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        if any(is_image(f) for f in filenames):
            return True
        dirnames.sort()
    return False


class SafeImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` dataset with corrupt-image replacement and accounting.

    Args:
        root: directory with one sub-directory per class (e.g. ``DATA.ROOT/train``).
        transform: applied to the PIL image; may return anything (e.g. two views).
        strict: raise at the first unreadable image instead of replacing it.
        max_bad_fraction: raise once more than this fraction of images is unreadable.
        loader: path -> PIL image.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not laid out as ``root/<class>/<image>``.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, strict: bool = False,
                 max_bad_fraction: float = 0.01, loader: Callable[[str], Any] = pil_loader) -> None:
        self.root = Path(root)
        self.transform = transform
        self.strict = strict
        self.max_bad_fraction = max_bad_fraction
        self.loader = loader
        self.classes, self.class_to_idx, self.samples = self._scan(self.root)
        self.targets = [t for _, t in self.samples]
        self.imgs = self.samples  # torchvision ImageFolder alias
        self._bad = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    @staticmethod
    def _scan(root: Path) -> tuple[list[str], dict[str, int], list[tuple[str, int]]]:
        classes = class_dirs(root)
        class_to_idx = {c: i for i, c in enumerate(classes)}
        samples: list[tuple[str, int]] = []
        for c in classes:
            for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
                dirnames.sort()
                samples += [(os.path.join(dirpath, f), class_to_idx[c]) for f in sorted(filenames) if is_image(f)]
        if not samples:
            raise ValueError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {root}/<class>/")
        return classes, class_to_idx, samples

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_bad(self) -> int:
        """Distinct unreadable images seen so far (all workers and ranks of this process)."""
        return int(self._bad.sum())

    def bad_paths(self) -> list[str]:
        return [self.samples[i][0] for i in torch.nonzero(self._bad).flatten().tolist()]

    def check_bad_fraction(self) -> None:
        """Raise ``CorruptDataError`` if unreadable images exceed ``max_bad_fraction``."""
        n_bad = self.num_bad
        if n_bad > self.max_bad_fraction * len(self):
            raise CorruptDataError(
                f"{n_bad} of {len(self)} images under {self.root} are unreadable (> max_bad_fraction "
                f"{self.max_bad_fraction}); e.g. {self.bad_paths()[:3]}. Fix or remove them, or raise "
                "DATA.MAX_BAD_FRACTION"
            )

    def _mark_bad(self, index: int, err: BaseException) -> None:
        path = self.samples[index][0]
        if self.strict:
            raise CorruptDataError(f"unreadable image {path}: {err!r} (strict data mode: fix or remove it, "
                                   "or run without --strict-data to skip corrupt images)") from err
        if not bool(self._bad[index]):
            self._bad[index] = True
            logger.warning("unreadable image %s (%s); replaced by another sample", path, err)
        self.check_bad_fraction()

    def load(self, index: int) -> tuple[Any, int, int]:
        """(image, target, index actually used): the first readable of index, index+1, ..."""
        for k in range(_MAX_REPLACEMENT_TRIES):
            j = (index + k) % len(self)
            if k and bool(self._bad[j]):
                continue
            path, target = self.samples[j]
            try:
                return self.loader(path), target, j
            except _DECODE_ERRORS as e:
                self._mark_bad(j, e)
        raise CorruptDataError(f"{_MAX_REPLACEMENT_TRIES} consecutive unreadable images from "
                               f"{self.samples[index][0]}; the dataset under {self.root} looks broken")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img, target, _ = self.load(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, target
