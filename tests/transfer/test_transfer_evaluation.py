"""The fast COCO evaluator gives pycocotools' AP (to 1e-4) on synthetic predictions."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from siambench.transfer import d2compat  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from siambench.transfer.evaluation import FastCOCOEvaluator, build_evaluator, evaluate_coco, resolve_backend  # noqa: E402
from siambench.transfer.config import get_transfer_cfg  # noqa: E402

SIZE = 64
CATEGORY_IDS = (1, 3, 7)  # non-contiguous, like COCO's


def _polygon(rng: np.random.Generator, box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = box
    pts = [(x0, y0 + (y1 - y0) * rng.uniform(0, 0.5)), ((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    return [float(v) for p in pts for v in p]


def _random_box(rng: np.random.Generator) -> np.ndarray:
    x0, y0 = rng.uniform(0, SIZE - 12, 2)
    w, h = rng.uniform(4, SIZE - max(x0, y0), 2)  # small and medium objects
    return np.array([x0, y0, min(x0 + w, SIZE), min(y0 + h, SIZE)])


def synthetic_coco(seed: int = 0, num_images: int = 40, dets_per_image: int = 12):
    """Ground truth with polygons (some crowd) and predictions: jittered matches + false positives."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for img_id in range(1, num_images + 1):
        images.append({"id": img_id, "width": SIZE, "height": SIZE, "file_name": f"{img_id}.jpg"})
        for _ in range(rng.integers(1, 6)):
            box = _random_box(rng)
            cat = int(rng.choice(CATEGORY_IDS))
            poly = _polygon(rng, box)
            rle = mask_utils.frPyObjects([poly], SIZE, SIZE)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "segmentation": [poly],
                         "area": float(mask_utils.area(mask_utils.merge(rle))), "iscrowd": int(rng.random() < 0.05),
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
            if rng.random() < 0.8:  # a detection near it, maybe with the wrong class
                jitter = box + rng.normal(0, 2.5, 4)
                label = cat if rng.random() < 0.85 else int(rng.choice(CATEGORY_IDS))
                results.append((img_id, label, jitter, rng.uniform(0.3, 1.0)))
        while sum(r[0] == img_id for r in results) < dets_per_image:  # false positives score lower
            results.append((img_id, int(rng.choice(CATEGORY_IDS)), _random_box(rng), rng.uniform(0.0, 0.7)))
    dets = []
    for img_id, cat, box, score in results:
        box = np.clip(box, 0, SIZE)
        box[2:] = np.maximum(box[2:], box[:2] + 1)
        rle = mask_utils.frPyObjects([_polygon(rng, box)], SIZE, SIZE)[0]
        rle["counts"] = rle["counts"].decode()
        dets.append({"image_id": img_id, "category_id": cat, "score": float(score),
                     "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                     "segmentation": rle})
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": anns, "categories": categories}, dets


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_faster_coco_eval_matches_pycocotools(iou_type: str) -> None:
    gt, dets = synthetic_coco()
    before = json.dumps(dets)
    reference = evaluate_coco(json.loads(json.dumps(gt)), dets, iou_type, backend="pycocotools")
    fast = evaluate_coco(json.loads(json.dumps(gt)), dets, iou_type, backend="faster_coco_eval")
    assert json.dumps(dets) == before  # the caller's results are not modified
    ref_stats = np.asarray(reference.stats[:12])
    assert 0.05 < ref_stats[0] < 0.95  # a non-trivial AP, so agreement means something
    np.testing.assert_allclose(np.asarray(fast.stats[:12]), ref_stats, atol=1e-4)
    # Per-category precision (detectron2 derives AP-<class> from it): same layout, same values.
    p_ref, p_fast = reference.eval["precision"], fast.eval["precision"]
    assert p_ref.shape == p_fast.shape
    np.testing.assert_allclose(p_fast, p_ref, atol=1e-4)


def test_backend_resolution() -> None:
    assert resolve_backend("auto") == "faster_coco_eval"  # installed in this environment
    assert resolve_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="SIAMBENCH.COCO_EVAL_BACKEND"):
        resolve_backend("fast")


def _register(tmp_path: Path, gt: dict) -> str:
    name = f"siambench_test_coco_{uuid.uuid4().hex[:8]}"
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(gt))
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    DatasetCatalog.get(name)  # loading sets thing_dataset_id_to_contiguous_id, as training/testing does
    return name


def _run(evaluator, dets: list[dict]) -> dict:
    """Feed detections through detectron2's evaluator interface (contiguous class ids, masks)."""
    to_contiguous = MetadataCatalog.get(evaluator._metadata.name).thing_dataset_id_to_contiguous_id
    evaluator.reset()
    by_image: dict[int, list[dict]] = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    for img_id, ds in by_image.items():
        inst = Instances((SIZE, SIZE))
        xywh = torch.tensor([d["bbox"] for d in ds], dtype=torch.float32)
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
        inst.scores = torch.tensor([d["score"] for d in ds])
        inst.pred_classes = torch.tensor([to_contiguous[d["category_id"]] for d in ds])
        rles = [dict(d["segmentation"], counts=d["segmentation"]["counts"].encode()) for d in ds]
        inst.pred_masks = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()
        evaluator.process([{"image_id": img_id}], [{"instances": inst}])
    return evaluator.evaluate()


def test_fast_evaluator_equals_detectron2_official(tmp_path: Path) -> None:
    gt, dets = synthetic_coco(seed=1, num_images=20)
    name = _register(tmp_path, gt)
    official = _run(COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, use_fast_impl=False), dets)
    cfg = get_transfer_cfg()
    cfg.MODEL.MASK_ON, cfg.OUTPUT_DIR = True, str(tmp_path)
    evaluator = build_evaluator(cfg, name)
    assert isinstance(evaluator, FastCOCOEvaluator) and evaluator._backend == "faster_coco_eval"
    fast = _run(evaluator, dets)
    assert set(fast) == {"bbox", "segm"} and set(fast["bbox"]) == set(official["bbox"])
    for task in ("bbox", "segm"):
        for key, value in official[task].items():
            assert fast[task][key] == pytest.approx(value, abs=1e-2, nan_ok=True), (task, key)  # AP in %
    assert (tmp_path / "inference" / "coco_instances_results.json").is_file()


def test_detectron2s_coco_evaluator_is_not_patched() -> None:
    assert COCOEvaluator.__init__.__module__ == "detectron2.evaluation.coco_evaluation"
    assert not any("COCOEvaluator" in p for p in d2compat.info()["patches"])


def test_fast_evaluator_scores_what_detectron2_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from siambench.transfer import evaluation

    gt, dets = synthetic_coco(seed=2, num_images=6)
    name = _register(tmp_path, gt)
    scored = []

    def spy(gt_dataset, results, iou_type, *args):
        scored.append((iou_type, sorted({r["category_id"] for r in results})))
        return evaluate_coco(gt_dataset, results, iou_type, *args)

    monkeypatch.setattr(evaluation, "evaluate_coco", spy)
    with caplog.at_level("INFO"):
        results = _run(FastCOCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path)), dets)
    assert scored == [("bbox", sorted({d["category_id"] for d in dets}))]  # dataset ids (1, 3, 7), not 0..2
    assert 0 < results["bbox"]["AP"] < 100 and f"AP-class{CATEGORY_IDS[0]}" in results["bbox"]
    assert not any("not available" in r.getMessage() for r in caplog.records)
    written = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert {r["category_id"] for r in written} <= set(CATEGORY_IDS) and len(written) == len(dets)


def test_fast_evaluator_without_annotations_writes_results_only(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    gt, dets = synthetic_coco(seed=3, num_images=4)
    name = _register(tmp_path, {k: v for k, v in gt.items() if k != "annotations"})  # e.g. COCO test-dev
    evaluator = FastCOCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path))
    with caplog.at_level("INFO"):
        assert _run(evaluator, dets) == {}
    assert any("Annotations are not available" in r.getMessage() for r in caplog.records)
    assert len(json.loads((tmp_path / "coco_instances_results.json").read_text())) == len(dets)
