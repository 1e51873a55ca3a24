"""Pretraining throughput, side by side: train step and data pipeline, each against the official recipe.

    python -m siambench.benchmarks.speed.bench_pretrain_throughput --arch resnet50 --batch 64 --workers 8 --rounds 3

* train step: SimSiam forward/backward/SGD on device-resident views through our engine
  (``siambench.pretrain.engine.train_one_epoch``) with every monitor on -- collapse monitor,
  per-step metrics.jsonl, TensorBoard, console meters -- the official training loop's
  work per step. Reference: fp32, NCHW, eager; candidate: ``--amp`` / ``--channels-last``
  / ``--compile``.
* data pipeline: ImageNet-size JPEGs on disk (500x375, ~120 KB) -> loader with
  ``--workers`` -> two augmented views on the device, no training. Reference: official
  per-sample PIL ops (``DATA.AUG_BACKEND pil``); candidates: ``batched`` (crop/flip in
  the workers, photometric ops on the device) and, on CUDA (or ``--decode-on-cpu``),
  ``DATA.DECODE gpu_jpeg``.

The arms alternate (A B A B ...) for ``--rounds`` rounds in one process; each prints
median, min, max and spread, and ratios are medians of per-round ratios with their
range. Images/s counts images (each gives two views). Pillow-SIMD (a drop-in Pillow
build, not installed here) speeds up both PIL paths; ``machine_info`` records the
Pillow in use.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from siambench.benchmarks.speed.bench_common import TimedLoader, alternate, format_summary, machine_info, write_jpeg_folder

__all__ = ["Recipe", "Trainer", "make_cfg", "step_throughput", "data_throughput", "e2e_throughput", "main"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One arm's speed options (the official recipe: all defaults)."""

    name: str
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    aug: str = "pil"
    decode: str = "pil"

    @property
    def model_key(self) -> tuple[str, bool, bool]:
        return self.amp, self.channels_last, self.compile


def make_cfg(args: argparse.Namespace, recipe: Recipe, root: Path | None = None):
    """The pretraining config of ``recipe`` at the benchmark's sizes (official defaults otherwise)."""
    from siambench.pretrain.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.ARCH = args.arch
    cfg.SOLVER.BATCH_SIZE = args.batch
    cfg.DATA.IMAGE_SIZE = args.size
    cfg.DATA.NUM_WORKERS = args.workers
    cfg.DATA.ROOT = str(root or "")
    cfg.DATA.AUG_BACKEND, cfg.DATA.DECODE = recipe.aug, recipe.decode
    cfg.TRAIN.AMP, cfg.TRAIN.CHANNELS_LAST, cfg.TRAIN.COMPILE = recipe.amp, recipe.channels_last, recipe.compile
    cfg.freeze()
    return cfg


class Trainer:
    """Model, optimizer, loss and TrainContext of one model configuration, built as ``siambench.pretrain.main`` does."""

    def __init__(self, cfg, device: torch.device, log_dir: Path) -> None:
        from siambench.pretrain.engine import TrainContext
        from siambench.pretrain.main import _AMP, build_model_and_optimizer
        from siambench.pretrain.monitors import CollapseMonitor
        from siambench.pretrain.schedule import scaled_lr
        from siambench.pretrain.utils.dist import DistInfo
        from siambench.pretrain.utils.logger import JSONLinesWriter, TensorboardWriter

        self.device, self.batch = device, cfg.SOLVER.BATCH_SIZE
        self.model, self.method, self.optimizer, scaler = build_model_and_optimizer(cfg, DistInfo(device=device))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.ctx = TrainContext(
            device=device, init_lr=scaled_lr(cfg.SOLVER.BASE_LR, cfg.SOLVER.BATCH_SIZE), epochs=cfg.SOLVER.EPOCHS,
            amp_dtype=_AMP[cfg.TRAIN.AMP], scaler=scaler if scaler.is_enabled() else None,
            channels_last=cfg.TRAIN.CHANNELS_LAST, print_freq=cfg.TRAIN.PRINT_FREQ,
            collapse=CollapseMonitor(self.method.monitor_dim, cfg.MONITOR.COLLAPSE_THRESHOLD,
                                     cfg.MONITOR.COLLAPSE_PATIENCE),
            jsonl=JSONLinesWriter(log_dir / "metrics.jsonl", enabled=True),
            tensorboard=TensorboardWriter(log_dir / "tb", enabled=True))

    def run(self, loader: TimedLoader, batch_aug: Any = None) -> float:
        """Train over ``loader``; images/s of its timed steps."""
        from siambench.pretrain.engine import train_one_epoch

        self.ctx.batch_aug = batch_aug
        train_one_epoch(self.model, self.optimizer, loader, 0, self.ctx, self.method)
        return loader.timed * self.batch / loader.seconds


def step_throughput(trainer: Trainer, args: argparse.Namespace) -> float:
    """The step alone, on views already on the device (random, normalised-like)."""
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(args.batch, 3, args.size, args.size, generator=g).to(trainer.device) for _ in range(2)]
    batch = (views, torch.arange(args.batch))
    n = args.warmup + args.steps + 1
    return trainer.run(TimedLoader([batch] * n, args.warmup, args.steps, trainer.device))


def _pipeline(cfg, device: torch.device, root: Path, decode_on_cpu: bool):
    from siambench.pretrain.data import IndexedDataset, TwoCropsTransform, build_dataset, build_pretrain_loader
    from siambench.pretrain.data.views import build_view_pipeline

    views = build_view_pipeline(cfg, device, decode_on_cpu=decode_on_cpu)
    dataset = build_dataset(cfg, "train", TwoCropsTransform(views.view_tf), image_loader=views.image_loader)
    # prefetch 2 (torch's default, the official code's): PIL batches are float32, 16 workers x 4 batches
    # of 256 pairs would hold ~20 GB of shared memory
    loader = build_pretrain_loader(IndexedDataset(dataset), cfg.SOLVER.BATCH_SIZE, cfg.DATA.NUM_WORKERS,
                                   pin_memory=device.type == "cuda", collate_fn=views.collate_fn, prefetch_factor=2)
    return loader, views.batch_aug


def data_throughput(cfg, args: argparse.Namespace, device: torch.device, root: Path) -> float:
    """Loader + device-side augmentation alone: the images/s the data path can deliver."""
    from siambench.pretrain.data import set_loader_epoch

    loader, batch_aug = _pipeline(cfg, device, root, args.decode_on_cpu)
    set_loader_epoch(loader, 0, 0)
    warmup, steps = data_steps(args)
    timed = TimedLoader(loader, warmup, steps, device)
    for views, _ in timed:
        views = [v.to(device, non_blocking=True) for v in views]
        if batch_aug is not None:
            views = [batch_aug(v) for v in views]
    return steps * args.batch / timed.seconds


def e2e_throughput(trainer: Trainer, cfg, args: argparse.Namespace, root: Path) -> float:
    """JPEGs on disk -> loader -> views -> the official-recipe step: what a pretraining run gets."""
    from siambench.pretrain.data import set_loader_epoch

    loader, batch_aug = _pipeline(cfg, trainer.device, root, args.decode_on_cpu)
    set_loader_epoch(loader, 0, 0)
    return trainer.run(TimedLoader(loader, *data_steps(args), trainer.device), batch_aug)


def data_steps(args: argparse.Namespace) -> tuple[int, int]:
    """(warm-up, timed) batches of a loader arm: every worker hands in its first batch at about the
    same time, so the first ``workers`` batches are skipped and at least two more waves are timed
    (else a prefetched wave would pass for throughput)."""
    return max(args.warmup, args.workers), max(args.steps, 2 * args.workers)


def images_needed(args: argparse.Namespace) -> int:
    warmup, steps = data_steps(args)
    return (warmup + steps + 2) * args.batch


def parser(description: str = __doc__.split("\n\n")[0]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch", type=int, default=64, help="per-device batch")
    p.add_argument("--size", type=int, default=224, help="view side (DATA.IMAGE_SIZE)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per arm and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (worker start-up, compile)")
    p.add_argument("--rounds", type=int, default=3, help="A B A B ... rounds")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers")
    p.add_argument("--jpeg-size", default="500x375", help="WxH of the benchmark JPEGs (ImageNet-typical)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--decode-on-cpu", action="store_true", help="run the gpu_jpeg arm on a CPU device too")
    p.add_argument("--json", default="", help="also write the results here")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--skip-data", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    width, height = (int(v) for v in args.jpeg_size.split("x"))
    print(f"{machine_info(device)}\narch {args.arch}, batch {args.batch}, {args.size}px, workers {args.workers}, "
          f"{args.rounds} rounds x {args.steps} steps")
    results: dict[str, Any] = {"machine": machine_info(device), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_train:
            ref = Recipe("official step (fp32, NCHW, eager, monitors on)")
            cand = Recipe(f"{args.amp}, channels_last={args.channels_last}, compile={args.compile}", args.amp,
                          args.channels_last, args.compile)
            trainers = {r.name: Trainer(make_cfg(args, r), device, Path(tmp) / f"log{i}") for i, r in
                        enumerate((ref, cand))}
            res = alternate([(name, lambda t=t: step_throughput(t, args)) for name, t in trainers.items()],
                            args.rounds)
            print("train step:")
            for s in res.values():
                print("  " + format_summary(s))
            results["step"] = {k: s.as_dict() for k, s in res.items()}
        if not args.skip_data:
            root, kb = write_jpeg_folder(Path(tmp) / "jpegs", images_needed(args), width, height)
            print(f"data: {images_needed(args)} JPEGs of {width}x{height}, {kb:.0f} KB on average")
            recipes = [Recipe("official per-sample PIL"), Recipe("batched (device photometric)", aug="batched")]
            if device.type == "cuda" or args.decode_on_cpu:
                recipes.append(Recipe("batched + gpu_jpeg decode", aug="batched", decode="gpu_jpeg"))
            res = alternate([(r.name, lambda r=r: data_throughput(make_cfg(args, r, root.parent), args, device,
                                                                   root.parent)) for r in recipes], args.rounds)
            print("data pipeline (no training step):")
            for s in res.values():
                print("  " + format_summary(s))
            results["data"] = {k: s.as_dict() for k, s in res.items()}
    print("note: Pillow-SIMD (pip install pillow-simd, replaces Pillow) speeds up the PIL decode/crop paths")
    if args.json:
        from siambench.pretrain.utils.io import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
