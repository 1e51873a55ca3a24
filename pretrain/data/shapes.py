"""The synthetic shapes: one class list and one scene renderer for every synthetic dataset.

Six shape classes (:data:`SYNTH_CLASSES`), drawn as polygons with pycocotools' own rasteriser,
so a COCO polygon *is* the instance mask. :func:`render_scene` draws one image and its objects:
one dominant central shape (an ImageFolder image, labelled by it) or a few shapes of any
class (a detection image). ``siambench data synth`` (:mod:`siambench.transfer.synth`) writes
them to disk in the ImageFolder, VOC and COCO layouts; :class:`.synthetic.SyntheticShapes`
draws the same classes and outlines (:func:`outline`) in memory for the tiny configs and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["SYNTH_CLASSES", "SynthObject", "outline", "render_scene"]

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


def outline(label: int) -> np.ndarray:
    """The unit polygon (Kx2 (x, y), radius ~1, centred at 0, y down) of class ``SYNTH_CLASSES[label]``."""
    return _TEMPLATES[SYNTH_CLASSES[label]]


def _shoelace(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


_AREAS = np.array([_shoelace(t) for t in _TEMPLATES.values()])
# A distractor scaled by at most this factor of the main object's radius is always
# smaller in area, whatever the two shapes are: the ImageFolder label stays exact.
_DISTRACTOR_SCALE = 0.9 * float(np.sqrt(_AREAS.min() / _AREAS.max()))

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
    shape = (outline(label) * radius * np.array([stretch, 1 / stretch])) @ rot.T
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
    cls_look = main_label is not None or DET_IMAGEFOLDER_LOOK  # ImageFolder colours, rotations, textures
    specs = _object_specs(rng, min(width, height), main_label)
    objects, masks = _place_objects(rng, specs, width, height, stack=main_label is None, cls_look=cls_look)
    for obj, m, v in zip(objects, masks, _visible_fractions(masks)):
        obj.area, obj.visible = float(m.sum()), float(v)
    return _paint(rng, masks, width, height, cls_look), objects


def _object_specs(rng: np.random.Generator, short: int, main_label: int | None) -> list[tuple[int, float, bool]]:
    """(label, radius, is_main) of the objects to place."""
    if main_label is None:
        wanted = int(rng.integers(DET_OBJECTS[0], DET_OBJECTS[1] + 1))
        return [(int(rng.integers(len(SYNTH_CLASSES))), rng.uniform(*DET_RADIUS) * short, False)
                for _ in range(wanted)]
    # one dominant shape near the centre (crops rarely cut it away), at most one small distractor
    main_r = rng.uniform(*CLS_MAIN_RADIUS) * short
    return [(main_label, main_r, True)] + [
        (int(rng.integers(len(SYNTH_CLASSES))), rng.uniform(0.4, 0.6) * _DISTRACTOR_SCALE * main_r, False)
        for _ in range(int(rng.random() < CLS_DISTRACTOR_P))]


def _place_objects(rng: np.random.Generator, specs: list[tuple[int, float, bool]], width: int, height: int,
                   stack: bool, cls_look: bool) -> tuple[list[SynthObject], np.ndarray]:
    """Objects (bottom to top) and their masks (NxHxW), each at least ``MIN_VISIBLE`` visible.

    ``stack``: each object goes on top (detection); else above or below the main object.
    """
    objects: list[SynthObject] = []
    masks = np.zeros((0, height, width), bool)
    for label, radius, is_main in specs:
        z = len(objects) if stack or rng.random() < 0.5 else 0
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
    return objects, masks


def _paint(rng: np.random.Generator, masks: np.ndarray, width: int, height: int, cls_look: bool) -> np.ndarray:
    """The textured background, the striped objects in ``masks`` (bottom to top) and pixel noise: HxWx3 uint8."""
    if not cls_look:
        bg0, bg1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    else:
        bg0 = _cls_colour(rng, rng.uniform(*CLS_BG_GREY[int(rng.integers(len(CLS_BG_GREY)))]))
        bg1 = np.clip(bg0 + rng.uniform(-1, 1, 3) * CLS_TEXTURE, 0, 1)
    image = _texture(rng, height, width, bg0, bg1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for m in masks:
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
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
