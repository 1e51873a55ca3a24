"""What every launcher of pipeline steps offers: submit a command, poll it, cancel it.

A launcher runs one step command (an argv list with extra environment variables, a working
directory and a log file) with the resources it asks for, and answers with a
:class:`JobHandle`: the job's id and log, serialisable to JSON (``to_json``/``from_json``), so
a restarted runner re-attaches to a job it submitted before instead of submitting it again.
:meth:`Launcher.poll` maps the scheduler's many states onto the five of :class:`JobState`.
"""
from __future__ import annotations

import abc
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from siambench.pretrain.utils.errors import UserError

__all__ = ["JobState", "Resources", "JobHandle", "JobStatus", "Launcher", "LauncherError"]


class LauncherError(UserError, RuntimeError):
    """The scheduler refused or could not be asked; the message names the command and the fix."""


class JobState(str, Enum):
    PENDING = "pending"  # waiting for resources (never ran)
    RUNNING = "running"
    REQUEUED = "requeued"  # ran, was stopped (time limit, preemption, requeue) and waits to run again
    DONE = "done"  # the command exited 0
    FAILED = "failed"  # the command failed, was cancelled, or ran out of requeues: JobStatus.reason says which

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


@dataclass(frozen=True)
class Resources:
    """What one step asks of the scheduler; 0 / "" leave a value to the cluster's defaults.

    GPU steps ask ``gpus_per_node`` with ``cpus_per_gpu`` CPUs and ``mem_per_gpu_gb`` memory
    each; CPU steps (``gpus_per_node`` 0) ask ``cpus_per_task`` and ``mem_gb`` instead.
    ``tasks_per_node`` > 1 or ``nodes`` > 1 runs the command once per task under ``srun``
    (ranks read ``SLURM_PROCID``); otherwise it runs once, in the job's batch shell.
    """

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_gpu: int = 0
    mem_per_gpu_gb: float = 0
    cpus_per_task: int = 0
    mem_gb: float = 0
    time_min: int = 0  # time limit in minutes; 0 = the partition's
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    extra: tuple[str, ...] = ()  # further scheduler options, each "--key=value" or "--flag"

    @property
    def num_tasks(self) -> int:
        return self.nodes * self.tasks_per_node


@dataclass(frozen=True)
class JobHandle:
    """A submitted job: enough to poll or cancel it from another process (``to_json``)."""

    launcher: str  # the launcher's name ("slurm", "local")
    job_id: str
    name: str
    log: str  # stdout + stderr of every run of the job (appended across requeues)
    submitted_at: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "JobHandle":
        try:
            return cls(launcher=str(data["launcher"]), job_id=str(data["job_id"]), name=str(data["name"]),
                       log=str(data["log"]), submitted_at=float(data.get("submitted_at", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a saved job handle ({e!r}): {dict(data)!r}") from None


@dataclass(frozen=True)
class JobStatus:
    """One look at a job. ``reason``: why it failed, or why it waits (the scheduler's words)."""

    state: JobState
    reason: str = ""
    requeues: int = 0  # times the job was requeued so far
    node: str = ""  # where it runs / ran ("" if unknown)
    elapsed_s: float | None = None  # run time of the current (or last) run, if the scheduler says

    def to_json(self) -> dict:
        return {**asdict(self), "state": self.state.value}


class Launcher(abc.ABC):
    """Runs pipeline step commands somewhere; ``max_jobs`` caps jobs in flight (0: no cap)."""

    name: str = ""
    max_jobs: int = 0

    @abc.abstractmethod
    def submit(self, name: str, argv: Sequence[str], *, log: Path, cwd: Path | None = None,
               env: Mapping[str, str] | None = None, resources: Resources = Resources()) -> JobHandle:
        """Start (or queue) ``argv``; ``env`` adds variables to the submitting environment."""

    @abc.abstractmethod
    def poll_many(self, handles: Iterable[JobHandle]) -> dict[str, JobStatus]:
        """Status of each handle, by job id."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job (pending or running); its status becomes failed, reason "cancelled"."""

    def find(self, name: str, log: Path) -> list[JobHandle]:
        """Unfinished jobs of step ``name`` with log ``log`` that the scheduler still holds, also
        those whose handle was never saved (the runner died right after submitting). A launcher
        whose jobs end with the runner finds none."""
        return []

    def poll(self, handle: JobHandle) -> JobStatus:
        return self.poll_many([handle])[handle.job_id]

    def attach(self, data: Mapping) -> JobHandle:
        """A handle saved with ``JobHandle.to_json`` (e.g. in pipeline_state.json), checked to be ours."""
        handle = JobHandle.from_json(data)
        if handle.launcher != self.name:
            raise ValueError(f"job {handle.job_id} ({handle.name}) was submitted by the {handle.launcher!r} "
                             f"launcher, not {self.name!r}")
        return handle
