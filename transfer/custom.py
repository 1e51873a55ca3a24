"""Your own detection datasets as transfer tasks, declared by path and format, no Python.

A declaration (``siambench transfer --dataset SPEC``, ``SIAMBENCH.CUSTOM.DATASETS`` in a
transfer config, ``DATASETS:`` in a pipeline file) is one string::

    NAME=coco:TRAIN_JSON:TRAIN_IMAGES,TEST_JSON:TEST_IMAGES
    NAME=voc:ROOT[:train=SPLIT][:test=SPLIT][:metric=voc07|area][:classes=A+B+...]

* ``coco``: COCO instances files and their image folders; the classes are the train file's
  ``categories`` (in id order); masks are trained (Mask R-CNN) when every annotation of both
  files carries a segmentation, and scored with COCO AP (bbox, and segm with masks).
* ``voc``: a Pascal VOC folder ``ROOT/{Annotations/<id>.xml, JPEGImages/<id>.jpg,
  ImageSets/Main/<split>.txt}``, splits ``trainval`` and ``test`` unless given; the classes
  are the object names of the train split's XML files (sorted), or ``classes=`` (in that
  order); VOC AP with the VOC07 11-point metric (``metric=voc07``, default, as VOC 07 test)
  or the area under the precision/recall curve (``metric=area``, VOC 2010+).

Paths may be relative to the working directory (made absolute when parsed) and may not
contain ``:`` or ``,``. ``NAME`` names the task in results and tables and registers the
detectron2 datasets ``NAME_train`` and ``NAME_test``.

Registration is driven by the config: transfer's ``run()``, which every process of a launch
runs, passes ``SIAMBENCH.CUSTOM.DATASETS`` to :func:`register_custom_datasets`. Checks before training are in
:mod:`siambench.transfer.custom_checks`, the protocol derived from the data in
:mod:`siambench.transfer.custom_protocol`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import load_coco_json, load_voc_instances  # noqa: E402
from siambench.pretrain.utils.config import ConfigError  # noqa: E402

from .datasets import diagnosing  # noqa: E402

__all__ = ["CustomDataset", "parse_spec", "parse_specs", "register_custom_datasets", "SPEC_HELP"]

SPEC_HELP = ("NAME=coco:TRAIN_JSON:TRAIN_IMAGES,TEST_JSON:TEST_IMAGES or "
             "NAME=voc:ROOT[:train=SPLIT][:test=SPLIT][:metric=voc07|area][:classes=A+B]")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_VOC_OPTIONS = ("train", "test", "metric", "classes")
_METRICS = ("voc07", "area")
_RESERVED = ("voc", "coco", "synth", "Base")  # prefixes of built-in task and dataset names


@dataclasses.dataclass(frozen=True)
class CustomDataset:
    """One declared dataset; ``spec`` is its canonical text (absolute paths), stored in configs."""

    name: str
    format: str  # "coco" | "voc"
    train: tuple[str, str]  # coco: (json, images); voc: (root, split)
    test: tuple[str, str]
    metric: str = "voc07"  # voc only
    classes: tuple[str, ...] = ()  # voc only: explicit class list ("" = from the XML files)

    @property
    def train_name(self) -> str:
        return f"{self.name}_train"

    @property
    def test_name(self) -> str:
        return f"{self.name}_test"

    @property
    def spec(self) -> str:
        if self.format == "coco":
            return f"{self.name}=coco:{':'.join(self.train)},{':'.join(self.test)}"
        opts = [f"train={self.train[1]}", f"test={self.test[1]}", f"metric={self.metric}"]
        opts += [f"classes={'+'.join(self.classes)}"] if self.classes else []
        return f"{self.name}=voc:{self.train[0]}:" + ":".join(opts)

    def class_names(self) -> list[str]:
        """The class list (reads the train annotations: COCO categories, VOC object names)."""
        if self.format == "coco":
            return coco_classes(self.train[0])
        return list(self.classes) or voc_classes(*self.train)


def _abs(path: str, key: str) -> str:
    if not path:
        raise ConfigError(f"{key}: an empty path; write {SPEC_HELP}")
    return str(Path(path).expanduser().absolute())


def parse_spec(text: str, key: str = "--dataset") -> CustomDataset:
    """``NAME=FORMAT:...`` -> :class:`CustomDataset` (see the module docstring).

    Raises:
        ConfigError: naming ``key``, the bad part and the syntax.
    """
    name, eq, rest = str(text).partition("=")
    fmt, _, body = rest.partition(":")
    where = f"{key} {text!r}"
    if not eq or not _NAME_RE.match(name) or name.startswith(_RESERVED):
        raise ConfigError(f"{where}: NAME must start with a letter, use letters, digits, _ . - and not start with "
                          f"{', '.join(_RESERVED)}; write {SPEC_HELP}")
    if fmt == "coco":
        parts = [p.split(":") for p in body.split(",")]
        if len(parts) != 2 or any(len(p) != 2 for p in parts):
            raise ConfigError(f"{where}: a coco dataset is coco:TRAIN_JSON:TRAIN_IMAGES,TEST_JSON:TEST_IMAGES")
        (tj, ti), (sj, si) = parts
        return CustomDataset(name, "coco", (_abs(tj, where), _abs(ti, where)), (_abs(sj, where), _abs(si, where)))
    if fmt == "voc":
        root, *options = body.split(":")
        opts = dict(o.partition("=")[::2] for o in options)
        bad = [o for o in options if "=" not in o or o.partition("=")[0] not in _VOC_OPTIONS]
        if bad or len(opts) != len(options):
            raise ConfigError(f"{where}: bad or repeated option {(bad or options)[0]!r}; voc options are "
                              f"{', '.join(o + '=' for o in _VOC_OPTIONS)}")
        if opts.get("metric", "voc07") not in _METRICS:
            raise ConfigError(f"{where}: metric must be voc07 (11-point) or area, got {opts['metric']!r}")
        classes = tuple(c for c in opts.get("classes", "").split("+") if c)
        if len(set(classes)) != len(classes):
            raise ConfigError(f"{where}: classes= lists a class twice")
        root = _abs(root, where)
        return CustomDataset(name, "voc", (root, opts.get("train") or "trainval"), (root, opts.get("test") or "test"),
                             opts.get("metric", "voc07"), classes)
    raise ConfigError(f"{where}: unknown format {fmt!r}; write {SPEC_HELP}")


def parse_specs(specs: Iterable[str], key: str = "SIAMBENCH.CUSTOM.DATASETS") -> list[CustomDataset]:
    """Every declaration of ``specs``; two with one NAME are refused."""
    found = [parse_spec(s, key) for s in specs]
    names = [d.name for d in found]
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: the dataset name {next(n for n in names if names.count(n) > 1)!r} is declared "
                          "twice; give each dataset its own NAME")
    return found


@functools.lru_cache(maxsize=None)
def voc_classes(root: str, split: str) -> list[str]:
    """Sorted object names of the XML files of a VOC split (unreadable files are the checks' business)."""
    names: set[str] = set()
    ids = (Path(root) / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    for image_id in ids:
        try:
            tree = ET.parse(Path(root) / "Annotations" / f"{image_id}.xml")
        except (OSError, ET.ParseError):
            continue
        names.update((obj.findtext("name") or "").strip() for obj in tree.findall("object"))
    names.discard("")
    return sorted(names)


@functools.lru_cache(maxsize=None)
def _coco_json(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def coco_classes(json_file: str) -> list[str]:
    """Category names in id order, as detectron2's ``load_coco_json`` orders them."""
    cats = [c for c in _coco_json(json_file).get("categories", []) if isinstance(c, dict)]
    return [str(c.get("name")) for c in sorted(cats, key=lambda c: c.get("id", 0))]


def coco_has_masks(json_file: str) -> bool:
    """Whether every annotation of the file carries a non-empty segmentation (Mask R-CNN's mapper
    needs one per object: a file where only some have one is trained for boxes)."""
    anns = _coco_json(json_file).get("annotations", [])
    return bool(anns) and all(isinstance(a, dict) and a.get("segmentation") for a in anns)


def _register_split(ds: CustomDataset, name: str, split: tuple[str, str]) -> None:
    if ds.format == "coco":
        json_file, image_root = split
        DatasetCatalog.register(name, diagnosing(name, functools.partial(load_coco_json, json_file, image_root, name)))
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
        return
    classes = ds.class_names()
    root, split_name = split
    DatasetCatalog.register(name, diagnosing(name, functools.partial(load_voc_instances, root, split_name, classes)))
    # detectron2's VOC evaluator: year 2007 = the 11-point metric, any other year = the area metric
    MetadataCatalog.get(name).set(thing_classes=classes, dirname=root, split=split_name, evaluator_type="pascal_voc",
                                  year=2007 if ds.metric == "voc07" else 2012)


def register_custom_datasets(specs: Iterable[str]) -> list[CustomDataset]:
    """Register ``NAME_train`` / ``NAME_test`` of every declaration (idempotent per process).

    A name declared before in this process with other paths is registered anew (the config
    of the run says what it means); a name detectron2 or another library registered is refused.
    """
    found = parse_specs(specs)
    for ds in found:
        for name, split in ((ds.train_name, ds.train), (ds.test_name, ds.test)):
            if name in DatasetCatalog:
                spec = MetadataCatalog.get(name).get("siambench_spec")
                if spec == ds.spec:
                    continue
                if spec is None:
                    raise ConfigError(f"dataset {name!r} is registered by detectron2 or another library; "
                                      f"give {ds.name!r} another NAME")
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            _register_split(ds, name, split)
            MetadataCatalog.get(name).set(siambench_spec=ds.spec)
    return found
