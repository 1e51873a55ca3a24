"""What a ``DATA.ROOT`` holds, checked before a run creates anything.

Either labelled ImageFolder splits (``ROOT/<split>/<class>/<image>``, the ImageNet layout) or
unlabelled images: a folder of images at any depth without ``train/``, or a text file listing
image paths (pretraining on one's own photos). An empty ``DATA.ROOT`` means ImageNet
(:func:`siambench.pretrain.utils.paths.imagenet_root`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..utils.paths import IMAGENET_ENV, imagenet_root, is_unlabelled_root
from .folder import IMG_EXTENSIONS, DataRootError, class_dirs, has_image

__all__ = ["resolve_data_root", "check_data_root", "resolve_cfg_data_root", "list_images", "check_unlabelled",
           "unlabelled_root_error"]


def resolve_data_root(root: str) -> str:
    """``DATA.ROOT``, or :func:`imagenet_root` when it is empty."""
    return root if root else str(imagenet_root())


def check_data_root(root: str | os.PathLike, splits: Iterable[str] = ("train",), key: str = "DATA.ROOT",
                    unlabelled_ok: bool = False) -> None:
    """Check that ``root/<split>/<class>/<image>`` exists for every split, without a full scan.

    Run it before a command creates its OUTPUT_DIR, so bad input creates nothing. A root of
    unlabelled images (a list file, or a directory of images without ``train/``) is checked
    as such with ``unlabelled_ok`` (pretraining), and refused in one line otherwise.

    Raises:
        DataRootError: naming the path that is missing or malformed and the fix.
    """
    fix = (f"set {key} (or ${IMAGENET_ENV} when {key} is \"\") to a directory laid out as "
           "ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg")
    root = Path(root)
    if is_unlabelled_root(root) and (unlabelled_ok or root.is_file() or has_image(root)):
        check_unlabelled(root, unlabelled_ok, key)
        return
    if not root.is_dir():
        raise DataRootError(f"{key} {root} does not exist; {fix}")
    for split in splits:
        d = root / split
        try:
            classes = class_dirs(d)
        except FileNotFoundError:
            raise DataRootError(f"{key} {root} has no {split}/ directory ({d} does not exist); {fix}") from None
        except ValueError as e:
            raise DataRootError(f"{key}: {e}") from None
        if not any(has_image(d / c) for c in classes):
            raise DataRootError(f"{key}: no images ({', '.join(IMG_EXTENSIONS)}) under {d}/<class>/ "
                                f"({len(classes)} class folders, all empty); {fix}")


def resolve_cfg_data_root(cfg, splits: Iterable[str] = ("train",), unlabelled_ok: bool = False):
    """``cfg`` with ``DATA.ROOT`` resolved (empty -> ImageNet) and checked; unchanged for in-memory data.

    ``unlabelled_ok``: a root of unlabelled images is accepted (pretraining reads it).

    Returns the same (frozen) config, or a frozen copy whose ``DATA.ROOT`` is the resolved
    path, so that ``config.yaml`` records the directory that was read.
    """
    if cfg.DATA.get("DATASET", "imagefolder") != "imagefolder":
        return cfg
    root = resolve_data_root(cfg.DATA.ROOT)
    if not cfg.DATA.ROOT and not os.environ.get(IMAGENET_ENV) and not Path(root).is_dir():
        raise DataRootError(f"DATA.ROOT is empty, ${IMAGENET_ENV} is unset and the default {root} does not exist; "
                            "set DATA.ROOT to a directory with train/<class>/*.jpg (e.g. `siambench pretrain "
                            "--config-file C DATA.ROOT /data/imagenet`) or export SIAMBENCH_IMAGENET")
    check_data_root(root, splits, unlabelled_ok=unlabelled_ok)
    if root == cfg.DATA.ROOT:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATA.ROOT = root
    cfg.freeze()
    return cfg


def _walk(root: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
    return found


def _read_list(list_file: Path) -> list[str]:
    base = list_file.parent
    paths: list[str] = []
    for n, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise DataRootError(f"{list_file}:{n}: listed image {path} does not exist; fix the line or remove it")
        paths.append(str(path))
    return paths


def list_images(root: str | os.PathLike) -> list[str]:
    """The image paths of an unlabelled ``root`` (directory at any depth, or list file).

    Raises:
        DataRootError: the root does not exist, a listed file is missing, or no image was found.
    """
    p = Path(root)
    if not p.exists():
        raise DataRootError(f"DATA.ROOT {p} does not exist; set it to a folder of images or a text file "
                            "listing image paths")
    paths = _read_list(p) if p.is_file() else _walk(p)
    if not paths:
        what = "lists no image" if p.is_file() else f"holds no image ({', '.join(IMG_EXTENSIONS)}) at any depth"
        raise DataRootError(f"DATA.ROOT {p} {what}; point it at your images")
    return paths


def check_unlabelled(root: str | os.PathLike, unlabelled_ok: bool, key: str = "DATA.ROOT") -> int:
    """Check an unlabelled root before a run creates anything; the number of images.

    Raises:
        DataRootError: labels are needed (not ``unlabelled_ok``), or the root has no readable list of images.
    """
    if not unlabelled_ok:
        raise unlabelled_root_error(root, key)
    return len(list_images(root))


def unlabelled_root_error(root: str | os.PathLike, key: str = "DATA.ROOT") -> DataRootError:
    """The one-line refusal of an unlabelled root where labels are needed (kNN, linear, supervised)."""
    return DataRootError(f"{key} {root} holds unlabelled images (no train/<class>/ folders): kNN, linear and "
                         f"supervised evaluation need a labelled split; set {key} to a directory laid out as "
                         "ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg (in a pipeline: EVAL.KNN.OPTS / "
                         "EVAL.LINCLS.OPTS [DATA.ROOT, DIR]), or disable that evaluation")
