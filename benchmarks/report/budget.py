"""Budget claims of the verdict: the wall time of a pipeline's steps and the bytes they write.

Only a pipeline whose file sets ``BUDGET.MINUTES`` / ``BUDGET.DISK_GB`` (the demo's
``configs/benchmarks/demo.yaml``: 20 min, 1 GB) promises a budget; ``siambench run`` records it in
``pipeline_state.json`` (``budget``), and a run without one gets no budget claim, synthetic or not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .claims import Claim
from .results import RunResults

__all__ = ["budget_claims"]


def _budget(state: dict[str, Any]) -> tuple[float, float]:
    """(minutes, GB) the pipeline promised; 0 for none."""
    budget = state.get("budget")
    if not isinstance(budget, dict):
        return 0.0, 0.0
    return tuple(float(v) if isinstance(v, (int, float)) and v > 0 else 0.0  # type: ignore[return-value]
                 for v in (budget.get("minutes"), budget.get("disk_gb")))


def budget_claims(res: RunResults) -> list[Claim]:
    """The pipeline's cost targets (``BUDGET`` of its file): the steps' wall time and the disk they wrote."""
    steps = (res.state.get("steps") or {}).values()
    walls = [float(s["wall_s"]) for s in steps
             if s.get("status") == "done" and isinstance(s.get("wall_s"), (int, float))]
    minutes_cap, gb_cap = _budget(res.state)
    if not walls or not (minutes_cap or gb_cap):
        return []
    source = f"BUDGET of {Path(str(res.state.get('pipeline') or 'the pipeline file')).name}"
    out = [_minutes_claim(res, walls, minutes_cap, source)] if minutes_cap else []
    return out + ([_disk_claim(res, gb_cap, source)] if gb_cap else [])


def _minutes_claim(res: RunResults, walls: list[float], cap: float, source: str) -> Claim:
    run_wall = res.state.get("wall_s")  # `siambench run`'s own clock: steps run at once (JOBS > 1) count once
    if isinstance(run_wall, (int, float)) and run_wall > 0:
        minutes = run_wall / 60
        how = (f"wall time of `siambench run` while steps ran (pipeline_state.json wall_s; "
               f"their own times add up to {sum(walls) / 60:.1f} min; setup and the report not included)")
    else:
        minutes = sum(walls) / 60
        how = "sum of their wall times in pipeline_state.json; setup and the report not included"
    return Claim(f"the steps take <= {cap:g} min ({source})", source, "holds" if minutes <= cap else "fails",
                 f"{len(walls)} steps, {minutes:.1f} min in all ({how})", "–", {"minutes": minutes, "budget": cap})


def _disk_claim(res: RunResults, cap: float, source: str) -> Claim:
    inodes = {}  # hard links (model_final.pth -> the last checkpoint) take the disk once
    for p in res.root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            inodes[(st.st_dev, st.st_ino)] = st.st_size
    gb = sum(inodes.values()) / 1e9
    written = res.state.get("written_bytes")
    values = {"gb": gb}
    if isinstance(written, (int, float)) and written > 0:  # what the steps wrote, also files deleted since
        values["written_gb"] = written / 1e9
        claim = f"the run writes <= {cap:g} GB to disk ({source})"
        evidence = (f"{values['written_gb']:.2f} GB written by the steps (pipeline_state.json written_bytes: block "
                    f"output of their processes, also files deleted since); {gb:.2f} GB under {res.root} now")
    else:  # a run recorded by an older siambench: only what is left can be measured
        claim = f"the run keeps <= {cap:g} GB on disk ({source})"
        evidence = (f"{gb:.2f} GB under {res.root} now (files deleted during the run, e.g. old checkpoints, "
                    "are not counted)")
    mark = "holds" if max(values.values()) <= cap else "fails"
    return Claim(claim, source, mark, evidence, "–", {**values, "budget": cap})
