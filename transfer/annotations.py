"""Checks of VOC / COCO annotation files before training, and box sanitising after loading.

detectron2's loaders fail mid-run on malformed annotations with an assertion that names no
file (a COCO JSON without ``annotations``, a 3-value box), and a malformed *test* XML is
only found when evaluation starts, after hours of training. :func:`voc_problems` and
:func:`coco_sets_problems` read the raw files first and list every problem with the file it
is in; :func:`siambench.transfer.datasets.validate_annotations` turns them into one error.

:func:`sanitize_boxes` then clips the boxes of the loaded records to their image and drops
the ones that are empty after clipping (negative, zero-area, inverted, outside the image),
returning the counts that the loader logs. detectron2's mapper would clip/drop them too,
but silently.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable

from siambench.pretrain.utils.images import header_problem
from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.structures import BoxMode

__all__ = ["voc_problems", "coco_sets_problems", "sanitize_boxes"]

def _finite_numbers(values: Any, n: int) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))


def voc_problems(dirname: Path, split: str, classes: Iterable[str], limit: int = 5) -> list[str]:
    """Problems of a VOC split: unreadable/malformed XML, unknown classes, missing images.

    Reads every ``Annotations/<id>.xml`` listed in ``ImageSets/Main/<split>.txt`` (as
    detectron2's ``load_voc_instances`` will) and checks ``JPEGImages/<id>.jpg`` exists and
    opens (its header: :func:`header_problem`, e.g. a decompression bomb).
    Returns at most ``limit`` messages (plus a count of the rest), each naming its file.
    """
    classes = set(classes)
    problems: list[str] = []
    ids = (dirname / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    for image_id in ids:
        path = dirname / "Annotations" / f"{image_id}.xml"
        problem = None
        try:
            tree = ET.parse(path)
            int(tree.find("size/height").text)  # type: ignore[union-attr, arg-type]
            int(tree.find("size/width").text)  # type: ignore[union-attr, arg-type]
            for obj in tree.findall("object"):
                cls = obj.find("name").text  # type: ignore[union-attr]
                if cls not in classes:
                    problem = f"{path}: object class {cls!r} is not one of {sorted(classes)}"
                    break
                [float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore
        except FileNotFoundError:
            problem = f"{path} is missing (listed in ImageSets/Main/{split}.txt)"
        except ET.ParseError as e:
            problem = f"{path} is not valid XML ({e})"
        except (AttributeError, TypeError, ValueError) as e:
            problem = f"{path}: malformed VOC annotation ({type(e).__name__}: {e})"
        image = dirname / "JPEGImages" / f"{image_id}.jpg"
        if problem is None:
            problem = header_problem(image) if image.is_file() else f"image {image} is missing (listed in {split}.txt)"
        if problem:
            problems.append(problem)
    return _limited(problems, limit)


def _limited(problems: list[str], limit: int) -> list[str]:
    if len(problems) > limit:
        return problems[:limit] + [f"... and {len(problems) - limit} more"]
    return problems


def _read_coco(json_file: Path) -> tuple[dict[str, Any], list[str]]:
    """(the instances file, []) or ({}, [why it is no COCO instances file])."""
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return {}, [f"{json_file}: corrupt JSON ({e}); regenerate or re-download it"]
    if not isinstance(data, dict):
        return {}, [f"{json_file}: expected a JSON object with 'images', 'annotations' and 'categories'"]
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return {}, [f"{json_file}: no {' / '.join(repr(k) for k in missing)} list (a COCO instances file has "
                    "'images', 'annotations' and 'categories')"]
    if not data["images"]:
        return {}, [f"{json_file}: 'images' is empty"]
    return data, []


def _annotation_problems(data: dict[str, Any], json_file: Path, images: dict[Any, dict]) -> list[str]:
    problems: list[str] = []
    categories = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    seen: set[Any] = set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            problems.append(f"{json_file}: an annotation that is not an object: {str(ann)[:80]}")
            continue
        where = f"{json_file}: annotation id {ann.get('id')}"
        if ann.get("id") in seen:  # detectron2's loader asserts unique ids, after OUTPUT_DIR exists
            problems.append(f"{where} is used twice; give every annotation its own id")
        seen.add(ann.get("id"))
        if not _finite_numbers(ann.get("bbox"), 4):
            problems.append(f"{where}: bbox {ann.get('bbox')!r} is not [x, y, width, height] (4 finite numbers)")
        if ann.get("image_id") not in images:
            problems.append(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in categories:
            problems.append(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
    return problems


def _coco_data_problems(data: dict[str, Any], json_file: Path, image_root: Path) -> list[str]:
    problems: list[str] = []
    images: dict[Any, dict] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            problems.append(f"{json_file}: an image entry without 'id' or 'file_name': {str(img)[:80]}")
            continue
        images[img["id"]] = img
    problems += _annotation_problems(data, json_file, images)
    absent = [img["file_name"] for img in images.values() if not (image_root / img["file_name"]).is_file()]
    if absent:
        problems.append(f"{len(absent)} image file(s) listed in {json_file} are missing under {image_root}, "
                        f"e.g. {absent[0]}")
    present = (image_root / img["file_name"] for img in images.values() if img["file_name"] not in set(absent))
    problems += [p for p in map(header_problem, present) if p]
    return problems


def _categories(data: dict[str, Any]) -> list[tuple[Any, Any]]:
    return sorted(((c.get("id"), c.get("name")) for c in data["categories"] if isinstance(c, dict)), key=str)


def coco_sets_problems(files: Iterable[tuple[Path, Path]], limit: int = 5) -> list[str]:
    """Problems of COCO instances files, each ``(json_file, image_root)`` read once: missing
    ``images``/``annotations``/``categories``, boxes that are not 4 finite numbers, annotation ids
    used twice, dangling image/category ids, missing image files, images that do not open
    (:func:`header_problem`); and every file must name the categories of the first (the training
    set) with the same ids, or evaluation would fail (or compare other classes) after training."""
    problems: list[str] = []
    first: tuple[Path, list[tuple[Any, Any]]] | None = None
    for json_file, image_root in files:
        data, bad = _read_coco(json_file)
        bad = bad or _coco_data_problems(data, json_file, image_root)
        problems += bad
        if bad:
            continue
        categories = _categories(data)
        if first is None:
            first = (json_file, categories)
        elif categories != first[1]:
            only_here = [n for i, n in categories if (i, n) not in first[1]]
            only_there = [n for i, n in first[1] if (i, n) not in categories]
            problems.append(f"{json_file}: its categories differ from those of {first[0]} (only here: "
                            f"{only_here[:5]}, only there: {only_there[:5]}); train and test sets must name the "
                            "same categories with the same ids")
    return _limited(problems, limit)


def sanitize_boxes(dicts: list[dict[str, Any]]) -> tuple[int, int]:
    """Clip every box of detectron2 records to its image; drop those left empty. In place.

    Handles ``BoxMode.XYXY_ABS`` (VOC) and ``XYWH_ABS`` (COCO) boxes of records that carry
    ``width``/``height``; other boxes are left alone. Returns ``(clipped, dropped)``.
    """
    clipped = dropped = 0
    for record in dicts:
        width, height = record.get("width"), record.get("height")
        if not width or not height or "annotations" not in record:
            continue
        kept = []
        for ann in record["annotations"]:
            box, mode = ann.get("bbox"), ann.get("bbox_mode")
            if mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS) or not _finite_numbers(box, 4):
                kept.append(ann)
                continue
            x0, y0, a, b = (float(v) for v in box)
            x1, y1 = (x0 + a, y0 + b) if mode == BoxMode.XYWH_ABS else (a, b)
            c = [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width),
                 min(max(y1, 0.0), height)]
            if c[2] <= c[0] or c[3] <= c[1]:
                dropped += 1
                continue
            if c != [x0, y0, x1, y1]:
                # VOC's 1-based pixel convention puts boxes touching the border at -1 once detectron2
                # shifts them; that is not worth a count, anything beyond a pixel is.
                clipped += max(abs(c[0] - x0), abs(c[1] - y0), abs(c[2] - x1), abs(c[3] - y1)) > 1.0
                ann["bbox"] = [c[0], c[1], c[2] - c[0], c[3] - c[1]] if mode == BoxMode.XYWH_ABS else c
            kept.append(ann)
        record["annotations"] = kept
    return clipped, dropped
