"""Datasets of one's own in the tables, verdict, plots and report: one column group per dataset, named by it."""
from __future__ import annotations

from pathlib import Path

from siambench.benchmarks.report.report import write_report
from siambench.benchmarks.report.results import collect, is_own_task
from siambench.benchmarks.report.table import build_tables
from siambench.benchmarks.report.verdict import build_verdict


def _own_runs(root: Path, results_files) -> Path:
    w = results_files
    w.write_state(root, {"simsiam": ("simsiam", "SimSiam"), "sup": ("supervised", "supervised"),
                         "scr": ("scratch", "scratch")}, synthetic=False)
    for k, ap in enumerate([40.0, 42.0, 41.0]):
        w.write_trial(root, "simsiam", "boats", k, "SimSiam", ap)
        w.write_trial(root, "scr", "boats", k, "scratch", ap - 20, weights="scratch")
    w.write_trial(root, "simsiam", "fruit", 0, "SimSiam", 30.0, segm=25.0)
    w.write_trial(root, "sup", "fruit", 0, "supervised", 29.0, segm=24.0)
    w.write_trial(root, "simsiam", "voc07", 0, "SimSiam", 57.0)  # a built-in task beside them
    return root


def test_own_tasks_get_their_own_table(tmp_path, results_files):
    assert is_own_task("boats") and not any(map(is_own_task, ("voc07", "voc0712", "coco_fpn", "synth_voc07")))
    tables = {t.name: t for t in build_tables(collect(_own_runs(tmp_path / "runs", results_files)))}
    own = tables["table5_own"]
    assert [c.group for c in own.columns] == ["boats"] * 3 + ["fruit"] * 3 + ["fruit segm"] * 3
    assert all(r.source == "ours" for r in own.rows)  # no paper rows for data the paper never saw
    sim = next(r for r in own.rows if r.label == "SimSiam")
    assert sim.cells[1].mean == 41.0 and sim.cells[1].n == 3  # boats AP, mean of 3 trials
    assert {c.group for c in tables["table5"].columns}.isdisjoint({"boats", "fruit"})
    assert "table5_own_delta_scratch" in tables and "table5_own_delta_supervised" in tables


def test_own_tasks_in_verdict_plots_and_report(tmp_path, results_files):
    root = _own_runs(tmp_path / "runs", results_files)
    claims = {c.claim: c for c in build_verdict(collect(root))}
    beats = claims["SimSiam beats training from scratch: boats AP50"]
    assert beats.mark == "holds" and "n=3" in beats.test
    assert "SimSiam transfers on par with supervised pre-training (Δ >= -1): fruit AP" in claims
    md, _ = write_report(root)
    text = md.read_text()
    assert "Transfer to your datasets" in text and "boats" in text
    assert (root / "plots" / "transfer_ap_table5_own.png").is_file()
