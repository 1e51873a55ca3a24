"""COCO box-AP evaluation time: pycocotools vs faster-coco-eval, at COCO val2017 scale.

    python -m siambench.benchmarks.speed.bench_coco_eval [--images 5000] [--dets-per-image 100] [--seed 0]

Synthetic ground truth shaped like val2017 (5000 images, ~36k boxes over the 80 COCO
category ids, ~1% crowd) and 100 detections per image (jittered true positives, some
with the wrong class, plus false positives; scores favour the true ones). Both backends
run through :func:`siambench.transfer.evaluation.evaluate_coco`, the function the transfer
evaluator uses, in the same process; the script prints their times, the speed-up and the
largest difference over the 12 COCO summary numbers (expected 0, at most 1e-4).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # the 80 used ids
GT_PER_IMAGE = 7.3  # val2017: 36,781 boxes / 5,000 images


def _boxes(rng: np.random.Generator, n: int, w: float, h: float) -> np.ndarray:
    """n boxes (x, y, w, h) inside a w x h image, sizes from small to large."""
    side = np.exp(rng.uniform(np.log(8), np.log(min(w, h)), (n, 2)))
    xy = rng.uniform(0, 1, (n, 2)) * (np.array([w, h]) - side)
    return np.concatenate([xy, side], 1)


def synthetic_val2017(num_images: int, dets_per_image: int, seed: int) -> tuple[dict[str, Any], list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, num_images + 1):
        w, h = float(rng.choice([640, 480, 500])), float(rng.choice([480, 427, 640]))
        images.append({"id": img_id, "width": w, "height": h})
        n_gt = int(rng.poisson(GT_PER_IMAGE))
        gt = _boxes(rng, n_gt, w, h)
        cats = rng.choice(COCO_IDS, n_gt)
        for box, cat in zip(gt, cats):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(cat), "bbox": box.tolist(),
                         "area": float(box[2] * box[3]), "iscrowd": int(rng.random() < 0.01)})
        hit = rng.random(n_gt) < 0.8
        tp = gt[hit] * rng.normal(1, 0.04, (int(hit.sum()), 4))
        tp_cats = np.where(rng.random(len(tp)) < 0.9, cats[hit], rng.choice(COCO_IDS, len(tp)))
        n_fp = max(dets_per_image - len(tp), 0)
        boxes = np.concatenate([tp, _boxes(rng, n_fp, w, h)])[:dets_per_image]
        labels = np.concatenate([tp_cats, rng.choice(COCO_IDS, n_fp)])[:dets_per_image]
        scores = np.concatenate([rng.uniform(0.2, 1.0, len(tp)), rng.uniform(0.0, 0.6, n_fp)])[:dets_per_image]
        dets += [{"image_id": img_id, "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
                 for b, c, s in zip(boxes, labels, scores)]
    categories = [{"id": c, "name": str(c)} for c in COCO_IDS]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def main(argv: list[str] | None = None) -> int:
    from siambench.transfer.evaluation import evaluate_coco, resolve_backend

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000, help="images (val2017: 5000)")
    p.add_argument("--dets-per-image", type=int, default=100, help="detections per image (COCO's maximum: 100)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if resolve_backend("auto") != "faster_coco_eval":
        print("faster-coco-eval is not installed: nothing to compare (pip install faster-coco-eval)")
        return 1
    t = time.perf_counter()
    gt, dets = synthetic_val2017(args.images, args.dets_per_image, args.seed)
    print(f"synthetic val2017: {len(gt['images'])} images, {len(gt['annotations'])} boxes, "
          f"{len(dets)} detections ({time.perf_counter() - t:.1f} s to generate)", flush=True)
    times, stats = {}, {}
    for backend in ("pycocotools", "faster_coco_eval"):  # the baseline first, same process
        t = time.perf_counter()
        coco_eval = evaluate_coco(gt, dets, "bbox", backend=backend)
        times[backend] = time.perf_counter() - t
        stats[backend] = np.asarray(coco_eval.stats[:12], dtype=float)
        print(f"{backend:>17}: {times[backend]:7.2f} s   AP {100 * stats[backend][0]:.3f}  "
              f"AP50 {100 * stats[backend][1]:.3f}  AP75 {100 * stats[backend][2]:.3f}", flush=True)
    diff = float(np.abs(stats["pycocotools"] - stats["faster_coco_eval"]).max())
    print(f"speed-up: {times['pycocotools'] / times['faster_coco_eval']:.1f}x   "
          f"max |difference| over the 12 COCO stats: {diff:.2e} ({'identical' if diff <= 1e-4 else 'DIFFERENT'})")
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
