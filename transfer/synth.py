"""The built-in synthetic dataset: coloured shapes on textured backgrounds.

``siambench data synth --out ROOT [--seed 0 --num-images 64 --size 96]`` writes one
deterministic dataset in the three layouts the real pipeline reads, so every step
(pretraining, kNN/linear eval, VOC and COCO transfer) runs unchanged on it::

    ROOT/imagefolder/{train,val}/<class>/*.jpg      class = shape of the one dominant, central object
    ROOT/VOC2007/{JPEGImages,Annotations,ImageSets/Main/{trainval,test}.txt}
    ROOT/VOC2012/{JPEGImages,Annotations,ImageSets/Main/trainval.txt}
    ROOT/coco/{train,val}/*.jpg, ROOT/coco/annotations/instances_{train,val}.json
    ROOT/synth.json                                  parameters and counts (written last)

Annotation conventions (the same in every layout):

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

__all__ = ["SYNTH_CLASSES", "SPLITS", "generate", "main"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = "synth.json"
JPEG_QUALITY = 92  # fixed encoder settings keep files byte-identical across runs
MIN_VISIBLE = 0.3
DIFFICULT_VISIBLE = 0.5
DIFFICULT_MIN_SIDE = 6.0  # pixels
# ImageFolder images: one dominant shape per image (its class is the label).
CLS_MAIN_RADIUS = (0.3, 0.42)  # main object's radius, fraction of the image side
CLS_CENTRE_JITTER = 0.1  # its centre lies within +-10% of the image side of the image centre
CLS_MAX_ROTATION = 20.0  # degrees: shapes stand upright (+-20), as objects in photos mostly do;
#                          views share their rotation, so SimSiam could never learn to ignore a full one
CLS_TINT = 0.05  # colours are grey levels +- this tint per channel: colour is no shortcut for the views
CLS_TEXTURE = 0.08  # background texture contrast (per channel): crops share little but the shape
CLS_CONTRAST = 0.4  # object grey level differs from the background's by at least this
CLS_BG_GREY = ((0.05, 0.35), (0.65, 0.95))  # background grey: dark or light (the object is the other)
CLS_STRIPES = 0.05  # stripe texture on the object (relative amplitude; detection images: 0.12)
CLS_NOISE = 0.04  # pixel noise std (detection images: 0.02): differs between crops, shared by none
CLS_DISTRACTOR_P = 0.5  # probability of one small distractor (any class, <= 1/3 of the main area)
# Detection layouts (VOC, COCO): objects per image and radius as a fraction of the short
# side. Few, large objects so that an R-CNN C4 detector (stride 16) learns them in a few
# hundred CPU iterations on ~64 px images (see configs/transfer/Base-Synth-C4.yaml).
DET_OBJECTS = (1, 3)  # inclusive range
DET_RADIUS = (0.15, 0.35)
# Detection images look like ImageFolder images (grey levels, upright shapes, the same
# textures), as VOC/COCO photos look like ImageNet's: pretraining on one transfers to the other.
DET_IMAGEFOLDER_LOOK = True


def _regular(n: int, radii: tuple[float, ...] = (1.0,), phase: float = np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    r = np.resize(np.asarray(radii), n)
    return np.stack([r * np.cos(angles), -r * np.sin(angles)], axis=1)


_W = 0.3  # half-width of the cross's arms
# Unit templates (radius ~1, centred at 0), Kx2 (x, y). Order defines class indices.
_TEMPLATES: dict[str, np.ndarray] = {
    "circle": _regular(24),
    "square": _regular(4, phase=np.pi / 4),
    "triangle": _regular(3),
    "star": _regular(10, radii=(1.0, 0.45)),
    "cross": np.array([(_W, 1), (_W, _W), (1, _W), (1, -_W), (_W, -_W), (_W, -1), (-_W, -1),
                       (-_W, -_W), (-1, -_W), (-1, _W), (-_W, _W), (-_W, 1)], dtype=float),
    "arrow": np.array([(1, 0), (0.1, 0.75), (0.1, 0.3), (-1, 0.3), (-1, -0.3), (0.1, -0.3),
                       (0.1, -0.75)], dtype=float),
}
SYNTH_CLASSES: tuple[str, ...] = tuple(_TEMPLATES)


def _shoelace(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


_AREAS = np.array([_shoelace(t) for t in _TEMPLATES.values()])
# A distractor scaled by at most this factor of the main object's radius is always
# smaller in area, whatever the two shapes are: the ImageFolder label stays exact.
_DISTRACTOR_SCALE = 0.9 * float(np.sqrt(_AREAS.min() / _AREAS.max()))

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


@dataclass
class SynthObject:
    """One annotated object; coordinates are continuous pixels, (0, 0) = image corner."""

    label: int
    polygon: np.ndarray  # Kx2 (x, y), clipped to the image
    truncated: bool
    area: float = 0.0  # mask pixels (COCO convention)
    visible: float = 1.0  # fraction of the mask not hidden by later objects

    @property
    def box(self) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.polygon.min(0), self.polygon.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def difficult(self) -> bool:
        x0, y0, x1, y1 = self.box
        return self.visible < DIFFICULT_VISIBLE or min(x1 - x0, y1 - y0) < DIFFICULT_MIN_SIDE


def _clip_polygon(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman clipping of ``poly`` (Kx2) to the box [0, width] x [0, height]."""
    for axis, bound, keep_below in ((0, 0.0, False), (0, float(width), True),
                                    (1, 0.0, False), (1, float(height), True)):
        if len(poly) == 0:
            break
        d = poly[:, axis] - bound
        inside = d <= 0 if keep_below else d >= 0
        out = []
        for i in range(len(poly)):
            j = (i + 1) % len(poly)
            if inside[i]:
                out.append(poly[i])
            if inside[i] != inside[j]:  # the edge crosses the boundary
                t = d[i] / (d[i] - d[j])
                out.append(poly[i] + t * (poly[j] - poly[i]))
        poly = np.asarray(out).reshape(-1, 2)
    return poly


def _rasterise(polys: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Masks of ``polys`` as pycocotools draws them (the COCO ground truth): NxHxW bool."""
    if not polys:
        return np.zeros((0, height, width), bool)
    rles = mask_utils.frPyObjects([p.ravel().tolist() for p in polys], height, width)
    return mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)


def _visible_fractions(masks: np.ndarray) -> np.ndarray:
    """Fraction of each mask not covered by any later (upper) mask."""
    above = np.zeros(masks.shape[1:], bool)
    vis = np.empty(len(masks))
    for k in range(len(masks) - 1, -1, -1):
        total = masks[k].sum()
        vis[k] = (masks[k] & ~above).sum() / max(total, 1)
        above |= masks[k]
    return vis


def _texture(rng: np.random.Generator, height: int, width: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Blend of two colours by a random sum of plane waves: HxWx3 float in [0, 1]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    n = 3
    freq = rng.uniform(0.02, 0.15, n) * 2 * np.pi
    theta = rng.uniform(0, np.pi, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    waves = np.sin(freq[:, None, None] * (xx * np.cos(theta)[:, None, None] + yy * np.sin(theta)[:, None, None])
                   + phase[:, None, None])
    p = (waves.mean(0) + 1) / 2  # HxW in [0, 1]
    return c0 * (1 - p[..., None]) + c1 * p[..., None]


def _cls_colour(rng: np.random.Generator, grey: float) -> np.ndarray:
    """ImageFolder colours: a grey level with a small random tint (RGB in [0, 1])."""
    return np.clip(grey + rng.uniform(-1, 1, 3) * CLS_TINT, 0, 1)


def _cls_object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A grey level at least ``CLS_CONTRAST`` brighter or darker than the background's."""
    bg = float(background.mean())
    up, down = 1.0 - bg, bg  # room above and below the background's grey level
    if up >= CLS_CONTRAST and (down < CLS_CONTRAST or rng.random() < 0.5):
        grey = bg + rng.uniform(CLS_CONTRAST, up)
    else:
        grey = bg - rng.uniform(CLS_CONTRAST, max(down, CLS_CONTRAST))
    return _cls_colour(rng, grey)


def _place(rng: np.random.Generator, label: int, radius: float, width: int, height: int,
           allow_truncation: bool, centre_jitter: float | None = None,
           max_angle: float = np.pi) -> SynthObject | None:
    """Draw a rotated, stretched ``label`` shape.

    Args:
        centre_jitter: keep the centre within this fraction of the image size of the
            image centre (ImageFolder main object); ``None``: anywhere.
        max_angle: rotation drawn from [-max_angle, max_angle] radians.
    """
    stretch = rng.uniform(0.85, 1.18)  # area-preserving anisotropy
    angle = rng.uniform(0, 2 * np.pi) if max_angle >= np.pi else rng.uniform(-max_angle, max_angle)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shape = (_TEMPLATES[SYNTH_CLASSES[label]] * radius * np.array([stretch, 1 / stretch])) @ rot.T
    lo, hi = shape.min(0), shape.max(0)
    if allow_truncation and rng.random() < 0.2:
        centre = rng.uniform([0, 0], [width, height])
    else:
        if np.any(hi - lo >= (width, height)):
            return None
        low, high = -lo, np.array([width, height]) - hi
        if centre_jitter is not None:  # near the centre, still fully inside the image
            mid, reach = np.array([width, height]) / 2, centre_jitter * np.array([width, height])
            low, high = np.maximum(low, mid - reach), np.minimum(high, mid + reach)
            low, high = np.minimum(low, high), np.maximum(low, high)
        centre = rng.uniform(low, high)
    poly = np.round(_clip_polygon(shape + centre, width, height), 2)  # 2 decimals: stable JSON/XML
    if len(poly) < 3 or _shoelace(poly) < 16.0:
        return None
    truncated = bool(np.any(shape + centre < 0) or np.any(shape + centre > (width, height)))
    return SynthObject(label, poly, truncated)


def render_scene(rng: np.random.Generator, width: int, height: int,
                 main_label: int | None = None) -> tuple[np.ndarray, list[SynthObject]]:
    """One image (HxWx3 uint8) and its objects, bottom to top.

    Args:
        main_label: ImageFolder mode: one large, untruncated object of this class plus
            smaller distractors, so the largest object's class is ``main_label``.
            ``None``: detection mode, :data:`DET_OBJECTS` objects of random classes and
            sizes (radius :data:`DET_RADIUS` of the short side).
    """
    short = min(width, height)
    cls_look = main_label is not None or DET_IMAGEFOLDER_LOOK  # ImageFolder colours, rotations, textures
    objects: list[SynthObject] = []
    if main_label is None:
        wanted = int(rng.integers(DET_OBJECTS[0], DET_OBJECTS[1] + 1))
        # (label, radius, is_main)
        specs = [(int(rng.integers(len(SYNTH_CLASSES))), rng.uniform(*DET_RADIUS) * short, False)
                 for _ in range(wanted)]
    else:  # one dominant shape near the centre (crops rarely cut it away), at most one small distractor
        main_r = rng.uniform(*CLS_MAIN_RADIUS) * short
        specs = [(main_label, main_r, True)] + [
            (int(rng.integers(len(SYNTH_CLASSES))), rng.uniform(0.4, 0.6) * _DISTRACTOR_SCALE * main_r, False)
            for _ in range(int(rng.random() < CLS_DISTRACTOR_P))]
    masks = np.zeros((0, height, width), bool)
    for label, radius, is_main in specs:
        # ImageFolder distractors go above or below the main object; detection stacks up.
        z = len(objects) if main_label is None or rng.random() < 0.5 else 0
        for _ in range(20):  # rejection sampling: valid shape, nobody hidden too much
            obj = _place(rng, label, radius, width, height, allow_truncation=not is_main,
                         centre_jitter=CLS_CENTRE_JITTER if is_main else None,
                         max_angle=np.pi if not cls_look else np.deg2rad(CLS_MAX_ROTATION))
            if obj is None:
                continue
            new = np.insert(masks, z, _rasterise([obj.polygon], height, width)[0], axis=0)
            if new[z].any() and _visible_fractions(new).min() >= MIN_VISIBLE:
                objects.insert(z, obj)
                masks = new
                break
        else:
            if is_main:
                raise RuntimeError("could not place the main object; use a larger --size")
    for obj, m, v in zip(objects, masks, _visible_fractions(masks)):
        obj.area, obj.visible = float(m.sum()), float(v)

    if not cls_look:
        bg0, bg1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    else:
        bg0 = _cls_colour(rng, rng.uniform(*CLS_BG_GREY[int(rng.integers(len(CLS_BG_GREY)))]))
        bg1 = np.clip(bg0 + rng.uniform(-1, 1, 3) * CLS_TEXTURE, 0, 1)
    image = _texture(rng, height, width, bg0, bg1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for obj, m in zip(objects, masks):
        colour = rng.uniform(0, 1, 3) if not cls_look else _cls_object_colour(rng, (bg0 + bg1) / 2)
        for _ in range(10):  # keep objects distinguishable from the background
            if np.abs(colour - (bg0 + bg1) / 2).sum() > 0.45:
                break
            colour = rng.uniform(0, 1, 3) if not cls_look else _cls_object_colour(rng, (bg0 + bg1) / 2)
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.2, 0.8)
        stripes = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)))[..., None]
        amplitude = 0.12 if not cls_look else CLS_STRIPES
        image[m] = np.clip(colour * (1 + amplitude * stripes), 0, 1)[m]
    image += rng.normal(0, 0.02 if not cls_look else CLS_NOISE, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), objects


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


def _validate(num_images: int, size: int) -> None:
    if num_images < 2 * len(SYNTH_CLASSES):
        raise ValueError(f"--num-images must be >= {2 * len(SYNTH_CLASSES)} so every class appears in "
                         f"imagefolder/val (half as many images as train), got {num_images}")
    if size < 32:
        raise ValueError(f"--size must be >= 32 pixels, got {size}")


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
    _validate(num_images, size)
    if det_num_images < 1:
        raise ValueError(f"--det-num-images must be >= 1, got {det_num_images}")
    if det_size < 32:
        raise ValueError(f"--det-size must be >= 32 pixels, got {det_size}")
    if det_test_images < 0:
        raise ValueError(f"--det-test-images must be >= 0 (0: half of --det-num-images), got {det_test_images}")
    out = Path(out)
    params = {"format": FORMAT_VERSION, "seed": seed, "num_images": num_images, "size": size,
              "det_num_images": det_num_images, "det_size": det_size, "det_test_images": det_test_images}
    marker = out / MARKER
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except ValueError:
            previous = {}
        if all(previous.get(k) == v for k, v in params.items()):
            logger.info("synthetic dataset already at %s", out)
            return {**previous, "root": str(out)}
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a siambench synthetic dataset (no {MARKER}); "
                              "choose an empty or new --out directory")

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary: dict[str, Any] = {**params, "classes": list(SYNTH_CLASSES), "splits": {}}
        next_id: dict[str, int] = {}
        for split, (layout, rel, fraction) in SPLITS.items():
            det = layout != "imagefolder"
            count = max(1, int((det_num_images if det else num_images) * fraction))
            if det and fraction < 1 and det_test_images:
                count = det_test_images  # images are drawn one by one: the first N of any larger set
            first = next_id.get(rel, 1)  # image ids are unique within each VOC/COCO root
            summary["splits"][split] = _write_split(tmp, split, count, seed, det_size if det else size,
                                                    first, progress)
            next_id[rel] = first + count
        (tmp / MARKER).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
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
