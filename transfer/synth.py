"""The built-in synthetic dataset: coloured shapes on textured backgrounds.

``siambench data synth --out ROOT [--seed 0 --num-images 64 --size 96]`` writes one
deterministic dataset in the three layouts the real pipeline reads, so every step
(pretraining, kNN/linear eval, VOC and COCO transfer) runs unchanged on it::

    ROOT/imagefolder/{train,val}/<class>/*.jpg      class = shape of the one dominant, central object
    ROOT/VOC2007/{JPEGImages,Annotations,ImageSets/Main/{trainval,test}.txt}
    ROOT/VOC2012/{JPEGImages,Annotations,ImageSets/Main/trainval.txt}
    ROOT/coco/{train,val}/*.jpg, ROOT/coco/annotations/instances_{train,val}.json
    ROOT/synth.json                                  parameters and counts (written last)

The images and their objects come from :mod:`siambench.pretrain.data.shapes` (the one class
list and scene renderer, also behind the in-memory ``DATA.DATASET synthetic``). Annotation
conventions (the same in every layout):

* Every object is a polygon, rendered with pycocotools' own rasteriser, so the COCO
  polygon *is* the instance mask and the box is the polygon's bounds.
* Annotations are **amodal**: they describe each object's full shape even where a
  later (upper) object hides part of it, exactly like the polygon that was drawn.
  Placement keeps every object at least ``MIN_VISIBLE`` visible.
* Objects may run off the image edge; their polygon is clipped to the image first
  (VOC ``truncated=1``), so boxes and masks always lie inside the image.
* VOC ``difficult=1`` marks objects less than ``DIFFICULT_VISIBLE`` visible or with a
  box side under ``DIFFICULT_MIN_SIDE`` pixels; detectron2's VOC evaluator ignores them.

Determinism: image ``i`` of split ``s`` draws from ``default_rng([seed, crc32(s), i])``,
so the same arguments give byte-identical files (fixed JPEG settings, no timestamps)
and a larger ``--num-images`` only appends images.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from siambench.pretrain.data.shapes import SYNTH_CLASSES, SynthObject, render_scene

__all__ = ["SYNTH_CLASSES", "SPLITS", "generate", "main"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = "synth.json"
JPEG_QUALITY = 92  # fixed encoder settings keep files byte-identical across runs
# split key -> (layout, relative directory, images per --num-images). Keys are also the
# RNG stream names, so renaming one changes its images.
SPLITS: dict[str, tuple[str, str, float]] = {
    "imagefolder_train": ("imagefolder", "imagefolder/train", 1.0),
    "imagefolder_val": ("imagefolder", "imagefolder/val", 0.5),
    "voc_2007_trainval": ("voc", "VOC2007", 1.0),
    "voc_2007_test": ("voc", "VOC2007", 0.5),
    "voc_2012_trainval": ("voc", "VOC2012", 1.0),
    "coco_train": ("coco", "coco", 1.0),
    "coco_val": ("coco", "coco", 0.5),
}


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _image_shape(rng: np.random.Generator, size: int, square: bool) -> tuple[int, int]:
    """(width, height): square for ImageFolder; detection images vary like VOC photos."""
    if square:
        return size, size
    w, h = rng.uniform(0.75, 1.0, 2) * size
    return int(round(w)), int(round(h))


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)


def _voc_xml(folder: str, filename: str, width: int, height: int, objects: list[SynthObject]) -> str:
    """A Pascal VOC annotation; boxes are 1-based inclusive pixel indices, as in VOC."""
    lines = ["<annotation>", f"  <folder>{folder}</folder>", f"  <filename>{filename}</filename>",
             "  <source><database>siambench synthetic shapes</database></source>",
             f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
             "  <segmented>0</segmented>"]
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        # continuous [x0, x1] covers pixels floor(x0) .. ceil(x1) - 1 (0-based)
        xmin, ymin = int(np.floor(x0)) + 1, int(np.floor(y0)) + 1
        xmax, ymax = max(int(np.ceil(x1)), xmin), max(int(np.ceil(y1)), ymin)
        lines += ["  <object>", f"    <name>{SYNTH_CLASSES[obj.label]}</name>", "    <pose>Unspecified</pose>",
                  f"    <truncated>{int(obj.truncated)}</truncated>", f"    <difficult>{int(obj.difficult)}</difficult>",
                  f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>",
                  "  </object>"]
    return "\n".join(lines + ["</annotation>", ""])


def _coco_annotation(obj: SynthObject, ann_id: int, image_id: int) -> dict[str, Any]:
    x0, y0, x1, y1 = obj.box
    return {"id": ann_id, "image_id": image_id, "category_id": obj.label + 1,
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "area": obj.area, "iscrowd": 0, "segmentation": [obj.polygon.ravel().tolist()],
            "visible_fraction": round(obj.visible, 4)}


def _write_split(root: Path, split: str, count: int, seed: int, size: int, first_id: int,
                 progress: bool) -> dict[str, Any]:
    layout, rel, _ = SPLITS[split]
    base = root / rel
    stats: dict[str, Any] = {"layout": layout, "images": count, "objects": 0, "difficult": 0, "truncated": 0}
    ids: list[str] = []
    coco: dict[str, Any] = {"images": [], "annotations": []}
    for i in tqdm(range(count), desc=f"synth {split}", unit="img", disable=not progress, leave=False):
        rng = _image_rng(seed, split, i)
        width, height = _image_shape(rng, size, square=layout == "imagefolder")
        main = i % len(SYNTH_CLASSES) if layout == "imagefolder" else None  # balanced classes
        image, objects = render_scene(rng, width, height, main_label=main)
        stats["objects"] += len(objects)
        stats["difficult"] += sum(o.difficult for o in objects)
        stats["truncated"] += sum(o.truncated for o in objects)
        if layout == "imagefolder":
            largest = max(objects, key=lambda o: o.area)
            assert largest.label == main, "distractor scaling must keep the main object largest"
            path = base / SYNTH_CLASSES[main] / f"{split}_{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_jpeg(path, image)
        elif layout == "voc":
            year = rel[-4:]
            image_id = f"{first_id + i:06d}" if year == "2007" else f"{year}_{first_id + i:06d}"
            ids.append(image_id)
            for sub in ("JPEGImages", "Annotations"):
                (base / sub).mkdir(parents=True, exist_ok=True)
            _save_jpeg(base / "JPEGImages" / f"{image_id}.jpg", image)
            xml = _voc_xml(rel, f"{image_id}.jpg", width, height, objects)
            (base / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
        else:
            part = split.rsplit("_", 1)[1]
            image_id = first_id + i
            name = f"{image_id:012d}.jpg"
            (base / part).mkdir(parents=True, exist_ok=True)
            _save_jpeg(base / part / name, image)
            coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
            coco["annotations"] += [_coco_annotation(o, image_id * 100 + k, image_id)
                                    for k, o in enumerate(objects)]  # <= 5 objects per image
    if layout == "imagefolder":
        stats["classes"] = {c: len(list((base / c).glob("*.jpg"))) for c in SYNTH_CLASSES}
    elif layout == "voc":
        main_dir = base / "ImageSets" / "Main"
        main_dir.mkdir(parents=True, exist_ok=True)
        (main_dir / f"{split.rsplit('_', 1)[1]}.txt").write_text("".join(f"{n}\n" for n in ids))
    else:
        coco["info"] = {"description": "siambench synthetic shapes", "version": str(FORMAT_VERSION)}
        coco["licenses"] = []
        coco["categories"] = [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(SYNTH_CLASSES)]
        ann = base / "annotations" / f"instances_{split.rsplit('_', 1)[1]}.json"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps(coco, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    return stats


def _validate(num_images: int, size: int, det_num_images: int, det_size: int, det_test_images: int) -> None:
    if num_images < 2 * len(SYNTH_CLASSES):
        raise ValueError(f"--num-images must be >= {2 * len(SYNTH_CLASSES)} so every class appears in "
                         f"imagefolder/val (half as many images as train), got {num_images}")
    if size < 32:
        raise ValueError(f"--size must be >= 32 pixels, got {size}")
    if det_num_images < 1:
        raise ValueError(f"--det-num-images must be >= 1, got {det_num_images}")
    if det_size < 32:
        raise ValueError(f"--det-size must be >= 32 pixels, got {det_size}")
    if det_test_images < 0:
        raise ValueError(f"--det-test-images must be >= 0 (0: half of --det-num-images), got {det_test_images}")


def _existing(out: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the synthetic dataset already at ``out`` with these parameters, else None.

    Raises:
        FileExistsError: ``out`` is a non-empty directory that is not a synthetic dataset.
    """
    marker = out / MARKER
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except ValueError:
            previous = {}
        if all(previous.get(k) == v for k, v in params.items()):
            return previous
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a siambench synthetic dataset (no {MARKER}); "
                              "choose an empty or new --out directory")
    return None


def _write_all(root: Path, params: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Every split of :data:`SPLITS` under ``root``, then the marker; returns the summary."""
    summary: dict[str, Any] = {**params, "classes": list(SYNTH_CLASSES), "splits": {}}
    next_id: dict[str, int] = {}
    for split, (layout, rel, fraction) in SPLITS.items():
        det = layout != "imagefolder"
        count = max(1, int(params["det_num_images" if det else "num_images"] * fraction))
        if det and fraction < 1 and params["det_test_images"]:
            count = params["det_test_images"]  # images are drawn one by one: the first N of any larger set
        first = next_id.get(rel, 1)  # image ids are unique within each VOC/COCO root
        summary["splits"][split] = _write_split(root, split, count, params["seed"],
                                                params["det_size" if det else "size"], first, progress)
        next_id[rel] = first + count
    (root / MARKER).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def generate(out: str | os.PathLike, *, seed: int = 0, num_images: int = 64, size: int = 96,
             det_num_images: int = 256, det_size: int = 64, det_test_images: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Write the synthetic dataset under ``out`` and return its summary.

    Splits with a fraction of 1.0 in :data:`SPLITS` get ``num_images`` images, the
    others half as many; ``det_num_images`` and ``det_size`` set them for the detection
    layouts (VOC, COCO; ``det_test_images`` > 0: that many test/val images instead of half,
    so a small fine-tuning set keeps a large test set), whose transfer configs (``configs/transfer/Base-Synth-C4.yaml``)
    are sized for the defaults. The dataset is built in a temporary sibling directory and
    moved into place, so ``out`` is either complete (``out/synth.json`` exists) or
    untouched. Calling again with the same arguments returns at once; different
    arguments regenerate a previous synthetic dataset but never delete anything else.

    Raises:
        ValueError: bad arguments.
        FileExistsError: ``out`` is a non-empty directory that is not a synthetic dataset.
    """
    _validate(num_images, size, det_num_images, det_size, det_test_images)
    out = Path(out)
    params = {"format": FORMAT_VERSION, "seed": seed, "num_images": num_images, "size": size,
              "det_num_images": det_num_images, "det_size": det_size, "det_test_images": det_test_images}
    previous = _existing(out, params)
    if previous is not None:
        logger.info("synthetic dataset already at %s", out)
        return {**previous, "root": str(out)}
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary = _write_all(tmp, params, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**summary, "root": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siambench data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    synth = sub.add_parser("synth", help="write the built-in synthetic dataset")
    synth.add_argument("--out", required=True, type=Path, help="dataset root to create (e.g. datasets/siambench_synth)")
    synth.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files (default 0)")
    synth.add_argument("--num-images", type=int, default=64,
                       help="images per train/trainval split; val/test splits get half (default 64)")
    synth.add_argument("--size", type=int, default=96, help="longest image side in pixels (default 96)")
    synth.add_argument("--det-num-images", type=int, default=256,
                       help="images per VOC/COCO train split; test/val get half (default 256)")
    synth.add_argument("--det-test-images", type=int, default=0,
                       help="images per VOC/COCO test/val split instead of half of --det-num-images (default 0: half)")
    synth.add_argument("--det-size", type=int, default=64,
                       help="longest VOC/COCO image side in pixels (default 64, what the synth_* transfer tasks expect)")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, seed=args.seed, num_images=args.num_images, size=args.size,
                           det_num_images=args.det_num_images, det_size=args.det_size,
                           det_test_images=args.det_test_images, progress=sys.stderr.isatty())
    except (ValueError, FileExistsError) as e:
        print(f"siambench data synth: error: {e}", file=sys.stderr)
        return 2
    print(f"synthetic dataset (seed {args.seed}, {len(SYNTH_CLASSES)} classes) at {summary['root']}")
    for split, s in summary["splits"].items():
        print(f"  {split:<18} {s['images']:>5} images {s['objects']:>6} objects {s['difficult']:>5} difficult")
    print(f"use it with: export SIAMBENCH_SYNTH={Path(summary['root']).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
