"""Benchmark of one LARS step: the vectorised ``LARS`` against a per-parameter loop.

``python -m siambench.benchmarks.speed.bench_lars [--arch resnet50] [--rule larc] [--repeats 20]``
builds the ResNet's parameters with random gradients, then times ``step()`` and counts the
aten operators it dispatches (each one is at least one kernel launch on a GPU) for both
implementations, and prints the ratios. The per-parameter loop is the apex-LARC update of
``LARS`` before it was vectorised (same numbers: the script checks the parameters agree).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from siambench.pretrain.lars import LARS
from siambench.pretrain.methods.encoders import build_encoder

__all__ = ["LoopLARC", "count_ops", "bench", "main"]


class LoopLARC(torch.optim.Optimizer):
    """apex LARC (clip False) around SGD, one parameter at a time (the baseline)."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, eta, eps = group["lr"], group["weight_decay"], group["trust_coefficient"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                pn, gn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(p.grad)
                adapt = (pn > 0) & (gn > 0)
                scale = torch.where(adapt, eta * pn / (gn + wd * pn + eps), torch.ones_like(pn))
                d = torch.where(adapt, p.grad + wd * p, p.grad) * scale
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-lr)


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(opt: torch.optim.Optimizer) -> int:
    """aten operators dispatched by one ``opt.step()``."""
    with _OpCounter() as counter:
        opt.step()
    return counter.count


def _params(arch: str, width: int, seed: int) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    params = list(build_encoder(arch, width=width).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    return params


def bench(arch: str = "resnet50", width: int = 64, rule: str = "larc", repeats: int = 20) -> dict[str, float]:
    """Seconds per step and operators per step of the loop and of ``LARS``, and their ratios."""
    out: dict[str, float] = {}
    finals = []
    for name in ("loop", "foreach"):
        params = _params(arch, width, seed=0)
        opt = (LoopLARC(params, lr=0.1, weight_decay=1e-6) if name == "loop"
               else LARS(params, lr=0.1, weight_decay=1e-6, rule=rule))
        out[f"{name}_ops"] = count_ops(opt)
        start = time.perf_counter()
        for _ in range(repeats):
            opt.step()
        out[f"{name}_s"] = (time.perf_counter() - start) / repeats
        finals.append(torch.cat([p.detach().flatten() for p in params]))
    out["params"] = len(params)
    out["ops_ratio"] = out["loop_ops"] / out["foreach_ops"]
    out["time_ratio"] = out["loop_s"] / out["foreach_s"]
    out["max_abs_diff"] = float((finals[0] - finals[1]).abs().max()) if rule == "larc" else float("nan")
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--rule", default="larc", choices=("larc", "byol", "simclr"))
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    r = bench(args.arch, args.width, args.rule, args.repeats)
    print(f"{args.arch} ({int(r['params'])} tensors), rule {args.rule}: per step "
          f"loop {r['loop_ops']:.0f} ops {r['loop_s'] * 1e3:.1f} ms, "
          f"foreach {r['foreach_ops']:.0f} ops {r['foreach_s'] * 1e3:.1f} ms; "
          f"ops ratio {r['ops_ratio']:.1f}, time ratio {r['time_ratio']:.2f}, max abs diff {r['max_abs_diff']:.2g}")
    return r


if __name__ == "__main__":
    main()
