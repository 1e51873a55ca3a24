"""Read a pretraining run's ``metrics.jsonl`` (step and epoch records), without plotting libraries.

The verdict replays the collapse rule over these records and the plots draw them; both read
the file here, so the verdict needs no matplotlib.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_metrics"]


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(step records, epoch records) of a ``metrics.jsonl``; bad lines are skipped.

    A resumed run may have logged a step twice; the last record of a (epoch, step) wins.
    """
    steps: dict[tuple, dict] = {}
    epochs: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if not isinstance(rec, dict):
            continue
        if rec.get("type") == "step":
            steps[rec.get("epoch"), rec.get("step")] = rec
        elif rec.get("type") == "epoch" and isinstance(rec.get("epoch"), int):
            epochs[rec["epoch"]] = rec
    step_list = sorted(steps.values(), key=lambda r: (r.get("epoch") or 0, r.get("step") or 0))
    return step_list, [epochs[e] for e in sorted(epochs)]
