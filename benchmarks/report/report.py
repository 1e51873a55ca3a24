"""``siambench report RUNS_DIR``: one Markdown and one HTML report of a runs directory.

Contents: the verdict first (:mod:`.verdict`: which of the paper's claims the
runs reproduce), the tables (:mod:`.table`), the plots (:mod:`.plots`),
the pipeline's steps in run order with their status, timings and total, every resolved
``config.yaml`` under the runs directory, the environment and the code version. Wide
tables scroll inside their own box in the HTML, so the page fits an 800-px window. ``report.md`` links the PNGs under
``plots/`` (relative, so the directory can be moved as a whole); ``report.html`` is
self-contained: the PNGs are embedded as base64 data URIs, so it can be mailed alone.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from siambench.pretrain.utils.env import environment
from siambench.pretrain.utils.io import atomic_write_text

from .claims import Claim, render_verdict, verdict_counts
from .results import collect
from .table import build_tables
from .table_data import Table
from .table_format import fmt_duration, format_cell, render
from .verdict import build_verdict

__all__ = ["write_report", "publish", "main"]

_CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:center}td:first-child,th:first-child{text-align:left}tr.paper{color:#666;background:#f6f6f6}
caption{font-weight:bold;text-align:left;padding:4px 0}pre{background:#f4f4f4;padding:8px;overflow-x:auto;
font-size:12px}img{max-width:100%}.note{color:#555;font-size:13px}.scroll{overflow-x:auto;max-width:100%}
td.holds{background:#e3f4e3}td.fails{background:#f9dede;font-weight:bold}td.not-tested{color:#777}td.not-significant{background:#fdf5dc}
tr.total td{font-weight:bold;border-top:2px solid #999}"""


def _configs(root: Path) -> list[tuple[str, str]]:
    """(relative path, text) of every resolved config saved under the runs directory."""
    found = [root / "pipeline.yaml"] if (root / "pipeline.yaml").is_file() else []
    found += sorted(p for p in root.glob("*/*/config.yaml"))
    for task_dir in sorted(p for p in root.glob("*/transfer/*") if p.is_dir()):
        # one config per task: the task's own, else its first trial's (trials differ only in SEED)
        first = sorted(task_dir.glob("trial*/config.yaml"))[:1]
        found += [task_dir / "config.yaml"] if (task_dir / "config.yaml").is_file() else first
    return [(str(p.relative_to(root)), p.read_text(encoding="utf-8", errors="replace")) for p in found]


def _steps_rows(state: dict[str, Any]) -> list[list[str]]:
    """Steps in run order (the plan's ``order``; else by start time), then a total line."""
    steps = state.get("steps") or {}
    order = {k: i for i, k in enumerate(state.get("order") or [])}
    keys = sorted(steps, key=lambda k: (order.get(k, len(order)), str(steps[k].get("started", "")), k))
    rows = [[key, steps[key].get("status", ""),
             fmt_duration(steps[key].get("wall_s")) if "wall_s" in steps[key] else "",
             fmt_duration(steps[key].get("cpu_s")) if "cpu_s" in steps[key] else ""] for key in keys]
    wall = sum(float(s.get("wall_s") or 0) for s in steps.values())
    cpu = sum(float(s.get("cpu_s") or 0) for s in steps.values())
    done = sum(s.get("status") == "done" for s in steps.values())
    rows.append([f"total ({len(steps)} steps)", f"{done} done", fmt_duration(wall), fmt_duration(cpu)])
    return rows


def _md(root: Path, tables: Sequence[Table], notes: Sequence[str], plots: Sequence[Path],
        state: dict[str, Any], env: dict[str, Any], configs: Sequence[tuple[str, str]],
        verdict: Sequence[Claim] = ()) -> str:
    from tabulate import tabulate

    lines = [f"# siambench report: {root.resolve().name}", "",
             f"Generated {dt.datetime.now().isoformat(timespec='seconds')} from `{root}`; "
             f"code version `{env.get('git') or 'unknown'}` (siambench {env.get('siambench')}). "
             "Every number of ours comes from the results files under this directory.", "",
             "## Verdict", "", render_verdict(verdict) if verdict else "(no claim can be tested on these runs)", "",
             "## Tables", "", render(tables, "md", notes), "## Plots", ""]
    lines += [f"![{p.stem}]({p.relative_to(p.parent.parent).as_posix()})\n" for p in plots] or ["(no plots)\n"]
    if state.get("steps"):
        lines += ["## Pipeline steps (run order)", "",
                  tabulate(_steps_rows(state), ["step", "status", "wall time", "CPU time"], tablefmt="github"), ""]
    lines += ["## Environment", "", "```json", json.dumps(env, indent=2, sort_keys=True), "```", "",
              "## Configs", ""]
    for rel, text in configs:
        lines += [f"<details><summary><code>{rel}</code></summary>", "", "```yaml", text.rstrip(), "```",
                  "", "</details>", ""]
    return "\n".join(lines)


def _html_table(t: Table) -> str:
    groups: list[list] = []
    for c in t.columns:
        if groups and groups[-1][0] == c.group:
            groups[-1][1] += 1
        else:
            groups.append([c.group, 1])
    head1 = "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in groups)
    head2 = "".join(f"<th>{html.escape(c.metric)}</th>" for c in t.columns)
    body = []
    for r in t.rows:
        cells = []
        for c in r.cells:
            text = html.escape(format_cell(c, "md", r.source == "ours" and not t.delta, t.delta))
            cells.append("<td>" + text.replace("**", "<b>", 1).replace("**", "</b>", 1) + "</td>")
        body.append(f'<tr class="{r.source}"><td>{html.escape(r.label)}</td><td>{r.source}</td>{"".join(cells)}</tr>')
    notes = "".join(f'<div class="note">{html.escape(n)}</div>' for n in t.notes)
    return (f'<div class="scroll"><table><caption>{html.escape(t.title)}</caption>'
            f'<tr><th rowspan="2">pre-train</th><th rowspan="2">source</th>{head1}</tr><tr>{head2}</tr>'
            f"{''.join(body)}</table></div>{notes}")


def _html_verdict(claims: Sequence[Claim]) -> str:
    esc = html.escape
    if not claims:
        return "<h2>Verdict</h2><p>(no claim can be tested on these runs)</p>"
    counts = verdict_counts(claims)
    rows = "".join(f'<tr><td>{i}</td><td>{esc(c.claim)}</td><td class="{c.mark.replace(" ", "-")}">{esc(c.mark)}'
                   f"</td><td>{esc(c.evidence)}</td><td>{esc(c.test)}</td></tr>" for i, c in enumerate(claims, 1))
    return (f"<h2>Verdict</h2><p><b>{esc(counts)}</b>: does this run reproduce the paper's claims? "
            "Mark: the mean difference against the threshold; significance: Welch's t over trials.</p>"
            '<div class="scroll"><table><tr><th>#</th><th>claim</th><th>mark</th><th>evidence</th>'
            f"<th>significance</th></tr>{rows}</table></div>")


def _html(root: Path, tables: Sequence[Table], notes: Sequence[str], plots: Sequence[Path],
          state: dict[str, Any], env: dict[str, Any], configs: Sequence[tuple[str, str]],
          verdict: Sequence[Claim] = ()) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>siambench report: {esc(root.name)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>siambench report: {esc(root.resolve().name)}</h1>",
             f"<p>Generated {dt.datetime.now().isoformat(timespec='seconds')} from <code>{esc(str(root))}</code>; "
             f"code version <code>{esc(str(env.get('git') or 'unknown'))}</code> (siambench "
             f"{esc(str(env.get('siambench')))}). Every number of ours comes from the results files under this "
             "directory. <b>Bold</b>: within 0.5 of the column's best (the paper's rule).</p>", _html_verdict(verdict),
             "<h2>Tables</h2>"]
    parts += [_html_table(t) for t in tables]
    if notes:
        parts.append("<h3>Notes on the results files</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul>")
    parts.append("<h2>Plots</h2>")
    for p in plots:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        parts.append(f'<p><img alt="{esc(p.stem)}" src="data:image/png;base64,{data}"></p>')
    if state.get("steps"):
        steps = _steps_rows(state)
        rows = "".join(f'<tr{" class=total" if i == len(steps) - 1 else ""}>'
                       + "".join(f"<td>{esc(str(x))}</td>" for x in r) + "</tr>" for i, r in enumerate(steps))
        head = "".join(f"<th>{h}</th>" for h in ("step", "status", "wall time", "CPU time"))
        parts.append(f"<h2>Pipeline steps (run order)</h2><table><tr>{head}</tr>{rows}</table>")
    parts.append(f"<h2>Environment</h2><pre>{esc(json.dumps(env, indent=2, sort_keys=True))}</pre><h2>Configs</h2>")
    parts += [f"<details><summary><code>{esc(rel)}</code></summary><pre>{esc(text)}</pre></details>"
              for rel, text in configs]
    return "\n".join(parts) + "\n</body></html>\n"


def write_report(runs_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into ``out_dir`` (default ``runs_dir``)."""
    root = Path(runs_dir)
    out = Path(out_dir) if out_dir is not None else root
    res = collect(root)
    tables, verdict = build_tables(res), build_verdict(res)
    labels = {n: e.get("label", n) for n, e in (res.state.get("entries") or {}).items()}
    from .plots import make_plots  # lazy: matplotlib only when a report is written, not for --help

    plots = make_plots(root, tables, labels, res.notes, out / "plots")
    env, configs = environment(), _configs(root)
    md, page = out / "report.md", out / "report.html"
    atomic_write_text(md, _md(root, tables, res.notes, plots, res.state, env, configs, verdict))
    atomic_write_text(page, _html(root, tables, res.notes, plots, res.state, env, configs, verdict))
    return md, page


def publish(runs_dir: str | Path, log: Callable[[str], Any] = print) -> None:
    """The end of ``siambench run``: print the tables with rows of ours and the verdict, write
    ``tables.{md,csv,tex,json}`` (every table) and the report into ``runs_dir``."""
    out = Path(runs_dir)
    res = collect(out)
    tables, verdict = build_tables(res), build_verdict(res)
    for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex"), ("json", "json")):
        atomic_write_text(out / f"tables.{ext}", render(tables, fmt, res.notes, verdict))
    # The console shows the tables with rows of ours and the verdict; tables.md also has the paper-only ones.
    ours = [t for t in tables if any(r.source == "ours" for r in t.rows)]
    log("\n" + render(ours, "md", res.notes, verdict))
    log(f"all tables: {out / 'tables.md'} (also .csv, .tex, .json)")
    md, page = write_report(out)
    log(f"report: {md} and {page}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siambench report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="OUTPUT_DIR of `siambench run` (or any results tree)")
    parser.add_argument("--out", metavar="DIR", help="write report.md, report.html and plots/ here (default: RUNS_DIR)")
    args = parser.parse_args(argv)
    try:
        md, page = write_report(args.runs_dir, args.out)
    except FileNotFoundError as e:
        print(f"siambench report: {e}", file=sys.stderr)
        return 2
    print(f"wrote {md} and {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
