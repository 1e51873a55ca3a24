"""Pretraining throughput: train-step and data-pipeline images/s, each against a plain reference.

    python -m benchmarks.bench_pretrain_throughput --arch resnet50 --batch 128 --workers 8

* data pipeline: JPEG ImageFolder (written to a temp dir) -> two augmented views on the
  device. Reference: official per-sample PIL transforms (``DATA.AUG_BACKEND pil``);
  candidate: PIL crop/flip in the workers + batched jitter/grayscale/blur on the device
  (``DATA.AUG_BACKEND batched``).
* train step: forward/backward/SGD of SimSiam on device-resident random views. Reference:
  fp32, contiguous NCHW, eager; candidate: ``--amp`` / ``--channels-last`` / ``--compile``.

Both are measured in the same process, and the script prints the ratios. Images/s
counts images (each gives two views).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from pretrain.builder import SimSiam, build_encoder
from pretrain.data import (BatchAugment, IndexedDataset, SafeImageFolder, SyntheticShapes, TwoCropsTransform,
                           build_crop_transform, build_moco_v2_transform, build_pretrain_loader, set_loader_epoch)
from pretrain.losses import SimSiamLoss

_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def write_jpeg_folder(root: Path, n: int, size: int) -> Path:
    """``n`` JPEGs of ``size`` px in 4 class dirs (ImageNet's mean image is ~400x350)."""
    shapes = SyntheticShapes(n, size, seed=123)
    for i in range(n):
        d = root / "train" / shapes.classes[shapes.targets[i]]
        d.mkdir(parents=True, exist_ok=True)
        shapes.image(i).save(d / f"{i:06d}.jpg", quality=90)
    return root / "train"


def bench_data(root: Path, args, device: torch.device, batched: bool) -> float:
    view_tf = build_crop_transform(args.size) if batched else build_moco_v2_transform(args.size)
    augment = BatchAugment(channels_last=args.channels_last).to(device) if batched else None
    dataset = IndexedDataset(SafeImageFolder(root, TwoCropsTransform(view_tf)))
    loader = build_pretrain_loader(dataset, args.batch, args.workers, pin_memory=device.type == "cuda")
    set_loader_epoch(loader, 0, 0)
    n, start = 0, None
    for i, (views, _) in enumerate(loader):
        views = [v.to(device, non_blocking=True) for v in views]
        if augment is not None:
            views = [augment(v) for v in views]
        if i == 1:  # skip the worker start-up
            _sync(device)
            start, n = time.perf_counter(), 0
        elif i > 1:
            n += views[0].shape[0]
    _sync(device)
    return n / (time.perf_counter() - start)


def bench_train(args, device: torch.device, amp: str, channels_last: bool, compile_: bool) -> float:
    torch.manual_seed(0)
    model = SimSiam(build_encoder(args.arch, zero_init_residual=True)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    step_model = torch.compile(model) if compile_ else model
    criterion = SimSiamLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    views = [torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
             for _ in range(2)]
    dtype = _AMP[amp]

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            ps, zs = step_model(views)
        loss = criterion([p.float() for p in ps], [z.float() for z in zs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.steps * args.batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch", type=int, default=64, help="per-device batch")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--images", type=int, default=1024, help="JPEGs in the data benchmark")
    p.add_argument("--image-px", type=int, default=384, help="side of the benchmark JPEGs")
    p.add_argument("--amp", default="bf16", choices=sorted(_AMP))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-data", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), arch {args.arch}, "
          f"batch {args.batch}, {args.size}px, workers {args.workers}")
    if not args.skip_train:
        ref = bench_train(args, device, "none", False, False)
        fast = bench_train(args, device, args.amp, args.channels_last, args.compile)
        print(f"train step  reference (fp32, NCHW, eager): {ref:9.1f} img/s")
        print(f"train step  {args.amp}, channels_last={args.channels_last}, compile={args.compile}: "
              f"{fast:9.1f} img/s   ratio {fast / ref:.2f}x")
    if not args.skip_data:
        with tempfile.TemporaryDirectory() as tmp:
            root = write_jpeg_folder(Path(tmp), args.images, args.image_px)
            ref = bench_data(root, args, device, batched=False)
            fast = bench_data(root, args, device, batched=True)
        print(f"data        reference (per-sample PIL):   {ref:9.1f} img/s")
        print(f"data        batched on-device augment:    {fast:9.1f} img/s   ratio {fast / ref:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
