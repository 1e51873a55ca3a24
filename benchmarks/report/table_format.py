"""Render :class:`siambench.benchmarks.report.table_data.Table` as Markdown, CSV, LaTeX or JSON, and read it back.

* ``md``: one pipe table per table; a cell reads ``**47.0** ± 0.3 (n=5)`` (bold mean,
  std and trial count for our rows), ``–`` when missing; notes follow as a list.
* ``latex``: booktabs ``tabular`` per table with the paper's two-level header;
  ``\\textbf{47.0}$\\pm$0.3 {\\scriptsize (n=5)}``; notes as ``%`` comments.
* ``csv``: tidy, one line per cell (table, label, source, kind, group, metric, mean,
  std, n, bold, delta) with 4 decimals, for spreadsheets and pandas.
* ``json``: the exact tables (full precision) plus collection notes and the citation.

:func:`parse_cell` reads an md/latex cell back; :func:`read_csv` and
:func:`tables_from_json` read whole outputs back (used by the round-trip tests).
"""
from __future__ import annotations

import csv
import io
import json
import re
from typing import Any, Sequence

from . import reference
from .claims import Claim, render_verdict
from .table_data import Cell, Table

__all__ = ["FORMATS", "render", "format_cell", "fmt_duration", "parse_cell", "read_csv", "tables_from_json",
           "verdict_from_json"]

FORMATS = ("md", "csv", "latex", "json")
MISSING = {"md": "–", "latex": "--"}
CSV_FIELDS = ("table", "label", "source", "kind", "group", "metric", "mean", "std", "n", "bold", "delta",
              "invalid")


def fmt_duration(seconds: float | None) -> str:
    """``3725`` -> ``1h02m``, ``75`` -> ``1m15s``, ``9`` -> ``9s``; None -> ``?``."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def format_cell(cell: Cell, fmt: str, show_n: bool, delta: bool = False) -> str:
    """Display text of one cell in ``md`` or ``latex`` (0.1 precision like the paper)."""
    if cell.mean is None:
        return "invalid" if cell.invalid and not delta else MISSING[fmt]
    mean = f"{cell.mean:+.1f}" if delta else f"{cell.mean:.1f}"
    if cell.bold:
        mean = f"**{mean}**" if fmt == "md" else f"\\textbf{{{mean}}}"
    text = mean
    if cell.std is not None:
        text += f" ± {cell.std:.1f}" if fmt == "md" else f"$\\pm${cell.std:.1f}"
    if show_n and cell.n:
        count = f"n={cell.n}" + (f", {cell.invalid} invalid" if cell.invalid else "")
        text += f" ({count})" if fmt == "md" else f" {{\\scriptsize ({count})}}"
    return text


_CELL_RE = {
    "md": re.compile(r"^(?P<b>\*\*)?(?P<mean>[+-]?\d+\.\d)(?:\*\*)?(?: ± (?P<std>\d+\.\d))?"
                     r"(?: \(n=(?P<n>\d+)(?:, (?P<inv>\d+) invalid)?\))?$"),
    "latex": re.compile(r"^(?P<b>\\textbf\{)?(?P<mean>[+-]?\d+\.\d)\}?(?:\$\\pm\$(?P<std>\d+\.\d))?"
                        r"(?: \{\\scriptsize \(n=(?P<n>\d+)(?:, (?P<inv>\d+) invalid)?\)\})?$"),
}


def parse_cell(text: str, fmt: str) -> Cell:
    """Inverse of :func:`format_cell` at display precision.

    Raises:
        ValueError: ``text`` is not a cell this module writes.
    """
    text = text.strip()
    if text == MISSING[fmt]:
        return Cell()
    if text == "invalid":
        return Cell(invalid=1)  # at least one; the count is in the notes
    m = _CELL_RE[fmt].match(text)
    if m is None:
        raise ValueError(f"not a {fmt} table cell: {text!r}")
    return Cell(mean=float(m["mean"]), std=float(m["std"]) if m["std"] else None,
                n=int(m["n"]) if m["n"] else 0, bold=bool(m["b"]), invalid=int(m["inv"]) if m["inv"] else 0)


def _md(table: Table) -> str:
    head = ["pre-train", "source"] + [f"{c.group} {c.metric}" for c in table.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":---", ":---"] + [":---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        cells = [format_cell(c, "md", row.source == "ours" and not table.delta, table.delta) for c in row.cells]
        lines.append("| " + " | ".join([row.label.replace("|", "/"), row.source, *cells]) + " |")
    lines += [""] + [f"- {n}" for n in table.notes] + ([""] if table.notes else [])
    return "\n".join(lines)


_TEX_ESCAPE = {c: "\\" + c for c in "&%$#_{}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in text).replace("Δ", "$\\Delta$").replace("±", "$\\pm$")


def _latex(table: Table) -> str:
    groups: list[tuple[str, int]] = []
    for c in table.columns:
        if groups and groups[-1][0] == c.group:
            groups[-1] = (c.group, groups[-1][1] + 1)
        else:
            groups.append((c.group, 1))
    spec = "ll" + "c" * len(table.columns)
    rules, col = [], 3  # booktabs style: \cmidrule under each column group, no vertical rules
    for _, n in groups:
        rules.append(f"\\cmidrule(lr){{{col}-{col + n - 1}}}")
        col += n
    lines = [f"% {_tex(table.title)}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             "pre-train & source & " + " & ".join(f"\\multicolumn{{{n}}}{{c}}{{{_tex(g)}}}" for g, n in groups)
             + " \\\\", " ".join(rules),
             " & & " + " & ".join(_tex(c.metric) for c in table.columns) + " \\\\", "\\midrule"]
    for row in table.rows:
        cells = [format_cell(c, "latex", row.source == "ours" and not table.delta, table.delta) for c in row.cells]
        lines.append(" & ".join([_tex(row.label), row.source, *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"] + [f"% {_tex(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _csv(tables: Sequence[Table]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for t in tables:
        for row in t.rows:
            for col, cell in zip(t.columns, row.cells):
                writer.writerow({"table": t.name, "label": row.label, "source": row.source, "kind": row.kind,
                                 "group": col.group, "metric": col.metric, "mean": _num(cell.mean),
                                 "std": _num(cell.std), "n": cell.n, "bold": int(cell.bold), "delta": int(t.delta),
                                 "invalid": cell.invalid})
    return buf.getvalue()


def read_csv(text: str) -> list[dict[str, Any]]:
    """Rows of a ``csv`` rendering with typed values (``None`` for missing)."""
    out = []
    for rec in csv.DictReader(io.StringIO(text)):
        out.append({**rec, "mean": float(rec["mean"]) if rec["mean"] else None,
                    "std": float(rec["std"]) if rec["std"] else None, "n": int(rec["n"]),
                    "bold": rec["bold"] == "1", "delta": rec["delta"] == "1", "invalid": int(rec.get("invalid") or 0)})
    return out


def tables_from_json(text: str) -> tuple[list[Table], list[str]]:
    """Inverse of the ``json`` rendering: (tables, collection notes)."""
    obj = json.loads(text)
    return [Table.from_dict(t) for t in obj["tables"]], list(obj.get("notes", []))


def verdict_from_json(text: str) -> list[Claim]:
    """The verdict of a ``json`` rendering."""
    return [Claim(**c) for c in json.loads(text).get("verdict", [])]


def render(tables: Sequence[Table], fmt: str, notes: Sequence[str] = (), verdict: Sequence[Claim] = ()) -> str:
    """All tables in one format; ``notes`` (from collection: skipped files) are appended.

    ``verdict`` (:func:`siambench.benchmarks.report.verdict.build_verdict`) follows the tables in ``md``
    (the last thing a console shows), is a ``verdict`` list in ``json`` and ``%`` comment
    lines in ``latex``; ``csv`` holds the table cells only.
    """
    if fmt == "json":
        return json.dumps({"citation": reference.CITATION, "tables": [t.to_dict() for t in tables],
                           "verdict": [c.to_dict() for c in verdict], "notes": list(notes)},
                          indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return _csv(tables)
    if fmt == "md":
        body = "\n".join(_md(t) for t in tables)
        if notes:
            body += "\n### Notes on the results files\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
        if verdict:
            body += "\n" + render_verdict(verdict)
        return body
    if fmt == "latex":
        body = "% requires \\usepackage{booktabs}\n" + "\n".join(_latex(t) for t in tables)
        body += "".join(f"% verdict: {c.mark}: {_tex(c.claim)}: {_tex(c.evidence)}\n" for c in verdict)
        return body + "".join(f"% note: {_tex(n)}\n" for n in notes)
    raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
