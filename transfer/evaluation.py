"""Evaluators for the transfer tasks: exact COCO AP, fast; VOC AP as MoCo reports it.

* COCO (``evaluator_type == "coco"``): :class:`FastCOCOEvaluator`, detectron2's
  ``COCOEvaluator`` with the AP computation done by ``faster-coco-eval`` (C++ matching and
  accumulation; the same algorithm as pycocotools, so the same AP) when it is installed,
  else by pycocotools. Evaluating COCO val2017 with pycocotools takes minutes per IoU type
  (``benchmarks/speed/bench_coco_eval.py`` measures the ratio); it must not dominate wall time.
* VOC (``evaluator_type == "pascal_voc"``): detectron2's ``PascalVOCDetectionEvaluator``
  unchanged. It reports ``AP`` (mean over IoU .50:.95 in steps of .05, "COCO-style"),
  ``AP50`` and ``AP75``, with VOC2007's 11-point metric on VOC2007 test: exactly the
  numbers MoCo and SimSiam (Table 5) report.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import logging
import os
from typing import Any, Sequence

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, PascalVOCDetectionEvaluator
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

__all__ = ["BACKENDS", "FastCOCOEvaluator", "build_evaluator", "evaluate_coco", "resolve_backend"]

logger = logging.getLogger(__name__)

BACKENDS = ("faster_coco_eval", "pycocotools")


def resolve_backend(name: str = "auto") -> str:
    """The COCO AP backend for ``SIAMBENCH.COCO_EVAL_BACKEND`` (``auto`` prefers the fast one).

    Raises:
        ValueError: unknown name, or ``faster_coco_eval`` requested but not installed.
    """
    have_fast = importlib.util.find_spec("faster_coco_eval") is not None
    if name == "auto":
        return "faster_coco_eval" if have_fast else "pycocotools"
    if name not in BACKENDS:
        raise ValueError(f"SIAMBENCH.COCO_EVAL_BACKEND must be auto, {' or '.join(BACKENDS)}; got {name!r}")
    if name == "faster_coco_eval" and not have_fast:
        raise ValueError("SIAMBENCH.COCO_EVAL_BACKEND faster_coco_eval: the package is not installed "
                         "(pip install faster-coco-eval), or set the key to auto/pycocotools")
    return name


def evaluate_coco(
    gt_dataset: dict[str, Any],
    results: Sequence[dict[str, Any]],
    iou_type: str,
    backend: str = "auto",
    max_dets: Sequence[int] = (1, 10, 100),
    img_ids: Sequence[int] | None = None,
) -> Any:
    """Run COCO evaluation of ``results`` against the ground truth ``gt_dataset``.

    Args:
        gt_dataset: a COCO annotation dict (``images``, ``annotations``, ``categories``).
            Not copied (it can be large): for ``segm`` both APIs may replace polygons by
            the equivalent RLE in place, as detectron2's own evaluation does.
        results: detections in COCO result format; not modified.
        iou_type: ``"bbox"`` or ``"segm"``.
        backend: ``auto``, ``faster_coco_eval`` or ``pycocotools``.
        max_dets: COCOeval ``maxDets`` (the last one bounds AP).
        img_ids: evaluate only these images (default: all).

    Returns:
        The summarised COCOeval object (``.stats[:6]`` = AP, AP50, AP75, APs, APm, APl;
        ``.eval["precision"]`` = TxRxKxAxM precisions), as detectron2 expects.
    """
    backend = resolve_backend(backend)
    # Both APIs add top-level fields (id, area, ...) to the results they load: shallow copies
    # suffice and stay cheap at COCO scale (500k detections).
    results = [dict(r) for r in results]
    if iou_type == "segm":
        for r in results:  # mask AP uses mask areas for small/medium/large, as detectron2 does
            r.pop("bbox", None)
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(gt_dataset)
        coco_eval = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iou_type, print_function=logger.debug)
    else:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco_gt = PyCOCO()
            coco_gt.dataset = gt_dataset
            coco_gt.createIndex()
            coco_eval = PyCOCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    coco_eval.params.maxDets = list(max_dets)
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("COCO %s evaluation (%s):\n%s", iou_type, backend, summary.getvalue().rstrip())
    return coco_eval


class _DropNoAnnotationsNote(logging.Filter):
    """Drops detectron2's "Annotations are not available" line while its scoring is switched off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Annotations are not available")


_NO_ANNOTATIONS_NOTE = _DropNoAnnotationsNote()


class FastCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` with AP computed by :func:`evaluate_coco`.

    Everything else (prediction gathering across ranks, the COCO-format conversion of
    non-COCO datasets, the dumped ``coco_instances_results.json``, per-category AP and
    the metric names) is detectron2's. ``use_fast_impl`` is off: detectron2 never scores.
    """

    def __init__(self, dataset_name: str, *, backend: str = "auto", output_dir: str | None = None,
                 distributed: bool = True, **kwargs: Any) -> None:
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir, use_fast_impl=False, **kwargs)
        self._backend = resolve_backend(backend)

    def _eval_predictions(self, predictions: list[dict], img_ids: Sequence[int] | None = None) -> None:
        """detectron2's preparation, then the AP of :func:`evaluate_coco`.

        Why this private method is overridden: detectron2 (v0.6 and its main branch) prepares the
        results (dataset category ids, the results file) and scores them in this one method, with
        the COCOeval class chosen inside its module function ``_evaluate_predictions_on_coco``; no
        hook selects another AP backend. So detectron2's method runs with its scoring switched off
        (``_do_evaluation``, which it sets when the dataset has annotations); it rewrites the
        ``instances`` of ``predictions`` in place to dataset category ids, which this method scores.
        """
        have_annotations, self._do_evaluation = self._do_evaluation, False
        self._logger.addFilter(_NO_ANNOTATIONS_NOTE)
        try:
            super()._eval_predictions(predictions, img_ids)
        finally:
            self._do_evaluation = have_annotations
            self._logger.removeFilter(_NO_ANNOTATIONS_NOTE)
        if not have_annotations:
            self._logger.info("Annotations are not available for evaluation.")
            return
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        for task in sorted(self._tasks or self._tasks_from_predictions(coco_results)):
            coco_eval = (
                evaluate_coco(self._coco_api.dataset, coco_results, task, self._backend,
                              self._max_dets_per_image, img_ids)
                if coco_results else None  # the COCO APIs fail on empty results; detectron2 reports NaN
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )


def build_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str | None = None) -> DatasetEvaluator:
    """The evaluator for ``dataset_name``, chosen by its ``evaluator_type`` metadata.

    Raises:
        ValueError: a dataset whose evaluator type is neither ``coco`` nor ``pascal_voc``.
    """
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type == "coco":
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return FastCOCOEvaluator(dataset_name, tasks=tasks, backend=cfg.SIAMBENCH.COCO_EVAL_BACKEND,
                                 output_dir=output_dir or os.path.join(cfg.OUTPUT_DIR, "inference"))
    if evaluator_type == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    raise ValueError(f"dataset {dataset_name!r} has evaluator_type {evaluator_type!r}; transfer tasks "
                     "support 'coco' and 'pascal_voc' datasets (check DATASETS.TEST)")
