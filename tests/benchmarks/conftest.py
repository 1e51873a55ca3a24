"""Fixture results files in the formats of docs/design.md, for the table/plot/report tests.

pytest runs with ``--import-mode=importlib``, so test modules cannot import helpers from
a sibling file: the writers are handed out by the ``results_files`` fixture.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest


def write_trial(root: Path, entry: str, task: str, k: int, label: str, ap: float, *, weights: str = "w.pkl",
                status: str = "complete", segm: float | None = None, ap50: float | None = None,
                ap75: float | None = None) -> Path:
    """One transfer ``trial{k}/results.json`` under ``root/entry/transfer/task``."""
    results = {"bbox": {"AP": ap, "AP50": ap + 30 if ap50 is None else ap50, "AP75": ap + 3 if ap75 is None else ap75}}
    if segm is not None:
        results["segm"] = {"AP": segm, "AP50": segm + 20, "AP75": segm + 1}
    path = root / entry / "transfer" / task / f"trial{k}" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps writes NaN as the token NaN, which is how a careless writer would store it
    path.write_text(json.dumps({"task": task, "label": label, "weights": weights, "seed": k, "results": results,
                                "status": status}))
    return path


def write_eval(root: Path, entry: str, protocol: str, top1: float, epochs: int | None) -> Path:
    """``root/entry/<protocol>/<protocol>_results.json`` (lincls or knn)."""
    path = root / entry / protocol / f"{protocol}_results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"top1": top1, "top5": 99.0, "pretrain_epochs": epochs}))
    return path


def write_state(root: Path, entries: dict[str, tuple[str, str]], synthetic: bool) -> None:
    """A minimal ``pipeline_state.json``: entry name -> (kind, label)."""
    root.mkdir(parents=True, exist_ok=True)
    state = {"synthetic": synthetic, "steps": {},
             "entries": {n: {"kind": k, "label": lb} for n, (k, lb) in entries.items()}}
    (root / "pipeline_state.json").write_text(json.dumps(state))


@pytest.fixture
def results_files() -> SimpleNamespace:
    """The writers: ``write_trial``, ``write_eval``, ``write_state``."""
    return SimpleNamespace(write_trial=write_trial, write_eval=write_eval, write_state=write_state)


@pytest.fixture
def synth_runs(tmp_path: Path) -> Path:
    """A synthetic-data runs dir: SimSiam (3 trials), supervised, scratch, lincls/knn results."""
    root = tmp_path / "runs"
    write_state(root, {"simsiam": ("simsiam", "SimSiam"), "sup": ("supervised", "supervised"),
                       "scr": ("scratch", "scratch")}, synthetic=True)
    for k, ap in enumerate([10.0, 11.0, 12.5]):
        write_trial(root, "simsiam", "synth_voc07", k, "SimSiam", ap)
    write_trial(root, "simsiam", "synth_coco", 0, "SimSiam", 5.0, segm=4.0)
    write_trial(root, "sup", "synth_voc07", 0, "supervised", 9.0)
    write_trial(root, "sup", "synth_coco", 0, "supervised", 4.0, segm=3.0)
    write_trial(root, "scr", "synth_voc07", 0, "scratch", 3.0, weights="scratch")
    write_trial(root, "scr", "synth_voc07", 1, "scratch", 99.0, weights="scratch", status="running")
    write_eval(root, "simsiam", "lincls", 40.0, 2)
    write_eval(root, "simsiam", "knn", 35.0, 2)
    write_eval(root, "sup", "lincls", 80.0, 30)
    lines = []
    for step in range(20):
        lines.append({"type": "step", "epoch": step // 10, "step": step % 10, "loss": -0.5 - step / 50,
                      "lr": 0.05, "z_std": 0.02})
    lines += [{"type": "epoch", "epoch": e, "loss": -0.6, "z_std": 0.02, "knn_top1": 30.0 + e} for e in range(2)]
    metrics = root / "simsiam" / "pretrain" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n{truncated")
    return root
