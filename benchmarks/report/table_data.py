"""The data of one table (:class:`Table` of :class:`Row` s of :class:`Cell` s) and the paper's cell rules.

A cell of ours is the mean ± sample standard deviation (ddof=1) of its trials with their
count and the trial values themselves (:func:`summarize`); per column, every entry within
``BOLD_MARGIN`` below the best is
bold (:func:`apply_bold`, the paper's rule). :mod:`.table` builds tables from runs,
:mod:`.table_format` renders them, :mod:`.plots` draws them.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from . import reference

__all__ = ["Cell", "Column", "Row", "Table", "summarize", "apply_bold"]


@dataclass
class Cell:
    """One table entry; ``mean is None`` means missing."""

    mean: float | None = None
    std: float | None = None
    n: int = 0
    bold: bool = False
    invalid: int = 0  # values left out as outside [0, 100] / non-finite
    values: list[float] = field(default_factory=list)  # the finite trial values behind mean / std (ours only)


@dataclass
class Column:
    group: str  # "VOC 07", "COCO det", "100 ep", ...
    metric: str  # "AP50", "AP", "AP75", "top-1"


@dataclass
class Row:
    label: str
    source: str  # "ours" | "paper"
    kind: str  # "scratch" | "supervised" | "simsiam" | "checkpoint" | "" (paper / unknown)
    cells: list[Cell]


@dataclass
class Table:
    name: str  # machine name: "table5", "table5_synthetic", "table4", ...
    title: str
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    delta: bool = False  # cells are signed differences (no std, no bold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Table":
        return cls(
            name=d["name"], title=d["title"], notes=list(d.get("notes", [])), delta=bool(d.get("delta")),
            columns=[Column(**c) for c in d["columns"]],
            rows=[Row(r["label"], r["source"], r["kind"], [Cell(**c) for c in r["cells"]]) for r in d["rows"]],
        )


def summarize(values: Iterable[float], invalid: int = 0) -> Cell:
    """Mean, sample std (ddof=1, None for one value) and n of the finite values.

    ``invalid``: how many values were left out as invalid before (shown in the cell).
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Cell(invalid=invalid)
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Cell(mean=statistics.fmean(finite), std=std, n=len(finite), invalid=invalid, values=finite)


def apply_bold(table: Table, margin: float = reference.BOLD_MARGIN) -> None:
    """Bold, per column, the entries within ``margin`` below the column's best."""
    for j in range(len(table.columns)):
        cells = [row.cells[j] for row in table.rows if row.cells[j].mean is not None]
        if not cells:
            continue
        best = max(round(c.mean, 1) for c in cells)
        for c in cells:
            # 1e-6: 0.1-rounded floats; "within 0.5" includes exactly 0.5 below.
            c.bold = round(c.mean, 1) >= best - margin - 1e-6
