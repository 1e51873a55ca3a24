"""Per-step bookkeeping of ``siambench.pretrain.engine.train_one_epoch``: one host read per print period
(today's engine) vs the previous per-step read (``torch.stack([loss, z_std]).tolist()`` every step).

    python -m siambench.benchmarks.speed.bench_engine_overhead [--batch 64] [--dim 2048] [--print-freq 10] [--repeats 7]

Only the bookkeeping around the network runs -- monitored std of z, loss/std accumulation,
the finite check, meters, the ``metrics.jsonl`` record and the collapse monitor -- on a
fixed z (per-GPU batch x d, the official recipe: 64 x 2048) and loss. Both arms run in the
same process, alternated A B A B ..., each ``--steps`` steps per repeat; the script prints
the median and spread in microseconds per step and the ratio. On CPU ``.tolist()`` costs
no device wait, so the ratio here is a lower bound of the GPU one (there every read also
drains the launch queue). ``z_std`` alone (device work in both arms) is printed too.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from siambench.pretrain.monitors import CollapseMonitor, z_std
from siambench.pretrain.utils.logger import JSONLinesWriter, MetricLogger
from siambench.pretrain.utils.step_stats import DeviceStepStats, is_print_step


def per_step_sync(z: torch.Tensor, loss: torch.Tensor, steps: int, jsonl: JSONLinesWriter, print_freq: int) -> None:
    """The previous engine: every step reads loss and std to the host and logs them."""
    meters, collapse = MetricLogger(), CollapseMonitor(z.shape[1])
    for i in range(steps):
        loss_value, std = torch.stack([loss.detach(), z_std(z)]).tolist()
        if not math.isfinite(loss_value):
            raise FloatingPointError
        meters.update(loss=loss_value, z_std=std, lr=0.1)
        jsonl.write({"type": "step", "epoch": 0, "step": i, "loss": loss_value, "lr": 0.1, "z_std": std})
        collapse.update(std, i)


def per_period_sync(z: torch.Tensor, loss: torch.Tensor, steps: int, jsonl: JSONLinesWriter, print_freq: int) -> None:
    """Today's engine: accumulate on the device (``DeviceStepStats``), read once every ``print_freq`` steps."""
    meters, collapse = MetricLogger(), CollapseMonitor(z.shape[1])
    stats = DeviceStepStats(("loss", "z_std"), z.device)
    for i in range(steps):
        stats.add(loss, z_std(z))
        if is_print_step(i, print_freq, steps):
            n = stats.pending
            means = stats.flush(meters, "bench")
            meters.meters["lr"].update(0.1, n)
            jsonl.write({"type": "step", "epoch": 0, "step": i, "steps": n, "loss": means["loss"], "lr": 0.1,
                         "z_std": means["z_std"]})
            collapse.update(means["z_std"], i, steps=n)


def std_only(z: torch.Tensor, loss: torch.Tensor, steps: int, jsonl: JSONLinesWriter, print_freq: int) -> None:
    for _ in range(steps):
        z_std(z)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="per-device batch (official: 512 / 8 GPUs)")
    p.add_argument("--dim", type=int, default=2048, help="d of z")
    p.add_argument("--print-freq", type=int, default=10)
    p.add_argument("--steps", type=int, default=200, help="steps per arm and repeat")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    z = torch.randn(args.batch, args.dim, device=device)
    loss = -(z[:, :1] ** 2).mean()
    arms = {"per-step sync (previous)": per_step_sync, "per-period sync (engine)": per_period_sync,
            "z_std alone (device work)": std_only}
    times: dict[str, list[float]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = JSONLinesWriter(Path(tmp) / "metrics.jsonl", enabled=True)
        for name, fn in arms.items():  # warm-up
            fn(z, loss, 20, jsonl, args.print_freq)
        for _ in range(args.repeats):
            for name, fn in arms.items():  # alternated A B C A B C ...
                _sync(device)
                start = time.perf_counter()
                fn(z, loss, args.steps, jsonl, args.print_freq)
                _sync(device)
                times[name].append((time.perf_counter() - start) / args.steps * 1e6)
        jsonl.close()
    print(f"device {device}, z {args.batch}x{args.dim}, print freq {args.print_freq}, "
          f"{args.steps} steps x {args.repeats} alternated repeats; microseconds per step")
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:28s} median {med[name]:8.1f}   min {min(t):8.1f}   max {max(t):8.1f}")
    old, new, std = med["per-step sync (previous)"], med["per-period sync (engine)"], med["z_std alone (device work)"]
    print(f"  bookkeeping without the z_std kernels: previous {old - std:.1f} us, engine {new - std:.1f} us "
          f"(ratio {(old - std) / max(new - std, 1e-9):.1f}x); whole step bookkeeping ratio {old / new:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
