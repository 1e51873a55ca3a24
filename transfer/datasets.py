"""Detectron2 dataset names for the synthetic data, and checks of every dataset root.

:func:`register_datasets` registers the built-in synthetic dataset under its own names
(real VOC/COCO keep detectron2's builtin names and ``$DETECTRON2_DATASETS``). Entry points
call it in every process that looks a name up (``siambench transfer`` in each of detectron2's
``launch`` workers too, ``siambench doctor``, the pipeline's preflight); importing this module
registers nothing:

=========================  ===============================================
``synth_voc_2007_trainval`` ``ROOT/VOC2007``, split ``trainval`` (VOC eval)
``synth_voc_2007_test``     ``ROOT/VOC2007``, split ``test``
``synth_voc_2012_trainval`` ``ROOT/VOC2012``, split ``trainval``
``synth_coco_train``        ``ROOT/coco/train`` + ``instances_train.json``
``synth_coco_val``          ``ROOT/coco/val`` + ``instances_val.json`` (COCO eval)
=========================  ===============================================

``ROOT`` is resolved each time data is loaded (see :func:`synth_root`), so tests and
pipelines can point ``$SIAMBENCH_SYNTH`` at a fresh dataset after registration.

Before training, :func:`check_datasets` turns a missing or malformed root into a
:class:`DatasetLayoutError` that names the expected layout and how to fix it, instead
of a ``FileNotFoundError`` deep inside a dataloader worker. Loading a dataset whose
annotations are corrupt (synthetic or detectron2's builtin VOC/COCO) raises the same
error naming the bad XML/JSON file; :func:`validate_annotations` reads every annotation
file (train and test splits) and checks the images exist before anything is trained
(:mod:`siambench.transfer.annotations`). Loaded boxes are clipped to their image and empty ones
dropped, with the counts in the log.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.catalog import Metadata  # noqa: E402
from detectron2.data.datasets import load_coco_json, load_voc_instances  # noqa: E402
from siambench.pretrain.utils.errors import UserError
from siambench.pretrain.data.shapes import SYNTH_CLASSES  # noqa: E402  (the classes `siambench data synth` draws)

from .annotations import coco_sets_problems, sanitize_boxes, voc_problems

__all__ = [
    "SYNTH_CLASSES", "SYNTH_VOC", "SYNTH_COCO", "BUILTIN_CHECKED", "DatasetLayoutError",
    "synth_root", "register_datasets", "register_synth_datasets", "check_dataset_root", "check_datasets",
    "wrap_builtin_loaders", "dataset_status", "validate_annotations",
]

# name -> (directory under the synthetic root, split, year)
SYNTH_VOC: dict[str, tuple[str, str, int]] = {
    "synth_voc_2007_trainval": ("VOC2007", "trainval", 2007),
    "synth_voc_2007_test": ("VOC2007", "test", 2007),
    "synth_voc_2012_trainval": ("VOC2012", "trainval", 2012),
}
# name -> (image directory, annotation file), both under the synthetic root
SYNTH_COCO: dict[str, tuple[str, str]] = {
    "synth_coco_train": ("coco/train", "coco/annotations/instances_train.json"),
    "synth_coco_val": ("coco/val", "coco/annotations/instances_val.json"),
}
# detectron2 builtin names whose roots siambench checks (they stay registered by detectron2).
BUILTIN_CHECKED: tuple[str, ...] = (
    "voc_2007_trainval", "voc_2007_test", "voc_2012_trainval", "coco_2017_train", "coco_2017_val",
)

VOC_LAYOUT = "VOC20XX/{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/<split>.txt}"
COCO_LAYOUT = "coco/{train2017,val2017}/*.jpg and coco/annotations/instances_{train,val}2017.json"
SYNTH_LAYOUT = ("ROOT/synth.json, ROOT/VOC2007 and ROOT/VOC2012 as " + VOC_LAYOUT
                + ", ROOT/coco/{train,val}/*.jpg and ROOT/coco/annotations/instances_{train,val}.json")
SYNTH_HINT = "create it with `siambench data synth --out DIR` and point $SIAMBENCH_SYNTH at DIR"

logger = logging.getLogger(__name__)


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset root is missing or malformed; the message names the path and the fix."""


def synth_root() -> Path:
    """Root of the synthetic dataset: ``$SIAMBENCH_SYNTH``, else
    ``$DETECTRON2_DATASETS/siambench_synth``, else ``datasets/siambench_synth``."""
    if os.environ.get("SIAMBENCH_SYNTH"):
        return Path(os.environ["SIAMBENCH_SYNTH"]).expanduser()
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).expanduser() / "siambench_synth"


class _SynthMetadata(Metadata):
    """Metadata whose paths follow :func:`synth_root` at access time (evaluators read them)."""

    @property
    def dirname(self) -> str:
        if self.name not in SYNTH_VOC:
            raise AttributeError("dirname")
        return str(synth_root() / SYNTH_VOC[self.name][0])

    @property
    def json_file(self) -> str:
        if self.name not in SYNTH_COCO:
            raise AttributeError("json_file")
        return str(synth_root() / SYNTH_COCO[self.name][1])

    @property
    def image_root(self) -> str:
        if self.name not in SYNTH_COCO:
            raise AttributeError("image_root")
        return str(synth_root() / SYNTH_COCO[self.name][0])


def _load_synth(name: str) -> list[dict[str, Any]]:
    check_dataset_root(name)
    meta = MetadataCatalog.get(name)
    if name in SYNTH_VOC:
        return load_voc_instances(meta.dirname, meta.split, SYNTH_CLASSES)
    return load_coco_json(meta.json_file, meta.image_root, name)


def _diagnosing(name: str, load: Callable[[], list[dict[str, Any]]]) -> Callable[[], list[dict[str, Any]]]:
    """``load``, but when it fails on a malformed annotation the error names that file.

    detectron2's loaders raise e.g. a bare ``ParseError: line 3`` for one bad XML among
    thousands; only on failure do we re-read the annotations to find the culprit.
    """
    if getattr(load, "_siambench_diagnosing", False):
        return load

    def wrapped() -> list[dict[str, Any]]:
        try:
            dicts = load()
        except DatasetLayoutError:
            raise
        except Exception as e:
            problem = _diagnose(name, e)
            if problem is None:
                raise
            raise DatasetLayoutError(f"dataset {name!r}: {problem}") from e
        clipped, dropped = sanitize_boxes(dicts)
        if clipped or dropped:
            logger.warning("dataset %s: clipped %d box(es) to their image and dropped %d empty ones (negative, "
                           "zero-area, inverted or outside the image)", name, clipped, dropped)
        return dicts

    wrapped._siambench_diagnosing = True  # type: ignore[attr-defined]
    return wrapped


def register_synth_datasets() -> None:
    """Register the ``synth_*`` names (idempotent; part of :func:`register_datasets`)."""
    for name in (*SYNTH_VOC, *SYNTH_COCO):
        if name in DatasetCatalog:
            continue
        DatasetCatalog.register(name, _diagnosing(name, functools.partial(_load_synth, name)))
        meta = MetadataCatalog[name] = _SynthMetadata(name=name)
        if name in SYNTH_VOC:
            meta.set(thing_classes=list(SYNTH_CLASSES), evaluator_type="pascal_voc",
                     split=SYNTH_VOC[name][1], year=SYNTH_VOC[name][2])
        else:
            meta.set(thing_classes=list(SYNTH_CLASSES), evaluator_type="coco")


def _voc_problems(dirname: Path, split: str) -> list[str]:
    if not dirname.is_dir():
        return [f"directory {dirname} does not exist"]
    problems = [f"missing {dirname / sub}" for sub in ("JPEGImages", "Annotations") if not (dirname / sub).is_dir()]
    split_file = dirname / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        problems.append(f"missing split file {split_file}")
    elif not split_file.read_text().split():
        problems.append(f"split file {split_file} lists no images")
    return problems


def _coco_problems(image_root: Path, json_file: Path) -> list[str]:
    if not image_root.is_dir() and not json_file.parent.is_dir():
        return [f"directories {image_root} and {json_file.parent} do not exist"]
    problems = [] if image_root.is_dir() else [f"missing image directory {image_root}"]
    if not json_file.is_file():
        problems.append(f"missing annotation file {json_file}")
    return problems


def check_dataset_root(name: str) -> Path:
    """Check that the files dataset ``name`` needs exist; return its root directory.

    Cheap (no annotation is parsed), so run it for every train/test dataset before
    building a model. Synthetic names must also match this version's class list.

    Raises:
        DatasetLayoutError: naming the missing path, the expected layout and the fix.
    """
    if name not in DatasetCatalog:
        raise DatasetLayoutError(
            f"dataset {name!r} is not registered in detectron2. Known: synthetic "
            f"{', '.join([*SYNTH_VOC, *SYNTH_COCO])} (registered by siambench.transfer.datasets.register_datasets(), "
            f"which siambench's commands call); real e.g. {', '.join(BUILTIN_CHECKED)}")
    meta = MetadataCatalog.get(name)
    synthetic = name in SYNTH_VOC or name in SYNTH_COCO
    if meta.get("dirname") is not None:
        root, layout = Path(meta.dirname), VOC_LAYOUT
        problems = _voc_problems(root, meta.split)
    elif meta.get("json_file") is not None:
        root, layout = Path(meta.image_root), COCO_LAYOUT
        problems = _coco_problems(root, Path(meta.json_file))
    else:  # a dataset registered by someone else without file metadata: nothing to check
        return Path(".")
    if synthetic:
        layout = SYNTH_LAYOUT
        marker = synth_root() / "synth.json"
        if not synth_root().is_dir():
            problems = [f"synthetic dataset root {synth_root()} does not exist"]
        elif not marker.is_file():
            problems.append(f"{marker} is missing (an incomplete or foreign directory)")
        else:
            classes = _read_json(marker).get("classes")
            if tuple(classes or ()) != SYNTH_CLASSES:
                problems.append(f"{marker} lists classes {classes}, this siambench expects {list(SYNTH_CLASSES)}; "
                                "regenerate the dataset")
    if problems:
        if synthetic:
            where = (f"The synthetic root is $SIAMBENCH_SYNTH, else $DETECTRON2_DATASETS/siambench_synth, "
                     f"else datasets/siambench_synth (now {synth_root()}); {SYNTH_HINT}.")
        else:
            where = (f"Real datasets live under $DETECTRON2_DATASETS "
                     f"(now {os.environ.get('DETECTRON2_DATASETS', 'unset -> ./datasets')}; set it before "
                     "detectron2 is imported), laid out as in detectron2's datasets/README.md.")
        raise DatasetLayoutError(f"dataset {name!r}: {'; '.join(problems)}. Expected {layout}. {where}")
    return root


def check_datasets(names: Iterable[str]) -> None:
    """:func:`check_dataset_root` for each name (e.g. ``cfg.DATASETS.TRAIN + cfg.DATASETS.TEST``)."""
    for name in names:
        check_dataset_root(name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetLayoutError(f"{path}: corrupt JSON ({e}); regenerate or re-download it") from e


def _find_bad_voc_file(dirname: Path, split: str, classes: Iterable[str]) -> str | None:
    """First annotation file that detectron2's VOC loader cannot read, with the reason."""
    problems = voc_problems(dirname, split, classes, limit=1)
    return problems[0] if problems else None


def validate_annotations(names: Iterable[str]) -> None:
    """Read the annotation files of every VOC/COCO dataset in ``names`` before training.

    Train and test splits alike (a malformed test XML would otherwise surface only after
    training), including that every listed image file exists. Costs one parse of the
    annotations (COCO train2017: a 450 MB JSON, some seconds).

    Raises:
        DatasetLayoutError: listing the problems, each naming its file, and the fix.
    """
    coco = []
    for name in names:
        check_dataset_root(name)
        meta = MetadataCatalog.get(name)
        if meta.get("dirname") is not None:
            _refuse(name, voc_problems(Path(meta.dirname), meta.split, meta.thing_classes))
        elif meta.get("json_file") is not None:
            coco.append(name)
    if coco:  # together: the test sets must name the training set's categories
        metas = [MetadataCatalog.get(name) for name in coco]
        _refuse(", ".join(coco), coco_sets_problems([(Path(m.json_file), Path(m.image_root)) for m in metas]))


def _refuse(name: str, problems: list[str]) -> None:
    if problems:
        synth = all(n in SYNTH_VOC or n in SYNTH_COCO for n in name.split(", "))
        fix = SYNTH_HINT if synth else "fix or re-download these files"
        raise DatasetLayoutError(f"dataset {name!r}: {'; '.join(problems)}. Nothing was trained; {fix}")


def _diagnose(name: str, error: Exception) -> str | None:
    """Why the annotations of ``name`` cannot be loaded, naming the file; None if unknown."""
    meta = MetadataCatalog.get(name)
    if meta.get("dirname") is not None:
        return _find_bad_voc_file(Path(meta.dirname), meta.split, meta.thing_classes)
    if meta.get("json_file") is not None:
        _read_json(Path(meta.json_file))  # raises naming the file when the JSON itself is corrupt
        return f"{meta.json_file}: malformed COCO annotations ({type(error).__name__}: {error})"
    return None


def wrap_builtin_loaders() -> None:
    """Make detectron2's builtin VOC/COCO loaders name a corrupt annotation file.

    The names, paths and loader functions stay detectron2's own; only the error changes.
    Idempotent; part of :func:`register_datasets`.
    """
    for name in BUILTIN_CHECKED:
        if name in DatasetCatalog:
            DatasetCatalog[name] = _diagnosing(name, DatasetCatalog[name])


def dataset_status(names: Iterable[str] | None = None) -> list[tuple[str, str, str | None]]:
    """(name, root, problem or None) for each name; for ``siambench doctor``."""
    rows = []
    for name in names if names is not None else (*BUILTIN_CHECKED, *SYNTH_VOC, *SYNTH_COCO):
        meta = MetadataCatalog.get(name) if name in DatasetCatalog else None
        root = ""
        if meta is not None:
            root = str(meta.get("dirname") or meta.get("image_root") or "")
        try:
            check_dataset_root(name)
            rows.append((name, root, None))
        except DatasetLayoutError as e:
            problem = str(e).split(". Expected", 1)[0]  # the layout hint is the same for a whole family
            rows.append((name, root, problem.removeprefix(f"dataset {name!r}: ")))
    return rows


def register_datasets() -> None:
    """Register the ``synth_*`` names and make the builtin VOC/COCO loaders name a corrupt file.

    Idempotent: call it in every process before a dataset name is looked up.
    """
    register_synth_datasets()
    wrap_builtin_loaders()
