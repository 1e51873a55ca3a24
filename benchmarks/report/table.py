"""``siambench table RUNS_DIR``: transfer and linear-eval tables shaped like the paper's.

The tables are followed by the verdict (:mod:`siambench.benchmarks.report.verdict`): which of the
paper's claims the runs reproduce, with the numbers and a significance test.

Table 5 (transfer): one row per pre-training label, column groups VOC 07, VOC 07+12,
COCO detection and COCO instance segmentation, each with AP50 / AP / AP75. Table 4
(linear evaluation): top-1 by pre-training epochs beside the paper's rows; the synthetic-data and
kNN tables have one top-1 column and the epochs in the row label ("SimSiam, 20 ep"). Conventions:

* A cell of ours is the mean ± sample standard deviation (ddof=1) over the finished
  trials, with their count n; numbers are rounded to 0.1 like the paper. One trial
  shows no std.
* Bold rule (the paper's): per column, every displayed entry within 0.5 below the
  column's best (compared at the displayed 0.1 precision) is bold. It is applied over
  all rows of the table, our rows and the paper's reference rows alike.
* The paper's published rows (:mod:`siambench.benchmarks.report.reference`) are marked ``paper``.
  Results on the synthetic dataset (``synth_*`` tasks) go to their own tables with the
  note "synthetic data: not comparable to paper rows"; the reference rows print in their own
  tables, except on a run with synthetic results only (no real-data row of ours to compare).
  Results on datasets of one's own (``--dataset NAME=...``) go to the table
  ``table5_own``, one column group per dataset named by it, without paper rows.
* Deltas: each of our rows minus our supervised and our scratch row of the same table
  (same data), e.g. ``+1.2``.
* Missing or partial results show as missing (``–``) with a note; they are never
  averaged in. Invalid values (outside [0, 100] or non-finite, :mod:`siambench.benchmarks.report.results`)
  are never averaged in either; the cell counts them (``(n=2, 1 invalid)``, or
  ``invalid`` when no valid value is left) and a note names each file.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from typing import Iterable, Sequence

from siambench.pretrain.utils.io import atomic_write_text

from . import reference
from .results import RunResults, TransferTrial, collect, is_own_task, is_synthetic_task
from .table_data import Cell, Column, Row, Table, apply_bold, summarize
from .table_format import FORMATS, render
from .verdict import build_verdict

__all__ = ["build_tables", "task_group_name", "main"]

SYNTHETIC_NOTE = "synthetic data: not comparable to paper rows"
_KIND_ORDER = {"scratch": 0, "random_init": 1, "supervised": 2}  # then everything else, like the paper's rows


def task_group_name(task: str, rtype: str) -> str:
    """Column-group title of a transfer task, e.g. ("voc0712", "bbox") -> "VOC 07+12"."""
    base = task[len("synth_"):] if is_synthetic_task(task) else task
    names = {"voc07": "VOC 07", "voc0712": "VOC 07+12"}
    if base in names:
        name = names[base]
    elif base.startswith("coco"):  # coco, coco_2x, coco_fpn, coco_fpn_2x
        extra = [w.upper() if w == "fpn" else w for w in base.split("_")[1:]]
        name = " ".join(["COCO", *extra, {"bbox": "det", "segm": "seg"}.get(rtype, rtype)])
    else:
        name = base if rtype == "bbox" else f"{base} {rtype}"
    return name + (" (synth)" if is_synthetic_task(task) else "")


def _task_sort_key(task: str) -> tuple:
    base = task[len("synth_"):] if is_synthetic_task(task) else task
    order = ["voc07", "voc0712", "coco"]
    return (order.index(base) if base in order else len(order), base)


def _row_order(labels: Iterable[str], kinds: dict[str, str], preferred: Sequence[str]) -> list[str]:
    pos = {label: i for i, label in enumerate(preferred)}
    return sorted(set(labels), key=lambda lb: (_KIND_ORDER.get(kinds.get(lb, ""), len(_KIND_ORDER)),
                                               pos.get(lb, len(pos)), lb))


def _transfer_table(name: str, title: str, trials: list[TransferTrial], res: RunResults,
                    with_paper: bool, order: Sequence[str]) -> Table:
    by_key: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)  # (label, task, rtype, metric)
    invalid: dict[tuple[str, str, str, str], int] = defaultdict(int)
    groups: set[tuple[str, str]] = set(reference.PAPER_TASKS) if with_paper else set()
    for t in trials:
        for rtype, metrics in t.results.items():
            if rtype not in ("bbox", "segm"):
                continue
            groups.add((t.task, rtype))
            for metric in reference.METRICS:
                by_key[t.label, t.task, rtype, metric].append(metrics.get(metric, math.nan))
                invalid[t.label, t.task, rtype, metric] += f"{rtype}.{metric}" in t.invalid
    groups_sorted = sorted(groups, key=lambda g: (_task_sort_key(g[0]), g[1]))
    columns = [Column(task_group_name(task, rtype), m) for task, rtype in groups_sorted for m in reference.METRICS]
    rows: list[Row] = []
    if with_paper:
        for label, values in reference.TABLE5_TRANSFER.items():
            cells = [Cell(values[g][m], None, 0) if g in values else Cell()
                     for g in groups_sorted for m in reference.METRICS]
            rows.append(Row(label, "paper", "", cells))
    for label in _row_order({t.label for t in trials}, res.kinds, order):
        cells = [summarize(by_key.get((label, task, rtype, m), []), invalid.get((label, task, rtype, m), 0))
                 for task, rtype in groups_sorted for m in reference.METRICS]
        rows.append(Row(label, "ours", res.kinds.get(label, ""), cells))
    table = Table(name, title, columns, rows)
    _flag_rows(table, trials, res)
    if with_paper:
        table.notes.append(f"paper rows: {reference.CITATION}, Table 5 (R50-C4, 200-ep pre-training; VOC: 5 trials)")
    if any(r.source == "ours" and any(c.mean is None and not c.invalid for c in r.cells) for r in rows):
        table.notes.append("– = no finished trial for this entry and task")
    if any(c.invalid for r in rows for c in r.cells):
        table.notes.append("invalid = a value outside [0, 100] or not finite; never averaged in (see the notes)")
    apply_bold(table)
    return table


SCRATCH_FLAG = " [loaded weights]"
RESUMED_FLAG = " [resumed]"


def _flag_rows(table: Table, trials: list[TransferTrial], res: RunResults) -> None:
    """Mark our rows whose numbers are not what their label says: a scratch row with a trial that loaded
    weights, and rows with trials resumed after an interruption (detectron2 restores the model, optimizer
    and iteration but not the data order or RNG state, so they can differ from an uninterrupted run)."""
    for row in (r for r in table.rows if r.source == "ours"):
        mine = [t for t in trials if t.label == row.label]
        loaded = [t for t in mine if t.loaded_weights()]
        if loaded and (row.kind == "scratch" or "scratch" in row.label.lower()):
            row.label += SCRATCH_FLAG
            for t in loaded:
                count = f", {t.backbone_loaded} backbone tensors" if t.backbone_loaded is not None else ""
                table.notes.append(f"{row.label}: {t.path.relative_to(res.root)} loaded weights ({t.weights}"
                                   f"{count}): not a from-scratch baseline")
        resumed = [t for t in mine if t.resumed]
        if resumed:
            row.label += RESUMED_FLAG
            table.notes.append(f"{row.label}: resumed after an interruption (data order and RNG not restored, "
                               "may differ from an uninterrupted run): "
                               + ", ".join(str(t.path.relative_to(res.root)) for t in resumed))


def _delta_tables(table: Table) -> list[Table]:
    ours = [r for r in table.rows if r.source == "ours"]
    out = []
    for kind in ("supervised", "scratch"):
        base = next((r for r in ours if r.kind == kind), None)
        if base is None:
            continue
        rows = []
        for r in ours:
            if r is base:
                continue
            cells = [Cell(mean=c.mean - b.mean, n=min(c.n, b.n)) if c.mean is not None and b.mean is not None
                     else Cell() for c, b in zip(r.cells, base.cells)]
            rows.append(Row(r.label, "ours", r.kind, cells))
        if rows:
            out.append(Table(f"{table.name}_delta_{kind}", f"{table.title}: Δ vs our {kind} row ({base.label})",
                             table.columns, rows, [SYNTHETIC_NOTE] if SYNTHETIC_NOTE in table.notes else [],
                             delta=True))
    return out


def _eval_table(name: str, title: str, res: RunResults, protocol: str, synthetic: bool,
                with_paper: bool, order: Sequence[str]) -> Table | None:
    """Top-1 of our encoders. Beside the paper's Table 4 (``with_paper``) one column per pretraining length,
    the paper's layout; otherwise one column, the epochs in the row label (columns by epochs would leave a
    sparse diagonal: each encoder has its own length)."""
    evals = [e for e in res.evals if e.protocol == protocol and e.synthetic == synthetic]
    if not evals and not with_paper:
        return None
    if not with_paper:
        return _eval_column(name, title, evals, res, protocol, synthetic, order)
    epochs = set(reference.TABLE4_EPOCHS) | {e.pretrain_epochs for e in evals if e.pretrain_epochs is not None}
    epoch_cols: list[int | None] = sorted(epochs) + ([None] if any(e.pretrain_epochs is None for e in evals) else [])
    columns = [Column(f"{ep} ep" if ep is not None else "? ep", "top-1") for ep in epoch_cols]
    rows = [Row(label, "paper", "", [Cell(values[ep]) if ep in values else Cell() for ep in epoch_cols])
            for label, values in reference.TABLE4_LINEAR_TOP1.items()]
    for label in _row_order({e.label for e in evals}, res.kinds, order):
        cells = [summarize([e.top1 for e in evals if e.label == label and e.pretrain_epochs == ep],
                           sum(e.invalid for e in evals if e.label == label and e.pretrain_epochs == ep))
                 for ep in epoch_cols]
        rows.append(Row(label, "ours", res.kinds.get(label, ""), cells))
    table = Table(name, title + ("" if evals else ", paper reference rows"), columns, rows)
    table.notes.append(f"paper rows: {reference.CITATION}, Table 4 (ImageNet, ResNet-50)")
    if None in epoch_cols:
        table.notes.append("? ep: the results file does not record pretrain_epochs")
    if synthetic:
        table.notes.append(SYNTHETIC_NOTE)
    apply_bold(table)
    return table


def _eval_column(name: str, title: str, evals: list, res: RunResults, protocol: str, synthetic: bool,
                 order: Sequence[str]) -> Table:
    """One top-1 column; a row per (label, pretraining epochs), labelled "label, N ep"."""
    rows = []
    for label in _row_order({e.label for e in evals}, res.kinds, order):
        mine = [e for e in evals if e.label == label]
        for ep in sorted({e.pretrain_epochs for e in mine}, key=lambda x: (x is None, x or 0)):
            at = [e for e in mine if e.pretrain_epochs == ep]
            rows.append(Row(f"{label}, {ep if ep is not None else '?'} ep", "ours", res.kinds.get(label, ""),
                            [summarize([e.top1 for e in at], sum(e.invalid for e in at))]))
    table = Table(name, title, [Column("linear" if protocol == "lincls" else "kNN", "top-1")], rows)
    if any(e.pretrain_epochs is None for e in evals):
        table.notes.append("? ep: the results file does not record pretrain_epochs")
    if synthetic:
        table.notes.append(SYNTHETIC_NOTE)
    apply_bold(table)
    return table


def build_tables(res: RunResults) -> list[Table]:
    """All tables for one runs directory, in display order."""
    order = [e.get("label", n) for n, e in (res.state.get("entries") or {}).items()]
    real = [t for t in res.transfer if not is_synthetic_task(t.task) and not is_own_task(t.task)]
    synth = [t for t in res.transfer if is_synthetic_task(t.task)]
    own = [t for t in res.transfer if is_own_task(t.task)]
    tables: list[Table] = []
    if own:  # one column group per dataset of one's own, named by it
        t5o = _transfer_table("table5_own", "Transfer to your datasets (AP50 / AP / AP75)", own, res, False, order)
        tables += [t5o, *_delta_tables(t5o)]
    # a run on synthetic data (or datasets of one's own) only gets no tables of the paper's real-data rows
    # (nothing of ours to put beside them)
    synthetic_only = (bool(synth) or bool(own) or any(e.synthetic for e in res.evals)) and not real and \
        all(e.synthetic for e in res.evals)
    t5_title = "Table 5: transfer to VOC / COCO (AP50 / AP / AP75)" + ("" if real else ", paper reference rows")
    t5 = None if synthetic_only else _transfer_table("table5", t5_title, real, res, True, order)
    if synth:
        t5s = _transfer_table("table5_synthetic", "Table 5 (synthetic data): transfer, our runs", synth, res,
                              False, order)
        t5s.notes.append(SYNTHETIC_NOTE)
        tables += [t5s, *_delta_tables(t5s)]
    tables += [t5, *_delta_tables(t5)] if t5 is not None else []
    for protocol, title in (("lincls", "linear evaluation top-1 (%)"), ("knn", "kNN top-1 (%)")):
        synth_t = _eval_table(f"{'table4' if protocol == 'lincls' else 'knn'}_synthetic",
                              f"{'Table 4' if protocol == 'lincls' else 'kNN'} (synthetic data): {title}",
                              res, protocol, True, False, order)
        real_t = _eval_table("table4" if protocol == "lincls" else "knn",
                             f"Table 4: ImageNet {title}" if protocol == "lincls" else f"kNN: {title}",
                             res, protocol, False, protocol == "lincls" and not synthetic_only, order)
        tables += [t for t in (synth_t, real_t) if t is not None]
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siambench table", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="OUTPUT_DIR of `siambench run` (or any results tree)")
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (default: md)")
    parser.add_argument("--out", metavar="FILE", help="write here (atomically) instead of printing")
    args = parser.parse_args(argv)
    try:
        res = collect(args.runs_dir)
    except FileNotFoundError as e:
        print(f"siambench table: {e}", file=sys.stderr)
        return 2
    text = render(build_tables(res), args.format, res.notes, build_verdict(res))
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
