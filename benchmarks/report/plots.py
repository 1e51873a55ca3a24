"""PNG plots of a runs directory (matplotlib, Agg backend: no display needed).

* ``pretraining_curves.png``: the paper's Fig. 2 panels from every entry's
  ``metrics.jsonl``: training loss per step, the per-channel std of the
  l2-normalised output z with the 1/sqrt(d) line of a non-collapsed output, and the
  kNN top-1 per epoch.
* ``transfer_ap_<table>.png``: AP50 and AP (points, 0-100) per transfer task, one bar
  per pre-training at the mean over trials, every trial as a dot and the 95 % interval
  of the mean (Student t, n - 1 df; n >= 2 only, clipped to 0-100) as the whisker; the
  legend sits outside the axes (the paper's baselines hatched where shown).
"""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import read_metrics  # noqa: E402
from .stats import t_ppf  # noqa: E402
from .table_data import Table  # noqa: E402

__all__ = ["ci95", "plot_pretraining", "plot_transfer", "make_plots"]

_DEFAULT_DIM = 2048  # the paper's projector output d, when a run's config is unreadable


def _output_dim(metrics_path: Path) -> int:
    cfg = metrics_path.parent / "config.yaml"
    try:
        import yaml

        return int(yaml.safe_load(cfg.read_text(encoding="utf-8"))["MODEL"]["DIM"])
    except Exception:  # missing file or key: the recipe's d
        return _DEFAULT_DIM


def _finite(recs: Sequence[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in recs if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))
           and math.isfinite(r[y]) and abs(r[y]) < 1e12]  # 1e308 would overflow matplotlib's transforms
    return [p[0] for p in pts], [p[1] for p in pts]


def _fractional_epochs(steps: Sequence[dict]) -> list[float]:
    """x of each step record: epoch + step / steps logged per epoch (step restarts every epoch)."""
    per_epoch: dict = {}
    for r in steps:
        per_epoch[r.get("epoch")] = max(per_epoch.get(r.get("epoch"), 0), (r.get("step") or 0) + 1)
    return [(r.get("epoch") or 0) + (r.get("step") or 0) / per_epoch[r.get("epoch")] for r in steps]


def plot_pretraining(runs: dict[str, Path], out: Path) -> Path | None:
    """Fig. 2-style curves of each labelled ``metrics.jsonl``; None when there is nothing to plot."""
    data = {label: read_metrics(p) for label, p in runs.items() if p.is_file()}
    # SimSiam runs log z_std; the supervised baseline's cross-entropy does not belong on these axes.
    data = {k: v for k, v in data.items() if any("z_std" in r for r in v[0])}
    if not data:
        return None
    fig, (ax_loss, ax_std, ax_knn) = plt.subplots(1, 3, figsize=(15, 4.2))
    dims = set()
    for label, (steps, epochs) in data.items():
        xs = _fractional_epochs(steps)
        _, loss = _finite(steps, "step", "loss")
        if len(loss) == len(steps):
            ax_loss.plot(xs, loss, label=label, lw=1.2)
        _, zstd = _finite(steps, "step", "z_std")
        if len(zstd) == len(steps):
            ax_std.plot(xs, zstd, label=label, lw=1.2)
        ep, knn = _finite(epochs, "epoch", "knn_top1")
        if knn:
            ax_knn.plot(ep, knn, marker="o", label=label)
        dims.add(_output_dim(runs[label]))
    for d in sorted(dims):
        ax_std.axhline(1 / math.sqrt(d), color="gray", ls="--", lw=1, label=f"1/sqrt(d), d={d}")
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss (-cosine; min -1)")
    ax_std.set(title="output std of l2-normalised z", xlabel="epoch", ylabel="std per channel")
    ax_std.set_ylim(0, 1.2 * max([1 / math.sqrt(d) for d in dims] + [ax_std.get_ylim()[1] / 1.2]))
    ax_knn.set(title="kNN accuracy", xlabel="epoch", ylabel="top-1 (%)")
    if not ax_knn.lines:
        ax_knn.text(0.5, 0.5, "no kNN monitor records\n(MONITOR.KNN_PERIOD 0)", ha="center", va="center",
                    transform=ax_knn.transAxes, color="gray")
    legend: dict = {}  # one legend for the three panels, outside them: label -> handle
    for ax in (ax_loss, ax_std, ax_knn):
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=8,
                   frameon=False)
    fig.suptitle("SimSiam pre-training (cf. paper Fig. 2)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, out)
    return out


def _save(fig, out: Path) -> None:
    """Write to a temporary sibling and rename: a crash never leaves half a PNG."""
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")  # "tight": keep a legend or caption outside the axes
    plt.close(fig)
    os.replace(tmp, out)


def ci95(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95 % interval of the mean of ``values`` (Student t, n - 1 df), clipped to [0, 100]; None for n < 2."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return max(0.0, mean - half), min(100.0, mean + half)


def _bars(ax, table: Table, rows: Sequence, metric: str) -> bool:
    """One panel: bars of ``metric`` per task group; False when the table has no such column."""
    cols = [j for j, c in enumerate(table.columns) if c.metric == metric]
    if not cols:
        return False
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(len(cols))]
        means = [row.cells[j].mean if row.cells[j].mean is not None else 0.0 for j in cols]
        paper = row.source == "paper"
        bars = ax.bar(xs, means, width, label=f"{row.label}{' (paper)' if paper else ''}",
                      hatch="//" if paper else None, alpha=0.45 if paper else 0.6)
        for x, bar, j in zip(xs, bars, cols):
            _trials(ax, x, width, row.cells[j], bar.get_facecolor())
    ax.set_xticks(range(len(cols)), [table.columns[j].group for j in cols])
    # detectron2 reports AP in points: 0.9 here means 0.9 AP, not 90 %.
    ax.set(ylabel=f"{metric} (points, 0-100)", title=metric)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    return True


def _trials(ax, x: float, width: float, cell, color) -> None:
    """A bar's trials as dots, its 95 % interval as a whisker and its n above; "n/a" / "invalid" if empty."""
    if cell.mean is None:
        ax.annotate("invalid" if cell.invalid else "n/a", (x, 0), ha="center", va="bottom", fontsize=7, rotation=90)
        return
    vals = cell.values or []
    if vals:  # spread the dots over the middle half of the bar so equal values stay visible
        offsets = [0.0] if len(vals) == 1 else [-width / 4 + width / 2 * k / (len(vals) - 1) for k in range(len(vals))]
        ax.scatter([x + o for o in offsets], vals, s=14, color=color[:3], edgecolors="black", linewidths=0.6,
                   zorder=3)
    ci = ci95(vals)
    if ci is not None:
        ax.errorbar(x, cell.mean, yerr=[[cell.mean - ci[0]], [ci[1] - cell.mean]], fmt="none", ecolor="black",
                    capsize=3, lw=1, zorder=4)
    top = max([cell.mean, *vals, *(ci or ())])
    ax.annotate(f"n={cell.n}" if cell.n else "", (x, top), xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize=6, color="#444")


def plot_transfer(table: Table, out: Path, metrics: Sequence[str] = ("AP50", "AP")) -> Path | None:
    """AP50 and AP bars per task group of a Table 5: our rows plus the paper's baselines.

    Values are in points (0-100, as detectron2 and the paper report them); a bar is the mean,
    dots are the trials, the whisker the 95 % interval of the mean (n >= 2); invalid or missing
    cells are annotated, never drawn as numbers. The legend is outside the axes, right.
    """
    rows = [r for r in table.rows if r.source == "ours" or r.label in ("scratch", "ImageNet supervised")]
    if not any(r.source == "ours" for r in rows) or not any(c.metric in metrics for c in table.columns):
        return None
    n_groups = len({c.group for c in table.columns})
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 1.2 * n_groups * max(1, len(rows)) / 2.5)
                                                         * len(metrics), 4.2), squeeze=False)
    drawn = [_bars(ax, table, rows, m) for ax, m in zip(axes[0], metrics)]
    for ax, ok in zip(axes[0], drawn):
        if not ok:
            ax.set_visible(False)
    handles, labels = axes[0][drawn.index(True)].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=8, frameon=False)
    fig.suptitle(f"transfer, {' and '.join(metrics)} in points (0-100): {table.title.split(':')[0]}")
    fig.text(0.5, -0.02, "bar: mean over trials; dots: trials; whisker: 95 % CI of the mean (Student t, n >= 2, "
             "clipped to 0-100)", ha="center", va="top", fontsize=8, color="#444")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, out)
    return out


def make_plots(runs_dir: Path, tables: Sequence[Table], labels: dict[str, str],
               notes: list[str] | None = None, plots_dir: Path | None = None) -> list[Path]:
    """All plots of a runs directory into ``plots_dir`` (default ``runs_dir/plots``); ``labels``: entry name -> label.

    A plot that fails is left out with a line in ``notes``.
    """
    runs_dir = Path(runs_dir)
    plots_dir = Path(plots_dir) if plots_dir is not None else runs_dir / "plots"
    metrics = {}
    for path in sorted(runs_dir.glob("*/pretrain/metrics.jsonl")):
        entry = path.parent.parent.name
        metrics[labels.get(entry, entry)] = path
    if (runs_dir / "metrics.jsonl").is_file():  # a single pretraining output dir
        metrics[runs_dir.name] = runs_dir / "metrics.jsonl"
    jobs = [("pretraining curves", lambda: plot_pretraining(metrics, plots_dir / "pretraining_curves.png"))]
    for t in tables:
        if t.name.startswith("table5") and not t.delta:
            jobs.append((f"transfer AP of {t.name}",
                         lambda t=t: plot_transfer(t, plots_dir / f"transfer_ap_{t.name}.png")))
    made = []
    for what, job in jobs:
        try:  # a plot is an extra: odd numbers in a results file must never cost the report
            made.append(job())
        except Exception as e:  # noqa: BLE001 - matplotlib raises many kinds (OverflowError, ValueError, ...)
            plt.close("all")
            if notes is not None:
                notes.append(f"plot of the {what} skipped: {e.__class__.__name__}: {str(e)[:120]}")
    return [p for p in made if p is not None]
