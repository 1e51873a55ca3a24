"""Where siambench's own files are: the shipped ``configs/`` tree, from a checkout or a wheel.

Commands take config paths as the README writes them (``configs/benchmarks/demo.yaml``)
and tasks by name (``--task voc07`` = ``configs/transfer/voc07.yaml``). In a source
checkout (editable install, or ``PYTHONPATH``) ``configs/`` sits next to the packages; a
wheel (``pip install .``) ships the same tree as package data ``siambench/configs``
(``setup.py``). :func:`resolve` tries the path as given first, so a user's own
``configs/...`` in the working directory always wins over ours.

:func:`imagenet_root` is where ImageNet is looked for when ``DATA.ROOT`` is empty: the one
rule shared by pretraining (``pretrain/data/folder.py``) and ``siambench doctor``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CONFIG_ROOT", "IMAGENET_ENV", "PACKAGE_ROOT", "config_root", "imagenet_root", "is_unlabelled_root",
           "resolve"]

# The folder holding the packages: the repository root in a checkout, site-packages
# (or the namespace folder ``siambench/``) in an installed wheel.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def config_root() -> Path:
    """The shipped ``configs/`` folder: the installed package data, else the checkout's."""
    for candidate in (PACKAGE_ROOT / "siambench" / "configs", PACKAGE_ROOT / "configs"):
        if (candidate / "transfer").is_dir():
            return candidate
    return PACKAGE_ROOT / "configs"  # not found: error messages then name the expected place


CONFIG_ROOT = config_root()


def resolve(path: str | os.PathLike) -> Path:
    """``path`` as given when it exists (absolute, or relative to the working directory);
    else ``configs/...`` inside the shipped config tree, else relative to the checkout.
    A path found nowhere is returned unchanged, so the caller's error names what was given.
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    parts = p.parts
    if parts and parts[0] == "configs" and (CONFIG_ROOT.joinpath(*parts[1:])).exists():
        return CONFIG_ROOT.joinpath(*parts[1:])
    if (PACKAGE_ROOT / p).exists():
        return PACKAGE_ROOT / p
    return p


IMAGENET_ENV = "SIAMBENCH_IMAGENET"


def imagenet_root() -> Path:
    """``$SIAMBENCH_IMAGENET``, else ``$DETECTRON2_DATASETS/imagenet``, else ``datasets/imagenet``."""
    if os.environ.get(IMAGENET_ENV):
        return Path(os.environ[IMAGENET_ENV]).expanduser()
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).expanduser() / "imagenet"


def is_unlabelled_root(root: str | os.PathLike) -> bool:
    """Whether a ``DATA.ROOT`` is read as unlabelled images (``pretrain/data/unlabelled.py``): a list
    file, or a directory without ``train/``; never ``""`` (ImageNet). Here without torch, for the
    pipeline's plan."""
    if not str(root):
        return False
    p = Path(root).expanduser()
    return p.is_file() or (p.is_dir() and not (p / "train").is_dir())
