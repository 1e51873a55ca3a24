"""Checks of a declared dataset (:mod:`siambench.transfer.custom`) before anything is created.

Everything the built-in datasets are checked for (:mod:`siambench.transfer.annotations`:
missing or malformed files, unknown classes, dangling ids, missing images), plus what a
dataset of one's own gets wrong more often: a test split without objects (AP undefined),
duplicate image or annotation ids, boxes wholly outside their image (partly outside ones
are clipped when loaded, with a count in the log), COCO images without a size, test
classes that the train split does not have, and VOC test XML that detectron2's VOC
evaluator cannot read (it needs ``<difficult>``, ``<truncated>``, ``<pose>`` and integer
coordinates). :func:`check_custom` raises the first problem as one line naming its file.
"""
from __future__ import annotations

import collections
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .annotations import coco_sets_problems, voc_problems
from .custom import CustomDataset, _coco_json, coco_classes, voc_classes
from .datasets import DatasetLayoutError

__all__ = ["check_custom", "custom_problems"]

def _is_int(text: str | None) -> bool:
    return text is not None and text.strip().lstrip("-").isdigit()


def _first_dup(values: list[Any]) -> Any:
    return next((v for v, n in collections.Counter(values).items() if n > 1), None)


def _voc_layout(root: Path, split: str) -> list[str]:
    if not root.is_dir():
        return [f"VOC root {root} does not exist"]
    for sub in ("Annotations", "JPEGImages"):
        if not (root / sub).is_dir():
            return [f"{root / sub} does not exist (a VOC root holds Annotations/, JPEGImages/, ImageSets/Main/)"]
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        return [f"split file {split_file} does not exist"]
    ids = split_file.read_text().split()
    if not ids:
        return [f"split file {split_file} lists no images"]
    dup = _first_dup(ids)
    return [f"{split_file} lists image id {dup!r} twice"] if dup is not None else []


def _voc_box_problem(path: Path, obj: ET.Element, width: int, height: int, for_eval: bool) -> str | None:
    coords = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
    x0, y0, x1, y1 = (float(c) for c in coords)  # type: ignore[arg-type]  (voc_problems checked them)
    if x0 >= width or y0 >= height or x1 <= 1 or y1 <= 1 or x1 <= x0 or y1 <= y0:
        return f"{path}: box {[x0, y0, x1, y1]} of {obj.findtext('name')!r} lies outside the {width}x{height} image"
    if for_eval:
        ints = [obj.findtext(t) for t in ("difficult", "truncated")] + coords
        if obj.find("pose") is None or not all(_is_int(v) for v in ints):
            return (f"{path}: detectron2's VOC evaluator needs <pose>, integer <difficult> and <truncated>, and "
                    f"integer box coordinates in every test object, got pose {obj.findtext('pose')!r}, difficult "
                    f"{ints[0]!r}, truncated {ints[1]!r}, box {coords}; add or fix them")
    return None


def _voc_split_problems(ds: CustomDataset, root: Path, split: str, classes: list[str], test: bool) -> list[str]:
    problems = _voc_layout(root, split) or voc_problems(root, split, classes, limit=1)
    if problems:
        return problems
    objects = 0
    for image_id in (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
        path = root / "Annotations" / f"{image_id}.xml"
        tree = ET.parse(path)
        width, height = int(tree.findtext("size/width")), int(tree.findtext("size/height"))  # type: ignore[arg-type]
        for obj in tree.findall("object"):
            objects += 1
            problem = _voc_box_problem(path, obj, width, height, for_eval=test)
            if problem:
                return [problem]
    if not objects:
        return [f"{root / 'ImageSets' / 'Main' / f'{split}.txt'}: the {'test' if test else 'train'} split of "
                f"{ds.name!r} has no objects" + (" (AP is undefined)" if test else " (nothing to learn)")]
    return []


def _voc_problems(ds: CustomDataset) -> list[str]:
    root, train_split = Path(ds.train[0]), ds.train[1]
    problems = _voc_layout(root, train_split)
    if problems:
        return problems
    classes = list(ds.classes) or voc_classes(str(root), train_split)
    if not classes:
        return [f"{root / 'ImageSets' / 'Main' / f'{train_split}.txt'}: no object names in the train split's XML "
                "files; annotate objects or give classes=A+B"]
    return (_voc_split_problems(ds, root, train_split, classes, test=False)
            or _voc_split_problems(ds, root, ds.test[1], classes, test=True))


def _duplicate_ids(json_file: Path) -> list[str]:
    """An image or annotation id used twice (detectron2 would keep one of them silently)."""
    try:
        data = _coco_json(str(json_file))
    except (ValueError, UnicodeDecodeError):
        return []  # coco_sets_problems names the corrupt file
    for key in ("images", "annotations"):
        entries = data.get(key) if isinstance(data, dict) else None
        if isinstance(entries, list):
            dup = _first_dup([e.get("id") for e in entries if isinstance(e, dict) and "id" in e])
            if dup is not None:
                return [f"{json_file}: {key[:-1]} id {dup!r} appears twice in {key!r}"]
    return []


def _coco_split_problems(json_file: Path, image_root: Path, test: bool) -> list[str]:
    if not json_file.is_file():
        return [f"COCO annotation file {json_file} does not exist"]
    if not image_root.is_dir():
        return [f"COCO image folder {image_root} does not exist"]
    problems = _duplicate_ids(json_file) or coco_sets_problems([(json_file, image_root)], limit=1)
    if problems:
        return problems
    data = _coco_json(str(json_file))
    images = {img["id"]: img for img in data["images"]}
    for img in data["images"]:
        if not isinstance(img.get("width"), int) or not isinstance(img.get("height"), int):
            return [f"{json_file}: image id {img['id']} ({img['file_name']}) has no integer 'width'/'height'"]
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        img = images[ann["image_id"]]
        if x >= img["width"] or y >= img["height"] or x + w <= 0 or y + h <= 0 or w <= 0 or h <= 0:
            return [f"{json_file}: annotation id {ann.get('id')}: box {ann['bbox']} lies outside the "
                    f"{img['width']}x{img['height']} image {img['file_name']}"]
    if test and not data["annotations"]:
        return [f"{json_file}: the test split has no objects (AP is undefined)"]
    return []


def _coco_problems(ds: CustomDataset) -> list[str]:
    (train_json, train_images), (test_json, test_images) = (map(Path, ds.train), map(Path, ds.test))
    problems = (_coco_split_problems(train_json, train_images, test=False)
                or _coco_split_problems(test_json, test_images, test=True))
    if problems:
        return problems
    train_cats = {c["id"]: c.get("name") for c in _coco_json(str(train_json))["categories"]}
    for c in _coco_json(str(test_json))["categories"]:
        if train_cats.get(c["id"]) != c.get("name"):
            return [f"{test_json}: category {c.get('name')!r} (id {c['id']}) is not a class of {train_json} "
                    f"(its classes: {coco_classes(str(train_json))}); the test file needs the train file's categories"]
    return []


def custom_problems(ds: CustomDataset) -> list[str]:
    """Problems of a declared dataset (train and test splits), each naming its file; [] if none."""
    return _coco_problems(ds) if ds.format == "coco" else _voc_problems(ds)


def check_custom(ds: CustomDataset) -> None:
    """Raise the first problem of ``ds`` as one line.

    Raises:
        DatasetLayoutError: naming the file, what is wrong, and that nothing was created.
    """
    problems = custom_problems(ds)
    if problems:
        raise DatasetLayoutError(f"dataset {ds.name!r}: {problems[0]}. Nothing was created; fix it and rerun")
