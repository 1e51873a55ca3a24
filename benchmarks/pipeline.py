"""``siambench run PIPELINE.yaml [KEY VALUE ...]``: the whole benchmark in one command.

For each entry of the pipeline (SimSiam pretraining, a supervised baseline, scratch,
or an existing checkpoint) run pretrain -> kNN / linear eval -> convert -> transfer on
every task x trials, each step a ``siambench`` subprocess (torchrun when NUM_GPUS > 1)
so one step's crash never takes the runner down. Idempotent and resumable: a step
whose output is complete is skipped; an interrupted pretrain/lincls continues from its
checkpoint (``--resume auto``) and transfer resumes its own trials. Prints the plan
first and the progress with an ETA after every step; step status and timings go to
``OUTPUT_DIR/pipeline_state.json`` (atomic), each step's output to
``OUTPUT_DIR/logs/``. At the end it prints the table and writes the report.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from fvcore.common.config import CfgNode

from pretrain.utils.config import ConfigError, save_config
from pretrain.utils.io import atomic_write_json

from .pipeline_config import check_files, load_pipeline
from .pipeline_guard import check_reuse, expand_force, fingerprint, reset_outputs
from .pipeline_proc import SubprocessRunner, install_signal_handlers, restore_signal_handlers
from .preflight import env_for_checks, format_estimates
from .preflight import problems as preflight_problems
from .results import STATE_FILE
from .steps import PLAN_COLUMNS, Step, build_steps, synth_root

__all__ = ["StepRunner", "SubprocessRunner", "PipelineState", "run_pipeline", "format_plan", "main"]

# (step, log file, environment) -> exit status; injectable so tests can fake the steps.
StepRunner = Callable[[Step, Path, dict[str, str]], int]


def describe(step: Step) -> str:
    """The step as the command a user would type."""
    launcher = "siambench"
    if step.nproc > 1:
        launcher = f"torchrun --standalone --nproc_per_node={step.nproc} -m benchmarks.cli"
    return f"{launcher} {shlex.join(step.argv)}"


def _children_cpu_s() -> float:
    """User + system CPU seconds of all finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class PipelineState:
    """``pipeline_state.json``: entries (kind, label) and per-step status/timings."""

    def __init__(self, path: Path, cfg: CfgNode, pipeline_file: str) -> None:
        self.path = path
        old: dict[str, Any] = {}
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                old = {}  # a hand-edited/corrupt state only loses the timings used for the ETA
        self.data: dict[str, Any] = {
            "pipeline": pipeline_file,
            "synthetic": bool(cfg.SYNTH.ENABLED),
            "entries": {n: {"kind": e.KIND, "label": e.LABEL or n} for n, e in cfg.ENTRIES.items()},
            "steps": old.get("steps", {}),
            "created": old.get("created", _now()),
        }

    def step(self, key: str) -> dict[str, Any]:
        return self.data["steps"].get(key, {})

    def update(self, step: Step, **fields: Any) -> None:
        rec = self.data["steps"].setdefault(step.key, {})
        rec.update(entry=step.entry, name=step.name, family=step.family, **fields)
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)

    def estimate(self, family: str) -> float | None:
        """Mean wall time of finished steps of a family (this and earlier runs)."""
        times = [s["wall_s"] for s in self.data["steps"].values()
                 if s.get("family", s.get("name")) == family and s.get("status") == "done" and "wall_s" in s]
        return sum(times) / len(times) if times else None


def format_plan(steps: Sequence[Step], state: PipelineState | None = None) -> str:
    """Entries x steps table: done / todo / resume (interrupted before) / blank (not run)."""
    from tabulate import tabulate

    columns = [c for c in ("data", *PLAN_COLUMNS) if any(s.name == c for s in steps)]
    columns += list(dict.fromkeys(s.name for s in steps if s.name.startswith("transfer:")))
    rows: dict[str, dict[str, str]] = {}
    for s in steps:
        status = "done" if s.done() else "todo"
        if status == "todo" and state is not None and state.step(s.key).get("status") in ("running", "interrupted",
                                                                                          "failed"):
            status = "resume" if s.name in ("pretrain", "lincls") or s.name.startswith("transfer:") else "rerun"
        rows.setdefault(s.entry or "(dataset)", {})[s.name] = status
    table = [[entry, *(cells.get(c, "") for c in columns)] for entry, cells in rows.items()]
    headers = ["entry", *(c.replace("transfer:", "") for c in columns)]
    return tabulate(table, headers=headers, tablefmt="simple")


def run_pipeline(cfg: CfgNode, runner: StepRunner, pipeline_file: str = "", log=print,
                 force: Sequence[str] = (), verbose: bool = False) -> dict[str, str]:
    """Run every step that is not done yet; returns {step key: status}.

    Statuses: ``done`` (ran now), ``skipped`` (was already done), ``failed``,
    ``blocked`` (a step it needs is not done). KeyboardInterrupt marks the running step
    ``interrupted`` and propagates. ``force``: steps / entries / ``all`` to run again
    (:mod:`benchmarks.pipeline_guard`). The console gets one line per finished step (with
    the ETA and the next step); ``verbose`` adds each step's command before it runs.

    Raises:
        PipelineChanged: a finished step was made with other settings and is not forced
            (checked before anything is written).
    """
    out = Path(cfg.OUTPUT_DIR)
    steps = build_steps(cfg)
    state = PipelineState(out / STATE_FILE, cfg, pipeline_file)
    rerun = check_reuse(steps, state.data["steps"], expand_force(force, steps))
    reset_outputs(steps, rerun, out, log)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out, "pipeline.yaml")
    state.data["order"] = [s.key for s in steps]  # the report lists steps in run order
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if cfg.SYNTH.ENABLED:
        env["SIAMBENCH_SYNTH"] = str(synth_root(cfg).resolve())

    log(f"siambench run: {len(steps)} steps in {out}\n{format_plan(steps, state)}\n")
    log(f"each step's output: {out / 'logs'}/<step>.log" + ("" if verbose else " (--verbose: on the console too)"))
    status: dict[str, str] = {}
    todo = [s for s in steps if not s.done()]
    for s in steps:
        if s not in todo:  # check_reuse made sure its settings are the current ones
            status[s.key] = "skipped"
            if state.step(s.key).get("status") != "done":  # produced outside this runner, or by an older one
                state.update(s, status="done")
    start, remaining = time.time(), list(todo)
    for i, step in enumerate(todo, 1):
        remaining.remove(step)
        missing = [d for d in step.deps if status.get(d) not in ("done", "skipped")]
        if missing:
            status[step.key] = "blocked"
            state.update(step, status="blocked", blocked_by=missing)
            log(f"[{i}/{len(todo)}] {step.key}: blocked, needs {', '.join(missing)}")
            continue
        log_path = out / "logs" / f"{step.key.replace('/', '.')}.log"
        was = state.step(step.key).get("status")
        resuming = " (resuming)" if was in ("running", "interrupted") else ""
        if verbose or i == 1:
            log(f"[{i}/{len(todo)}] {step.key}{resuming}: {describe(step) if verbose else 'running'}")
        t0, cpu0 = time.time(), _children_cpu_s()
        state.update(step, status="running", started=_now(), log=str(log_path), command=["siambench", *step.argv],
                     fingerprint=fingerprint(step))
        try:
            rc = runner(step, log_path, env)
        except KeyboardInterrupt:
            state.update(step, status="interrupted", wall_s=round(time.time() - t0, 1))
            log(f"\ninterrupted: {step.key}; run the same command again to resume")
            raise
        wall = time.time() - t0
        if rc == 0 and not step.done():
            rc, why = -1, f"exited 0 but {', '.join(map(str, step.outputs))} is missing or incomplete"
        else:
            why = f"exit status {rc}, see {log_path}"
        status[step.key] = "done" if rc == 0 else "failed"
        # CPU seconds too: on a shared machine they tell what the step costs on an idle one.
        state.update(step, status=status[step.key], returncode=rc, wall_s=round(wall, 1),
                     cpu_s=round(_children_cpu_s() - cpu0, 1), finished=_now())
        eta = _eta(remaining, state)
        log(f"[{i}/{len(todo)}] {step.key}{resuming}: {'done' if rc == 0 else 'FAILED (' + why + ')'} in "
            f"{fmt_duration(wall)} | elapsed {fmt_duration(time.time() - start)} | "
            f"{len(remaining)} left, ETA {eta}" + (f" | next: {remaining[0].key}" if remaining else ""))
    return status


def _eta(remaining: Sequence[Step], state: PipelineState) -> str:
    """Sum over the remaining steps of their family's mean time (this and earlier runs).

    Families never timed yet (say, the first transfer while only pretraining has run)
    make the estimate a lower bound, shown as ``>= X``.
    """
    known = [state.estimate(s.family) for s in remaining]
    total = fmt_duration(sum(t for t in known if t is not None))
    untimed = sum(t is None for t in known)
    return f">= {total} ({untimed} step{'s' * (untimed > 1)} not timed yet)" if untimed else total


def _finish(cfg: CfgNode) -> None:
    """Print the table and write tables + report (every number from the runs in OUTPUT_DIR)."""
    from pretrain.utils.io import atomic_write_text

    from .report import write_report
    from .results import collect
    from .table import build_tables
    from .table_format import render
    from .verdict import build_verdict

    out = Path(cfg.OUTPUT_DIR)
    res = collect(out)
    tables, verdict = build_tables(res), build_verdict(res)
    for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex"), ("json", "json")):
        atomic_write_text(out / f"tables.{ext}", render(tables, fmt, res.notes, verdict))
    # The console shows the tables with rows of ours and the verdict; tables.md also has the paper-only ones.
    ours = [t for t in tables if any(r.source == "ours" for r in t.rows)]
    print("\n" + render(ours, "md", res.notes, verdict))
    print(f"all tables: {out / 'tables.md'} (also .csv, .tex, .json)")
    md, html = write_report(out)
    print(f"report: {md} and {html}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siambench run", description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", metavar="PIPELINE.yaml", help="pipeline file, e.g. configs/benchmarks/demo.yaml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan, the commands, what this machine lacks and the GPU-hours; run nothing")
    parser.add_argument("--force", metavar="STEP", action="append", default=[],
                        help="run STEP again (a step key like simsiam/pretrain, an entry name, or 'all'), and "
                             "what depends on it; its output directory is removed first. Repeatable")
    parser.add_argument("--verbose", action="store_true", help="copy every step's output to the console too")
    parser.add_argument("--quiet", action="store_true",
                        help="(the default) steps' output only to OUTPUT_DIR/logs/, one line per step here")
    parser.add_argument("opts", metavar="KEY VALUE", nargs=argparse.REMAINDER, default=[],
                        help="pipeline overrides, e.g. OUTPUT_DIR runs/x TRANSFER.TRIALS 1")
    args = parser.parse_args(argv)
    opts = list(args.opts)
    for flag in ("--dry-run", "--quiet", "--verbose"):  # also accepted after the pipeline file, among the overrides
        while flag in opts[::2]:
            del opts[2 * opts[::2].index(flag)]
            setattr(args, flag[2:].replace("-", "_"), True)
    while "--force" in opts[::2]:
        i = 2 * opts[::2].index("--force")
        args.force.append(opts[i + 1] if i + 1 < len(opts) else "")
        del opts[i:i + 2]
    try:
        cfg = load_pipeline(args.pipeline, opts)
    except ConfigError as e:
        print(f"siambench run: error: {e}", file=sys.stderr)
        return 2
    problems = check_files(cfg)
    if problems:
        print("siambench run: error: the pipeline refers to missing files:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 2
    steps = build_steps(cfg)
    with env_for_checks(cfg):
        lacking = preflight_problems(cfg, steps)
    if args.dry_run:
        state = PipelineState(Path(cfg.OUTPUT_DIR) / STATE_FILE, cfg, args.pipeline)
        print(format_plan(steps, state))
        for s in steps:
            print(f"{s.key}: {'done' if s.done() else describe(s)}")
        print("\n" + format_estimates(steps, cfg))
        try:
            check_reuse(steps, state.data["steps"], expand_force(args.force, steps))
        except ConfigError as e:
            print(f"warning: {e}")
        for p in lacking:
            print(f"warning: {p}")
        return 0
    if lacking:
        print(f"siambench run: error: this machine cannot run the plan ({len(lacking)} problem"
              f"{'s' * (len(lacking) > 1)}; nothing was started):\n  " + "\n  ".join(lacking), file=sys.stderr)
        return 2
    previous = install_signal_handlers()
    try:
        status = run_pipeline(cfg, SubprocessRunner(echo=args.verbose), args.pipeline, force=args.force,
                              verbose=args.verbose)
    except ConfigError as e:  # PipelineChanged, a bad --force: before anything was written
        print(f"siambench run: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        restore_signal_handlers(previous)
    failed = sorted(k for k, v in status.items() if v in ("failed", "blocked"))
    if cfg.REPORT:
        _finish(cfg)
    if failed:
        print(f"siambench run: {len(failed)} step(s) not done: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"siambench run: all {len(status)} steps done "
          f"({sum(v == 'skipped' for v in status.values())} of them already done before this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
