"""``siambench run`` through a job launcher (``LAUNCHER.NAME slurm``): every step one batch job.

:class:`JobScheduler` submits a step as soon as the steps it needs are done, up to the
launcher's ``max_jobs`` in flight, polls the jobs and records each one in
``pipeline_state.json`` the moment it is submitted (``steps.<key>.job``: the job's handle;
``job_state``, ``node``, ``elapsed_s``, ``requeues``, ``reason``: its last look). A runner
started again on the same OUTPUT_DIR re-attaches to the recorded jobs that are not finished
(and, before submitting a step, looks for a job of it that was submitted but never recorded),
so no step is ever submitted twice; Ctrl-C leaves the jobs running. ``detach`` submits every
step at once, the ones that need others with ``--dependency=afterok`` (SLURM starts them when
their inputs are done; ``max_jobs`` is then not applied) and returns.

Each step asks what it needs (:func:`step_resources`): pretrain / supervised / lincls one task
per rank (``NUM_GPUS`` ranks, ``GPUS_PER_NODE`` per node, the SLURM path of
``pretrain/utils/dist.py``), a transfer trial one node with ``NUM_GPUS`` GPUs, or beyond
``GPUS_PER_NODE`` one task per node (``siambench transfer --dist-url slurm``: detectron2's launch
across the nodes), kNN one GPU, the data and convert steps none; and a time limit from the
pre-flight estimate (:func:`time_limit_min`). A job stopped before its end (time limit, preemption,
``scontrol requeue``) is requeued by SLURM and resumes from the step's own checkpoints: the
epoch pretrain / supervised / lincls were in when signalled (``--resume auto``, bit-exact), the
iteration of a transfer trial; finished trials are skipped, so a requeued step writes each result once.
"""
from __future__ import annotations

import math
import os
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from fvcore.common.config import CfgNode

from siambench.pretrain.utils.config import ConfigError

from ..launchers.base import JobHandle, JobState, JobStatus, Launcher, LauncherError, Resources
from ..launchers.config import build_slurm_launcher, slurm_resources
from ..report.table_format import fmt_duration
from .pipeline_guard import PipelineChanged, changes, fingerprint
from .preflight import estimate
from .steps import Step

__all__ = ["JobScheduler", "step_resources", "time_limit_min", "step_command", "check_slurm_plan",
           "check_in_flight", "in_flight_job", "build_launcher", "extra_env", "format_jobs"]

TIME_MARGIN = 1.5  # a step's time limit: its estimated wall time x this, plus TIME_EXTRA_MIN (start-up, eval)
TIME_EXTRA_MIN = 10
POLL_MIN_S, POLL_MAX_S = 1.0, 15.0  # poll interval: back to the minimum after any change, x1.5 while quiet
MAX_POLL_ERRORS = 20  # failed polls in a row (a busy or restarting controller) before the runner gives up
_RANKED = ("pretrain", "lincls")  # steps with one process per GPU (srun tasks)


def step_command(step: Step) -> list[str]:
    """The step's command in a job: ``python -m siambench.benchmarks.cli ARGV`` (one copy per task)."""
    return [sys.executable, "-m", "siambench.benchmarks.cli", *step.argv]


def _gpus(cfg: CfgNode, step: Step) -> int:
    """GPUs the step uses in all: its ranks (pretrain, lincls), NUM_GPUS (transfer), 1 (kNN), 0 (CPU steps)."""
    if step.name in ("data", "convert"):
        return 0
    if step.name.startswith("transfer:"):
        return int(cfg.NUM_GPUS)
    return step.nproc if step.name in _RANKED else 1


def time_limit_min(cfg: CfgNode, step: Step) -> int:
    """Minutes the step asks: the pre-flight GPU-hours over its GPUs, x TIME_MARGIN, + TIME_EXTRA_MIN;
    0 (the partition's limit) where there is no estimate (synthetic data). slurm_resources caps it."""
    hours, _ = estimate(step, cfg)
    if hours is None:
        return 0
    return math.ceil(hours / max(1, _gpus(cfg, step)) * 60 * TIME_MARGIN) + TIME_EXTRA_MIN


def step_resources(cfg: CfgNode, step: Step) -> Resources:
    """Nodes, tasks, GPUs (at most GPUS_PER_NODE a node; 0: a CPU cluster) and time limit of one step."""
    gpus, per_node = _gpus(cfg, step), int(cfg.LAUNCHER.SLURM.GPUS_PER_NODE)
    nodes, tasks = 1, 1
    if step.name in _RANKED and step.nproc > 1:
        tasks = min(step.nproc, per_node or step.nproc)
        nodes = math.ceil(step.nproc / tasks)
    elif step.name.startswith("transfer:") and per_node and gpus > per_node:  # one task per node: --dist-url slurm
        nodes = math.ceil(gpus / per_node)
    res = slurm_resources(cfg, nodes=nodes, tasks_per_node=tasks, gpus=gpus > 0,
                          time_min=time_limit_min(cfg, step))
    return replace(res, gpus_per_node=min(gpus, per_node)) if gpus else res


def format_jobs(cfg: CfgNode, steps: Sequence[Step]) -> str:
    """One line per step to run: the SLURM job it would be (nodes x tasks, GPUs a node, time limit)."""
    from tabulate import tabulate

    rows = []
    for s in steps:
        if s.done():
            continue
        r = step_resources(cfg, s)
        rows.append([s.key, r.nodes, r.tasks_per_node, r.gpus_per_node or "-",
                     f"{r.time_min} min" if r.time_min else "partition's"])
    return tabulate(rows, ["SLURM job of step", "nodes", "tasks/node", "GPUs/node", "time limit"],
                    tablefmt="simple", disable_numparse=True)


def check_slurm_plan(cfg: CfgNode, source: str) -> None:
    """ConfigError when NUM_GPUS does not fit LAUNCHER.SLURM.GPUS_PER_NODE (checked before submitting)."""
    n, per_node = int(cfg.NUM_GPUS), int(cfg.LAUNCHER.SLURM.GPUS_PER_NODE)
    if per_node and n > per_node and n % per_node:
        raise ConfigError(f"{source}: NUM_GPUS {n} is not a multiple of LAUNCHER.SLURM.GPUS_PER_NODE {per_node}; "
                          "training steps use whole nodes beyond one")


def in_flight_job(record: dict[str, Any]) -> dict[str, Any] | None:
    """The saved job handle of a step recorded as submitted and not finished, else None (also for a
    step a local run started again after its job had ended: the record keeps that job's last state)."""
    job = record.get("job")
    ended = record.get("job_state") in (JobState.DONE.value, JobState.FAILED.value)
    return job if record.get("status") == "running" and isinstance(job, dict) and not ended else None


def check_in_flight(steps: Sequence[Step], recorded: dict[str, dict[str, Any]], rerun: set[str],
                    launcher: str) -> None:
    """PipelineChanged (before anything is written) when a step recorded as a submitted job would be
    handled otherwise than by re-attaching: another launcher, ``--force``, or changed settings."""
    problems = []
    for s in steps:
        job = in_flight_job(recorded.get(s.key, {}))
        if job is None:
            continue
        what = f"{s.key}: submitted as {job.get('launcher')} job {job.get('job_id')}"
        if job.get("launcher") != launcher:
            problems.append(f"{what}; run with --launcher {job.get('launcher')} to follow it")
        elif s.key in rerun:
            problems.append(f"{what} and forced to run again")
        elif changes(s, recorded[s.key]):
            problems.append(f"{what} with other settings: {'; '.join(changes(s, recorded[s.key]))}")
    if problems:
        raise PipelineChanged("steps submitted before cannot be re-attached (nothing was submitted):\n  "
                              + "\n  ".join(problems) + "\nwait for them (`siambench status OUTPUT_DIR`) or "
                              "stop them first: siambench cancel OUTPUT_DIR STEP")


def build_launcher(cfg: CfgNode, name: str | None, source: str, detach: bool = False) -> Launcher | None:
    """The launcher of ``--launcher`` or ``LAUNCHER.NAME``; None for local steps (the subprocess runner)."""
    name = name or cfg.LAUNCHER.NAME
    if name == "local":
        if detach:
            raise ConfigError("--detach needs the slurm launcher (--launcher slurm or LAUNCHER.NAME slurm): "
                              "local steps end with the runner")
        return None
    check_slurm_plan(cfg, source)
    return build_slurm_launcher(cfg)


def _port(out: Path, key: str) -> str:
    """A rendezvous port per OUTPUT_DIR and step, so two multi-rank jobs on one node do not collide."""
    return str(20000 + zlib.crc32(f"{out.resolve()}:{key}".encode()) % 20000)


class JobScheduler:
    """Runs ``todo`` through ``launcher``; ``status`` (step key -> done/skipped/failed/blocked, and
    ``submitted`` for jobs left running by ``detach``) is filled in as steps end."""

    def __init__(self, cfg: CfgNode, todo: Sequence[Step], status: dict[str, str], state: Any,
                 launcher: Launcher, env: dict[str, str], log: Callable[[str], Any], detach: bool = False) -> None:
        self.cfg, self.pending, self.status, self.state = cfg, list(todo), status, state
        self.launcher, self.env, self.log, self.detach = launcher, env, log, detach
        self.out = Path(cfg.OUTPUT_DIR)
        self.flight: dict[str, tuple[Step, JobHandle]] = {}
        self.seen: dict[str, tuple] = {}  # job id -> last (state, requeues, node) written to the state file
        self.total, self.finished, self.poll_errors = len(todo), 0, 0

    def run(self) -> None:
        start, interval = time.time(), POLL_MIN_S
        try:
            self._attach_saved()
            while self.pending or self.flight:
                changed = self._submit_ready()
                if self.detach and not self.pending:
                    break
                if not self.flight:
                    continue
                time.sleep(interval)
                changed = self._poll_tolerant() or changed
                interval = POLL_MIN_S if changed else min(POLL_MAX_S, interval * 1.5)
        except KeyboardInterrupt:
            self.log(f"\nstopped following {len(self.flight)} job(s), which keep running; `siambench run` again "
                     f"re-attaches, `siambench cancel {self.out}` stops them")
            raise
        finally:
            self.state.add_run(time.time() - start, 0)
        for key in self.flight:
            self.status[key] = "submitted"

    def _log_path(self, step: Step) -> Path:
        return self.out / "logs" / f"{step.key.replace('/', '.')}.log"

    def _attach_saved(self) -> None:
        """Re-attach to the jobs recorded as submitted; a job that failed meanwhile is submitted again."""
        saved = {}
        for step in self.pending:
            job = in_flight_job(self.state.step(step.key))
            if job is not None:
                try:
                    saved[step.key] = (step, self.launcher.attach(job))
                except ValueError as e:
                    raise LauncherError(f"{self.out}/pipeline_state.json: {step.key}: {e}") from None
        if not saved:
            return
        statuses = self.launcher.poll_many(h for _, h in saved.values())
        for key, (step, handle) in saved.items():
            st = statuses[handle.job_id]
            if st.state == JobState.FAILED:
                self.log(f"{key}: job {handle.job_id} failed while no runner watched ({st.reason}); submitting again")
                continue
            self.pending.remove(step)
            self.flight[key] = (step, handle)
            self.log(f"{key}: re-attached to job {handle.job_id} ({st.state.value})")
            self._record(step, handle, st)

    def _submit_ready(self) -> bool:
        """Submit every step whose inputs are done (detach: also those whose inputs are in flight)."""
        changed = False
        for step in list(self.pending):
            if self.launcher.max_jobs and not self.detach and len(self.flight) >= self.launcher.max_jobs:
                break
            missing = [d for d in step.deps if self.status.get(d) not in ("done", "skipped")]
            if any(s.key in missing for s in self.pending):
                continue
            after = [self.flight[d][1] for d in missing if d in self.flight]
            if after and not self.detach:
                continue
            self.pending.remove(step)
            changed = True
            if len(after) < len(missing):  # failed, blocked, or not in the plan
                self._end(step, "blocked", f"needs {', '.join(d for d in missing if d not in self.flight)}",
                          blocked_by=[d for d in missing if d not in self.flight])
                continue
            self._submit(step, after)
        return changed

    def _submit(self, step: Step, after: Sequence[JobHandle]) -> None:
        log_path = self._log_path(step)
        found = self.launcher.find(step.key, log_path)
        if found:  # submitted by a runner that died before recording it
            handle = found[0]
            self.log(f"{step.key}: re-attached to job {handle.job_id} (submitted before, not recorded)")
        else:
            res = step_resources(self.cfg, step)
            if after:
                res = replace(res, extra=(*res.extra, f"--dependency=afterok:{':'.join(h.job_id for h in after)}",
                                          "--kill-on-invalid-dep=yes"))
            env = dict(self.env)
            if res.num_tasks > 1:
                env["MASTER_PORT"] = _port(self.out, step.key)
            handle = self.launcher.submit(step.key, step_command(step), log=log_path, cwd=Path.cwd(), env=env,
                                          resources=res)
            self.log(f"{step.key}: submitted job {handle.job_id}" + (f" (after {len(after)} job(s))" if after else ""))
        self.flight[step.key] = (step, handle)
        self.state.update(step, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"), log=str(log_path),
                          command=["siambench", *step.argv], fingerprint=fingerprint(step), job=handle.to_json(),
                          job_state=JobState.PENDING.value, requeues=0, node="", reason="")

    def _record(self, step: Step, handle: JobHandle, st: JobStatus) -> bool:
        """Write the job's state to the state file when it changed; True if it did."""
        now = (st.state, st.requeues, st.node)
        if self.seen.get(handle.job_id) == now:
            return False
        before = self.seen.get(handle.job_id)
        self.seen[handle.job_id] = now
        if before is not None and st.requeues > before[1]:
            self.log(f"{step.key}: job {handle.job_id} requeued ({st.requeues}x): {st.reason or 'stopped'}, "
                     "resumes from its last checkpoint")
        self.state.update(step, job_state=st.state.value, requeues=st.requeues, node=st.node, reason=st.reason,
                          **({"elapsed_s": round(st.elapsed_s, 1)} if st.elapsed_s is not None else {}))
        return True

    def _poll_tolerant(self) -> bool:
        """:meth:`_poll`, a controller that does not answer retried up to MAX_POLL_ERRORS times in a row."""
        try:
            changed = self._poll()
        except LauncherError as e:
            self.poll_errors += 1
            if self.poll_errors >= MAX_POLL_ERRORS:
                raise
            self.log(f"polling the jobs failed ({self.poll_errors}/{MAX_POLL_ERRORS}), trying again: {e}")
            return False
        self.poll_errors = 0
        return changed

    def _poll(self) -> bool:
        statuses = self.launcher.poll_many(h for _, h in self.flight.values())
        changed = False
        for key, (step, handle) in list(self.flight.items()):
            st = statuses[handle.job_id]
            changed = self._record(step, handle, st) or changed
            if st.state.finished:
                del self.flight[key]
                self._finish(step, handle, st)
                changed = True
        return changed

    def _finish(self, step: Step, handle: JobHandle, st: JobStatus) -> None:
        where = f"job {handle.job_id}" + (f" on {st.node}" if st.node else "") + \
                (f", {st.requeues} requeue(s)" if st.requeues else "")
        bad_deps = [d for d in step.deps if self.status.get(d) in ("failed", "blocked")]
        if st.state == JobState.DONE and step.done():
            self._end(step, "done", where, elapsed=st.elapsed_s)
        elif st.state == JobState.DONE:
            self._end(step, "failed", f"exited 0 but {', '.join(map(str, step.outputs))} is missing or incomplete "
                                      f"({where})")
        elif bad_deps:  # detach: SLURM cancelled it because an input failed
            self._end(step, "blocked", f"needs {', '.join(bad_deps)}", blocked_by=bad_deps)
        else:
            self._end(step, "failed", f"{st.reason} ({where}), see {handle.log}", elapsed=st.elapsed_s)

    def _end(self, step: Step, status: str, detail: str, elapsed: float | None = None, **fields: Any) -> None:
        self.status[step.key] = status
        self.finished += 1
        wall = {"wall_s": round(elapsed, 1)} if elapsed is not None else {}
        reason = {} if status == "done" else {"reason": detail}
        self.state.update(step, status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), **wall, **reason,
                          **fields)
        took = f" in {fmt_duration(elapsed)}" if elapsed is not None else ""
        word = {"done": "done", "failed": "FAILED", "blocked": "blocked"}[status]
        self.log(f"[{self.finished}/{self.total}] {step.key}: {word}{took} ({detail}) | "
                 f"{len(self.flight)} job(s) in flight, {len(self.pending)} to submit")


def extra_env(env: dict[str, str]) -> dict[str, str]:
    """The variables ``env`` adds to or changes in this process's environment (what a job must export;
    sbatch passes the rest of the submitting environment itself)."""
    return {k: v for k, v in env.items() if os.environ.get(k) != v}
