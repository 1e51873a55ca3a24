"""``siambench cancel OUTPUT_DIR [STEP ...]``: stop the submitted jobs of a pipeline run.

STEP is a step key (``simsiam/pretrain``) or an entry name (all its steps); without one, every
job the run has in flight. Each cancelled step is recorded ``failed`` (reason ``cancelled``) in
``pipeline_state.json``, so the next ``siambench run`` submits it again.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from siambench.pretrain.utils.config import ConfigError
from siambench.pretrain.utils.io import atomic_write_json

from ..report.results import STATE_FILE
from .status import launcher_for, live_statuses, read_state

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siambench cancel", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of a `siambench run`")
    parser.add_argument("steps", metavar="STEP", nargs="*", help="step keys or entry names; default: every job")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    state = read_state(out)
    known = state.get("order") or list(state.get("steps", {}))
    chosen = set()
    for tok in args.steps:
        keys = [k for k in known if k == tok or k.split("/", 1)[0] == tok or k.startswith(f"{tok}/")]  # a task: its trials
        if not keys:
            raise ConfigError(f"siambench cancel: no step or entry {tok!r} in {out / STATE_FILE}; "
                              f"steps are e.g. {known[:3]}")
        chosen.update(keys)
    live = {k: v for k, v in live_statuses(state).items() if not args.steps or k in chosen}
    if not live:
        print(f"siambench cancel: no submitted job to cancel in {out}")
        return 0
    for key, (handle, st) in sorted(live.items()):
        launcher_for(handle.launcher).cancel(handle)
        rec = state["steps"][key]
        rec.update(status="failed", job_state="failed", reason="cancelled",
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        print(f"{key}: cancelled job {handle.job_id}")
    atomic_write_json(out / STATE_FILE, state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
