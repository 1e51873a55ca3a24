"""One-shot GPU benchmark: every speed figure of the README in one run, each against the official recipe.

    bash benchmarks/bench_gpu.sh                  # on the GPU machine (carried deps; no pip install needed)
    python -m siambench.benchmarks.bench_gpu --out bench_gpu.json [--budget-s 420] [--coco]
    python -m siambench.benchmarks.bench_gpu --smoke        # CPU, tiny sizes, seconds: the tests' end-to-end run

Unit: "images/s" counts images; one image = one SimSiam sample = 2 views of 224 px (``--size``).

1. ``step``: SimSiam R50 train step alone (views on the GPU), our engine with every monitor on:
   fp32 (the official recipe) / bf16 + channels_last (/ + torch.compile: part ``compile``).
2. ``e2e``: from JPEGs on disk (made here: 500x375, ~120 KB): official (fp32, PIL, 8 workers) /
   bf16 + channels_last with PIL / batched aug / batched + GPU JPEG decode, with ``--workers``.
   Targets: the best arm >= 90 % of its step-alone rate and >= 2x the official arm, same run.
3. ``transfer``: Mask R-CNN R50-C4 (``coco.yaml``) seconds per iteration, 16 images of 800x1067,
   detectron2's trainer step: fp32 (official) / AMP.
4. ``coco`` (``--coco``; CPU-only, so off by default): pycocotools / faster-coco-eval.

``--budget-s`` (default 420: 7 min on one H200, JPEGs included) plans the parts by estimates
(``RATE``, ``ESTIMATE_S``) in ``PARTS`` order and skips, saying so, what does not fit (again
before each section). Arms alternate (A B C A B C ...) for ``--rounds``; each prints median,
spread and ratio to the section's official arm. The JSON is rewritten after every arm.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from siambench.benchmarks.speed.bench_common import (Summary, alternate, format_summary, machine_info, sync, write_jpeg_folder)
from siambench.benchmarks.speed.bench_pretrain_throughput import Recipe, Trainer, data_steps, e2e_throughput, images_needed, \
    make_cfg, step_throughput
from siambench.pretrain.accel import set_cudnn_benchmark
from siambench.pretrain.data.loader import resolve_num_workers
from siambench.pretrain.utils.io import atomic_write_json

UNIT = "images/s"  # images per second; one image = 2 views of --size px
TARGET_E2E_OF_STEP = 0.9  # end to end >= 90 % of the step alone: the data path is never the bottleneck
TARGET_E2E_RATIO = 2.0  # >= 2x the official recipe end to end
OFFICIAL_WORKERS = 8  # the official recipe's loader in this comparison (fp32, PIL, 8 workers)
PARTS = ("step", "e2e", "transfer", "compile", "coco")  # planning priority
# Estimates on one H200 with 16 cores at the default sizes (none measured yet): images/s of the step alone and
# of each end-to-end arm's data path, seconds of one-off costs. Only the plan uses them.
RATE = {"fp32": 1200.0, "bf16": 2400.0, "official_e2e": 640.0, "pil_e2e": 80.0, "batched_e2e": 134.0,
        "gpu_jpeg_e2e": 2000.0}
ESTIMATE_S = {"setup": 30.0, "jpeg_per_image_core": 0.02, "worker_start": 3.0, "compile": 120.0,
              "transfer_build": 25.0, "transfer_iter": 0.75, "coco": 60.0}


def _report(res: dict[str, Summary]) -> dict[str, Any]:
    for s in res.values():
        print("  " + format_summary(s, UNIT), flush=True)
    return {k: s.as_dict() for k, s in res.items()}


# ----------------------------------------------------------------------------- machine, plan, results
def machine_facts(device: torch.device) -> dict[str, Any]:
    """``machine_info`` plus what limits the loader: open files (soft limit raised to the hard one), /dev/shm, cores."""
    info = machine_info(device)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < (want := hard if hard != resource.RLIM_INFINITY else 65536):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    info["ulimit_n"] = {"soft": soft, "hard": hard, "now": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    shm = shutil.disk_usage("/dev/shm") if os.path.isdir("/dev/shm") else None
    info["dev_shm_gib"] = {"size": round(shm.total / 2**30, 1), "free": round(shm.free / 2**30, 1)} if shm else None
    info["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return info


def print_machine(info: dict[str, Any]) -> None:
    u, shm = info["ulimit_n"], info["dev_shm_gib"]
    gpu = f"{info['gpu']}, {info['gpu_memory_gib']} GiB, CUDA {info['cuda']}" if "gpu" in info else "none"
    print(f"ulimit -n: {u['soft']} (hard {u['hard']}; now {u['now']})\n/dev/shm: "
          + (f"{shm['size']} GiB, {shm['free']} GiB free" if shm else "absent")
          + f"\ncores: {info['cores']} usable by this process ({info['cpu_count']} in the machine)\nGPU: {gpu}; torch "
          f"{info['torch']}, torchvision {info['torchvision']}, Python {info['python']}", flush=True)


def estimate_s(part: str, args: argparse.Namespace, cores: int) -> float:
    """Seconds ``part`` is estimated to take on one H200 (``RATE``, ``ESTIMATE_S``)."""
    e, steps = ESTIMATE_S, args.warmup + args.steps + 1
    if part == "step":
        return e["setup"] + args.rounds * steps * args.batch * (1 / RATE["fp32"] + 1 / RATE["bf16"])
    if part == "e2e":
        warmup, timed = data_steps(args)
        off_w, off_t = data_steps(argparse.Namespace(**{**vars(args), "workers": OFFICIAL_WORKERS}))
        ours = [min(RATE["bf16"], r * args.workers) for r in (RATE["pil_e2e"], RATE["batched_e2e"])]
        arms = [(off_w + off_t) * args.batch / RATE["official_e2e"]]
        arms += [(warmup + timed) * args.batch / r for r in ours + [RATE["gpu_jpeg_e2e"]]]
        jpegs = images_needed(args) * e["jpeg_per_image_core"] / max(cores, 1)
        return jpegs + args.rounds * sum(a + e["worker_start"] for a in arms)
    if part == "transfer":
        return e["transfer_build"] + args.rounds * 2 * (args.det_warmup + args.det_steps) * e["transfer_iter"]
    if part == "compile":  # first compile + the compiled step and end-to-end arms
        warmup, timed = data_steps(args)
        return e["compile"] + args.rounds * (steps + warmup + timed) * args.batch / RATE["bf16"]
    return e["coco"]


def plan_parts(args: argparse.Namespace, cores: int) -> tuple[list[str], list[str]]:
    """(parts to run, a message per part skipped): the asked-for parts, in ``PARTS`` priority, within the budget."""
    asked = [p for p in PARTS if p not in args.skip and (p != "compile" or args.compile) and (p != "coco" or args.coco)]
    if args.smoke:
        return asked, []
    run, skipped, total = [], [], 0.0
    for part in asked:
        need = estimate_s(part, args, cores)
        if total + need > args.budget_s:
            skipped.append(f"{part}: skipped, ~{need:.0f} s estimated and {args.budget_s - total:.0f} s of the "
                           f"--budget-s {args.budget_s:.0f} left")
            continue
        run.append(part)
        total += need
    return run, skipped


class Recorder:
    """The results so far, rewritten to ``path`` after every arm and part. ``tolerant`` (not --smoke): an arm
    that raises is recorded (``errors``) and counts as NaN (null in the JSON), so the other arms still run."""

    def __init__(self, path: str, results: dict[str, Any], tolerant: bool = True) -> None:
        self.path, self.results, self.t0, self.tolerant = path, results, time.perf_counter(), tolerant

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        atomic_write_json(self.path, json.loads(json.dumps(self.results), parse_constant=lambda _: None))  # NaN: null

    def arm(self, section: str, name: str, fn: Callable[[], float]) -> Callable[[], float]:
        """``fn`` whose every sample lands in ``results["samples"][section][name]`` and on disk at once."""
        def run() -> float:
            try:
                value = fn()
            except Exception as e:
                if not self.tolerant:
                    raise
                print(f"  {name} FAILED: {e!r}", flush=True)
                self.results.setdefault("errors", {}).setdefault(section, {})[name] = repr(e)
                value = float("nan")
            self.results.setdefault("samples", {}).setdefault(section, {}).setdefault(name, []).append(value)
            self.write()
            return value
        return run


# ----------------------------------------------------------------------------- 1 + 2: pretraining
def _targets(step: dict[str, Summary], e2e: dict[str, Summary], recipes: dict[str, Recipe],
             step_names: dict[tuple, str]) -> dict[str, Any]:
    best = max(e2e.values(), key=lambda s: s.median)
    alone = step.get(step_names.get(recipes[best.name].model_key, ""))
    of_step = best.median / alone.median if alone else float("nan")
    ratio = best.median / next(iter(e2e.values())).median  # against the official arm, the first
    ok = of_step >= TARGET_E2E_OF_STEP and ratio >= TARGET_E2E_RATIO
    print(f"  best: {best.name}: {best.median:.0f} {UNIT}, {100 * of_step:.0f} % of its step alone, x{ratio:.2f} the "
          f"official recipe (targets >= {100 * TARGET_E2E_OF_STEP:.0f} % and >= x{TARGET_E2E_RATIO:g}: "
          f"{'met' if ok else 'NOT met'})", flush=True)
    return {"name": best.name, "images_s": best.median, "of_step_alone": of_step, "ratio": ratio, "target_met": ok}


def bench_pretrain(args: argparse.Namespace, device: torch.device, tmp: Path, rec: Recorder,
                   parts: list[str]) -> dict[str, Any]:
    compile_ = "compile" in parts
    step_recipes = [Recipe("official: fp32, NCHW, eager"), Recipe("bf16 + channels_last", "bf16", True)]
    step_recipes += [Recipe("bf16 + channels_last + torch.compile", "bf16", True, True)] if compile_ else []
    trainers = {r.model_key: Trainer(make_cfg(args, r), device, tmp / f"log{i}") for i, r in enumerate(step_recipes)}
    out: dict[str, Any] = {}
    print(f"\n== SimSiam {args.arch} train step alone, batch {args.batch} images (2 views of {args.size} px each), "
             "engine with all monitors on")
    step = alternate([(r.name, rec.arm("step", r.name, lambda r=r: step_throughput(trainers[r.model_key], args)))
                      for r in step_recipes], args.rounds)
    out["step"] = _report(step)
    rec.results["pretrain"] = out
    if "e2e" not in parts:
        return out
    width, height = (int(v) for v in args.jpeg_size.split("x"))
    t = time.perf_counter()
    root, kb = write_jpeg_folder(tmp / "jpegs", images_needed(args), width, height)
    official_args = argparse.Namespace(**{**vars(args), "workers": min(OFFICIAL_WORKERS, args.workers)
                                          if args.smoke else OFFICIAL_WORKERS})
    print(f"\n== end to end from {images_needed(args)} JPEGs of {width}x{height} ({kb:.0f} KB; written in "
             f"{time.perf_counter() - t:.0f} s); official: {official_args.workers} workers, others: {args.workers}")
    e2e = [(Recipe("official: fp32, PIL per-sample ops, 8 workers"), official_args),
           (Recipe("bf16 + channels_last, PIL", "bf16", True), args),
           (Recipe("bf16 + channels_last, batched aug", "bf16", True, aug="batched"), args),
           (Recipe("bf16 + channels_last, batched aug + gpu_jpeg", "bf16", True, aug="batched", decode="gpu_jpeg"),
            args)]
    if compile_:
        e2e.append((Recipe("bf16 + CL + compile, batched aug + gpu_jpeg", "bf16", True, True, "batched", "gpu_jpeg"),
                    args))

    def arm(r: Recipe, a: argparse.Namespace) -> Callable[[], float]:
        return lambda: e2e_throughput(trainers[r.model_key], make_cfg(a, r, root.parent), a, root.parent)

    res = alternate([(r.name, rec.arm("e2e", r.name, arm(r, a))) for r, a in e2e], args.rounds)
    out["end_to_end"] = _report(res)
    out["best_end_to_end"] = _targets(step, res, {r.name: r for r, _ in e2e}, {r.model_key: r.name for r in step_recipes})
    return out


# ----------------------------------------------------------------------------- 3: transfer
def _detection_batch(n: int, short: int, long: int, classes: int) -> list[dict[str, Any]]:
    from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)
    import numpy as np
    from detectron2.structures import Boxes, Instances, PolygonMasks

    g, batch, k = torch.Generator().manual_seed(0), [], 7  # COCO: ~7.3 objects per image
    for _ in range(n):
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


def bench_transfer(args: argparse.Namespace, device: torch.device, rec: Recorder) -> dict[str, Any]:
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
        print("\n== transfer")
        print("  " + msg)
        return {"skipped": msg}
    n, short, long = args.det_images, args.det_size, int(round(args.det_size * 4 / 3))
    opts = ["MODEL.DEVICE", device.type, "SOLVER.IMS_PER_BATCH", str(n), "SIAMBENCH.BATCH_SCALING", "none"]
    if args.smoke:  # C4 runs res5 on every sampled ROI (512 per image): a few only, for seconds on a CPU
        opts += ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "64",
                 "MODEL.RPN.POST_NMS_TOPK_TRAIN", "16"]
    cfg, _ = load_task_config(task_config_path("coco"), opts)
    resolve_runtime(cfg, world_size=1, cuda_available=torch.cuda.is_available())
    print(f"\n== transfer: Mask R-CNN R50-C4 (coco.yaml), {n} images of {short}x{long}, detectron2 trainer step"
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

    names = ["official: detectron2 SimpleTrainer, fp32"] + (["detectron2 AMPTrainer (fp16 autocast)"]
                                                             if device.type == "cuda" else [])
    arms = [(name, rec.arm("transfer", name, arm(t))) for name, t in zip(names, (SimpleTrainer, AMPTrainer))]
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
    print(f"\n== COCO bbox evaluation, synthetic val2017: {args.coco_images} images x 100 detections")
    try:
        from siambench.transfer.evaluation import evaluate_coco, resolve_backend
    except ImportError as e:
        msg = f"skipped: transfer.evaluation is not importable ({e}); needs detectron2 + pycocotools"
        print("  " + msg)
        return {"skipped": msg}
    import numpy as np

    from siambench.benchmarks.speed.bench_coco_eval import synthetic_val2017

    gt, dets = synthetic_val2017(args.coco_images, 100, 0)  # one round: slow at full size, not noisy
    backends = ["pycocotools"] + (["faster_coco_eval"] if resolve_backend("auto") == "faster_coco_eval" else [])
    times, stats = {}, {}
    for b in backends:
        t = time.perf_counter()
        stats[b] = np.asarray(evaluate_coco(gt, dets, "bbox", backend=b).stats[:12], dtype=float)
        times[b] = time.perf_counter() - t
    out: dict[str, Any] = {"seconds": times}
    for b in backends:
        print(f"  {b:<44} {times[b]:7.2f} s   " + (f"x{times[backends[0]] / times[b]:.2f} speed" if b != backends[0]
                                                   else "(official)"))
    if len(backends) == 2:
        out.update(max_stat_difference=float(np.abs(stats[backends[0]] - stats[backends[1]]).max()),
                   speedup=times[backends[0]] / times[backends[1]])
    print(f"  max |difference| over the 12 COCO stats: {out['max_stat_difference']:.1e}" if len(backends) == 2 else
          "  faster-coco-eval not installed: official backend only")
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device, every part (CPU test mode)")
    p.add_argument("--out", default="bench_gpu.json", help="JSON results file (rewritten after every arm)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="plan the parts to fit this many seconds (default: 7 minutes on one H200)")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch", type=int, default=256, help="images per step (two views each)")
    p.add_argument("--size", type=int, default=224, help="view side in px")
    for name, default in (("steps", 10), ("warmup", 3), ("rounds", 3), ("workers", resolve_num_workers(-1))):
        p.add_argument(f"--{name}", type=int, default=default)  # steps: timed per arm and round; workers: ours
    p.add_argument("--jpeg-size", default="500x375")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile arms")
    p.add_argument("--coco", action="store_true", help="also the COCO evaluation section (CPU only)")
    for name, default in (("det-images", 16), ("det-size", 800), ("det-steps", 5), ("det-warmup", 2),
                          ("coco-images", 5000)):  # det-size: short side of the detection images
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    args = p.parse_args(argv)
    args.decode_on_cpu = False
    if args.smoke:  # every code path, at toy sizes
        args.arch, args.batch, args.size, args.steps, args.warmup, args.rounds = "resnet18", 4, 32, 2, 1, 2
        args.workers, args.jpeg_size, args.compile, args.coco = min(args.workers, 2), "64x48", False, True
        args.det_images, args.det_size, args.det_steps, args.det_warmup, args.coco_images = 2, 64, 1, 0, 20
        args.decode_on_cpu = True  # the gpu_jpeg arm runs its device code on CPU tensors
    return args


def _run_parts(args: argparse.Namespace, device: torch.device, rec: Recorder, parts: list[str], cores: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for part, key, run in [("step", "pretrain", lambda: bench_pretrain(args, device, Path(tmp), rec, parts)),
                               ("transfer", "transfer", lambda: bench_transfer(args, device, rec)),
                               ("coco", "coco_eval", lambda: bench_coco_eval(args))]:
            if part not in parts:
                continue
            need = sum(estimate_s(p, args, cores) for p in parts if p in (("step", "e2e", "compile")
                                                                        if part == "step" else (part,)))
            left = args.budget_s - (time.perf_counter() - rec.t0)
            if not args.smoke and need > left:
                rec.results.setdefault("skipped", []).append(msg := f"{part}: skipped, ~{need:.0f} s estimated and "
                                                                    f"{left:.0f} s left")
                print(f"\n{msg}", flush=True)
                continue
            try:
                rec.results[key] = run()
            except Exception as e:  # one broken section must not lose the others' numbers
                if args.smoke:
                    raise
                print(f"  {part} FAILED: {e!r}", flush=True)
                rec.results[key] = {"error": repr(e)}
            rec.results[f"{key}_done_at_s"] = round(time.perf_counter() - rec.t0, 1)
            rec.write()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print("bench_gpu: no CUDA device; run it on a GPU machine, or use --smoke for the CPU test mode",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_cudnn_benchmark(device)  # as the official main_simsiam.py
    info = machine_facts(device)
    print(f"bench_gpu{' --smoke' if args.smoke else ''}: {UNIT} counts images, each = 2 views of {args.size} px",
          flush=True)
    print_machine(info)
    parts, skipped = plan_parts(args, info["cores"])
    print(f"plan: {', '.join(parts)}" + (f" (--budget-s {args.budget_s:.0f}, estimates)" if not args.smoke else ""))
    for msg in skipped:
        print(f"  {msg}")
    rec = Recorder(args.out, {"machine": info, "args": vars(args), "unit": f"{UNIT}: images, each = 2 views of "
                              f"{args.size} px", "plan": parts, "skipped": list(skipped)}, tolerant=not args.smoke)
    rec.write()
    _run_parts(args, device, rec, parts, info["cores"])
    rec.results["total_seconds"] = round(time.perf_counter() - rec.t0, 1)
    rec.write()
    print(f"\nbench_gpu: {rec.results['total_seconds']:.0f} s in all; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
