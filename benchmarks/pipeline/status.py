"""``siambench status OUTPUT_DIR``: each step of a pipeline run and, for jobs, what the scheduler says now.

One row per step in plan order: its state (``todo``, ``pending``, ``running``, ``requeued``,
``done``, ``failed``, ``blocked``), the job id, node, elapsed time, requeues and log. Steps
recorded as submitted jobs are polled live (``scontrol``), so the answer is current even when
no ``siambench run`` is following them; the state file itself is only read.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from siambench.pretrain.utils.errors import UserError

from ..launchers.base import JobHandle, JobStatus, Launcher, LauncherError
from ..launchers.slurm import SlurmLauncher
from ..report.results import STATE_FILE
from ..report.table_format import fmt_duration
from .scheduler import in_flight_job

__all__ = ["main", "read_state", "live_statuses", "rows"]


class NoRunError(UserError, FileNotFoundError):
    """OUTPUT_DIR holds no pipeline_state.json."""


def read_state(out: Path) -> dict[str, Any]:
    """``OUTPUT_DIR/pipeline_state.json``; NoRunError naming the directory when there is none."""
    path = out / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoRunError(f"{path}: not found; OUTPUT_DIR is the directory `siambench run` wrote") from None
    except ValueError as e:
        raise NoRunError(f"{path}: not JSON ({e}); was it edited by hand?") from None


def launcher_for(name: str) -> Launcher:
    """A launcher to poll or cancel jobs recorded by ``name`` (its submit settings do not matter here)."""
    if name != "slurm":
        raise LauncherError(f"jobs of the {name!r} launcher cannot be followed from here")
    return SlurmLauncher()


def live_statuses(state: dict[str, Any]) -> dict[str, tuple[JobHandle, JobStatus | str]]:
    """Step key -> (handle, status now, or why it could not be polled) of each step recorded in flight."""
    handles = {k: JobHandle.from_json(job) for k, rec in state.get("steps", {}).items()
               if (job := in_flight_job(rec)) is not None}
    out: dict[str, tuple[JobHandle, JobStatus | str]] = {}
    for name in {h.launcher for h in handles.values()}:
        mine = {k: h for k, h in handles.items() if h.launcher == name}
        try:
            polled = launcher_for(name).poll_many(mine.values())
            out.update({k: (h, polled[h.job_id]) for k, h in mine.items()})
        except LauncherError as e:
            out.update({k: (h, str(e)) for k, h in mine.items()})
    return out


def rows(state: dict[str, Any]) -> list[list[str]]:
    """[step, state, job, node, elapsed, requeues, log] per step, plan order."""
    steps = state.get("steps", {})
    live = live_statuses(state)
    out = []
    for key in state.get("order") or list(steps):
        rec = steps.get(key, {})
        job = rec.get("job") or {}
        elapsed, node, requeues = rec.get("elapsed_s", rec.get("wall_s")), rec.get("node", ""), rec.get("requeues", "")
        word = {"skipped": "done", "running": "running", "interrupted": "interrupted"}.get(rec.get("status"),
                                                                                          rec.get("status", "todo"))
        if key in live:
            _, st = live[key]
            if isinstance(st, str):
                word = f"{rec.get('job_state', '?')} (not polled: {st})"
            else:
                word, node, requeues = st.state.value, st.node, st.requeues
                elapsed = st.elapsed_s
        if word in ("failed", "blocked") and rec.get("reason"):
            word = f"{word}: {rec['reason']}"
        out.append([key, word, str(job.get("job_id", "")), node or "", fmt_duration(elapsed) if elapsed else "",
                    str(requeues), rec.get("log", "")])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siambench status", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of a `siambench run`")
    args = parser.parse_args(argv)
    from tabulate import tabulate

    state = read_state(Path(args.output_dir))
    table = rows(state)
    print(tabulate(table, ["step", "state", "job", "node", "elapsed", "requeues", "log"], tablefmt="simple",
                   disable_numparse=True))
    words = [row[1].split(":")[0].split(" ")[0] for row in table]
    print(", ".join(f"{words.count(w)} {w}" for w in dict.fromkeys(words)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
