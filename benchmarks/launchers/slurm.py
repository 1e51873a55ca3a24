"""Steps as SLURM batch jobs: ``sbatch`` a script, ``scontrol`` to poll, ``scancel`` to cancel.

For a step with log ``L`` (say ``logs/pretrain_x.log``) the launcher writes ``L.sbatch`` (the
batch script: ``sbatch logs/pretrain_x.log.sbatch`` reruns the step by hand) and the job
appends one line per event to ``L.events``: ``JOBID UNIXTIME RESTARTS EVENT [DETAIL]`` with
EVENT ``start`` (DETAIL: node), ``exit`` (the command's exit code), ``requeue``, ``stopped``
(SLURM stopped the job: cancel, requeue, preemption), ``done`` or ``failed`` (DETAIL: why).
Both live next to the log, so OUTPUT_DIR must be on a file system the compute nodes share.

Time limits and preemption: the job asks ``--signal=B:USR1@SIGNAL_DELAY_S`` and ``--requeue``.
On USR1 the batch shell sends SIGTERM to the command (the signal SLURM itself sends at any
stop), waits for it to exit and, unless it exited 0, requeues the job with ``scontrol requeue``.
A requeued job starts again with ``SLURM_RESTART_COUNT`` one higher (the cluster may delay it:
SLURM 22.05 holds a requeued job for about 2 minutes) and the command resumes from its own
last checkpoint. A job started more
than ``max_requeues`` times fails at once with that reason, whoever requeued it.

State: ``scontrol show job`` while the controller knows the job (``MinJobAge`` after its end,
300 s by default), the events file after that: no accounting database (``sacct``) is needed.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .base import JobHandle, JobState, JobStatus, Launcher, LauncherError, Resources

__all__ = ["SlurmLauncher", "sbatch_options", "render_script", "read_events", "decide_status",
           "parse_scontrol", "parse_duration"]

# A requeued job that still shows an end state this long after its stop has ended for good (e.g. SLURM
# killed its next start: "non-startable batch job"). 60: SLURM's default KillWait (30 s) plus margin.
REQUEUE_SETTLE_S = 60
CMD_TIMEOUT_S = 60  # one sbatch/scontrol/scancel call (a busy controller answers slowly)
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
            "RESIZING", "SPECIAL_EXIT", "POWER_UP_NODE", "UPDATE_DB"}


def sbatch_options(res: Resources, *, name: str, log: Path, cwd: Path, signal_delay_s: int) -> list[str]:
    """The ``#SBATCH`` options of one step (a list of ``--key=value``)."""
    opts = [f"--job-name={name}", f"--output={log}", "--open-mode=append", f"--chdir={cwd}",
            f"--nodes={res.nodes}", f"--ntasks-per-node={res.tasks_per_node}", "--requeue",
            f"--signal=B:USR1@{signal_delay_s}"]
    if res.gpus_per_node:
        opts.append(f"--gpus-per-node={res.gpus_per_node}")
        opts += [f"--cpus-per-gpu={res.cpus_per_gpu}"] if res.cpus_per_gpu else []
        opts += [f"--mem-per-gpu={int(res.mem_per_gpu_gb * 1024)}M"] if res.mem_per_gpu_gb else []
    else:
        opts += [f"--cpus-per-task={res.cpus_per_task}"] if res.cpus_per_task else []
        opts += [f"--mem={int(res.mem_gb * 1024)}M"] if res.mem_gb else []
    for key, value in (("time", res.time_min), ("partition", res.partition), ("account", res.account),
                       ("qos", res.qos), ("constraint", res.constraint)):
        if value:
            opts.append(f"--{key}={value}")
    return opts + list(res.extra)


# The batch shell: runs the command in the background so that it can take USR1/TERM while it
# waits; ``wait`` returns early when a trapped signal arrives, hence the loop (an exit status
# of 127 after the first wait means the child was already reaped: keep the status we have).
# Under srun the ranks get SIGTERM from ``scancel --signal=TERM`` (every step's tasks): srun
# itself, sent SIGTERM, kills its tasks with SIGKILL (measured with SLURM 22.05).
_BODY = r"""
restarts=${SLURM_RESTART_COUNT:-0}
note() { echo "$SLURM_JOB_ID $(date +%s) $restarts $*" >> "$events"; }
if (( restarts > max_requeues )); then
  note failed "requeued $restarts times, more than the $max_requeues allowed (LAUNCHER.SLURM.MAX_REQUEUES)"
  exit 1
fi
why=""; child=""; rc=""
on_signal() {
  why=$1; interrupted=1
  [[ -z $child ]] && return
  if (( tasks > 1 )); then scancel --signal=TERM "$SLURM_JOB_ID" 2>/dev/null; else kill -TERM "$child" 2>/dev/null; fi
}
trap 'on_signal "time limit"' USR1
trap 'on_signal stopped' TERM
note start "${SLURMD_NODENAME:-$(hostname)}"
echo "===== $(date -Is) job $SLURM_JOB_ID (restart $restarts) on ${SLURM_JOB_NODELIST:-?}: $command_text"
"${command[@]}" &
child=$!
interrupted=1
while (( interrupted )); do
  interrupted=0
  wait "$child"; status=$?
  if (( status == 127 )) && [[ -n $rc ]]; then break; fi
  rc=$status
done
note exit "$rc"
if (( rc == 0 )); then note done; exit 0; fi
if [[ $why == "time limit" ]]; then
  if (( restarts < max_requeues )); then
    note requeue "time limit"
    trap '' TERM
    scontrol requeue "$SLURM_JOB_ID" && exit 0
    note failed "time limit: scontrol requeue failed"; exit "$rc"
  fi
  note failed "time limit reached after $restarts requeues (LAUNCHER.SLURM.MAX_REQUEUES=$max_requeues)"
  exit "$rc"
fi
if [[ $why == stopped ]]; then note stopped; exit "$rc"; fi
note failed "exit code $rc"
exit "$rc"
"""


def _quote_option(option: str) -> str:
    """``--key=value`` with the value quoted for an ``#SBATCH`` line (sbatch reads shell quotes)."""
    key, eq, value = option.partition("=")
    return f"{key}={shlex.quote(value)}" if eq else option


def render_script(argv: Sequence[str], *, options: Sequence[str], events: Path, env: Mapping[str, str],
                  max_requeues: int, num_tasks: int) -> str:
    """The batch script of one step (see the module docstring for what it does)."""
    command = list(argv)
    if num_tasks > 1:  # one copy per task; a failing rank stops the others
        command = ["srun", "--kill-on-bad-exit=1", *command]
    lines = ["#!/bin/bash", *(f"#SBATCH {_quote_option(opt)}" for opt in options),
             "# Written by siambench (benchmarks/launchers/slurm.py); `sbatch` this file reruns the step.",
             f"events={shlex.quote(str(events))}", f"max_requeues={int(max_requeues)}", f"tasks={int(num_tasks)}",
             f"command=({' '.join(shlex.quote(a) for a in command)})",
             f"command_text={shlex.quote(shlex.join(command))}",
             *(f"export {k}={shlex.quote(str(v))}" for k, v in sorted(env.items()))]
    return "\n".join(lines) + "\n" + _BODY.lstrip("\n")


@dataclass(frozen=True)
class Event:
    time: float
    restarts: int
    kind: str
    detail: str


def read_events(path: Path, job_id: str) -> list[Event]:
    """The events of job ``job_id`` in ``path`` (other jobs' lines and torn lines skipped)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        parts = line.split(" ", 4)
        if len(parts) < 4 or parts[0] != job_id:
            continue
        try:
            events.append(Event(float(parts[1]), int(parts[2]), parts[3], parts[4] if len(parts) > 4 else ""))
        except ValueError:
            continue
    return events


def parse_duration(text: str) -> float | None:
    """SLURM's ``[D-]HH:MM:SS`` (or ``MM:SS``) in seconds; None if not a duration."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse_scontrol(text: str) -> dict[str, dict[str, str]]:
    """``scontrol show job -o`` (one job per line, ``Key=Value`` words) by JobId."""
    jobs = {}
    for line in text.splitlines():
        info = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if "JobId" in info:
            jobs[info["JobId"]] = info
    return jobs


def decide_status(info: Mapping[str, str], events: Sequence[Event], job_id: str) -> JobStatus:
    """A job's :class:`JobStatus` from what the controller says (``info``; {} once it forgot the
    job) and what the job wrote (``events``); an event ``done``/``failed`` of the current run wins."""
    restarts = int(info.get("Restarts", max((e.restarts for e in events), default=0)))
    current = [e for e in events if e.restarts == restarts]
    node = info.get("BatchHost") or next((e.detail for e in reversed(current) if e.kind == "start"), "")
    node = "" if node == "(null)" else node
    elapsed = parse_duration(info.get("RunTime", ""))
    if elapsed is None and current:
        elapsed = current[-1].time - current[0].time
    common = {"requeues": restarts, "node": node, "elapsed_s": elapsed}
    final = next((e for e in reversed(current) if e.kind in ("done", "failed")), None)
    if final is not None:
        return JobStatus(JobState.DONE if final.kind == "done" else JobState.FAILED, final.detail, **common)
    state = info.get("JobState", "")
    if _requeue_in_progress(state, restarts, events):
        return JobStatus(JobState.REQUEUED, "requeue in progress", **common)
    if not info:
        exits = [e.detail for e in current if e.kind == "exit"]
        why = (f"exit code {exits[-1]}" if exits else
               f"SLURM no longer knows job {job_id} and the job wrote no result")
        return JobStatus(JobState.FAILED, why, **common)
    if state in _PENDING:
        reason = info.get("Reason", "")
        return JobStatus(JobState.REQUEUED if restarts else JobState.PENDING,
                         "" if reason == "None" else reason, **common)
    if state in _RUNNING:
        return JobStatus(JobState.RUNNING, **common)
    if state == "COMPLETED":
        return JobStatus(JobState.DONE, **common)
    reason = "cancelled" if state == "CANCELLED" else f"{state} (reason {info.get('Reason', '?')}, " \
                                                    f"exit code {info.get('ExitCode', '?')})"
    return JobStatus(JobState.FAILED, reason, **common)


def _requeue_in_progress(state: str, restarts: int, events: Sequence[Event]) -> bool:
    """A requeued job between runs: for a moment the controller shows the stopped run's end state
    (FAILED, COMPLETED) with the new restart count, before PENDING (seen with SLURM 22.05 after
    ``scontrol requeue``). True when the current run wrote nothing yet and the previous one ended
    ``stopped``/``requeue`` less than REQUEUE_SETTLE_S ago."""
    if not state or state in _PENDING or state in _RUNNING or restarts < 1:
        return False
    if any(e.restarts == restarts for e in events):
        return False
    previous = [e for e in events if e.restarts == restarts - 1]
    return bool(previous) and previous[-1].kind in ("stopped", "requeue") and \
        time.time() - previous[-1].time < REQUEUE_SETTLE_S


def _paths(log: Path) -> tuple[Path, Path]:
    """(batch script, events file) of the step whose log is ``log``."""
    return log.with_name(log.name + ".sbatch"), log.with_name(log.name + ".events")


class SlurmLauncher(Launcher):
    """Submits each step with ``sbatch``; ``max_requeues`` and ``signal_delay_s`` as in
    ``LAUNCHER.SLURM`` (benchmarks/launchers/config.py)."""

    name = "slurm"

    def __init__(self, *, max_requeues: int = 3, signal_delay_s: int = 120, max_jobs: int = 0,
                 job_prefix: str = "siambench") -> None:
        self.max_requeues = max_requeues
        self.signal_delay_s = signal_delay_s
        self.max_jobs = max_jobs
        self.job_prefix = job_prefix

    def _call(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
        try:
            res = subprocess.run(list(argv), capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
        except FileNotFoundError:
            raise LauncherError(f"{argv[0]} not found: LAUNCHER.NAME slurm runs on a SLURM cluster's login "
                                "node (with sbatch, scontrol, scancel on PATH)") from None
        except subprocess.TimeoutExpired:
            raise LauncherError(f"{shlex.join(argv)} did not answer in {CMD_TIMEOUT_S} s; "
                                "is the SLURM controller up (sinfo)?") from None
        if check and res.returncode != 0:
            msg = (res.stderr or res.stdout).strip().replace("\n", "; ")
            raise LauncherError(f"{shlex.join(argv[:2])} failed: {msg}")
        return res

    def submit(self, name: str, argv: Sequence[str], *, log: Path, cwd: Path | None = None,
               env: Mapping[str, str] | None = None, resources: Resources = Resources()) -> JobHandle:
        log = Path(log).resolve()
        script, events = _paths(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        options = sbatch_options(resources, name=f"{self.job_prefix}:{name}", log=log,
                                 cwd=Path(cwd or os.getcwd()).resolve(), signal_delay_s=self.signal_delay_s)
        script.write_text(render_script(argv, options=options, events=events, env=dict(env or {}),
                                        max_requeues=self.max_requeues, num_tasks=resources.num_tasks))
        res = self._call(["sbatch", "--parsable", str(script)])
        job_id = res.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise LauncherError(f"sbatch {script} answered {res.stdout.strip()!r}, not a job id")
        return JobHandle(launcher=self.name, job_id=job_id, name=name, log=str(log))

    def find(self, name: str, log: Path) -> list[JobHandle]:
        """This user's pending/running jobs whose batch script is the step's ``LOG.sbatch`` (unique
        per OUTPUT_DIR and step, unlike the job name), oldest first."""
        log = Path(log).resolve()
        script = str(_paths(log)[0])
        out = self._call(["squeue", "--me", "-h", "-o", "%i|%o"]).stdout
        ids = sorted((int(i) for i, _, cmd in (ln.partition("|") for ln in out.splitlines())
                      if cmd.strip() == script and i.strip().isdigit()))
        return [JobHandle(launcher=self.name, job_id=str(i), name=name, log=str(log)) for i in ids]

    def poll_many(self, handles: Iterable[JobHandle]) -> dict[str, JobStatus]:
        return {h.job_id: decide_status(self._job_info(h.job_id), read_events(_paths(Path(h.log))[1], h.job_id),
                                        h.job_id) for h in handles}

    def _job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` of one job ({} once the controller forgot it). One query per job:
        all jobs at once (``scontrol show job``) lists every user's jobs, megabytes on a big cluster."""
        res = self._call(["scontrol", "show", "job", "-o", job_id], check=False)
        if res.returncode == 0:
            return parse_scontrol(res.stdout).get(job_id, {})
        msg = (res.stderr or res.stdout).strip()
        if "invalid job id" in msg.lower():
            return {}
        raise LauncherError(f"scontrol show job {job_id} failed: {msg}")

    def cancel(self, handle: JobHandle) -> None:
        status = self.poll(handle)
        if status.state.finished:
            return
        self._call(["scancel", handle.job_id])
        with open(_paths(Path(handle.log))[1], "a") as f:  # the final word, also after MinJobAge
            f.write(f"{handle.job_id} {time.time():.0f} {status.requeues} failed cancelled\n")
