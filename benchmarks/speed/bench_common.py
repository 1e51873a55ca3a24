"""Shared parts of the ``bench_*`` scripts (not a benchmark itself).

* ImageNet-like JPEGs on disk (``write_jpeg_folder``): 500x375 by default (ImageNet's
  typical size), multi-scale noise at quality 90, ~120 KB and ~3 ms to decode with PIL
  -- like ImageNet's ~110 KB files -- so decoding costs what it costs on real data.
* Honest side-by-side timing (``alternate``): the arms run in turns, A B C A B C ...,
  for several rounds, so a load burst on a shared machine hits every arm alike; each arm
  reports the median, min and max of its rounds, and ratios are medians of per-round
  ratios against the reference arm, with their range.
* The official-recipe step: our engine's ``train_one_epoch`` with every monitor on
  (collapse monitor, per-step metrics.jsonl, TensorBoard, console meters), fed by
  ``TimedLoader`` so the clock brackets whole steps with one device sync at each end.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

__all__ = ["natural_image", "write_jpeg_folder", "TimedLoader", "Summary", "alternate", "sync", "format_summary",
           "machine_info"]


# ----------------------------------------------------------------------------- data
def natural_image(seed: int, width: int = 500, height: int = 375) -> Image.Image:
    """Noise over four octaves plus fine grain: JPEG size and decode time like a photo's."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for octave in (2, 4, 6, 8):
        s = 2 ** octave
        small = rng.standard_normal((3, max(height * s // 256, 2), max(width * s // 256, 2))).astype(np.float32)
        img += np.stack([np.asarray(Image.fromarray(c).resize((width, height), Image.BILINEAR)) for c in small],
                        -1) / s ** 0.25
    img += rng.standard_normal((height, width, 1), dtype=np.float32) * 0.35
    img = (img - img.mean()) / (img.std() + 1e-6) * 50 + rng.uniform(90, 160, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _write_one(job: tuple[str, int, int, int]) -> int:
    path, seed, width, height = job
    natural_image(seed, width, height).save(path, quality=90)
    return os.path.getsize(path)


def write_jpeg_folder(root: Path, n: int, width: int = 500, height: int = 375, classes: int = 4,
                      workers: int | None = None) -> tuple[Path, float]:
    """``n`` JPEGs under ``root/train/<class>/``; returns (the train dir, mean file size in KB)."""
    jobs = []
    for i in range(n):
        d = root / "train" / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        jobs.append((str(d / f"{i:06d}.jpg"), i, width, height))
    workers = workers or os.cpu_count() or 1
    if workers > 1 and n >= 4 * workers:
        with ProcessPoolExecutor(workers) as pool:
            sizes = list(pool.map(_write_one, jobs, chunksize=16))
    else:
        sizes = [_write_one(j) for j in jobs]
    return root / "train", sum(sizes) / max(n, 1) / 1024


# ----------------------------------------------------------------------------- timing
def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


class TimedLoader:
    """Yields ``warmup + timed + 1`` batches of ``source``; times the ``timed`` steps in between.

    The clock starts (after a device sync) when batch ``warmup`` is handed out and stops
    (after a sync) when batch ``warmup + timed`` is: exactly ``timed`` whole training steps,
    data waits included. One sync at each end only, so the loop under test is not changed.
    """

    def __init__(self, source: Iterable, warmup: int, timed: int, device: Any) -> None:
        self.source, self.warmup, self.timed, self.device = source, warmup, timed, device
        self.seconds = float("nan")

    def __len__(self) -> int:
        return self.warmup + self.timed + 1

    def __iter__(self) -> Iterator:
        it = iter(self.source)
        start = 0.0
        for i in range(len(self)):
            batch = next(it)
            if i == self.warmup:
                sync(self.device)
                start = time.perf_counter()
            elif i == self.warmup + self.timed:
                sync(self.device)
                self.seconds = time.perf_counter() - start
            yield batch


@dataclasses.dataclass
class Summary:
    """An arm's throughput over the rounds (higher is better), and its ratio to the reference."""

    name: str
    samples: list[float]
    ratios: list[float] = dataclasses.field(default_factory=list)  # per round, against the reference arm

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict[str, Any]:
        d = {"samples": self.samples, "median": self.median, "min": min(self.samples), "max": max(self.samples),
             "spread_pct": 100 * (max(self.samples) - min(self.samples)) / self.median if self.median else None}
        if self.ratios:
            d.update(ratio=statistics.median(self.ratios), ratio_min=min(self.ratios), ratio_max=max(self.ratios))
        return d


def alternate(arms: Sequence[tuple[str, Callable[[], float]]], rounds: int, reference: str | None = None,
              log: Callable[[str], None] = print) -> dict[str, Summary]:
    """Run every arm once per round, in turn (A B C A B C ...); ``reference`` defaults to the first arm."""
    reference = reference or arms[0][0]
    out = {name: Summary(name, []) for name, _ in arms}
    for r in range(rounds):
        for name, fn in arms:
            value = fn()
            out[name].samples.append(value)
            log(f"  round {r + 1}/{rounds}  {name:<42} {value:10.1f}")
        for name in out:
            out[name].ratios.append(out[name].samples[-1] / out[reference].samples[-1])
    return out


def format_summary(s: Summary, unit: str = "img/s") -> str:
    d = s.as_dict()
    ratio = f"   x{d['ratio']:.2f} [{d['ratio_min']:.2f}-{d['ratio_max']:.2f}]" if s.ratios else ""
    return (f"{s.name:<44} median {d['median']:9.1f} {unit} (min {d['min']:.1f}, max {d['max']:.1f}, "
            f"spread {d['spread_pct']:.0f}%){ratio}")


def machine_info(device: Any) -> dict[str, Any]:
    import platform

    import torch
    import torchvision

    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(device)}
    if getattr(device, "type", device) == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        import PIL

        info["pillow"] = PIL.__version__  # "x.y.z.postN" is pillow-simd
    except ImportError:  # pragma: no cover
        pass
    return info
