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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from fvcore.common.config import CfgNode

from siambench.pretrain.utils.config import ConfigError, save_config
from siambench.pretrain.utils.errors import exit_2_on_user_error
from siambench.pretrain.utils.io import atomic_write_json

from ..report.report import publish
from ..report.results import STATE_FILE
from ..report.table_format import fmt_duration
from .pipeline_config import check_files, load_pipeline
from .pipeline_guard import check_reuse, expand_force, fingerprint, reset_outputs
from .pipeline_proc import SubprocessRunner, install_signal_handlers, restore_signal_handlers
from ..launchers.base import Launcher
from ..launchers.config import LAUNCHERS
from .preflight import env_for_checks, format_estimates
from .preflight import problems as preflight_problems
from .scheduler import JobScheduler, build_launcher, check_in_flight, extra_env, format_jobs
from .steps import PLAN_COLUMNS, Step, build_steps, eval_notes, synth_root

__all__ = ["StepRunner", "SubprocessRunner", "PipelineState", "run_pipeline", "format_plan", "build_parser",
           "main"]

# (step, log file, environment) -> exit status; injectable so tests can fake the steps.
StepRunner = Callable[[Step, Path, dict[str, str]], int]


def describe(step: Step) -> str:
    """The step as the command a user would type."""
    launcher = "siambench"
    if step.nproc > 1:
        launcher = f"torchrun --standalone --nproc_per_node={step.nproc} -m siambench.benchmarks.cli"
    return f"{launcher} {shlex.join(step.argv)}"


def _children_cpu_s() -> float:
    """User + system CPU seconds of all finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _children_written() -> int:
    """Bytes all finished child processes (and theirs) wrote to disk so far (Linux: block output, in
    512-byte units; what reached the page cache for a disk, also for files deleted since)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


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
            "budget": {"minutes": float(cfg.BUDGET.MINUTES), "disk_gb": float(cfg.BUDGET.DISK_GB)},
            "entries": {n: {"kind": e.KIND, "label": e.LABEL or n} for n, e in cfg.ENTRIES.items()},
            "notes": eval_notes(cfg),  # evaluations left out (no labels): the tables say so
            "steps": old.get("steps", {}),
            "created": old.get("created", _now()),
            "wall_s": old.get("wall_s", 0.0),  # all `siambench run`s of this OUTPUT_DIR, steps running
            "written_bytes": old.get("written_bytes", 0),  # what their steps wrote to disk
        }

    def step(self, key: str) -> dict[str, Any]:
        return self.data["steps"].get(key, {})

    def update(self, step: Step, **fields: Any) -> None:
        rec = self.data["steps"].setdefault(step.key, {})
        rec.update(entry=step.entry, name=step.name, family=step.family, **fields)
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)

    def add_run(self, seconds: float, written: int) -> None:
        """Add the wall time of one ``siambench run`` (steps run at once count once) and the bytes its
        steps wrote to disk (also what they deleted again, e.g. old checkpoints)."""
        self.data["wall_s"] = round(float(self.data.get("wall_s", 0.0)) + seconds, 1)
        self.data["written_bytes"] = int(self.data.get("written_bytes", 0)) + written
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


def run_pipeline(cfg: CfgNode, runner: StepRunner | None, pipeline_file: str = "", log=print,
                 force: Sequence[str] = (), verbose: bool = False, launcher: Launcher | None = None,
                 detach: bool = False) -> dict[str, str]:
    """Run every step that is not done yet; returns {step key: status}.

    Statuses: ``done`` (ran now), ``skipped`` (was already done), ``failed``,
    ``blocked`` (a step it needs is not done). KeyboardInterrupt marks the running step
    ``interrupted`` and propagates. ``force``: steps / entries / ``all`` to run again
    (:mod:`.pipeline_guard`). The console gets one line per finished step (with
    the ETA and the next step); ``verbose`` adds each step's command before it runs.
    ``launcher`` (e.g. SLURM): every step a job of it instead of a ``runner`` call
    (:mod:`.scheduler`; ``detach``: submit and return, the jobs left running ``submitted``).

    Raises:
        PipelineChanged: a finished step was made with other settings and is not forced
            (checked before anything is written).
        RunDirError: another runner holds ``OUTPUT_DIR/.lock`` (nothing removed or started).
    """
    out = Path(cfg.OUTPUT_DIR)
    steps = build_steps(cfg, split_trials=launcher is not None)
    state = PipelineState(out / STATE_FILE, cfg, pipeline_file)
    rerun = check_reuse(steps, state.data["steps"], expand_force(force, steps))
    check_in_flight(steps, state.data["steps"], rerun, launcher.name if launcher is not None else "local")
    from siambench.pretrain.utils.run_dir import lock_dir  # lazy: run_dir imports torch; --help/--dry-run stay light

    lock_dir(out)  # one runner per OUTPUT_DIR: a second one stops here, before --force removes a running step's dir
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
    if launcher is not None:  # every step a job (benchmarks/pipeline/scheduler.py)
        JobScheduler(cfg, todo, status, state, launcher, extra_env(env), log, detach).run()
        return status
    jobs = max(1, int(cfg.JOBS))
    if jobs > 1:  # share the cores: each step gets cores/JOBS threads (torch would take them all)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    _Scheduler(todo, status, state, runner, env, out, log, verbose, jobs).run()
    return status


class _Scheduler:
    """Runs the steps of ``todo`` (in plan order) as soon as the steps they need are done, at
    most ``jobs`` at once; the runner's calls run in threads that only wait on subprocesses.
    All bookkeeping (``pipeline_state.json``, the console) happens in the calling thread."""

    def __init__(self, todo: Sequence[Step], status: dict[str, str], state: PipelineState, runner: StepRunner,
                 env: dict[str, str], out: Path, log: Callable[[str], Any], verbose: bool, jobs: int) -> None:
        self.pending, self.status, self.state, self.runner = list(todo), status, state, runner
        self.env, self.out, self.log, self.verbose, self.jobs = env, out, log, verbose, jobs
        self.total, self.finished = len(todo), 0
        self.running: dict[Future, tuple[Step, float, float, Path, str]] = {}

    def run(self) -> None:
        start, written = time.time(), _children_written()
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="siambench-step") as pool:
            try:
                while self.pending or self.running:
                    self._start_ready(pool)
                    if not self.running:
                        continue  # everything left was just marked blocked
                    # A timeout, so that Ctrl-C / SIGTERM is seen at once while steps run in threads.
                    finished, _ = wait(self.running, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in sorted(finished, key=lambda f: self.running[f][1]):
                        self._finish(future, start)
            except KeyboardInterrupt:
                stop = getattr(self.runner, "stop_all", None)
                if stop is not None:
                    stop()  # end the steps' process trees; their threads then return
                for step, t0, *_ in self.running.values():
                    self.state.update(step, status="interrupted", wall_s=round(time.time() - t0, 1))
                names = ", ".join(step.key for step, *_ in self.running.values())
                self.log(f"\ninterrupted: {names}; run the same command again to resume")
                raise
            finally:
                self.state.add_run(time.time() - start, _children_written() - written)

    def _start_ready(self, pool: ThreadPoolExecutor) -> None:
        for step in list(self.pending):
            if len(self.running) >= self.jobs:
                return
            missing = [d for d in step.deps if self.status.get(d) not in ("done", "skipped")]
            if any(self._scheduled(d) for d in missing):
                continue  # a step it needs is still pending or running
            if missing:  # failed, blocked, or not in the plan
                self.pending.remove(step)
                self.finished += 1
                self.status[step.key] = "blocked"
                self.state.update(step, status="blocked", blocked_by=missing)
                self.log(f"[{self.finished}/{self.total}] {step.key}: blocked, needs {', '.join(missing)}")
                continue
            self.pending.remove(step)
            log_path = self.out / "logs" / f"{step.key.replace('/', '.')}.log"
            was = self.state.step(step.key).get("status")
            resuming = " (resuming)" if was in ("running", "interrupted") else ""
            if self.verbose or self.finished == 0 and not self.running:
                self.log(f"[{self.finished + 1}/{self.total}] {step.key}{resuming}: "
                         f"{describe(step) if self.verbose else 'running'}")
            self.state.update(step, status="running", started=_now(), log=str(log_path),
                              command=["siambench", *step.argv], fingerprint=fingerprint(step))
            future = pool.submit(self.runner, step, log_path, self.env)
            self.running[future] = (step, time.time(), _children_cpu_s(), log_path, resuming)

    def _scheduled(self, key: str) -> bool:
        return any(s.key == key for s in self.pending) or any(s.key == key for s, *_ in self.running.values())

    def _finish(self, future: Future, start: float) -> None:
        step, t0, cpu0, log_path, resuming = self.running[future]
        rc = future.result()  # a runner's exception (Ctrl-C inside it, a bug) propagates; the step stays running
        del self.running[future]
        wall = time.time() - t0
        if rc == 0 and not step.done():
            rc, why = -1, f"exited 0 but {', '.join(map(str, step.outputs))} is missing or incomplete"
        else:
            why = f"exit status {rc}, see {log_path}"
        self.status[step.key] = "done" if rc == 0 else "failed"
        self.finished += 1
        # CPU seconds too: on a shared machine they tell what the step costs on an idle one (with
        # JOBS > 1 they are those of every step that ended meanwhile: children are counted when reaped).
        cpu = {"cpu_s": round(_children_cpu_s() - cpu0, 1)} if self.jobs == 1 else {}
        self.state.update(step, status=self.status[step.key], returncode=rc, wall_s=round(wall, 1),
                          finished=_now(), jobs=self.jobs, **cpu)
        left = self.pending + [s for s, *_ in self.running.values()]
        if self.jobs > 1:  # what runs now: the next step in plan order may still wait for its inputs
            nxt = f" | running: {', '.join(s.key for s, *_ in self.running.values())}" if self.running else ""
        else:
            nxt = f" | next: {self.pending[0].key}" if self.pending else ""
        self.log(f"[{self.finished}/{self.total}] {step.key}{resuming}: "
                 f"{'done' if rc == 0 else 'FAILED (' + why + ')'} in {fmt_duration(wall)} | "
                 f"elapsed {fmt_duration(time.time() - start)} | {len(left)} left, "
                 f"ETA {_eta(left, self.state, self.jobs)}{nxt}")


def _eta(remaining: Sequence[Step], state: PipelineState, jobs: int = 1) -> str:
    """Sum over the remaining steps of their family's mean time (this and earlier runs),
    divided by ``jobs`` (steps run at once; an estimate).

    Families never timed yet (say, the first transfer while only pretraining has run)
    make the estimate a lower bound, shown as ``>= X``.
    """
    known = [state.estimate(s.family) for s in remaining]
    total = fmt_duration(sum(t for t in known if t is not None) / jobs)
    untimed = sum(t is None for t in known)
    return f">= {total} ({untimed} step{'s' * (untimed > 1)} not timed yet)" if untimed else total


def build_parser() -> argparse.ArgumentParser:
    """``siambench run``'s arguments; its flags may also follow the pipeline file and the overrides."""
    parser = argparse.ArgumentParser(prog="siambench run", description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", metavar="PIPELINE.yaml", help="pipeline file, e.g. configs/benchmarks/demo.yaml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan, the commands, what this machine lacks and the GPU-hours; run nothing")
    parser.add_argument("--force", metavar="STEP", action="append", default=[],
                        help="run STEP again (a step key like simsiam/pretrain, an entry name, or 'all'), and "
                             "what depends on it; its output directory is removed first. Repeatable")
    parser.add_argument("--launcher", choices=LAUNCHERS, default=None,
                        help="where the steps run: local subprocesses or SLURM batch jobs (LAUNCHER.SLURM.*); "
                             "default: the pipeline's LAUNCHER.NAME")
    parser.add_argument("--detach", action="store_true",
                        help="(slurm) submit every step and return; `siambench status OUTPUT_DIR` follows them, "
                             "`siambench run` again re-attaches")
    parser.add_argument("--verbose", action="store_true", help="copy every step's output to the console too")
    parser.add_argument("--quiet", action="store_true",
                        help="(the default) steps' output only to OUTPUT_DIR/logs/, one line per step here")
    parser.add_argument("opts", metavar="KEY VALUE", nargs="*", default=[],
                        help="pipeline overrides, e.g. OUTPUT_DIR runs/x TRANSFER.TRIALS 1")
    return parser


def _dry_run(cfg: CfgNode, steps: Sequence[Step], args: argparse.Namespace, lacking: Sequence[str]) -> int:
    """Print the plan, each step's command, the GPU-hours and what would stop a real run."""
    state = PipelineState(Path(cfg.OUTPUT_DIR) / STATE_FILE, cfg, args.pipeline)
    print(format_plan(steps, state))
    for s in steps:
        print(f"{s.key}: {'done' if s.done() else describe(s)}")
    print("\n" + format_estimates(steps, cfg))
    if args.launcher == "slurm" or (args.launcher is None and cfg.LAUNCHER.NAME == "slurm"):
        print("\n" + format_jobs(cfg, steps))
    try:
        check_reuse(steps, state.data["steps"], expand_force(args.force, steps))
    except ConfigError as e:
        print(f"warning: {e}")
    for p in lacking:
        print(f"warning: {p}")
    return 0


def _error(message: str) -> int:
    print(f"siambench run: error: {message}", file=sys.stderr)
    return 2


@exit_2_on_user_error("siambench run")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = load_pipeline(args.pipeline, args.opts)
    problems = check_files(cfg)
    if problems:
        return _error("the pipeline refers to missing files:\n  " + "\n  ".join(problems))
    launcher = build_launcher(cfg, args.launcher, args.pipeline, args.detach)
    steps = build_steps(cfg, split_trials=launcher is not None)
    with env_for_checks(cfg):
        lacking = preflight_problems(cfg, steps, count_gpus=launcher is None)
    if args.dry_run:
        return _dry_run(cfg, steps, args, lacking)
    if lacking:
        return _error(f"this machine cannot run the plan ({len(lacking)} problem{'s' * (len(lacking) > 1)}; "
                      "nothing was started):\n  " + "\n  ".join(lacking))
    previous = install_signal_handlers()
    try:
        status = run_pipeline(cfg, None if launcher else SubprocessRunner(echo=args.verbose), args.pipeline,
                              force=args.force, verbose=args.verbose, launcher=launcher, detach=args.detach)
    except KeyboardInterrupt:
        return 130
    finally:
        restore_signal_handlers(previous)
    if args.detach:
        print(f"siambench run: {sum(v == 'submitted' for v in status.values())} job(s) submitted; follow them with "
              f"`siambench status {cfg.OUTPUT_DIR}`, collect with `siambench run` again")
        return 0
    failed = sorted(k for k, v in status.items() if v in ("failed", "blocked"))
    if cfg.REPORT:
        publish(cfg.OUTPUT_DIR)
    if failed:
        print(f"siambench run: {len(failed)} step(s) not done: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"siambench run: all {len(status)} steps done "
          f"({sum(v == 'skipped' for v in status.values())} of them already done before this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
