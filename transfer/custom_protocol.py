"""The transfer protocol for a declared dataset: classes, masks and schedule from the data.

:func:`apply_custom` checks every dataset of ``SIAMBENCH.CUSTOM.DATASETS``
(:mod:`siambench.transfer.custom_checks`), registers it in this process, and fills the keys
that a config for one's own data leaves to the data (``configs/transfer/Base-Custom.yaml``):

* ``MODEL.ROI_HEADS.NUM_CLASSES`` 0: the number of classes of the train set (another
  non-zero value that disagrees with the data is refused);
* ``MODEL.MASK_ON``: Mask R-CNN when every annotation of both COCO files carries a
  segmentation, else Faster R-CNN, unless ``MODEL.MASK_ON`` is given as an override;
* ``SOLVER.MAX_ITER`` 0: iterations from the number of train images N. The protocol's own
  schedules at 16 images per batch are VOC 07 (N 5011: 24k), VOC 07+12 (16551: 24k) and COCO
  1x (118287: 90k); between them the iterations are interpolated linearly in log N, below
  VOC 07 and above COCO the epochs stay those of VOC 07 (76.6) and COCO (12.2). Then scaled
  to ``SOLVER.IMS_PER_BATCH`` (same images seen). ``SIAMBENCH.CUSTOM.EPOCHS`` > 0 asks for
  that many epochs instead. ``SOLVER.STEPS`` empty: lr x0.1 at 3/4 and 11/12 of the iterations
  (VOC's 18k and 22k of 24k); ``SOLVER.WARMUP_ITERS`` at most a tenth of them.

Each filled key is named in a note of the plan (``--dry-run``) and of results.json.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.config import CfgNode  # noqa: E402
from siambench.pretrain.utils.config import ConfigError  # noqa: E402

from .custom import CustomDataset, _coco_json, coco_has_masks, parse_specs, register_custom_datasets
from .custom_checks import check_custom

__all__ = ["apply_custom", "protocol_iterations", "train_images"]

PROTOCOL_BATCH = 16
# (train images, iterations at 16 images): VOC 07, VOC 07+12, COCO 1x (configs/transfer/{voc07,voc0712,coco}.yaml)
PROTOCOL_POINTS = ((5011, 24000), (16551, 24000), (118287, 90000))
STEP_FRACTIONS = (18 / 24, 22 / 24)


def protocol_iterations(num_images: int, epochs: float = 0.0) -> int:
    """Iterations at 16 images per batch for ``num_images`` train images (see the module docstring)."""
    if epochs > 0:
        return max(1, math.ceil(epochs * num_images / PROTOCOL_BATCH))
    (n0, i0), (n1, i1) = PROTOCOL_POINTS[0], PROTOCOL_POINTS[-1]
    if num_images <= n0:
        return max(1, math.ceil(i0 * num_images / n0))
    if num_images >= n1:
        return math.ceil(i1 * num_images / n1)
    for (a, ia), (b, ib) in zip(PROTOCOL_POINTS, PROTOCOL_POINTS[1:]):
        if a <= num_images <= b:
            w = math.log(num_images / a) / math.log(b / a)
            return round(ia + w * (ib - ia))
    raise AssertionError("unreachable")


def train_images(ds: CustomDataset) -> int:
    """Number of images of the train split (COCO ``images``, VOC split file lines)."""
    if ds.format == "coco":
        return len(_coco_json(ds.train[0])["images"])
    return len((Path(ds.train[0]) / "ImageSets" / "Main" / f"{ds.train[1]}.txt").read_text().split())


def _fill_model(cfg: CfgNode, ds: CustomDataset, opts: Sequence[str]) -> list[str]:
    notes = []
    classes = ds.class_names()
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES == 0:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
        notes.append(f"MODEL.ROI_HEADS.NUM_CLASSES {len(classes)} from {ds.name}: {', '.join(classes)}")
    elif cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(classes):
        raise ConfigError(f"MODEL.ROI_HEADS.NUM_CLASSES {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but dataset {ds.name!r} "
                          f"has {len(classes)} classes ({', '.join(classes)}); set it to 0 (from the data)")
    masks = ds.format == "coco" and coco_has_masks(ds.train[0]) and coco_has_masks(ds.test[0])
    if "MODEL.MASK_ON" not in list(opts)[0::2]:
        cfg.MODEL.MASK_ON = masks
        notes.append(f"MODEL.MASK_ON {masks}: {'Mask' if masks else 'Faster'} R-CNN ("
                     f"{'segmentations in both COCO files' if masks else 'not every object has a segmentation'})")
    elif cfg.MODEL.MASK_ON and not masks:
        raise ConfigError(f"MODEL.MASK_ON True but not every object of dataset {ds.name!r} has a segmentation "
                          "(both splits); drop the override")
    return notes


def _fill_schedule(cfg: CfgNode, ds: CustomDataset) -> list[str]:
    n, s = train_images(ds), cfg.SOLVER
    if s.MAX_ITER > 0:
        return [f"SOLVER.MAX_ITER {s.MAX_ITER} as configured ({n} train images in {ds.name})"]
    epochs = cfg.SIAMBENCH.CUSTOM.EPOCHS
    at16 = protocol_iterations(n, epochs)
    s.MAX_ITER = max(1, math.ceil(at16 * PROTOCOL_BATCH / s.IMS_PER_BATCH))
    rule = f"{epochs:g} epochs (SIAMBENCH.CUSTOM.EPOCHS)" if epochs > 0 else "the VOC/COCO protocol schedules by size"
    notes = [f"SOLVER.MAX_ITER {s.MAX_ITER} from {n} train images in {ds.name} ({rule}: {at16} iterations at "
             f"{PROTOCOL_BATCH} images, {at16 * PROTOCOL_BATCH / n:.1f} epochs)"]
    if not s.STEPS:
        s.STEPS = tuple(max(1, round(f * s.MAX_ITER)) for f in STEP_FRACTIONS)
        notes.append(f"SOLVER.STEPS {tuple(s.STEPS)}: 3/4 and 11/12 of the iterations (VOC's 18k, 22k of 24k)")
    if s.WARMUP_ITERS > s.MAX_ITER // 10:
        s.WARMUP_ITERS = s.MAX_ITER // 10
        notes.append(f"SOLVER.WARMUP_ITERS {s.WARMUP_ITERS}: a tenth of the iterations")
    return notes


def apply_custom(cfg: CfgNode, opts: Sequence[str] = ()) -> list[str]:
    """Check and register the declared datasets of ``cfg``; fill the keys left to the data. In place.

    Returns:
        One note per filled key, for the plan.

    Raises:
        DatasetLayoutError: a problem of the data, naming its file. ConfigError: a bad declaration or key.
    """
    try:
        return _apply(cfg, opts)
    finally:
        _coco_json.cache_clear()  # a large COCO file is not kept in memory while training


def _apply(cfg: CfgNode, opts: Sequence[str]) -> list[str]:
    declared = parse_specs(cfg.SIAMBENCH.CUSTOM.DATASETS)
    for ds in declared:
        check_custom(ds)
    register_custom_datasets(cfg.SIAMBENCH.CUSTOM.DATASETS)
    trained = [ds for ds in declared if ds.train_name in cfg.DATASETS.TRAIN]
    if not trained:
        if cfg.SOLVER.MAX_ITER <= 0 or cfg.MODEL.ROI_HEADS.NUM_CLASSES <= 0:
            raise ConfigError("SOLVER.MAX_ITER / MODEL.ROI_HEADS.NUM_CLASSES 0 (from the data) need a declared "
                              "dataset in DATASETS.TRAIN (NAME_train of SIAMBENCH.CUSTOM.DATASETS or --dataset)")
        return []
    if len(trained) > 1:
        raise ConfigError(f"DATASETS.TRAIN holds {len(trained)} declared datasets; train on one "
                          f"({', '.join(d.train_name for d in trained)})")
    return _fill_model(cfg, trained[0], opts) + _fill_schedule(cfg, trained[0])
