"""One-shot GPU benchmark: every speed figure of the README in one run, each against the official recipe.

    bash benchmarks/bench_gpu.sh                  # on the GPU machine (installs carried deps first)
    python -m siambench.benchmarks.bench_gpu --out bench_gpu.json
    python -m siambench.benchmarks.bench_gpu --smoke        # CPU, tiny sizes, seconds: the test's end-to-end run

Measures, in this order, in one process on one GPU:

1. SimSiam R50 train step alone (views already on the GPU), through our engine with
   every monitor on: fp32 (the official recipe) / bf16 + channels_last / + torch.compile.
2. End to end from JPEGs on disk (built here: ImageNet-like 500x375, ~120 KB) with as many
   DataLoader workers as the machine has CPUs: official (fp32, PIL per-sample ops) /
   bf16 + channels_last with PIL / with the batched backend / with batched + GPU JPEG decode.
3. Transfer: Mask R-CNN R50-C4 (``configs/transfer/coco.yaml``) seconds per iteration at
   16 images of 800x1067 px through detectron2's own trainer step: fp32 (official) / AMP.
   Skipped with a message where detectron2 is not installed.
4. COCO evaluation of a synthetic val2017 (5000 images, 100 detections each):
   pycocotools (official) / faster-coco-eval, with the largest difference of the 12 stats.

Arms of a section alternate (A B C A B C ...) for ``--rounds`` rounds; every line prints
the median, its spread and the ratio to the section's official arm (median of per-round
ratios, with their range). Everything goes to ``--out`` as JSON. Sized to finish in
under 8 minutes on one H100/H200 (torch.compile's first compile is ~1-2 minutes of it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from siambench.benchmarks.speed.bench_common import (Summary, alternate, format_summary, machine_info, sync, write_jpeg_folder)
from siambench.benchmarks.speed.bench_pretrain_throughput import Recipe, Trainer, data_steps, e2e_throughput, images_needed, \
    make_cfg, step_throughput

TARGET_E2E_IMG_S = 3000  # issue 12's goal on one H100-class GPU
TARGET_E2E_RATIO = 2.0


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _report(res: dict[str, Summary], unit: str = "img/s") -> dict[str, Any]:
    for s in res.values():
        print("  " + format_summary(s, unit), flush=True)
    return {k: s.as_dict() for k, s in res.items()}


# ----------------------------------------------------------------------------- 1 + 2: pretraining
def bench_pretrain(args: argparse.Namespace, device: torch.device, tmp: Path) -> dict[str, Any]:
    official = Recipe("official: fp32, NCHW, eager")
    fast = Recipe("bf16 + channels_last", "bf16", True)
    compiled = Recipe("bf16 + channels_last + torch.compile", "bf16", True, True)
    step_recipes = [official, fast] + ([compiled] if args.compile else [])
    trainers: dict[tuple, Trainer] = {}
    for i, r in enumerate(step_recipes):
        trainers[r.model_key] = Trainer(make_cfg(args, r), device, tmp / f"log{i}")
    out: dict[str, Any] = {}
    _section(f"SimSiam {args.arch} train step alone, batch {args.batch}, {args.size}px (engine, all monitors on)")
    res = alternate([(r.name, lambda r=r: step_throughput(trainers[r.model_key], args)) for r in step_recipes],
                    args.rounds)
    out["step"] = _report(res)

    width, height = (int(v) for v in args.jpeg_size.split("x"))
    t = time.perf_counter()
    root, kb = write_jpeg_folder(tmp / "jpegs", images_needed(args), width, height)
    _section(f"end to end from {images_needed(args)} JPEGs of {width}x{height} ({kb:.0f} KB; written in "
             f"{time.perf_counter() - t:.0f} s), {args.workers} workers, batches per arm: %d warm-up + %d timed"
             % data_steps(args))
    e2e = [Recipe("official: fp32, PIL per-sample ops"),
           Recipe("bf16 + channels_last, PIL", "bf16", True),
           Recipe("bf16 + channels_last, batched aug", "bf16", True, aug="batched"),
           Recipe("bf16 + channels_last, batched aug + gpu_jpeg", "bf16", True, aug="batched", decode="gpu_jpeg")]
    if args.compile:
        e2e.append(Recipe("bf16 + CL + compile, batched aug + gpu_jpeg", "bf16", True, True, "batched", "gpu_jpeg"))
    res = alternate([(r.name, lambda r=r: e2e_throughput(trainers[r.model_key], make_cfg(args, r, root.parent), args,
                                                           root.parent)) for r in e2e], args.rounds)
    out["end_to_end"] = _report(res)
    best = max(res.values(), key=lambda s: s.median)
    ratio = best.median / res[e2e[0].name].median
    ok = best.median >= TARGET_E2E_IMG_S and ratio >= TARGET_E2E_RATIO
    print(f"  best: {best.name}: {best.median:.0f} img/s, x{ratio:.2f} the official recipe "
          f"(target >= {TARGET_E2E_IMG_S} img/s and >= x{TARGET_E2E_RATIO:g}: {'met' if ok else 'NOT met'})")
    out["best_end_to_end"] = {"name": best.name, "img_s": best.median, "ratio": ratio, "target_met": ok}
    return out


# ----------------------------------------------------------------------------- 3: transfer
def _detection_batch(n: int, short: int, long: int, classes: int) -> list[dict[str, Any]]:
    from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)
    import numpy as np
    from detectron2.structures import Boxes, Instances, PolygonMasks

    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(n):
        k = 7  # COCO: ~7.3 objects per image
        xy = torch.rand(k, 2, generator=g) * torch.tensor([long * 0.7, short * 0.7])
        wh = torch.rand(k, 2, generator=g) * torch.tensor([long * 0.3, short * 0.3]) + 16
        boxes = torch.cat([xy, xy + wh], 1)
        inst = Instances((short, long))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, classes, (k,), generator=g)
        inst.gt_masks = PolygonMasks([[np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]
                                      for x0, y0, x1, y1 in boxes.tolist()])
        batch.append({"image": torch.randint(0, 256, (3, short, long), dtype=torch.uint8, generator=g),
                      "instances": inst, "height": short, "width": long})
    return batch


def bench_transfer(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    try:
        from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)
        from detectron2.engine import AMPTrainer, SimpleTrainer
        from detectron2.modeling import build_model
        from detectron2.solver import build_optimizer
        from detectron2.utils.events import EventStorage
        from siambench.transfer import roi_heads  # noqa: F401  (registers the C4 ROI heads of the configs)
        from siambench.transfer.config import load_task_config, resolve_runtime, task_config_path
    except ImportError as e:
        msg = f"skipped: detectron2 is not usable here ({e}); install it (benchmarks/bench_gpu.sh does, from a carried sdist)"
        _section("transfer")
        print("  " + msg)
        return {"skipped": msg}
    n, short, long = args.det_images, args.det_size, int(round(args.det_size * 4 / 3))
    opts = ["MODEL.DEVICE", device.type, "SOLVER.IMS_PER_BATCH", str(n), "SIAMBENCH.BATCH_SCALING", "none"]
    if args.smoke:  # C4 runs res5 on every sampled ROI (512 per image): a few only, for seconds on a CPU
        opts += ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "64",
                 "MODEL.RPN.POST_NMS_TOPK_TRAIN", "16"]
    cfg, _ = load_task_config(task_config_path("coco"), opts)
    resolve_runtime(cfg, world_size=1, cuda_available=torch.cuda.is_available())
    _section(f"transfer: Mask R-CNN R50-C4 (coco.yaml), {n} images of {short}x{long}, detectron2 trainer step"
             + (" (smoke: 8 ROIs per image)" if args.smoke else ""))
    batch = _detection_batch(n, short, long, cfg.MODEL.ROI_HEADS.NUM_CLASSES)

    def arm(trainer_cls: type) -> Callable[[], float]:
        torch.manual_seed(0)
        model = build_model(cfg)  # random init: the step costs the same as from pretrained weights
        optimizer = build_optimizer(cfg, model)
        data = iter(lambda: batch, None)  # the same batch forever
        trainer = trainer_cls(model, data, optimizer)

        def run() -> float:  # iterations per second (so "higher is better" like the other sections)
            with EventStorage(0):
                for _ in range(args.det_warmup):
                    trainer.run_step()
                sync(device)
                t = time.perf_counter()
                for _ in range(args.det_steps):
                    trainer.run_step()
                sync(device)
            return args.det_steps / (time.perf_counter() - t)
        return run

    arms = [("official: detectron2 SimpleTrainer, fp32", arm(SimpleTrainer))]
    if device.type == "cuda":
        arms.append(("detectron2 AMPTrainer (fp16 autocast)", arm(AMPTrainer)))
    res = alternate(arms, args.rounds, log=lambda m: print(m, flush=True))
    out = {}
    for name, s in res.items():
        d = s.as_dict()
        print(f"  {name:<44} {1 / d['median']:.3f} s/iter (min {1 / d['max']:.3f}, max {1 / d['min']:.3f})"
              + (f"   x{d['ratio']:.2f} speed" if len(res) > 1 else ""), flush=True)
        out[name] = {**d, "s_per_iter": 1 / d["median"]}
    return {"images": n, "size": [short, long], "arms": out}


# ----------------------------------------------------------------------------- 4: COCO evaluation
def bench_coco_eval(args: argparse.Namespace) -> dict[str, Any]:
    _section(f"COCO bbox evaluation, synthetic val2017: {args.coco_images} images x 100 detections")
    try:
        from siambench.transfer.evaluation import evaluate_coco, resolve_backend
    except ImportError as e:
        msg = f"skipped: transfer.evaluation is not importable ({e}); needs detectron2 + pycocotools"
        print("  " + msg)
        return {"skipped": msg}
    import numpy as np

    from siambench.benchmarks.speed.bench_coco_eval import synthetic_val2017

    gt, dets = synthetic_val2017(args.coco_images, 100, 0)
    backends = ["pycocotools"] + (["faster_coco_eval"] if resolve_backend("auto") == "faster_coco_eval" else [])
    times, stats = {}, {}
    for b in backends:  # one round: pycocotools takes tens of seconds at full size, and it is not noisy
        t = time.perf_counter()
        stats[b] = np.asarray(evaluate_coco(gt, dets, "bbox", backend=b).stats[:12], dtype=float)
        times[b] = time.perf_counter() - t
    out: dict[str, Any] = {"seconds": times}
    for b in backends:
        print(f"  {b:<44} {times[b]:7.2f} s" + (f"   x{times['pycocotools'] / times[b]:.2f} speed" if b != backends[0] else
                                                  "   (official)"))
    if len(backends) == 2:
        out["max_stat_difference"] = diff = float(np.abs(stats[backends[0]] - stats[backends[1]]).max())
        out["speedup"] = times["pycocotools"] / times["faster_coco_eval"]
        print(f"  max |difference| over the 12 COCO stats: {diff:.1e}")
    else:
        print("  faster-coco-eval not installed: official backend only")
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device (CPU test mode, seconds)")
    p.add_argument("--out", default="bench_gpu.json", help="JSON results file")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch", type=int, default=256, help="images per step (two 224px views each)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10, help="timed steps per arm and round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--jpeg-size", default="500x375")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile arms")
    p.add_argument("--det-images", type=int, default=16)
    p.add_argument("--det-size", type=int, default=800, help="short side of the detection images")
    p.add_argument("--det-steps", type=int, default=5)
    p.add_argument("--det-warmup", type=int, default=2)
    p.add_argument("--coco-images", type=int, default=5000)
    p.add_argument("--skip", nargs="*", default=[], choices=("pretrain", "transfer", "coco"))
    args = p.parse_args(argv)
    args.decode_on_cpu = False
    if args.smoke:  # every code path, at toy sizes
        args.arch, args.batch, args.size, args.steps, args.warmup, args.rounds = "resnet18", 4, 32, 2, 1, 2
        args.workers, args.jpeg_size, args.compile = min(args.workers, 2), "64x48", False
        args.det_images, args.det_size, args.det_steps, args.det_warmup, args.coco_images = 2, 64, 1, 0, 20
        args.decode_on_cpu = True  # the gpu_jpeg arm runs its device code on CPU tensors
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print("bench_gpu: no CUDA device; run it on a GPU machine, or use --smoke for the CPU test mode",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from siambench.pretrain.utils.io import atomic_write_json

    t0 = time.perf_counter()
    results: dict[str, Any] = {"machine": machine_info(device), "args": vars(args)}
    print(f"bench_gpu{' --smoke' if args.smoke else ''}: {results['machine']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sections: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
            ("pretrain", "pretrain", lambda: bench_pretrain(args, device, Path(tmp))),
            ("transfer", "transfer", lambda: bench_transfer(args, device)),
            ("coco", "coco_eval", lambda: bench_coco_eval(args))]
        for name, key, run in sections:
            if name in args.skip:
                continue
            try:
                results[key] = run()
            except Exception as e:  # one broken section must not lose the others' numbers
                if args.smoke:
                    raise
                print(f"  {name} FAILED: {e!r}", flush=True)
                results[key] = {"error": repr(e)}
            results[f"{key}_done_at_s"] = round(time.perf_counter() - t0, 1)  # since the start
            atomic_write_json(args.out, results)  # after each section: a run cut short keeps what it measured
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out, results)
    print(f"\nbench_gpu: {results['total_seconds']:.0f} s in all; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
