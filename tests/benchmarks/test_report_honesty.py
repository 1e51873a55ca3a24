"""Numbers that do not overclaim: significance-backed marks, the demo's budget only for the demo,
copied or resumed trials, a scratch row that loaded weights, results files the tables cannot use."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from siambench.benchmarks.report.claims import render_verdict
from siambench.benchmarks.report.results import collect
from siambench.benchmarks.report.stats import welch
from siambench.benchmarks.report.table import build_tables
from siambench.benchmarks.report.table_data import Table
from siambench.benchmarks.report.table_format import render
from siambench.benchmarks.report.verdict import build_verdict


def _claim(claims, start: str):
    found = [c for c in claims if c.claim.startswith(start)]
    assert len(found) == 1, [c.claim for c in claims]
    return found[0]


def _row(table: Table, start: str):
    return next(r for r in table.rows if r.label.startswith(start) and r.source == "ours")


def _patch(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _transfer_runs(root: Path, results_files, sim_ap50: list[float], scr_ap50: list[float]) -> Path:
    results_files.write_state(root, {"sim": ("simsiam", "SimSiam"), "scr": ("scratch", "scratch")}, synthetic=True)
    for k, ap50 in enumerate(sim_ap50):
        results_files.write_trial(root, "sim", "synth_voc07", k, "SimSiam", 20.0, ap50=ap50)
    for k, ap50 in enumerate(scr_ap50):
        results_files.write_trial(root, "scr", "synth_voc07", k, "scratch", 10.0, ap50=ap50, weights="scratch")
    return root


def test_a_mean_above_the_threshold_that_the_test_does_not_support_is_not_significant(tmp_path, results_files):
    sim, scr = [30.0, 50.0, 20.0], [25.0, 20.0, 22.0]  # Δ +11 against +5, but a wide spread
    r = welch(sim, scr, 5.0)
    assert r.p_greater > 0.05 and r.ci[0] < 5.0
    claims = build_verdict(collect(_transfer_runs(tmp_path / "runs", results_files, sim, scr)))
    ap50 = _claim(claims, "SimSiam beats training from scratch: synth_voc07 AP50")
    assert ap50.mark == "not significant" and ap50.values["diff"] == pytest.approx(11.0)
    ap = [c for c in claims if c.claim == "SimSiam beats training from scratch: synth_voc07 AP"]
    assert [c.mark for c in ap] == ["holds"]  # +10 in every trial: no spread, significant
    md = render_verdict(claims)
    assert "1 not significant" in md and "*not significant*" in md and "p < 0.05" in md
    # a clear margin still holds; one trial a side is judged on the point estimate (no test)
    clear = build_verdict(collect(_transfer_runs(tmp_path / "clear", results_files, [40, 41, 42.5], [23, 24, 23.5])))
    assert _claim(clear, "SimSiam beats training from scratch: synth_voc07 AP50").mark == "holds"
    one = build_verdict(collect(_transfer_runs(tmp_path / "one", results_files, [40.0], [23.0])))
    assert _claim(one, "SimSiam beats training from scratch: synth_voc07 AP50").mark == "holds"


def _with_steps(root: Path, **state_fields) -> Path:
    state = json.loads((root / "pipeline_state.json").read_text())
    state.update(steps={"sim/pretrain": {"status": "done", "wall_s": 60.0}}, wall_s=60.0, written_bytes=1000,
                 **state_fields)
    (root / "pipeline_state.json").write_text(json.dumps(state))
    return root


def test_budget_claims_only_for_a_pipeline_that_sets_a_budget(tmp_path, results_files):
    other = _with_steps(_transfer_runs(tmp_path / "other", results_files, [40.0], [23.0]),
                        pipeline="configs/benchmarks/synth_table4_table5.yaml",
                        budget={"minutes": 0.0, "disk_gb": 0.0})
    assert not [c for c in build_verdict(collect(other)) if "BUDGET" in c.claim or "min" in c.claim.split()]
    demo = _with_steps(_transfer_runs(tmp_path / "demo", results_files, [40.0], [23.0]),
                       pipeline="configs/benchmarks/demo.yaml", budget={"minutes": 15.0, "disk_gb": 1.0})
    claims = build_verdict(collect(demo))
    assert _claim(claims, "the steps take <= 15 min (BUDGET of demo.yaml)").mark == "holds"
    assert _claim(claims, "the run writes <= 1 GB to disk (BUDGET of demo.yaml)").mark == "holds"


def test_only_the_demo_pipeline_file_sets_a_budget():
    from siambench.benchmarks.pipeline.pipeline_config import load_pipeline

    configs = Path(__file__).resolve().parents[2] / "configs" / "benchmarks"
    budgets = {p.name: (load_pipeline(p).BUDGET.MINUTES, load_pipeline(p).BUDGET.DISK_GB)
               for p in sorted(configs.glob("*.yaml")) if not p.name.startswith("_")}
    assert budgets.pop("demo.yaml") == (20.0, 1.0)
    assert budgets.pop("demo_seed3.yaml") == (20.0, 1.0)  # the demo's steps on other seeds: the demo's budget
    assert set(budgets.values()) == {(0.0, 0.0)}, budgets


def test_a_copied_trial_directory_counts_once_with_a_note(tmp_path, results_files):
    root = _transfer_runs(tmp_path / "runs", results_files, [20.0, 30.0], [10.0])
    for k in (0, 1):
        _patch(root / "sim" / "transfer" / "synth_voc07" / f"trial{k}" / "results.json", trial=k,
               weights_sha256="ab" * 32, config_hash="c0ffee")
    tdir = root / "sim" / "transfer" / "synth_voc07"
    shutil.copytree(tdir / "trial1", tdir / "trial1.bak")
    res = collect(root)
    cell = _row(build_tables(res)[0], "SimSiam").cells[0]  # VOC 07 AP50
    assert (cell.mean, cell.n) == (25.0, 2)
    assert any("trial1.bak/results.json: the same trial as" in n and "a copy" in n for n in res.notes)


def test_scratch_row_with_a_trial_that_loaded_weights_is_flagged(tmp_path, results_files):
    root = _transfer_runs(tmp_path / "runs", results_files, [40.0], [23.0, 24.0])
    _patch(root / "scr" / "transfer" / "synth_voc07" / "trial1" / "results.json", weights="r18.pkl",
           backbone_loaded=60, backbone_total=60)
    table = build_tables(collect(root))[0]
    assert _row(table, "scratch").label == "scratch [loaded weights]"
    assert any("trial1/results.json loaded weights (r18.pkl, 60 backbone tensors)" in n for n in table.notes)
    assert _row(table, "SimSiam").label == "SimSiam"  # a pretrained row loads weights by design
    clean = build_tables(collect(_transfer_runs(tmp_path / "clean", results_files, [40.0], [23.0])))[0]
    assert _row(clean, "scratch").label == "scratch"


def test_resumed_trials_are_marked_in_the_table_and_the_verdict(tmp_path, results_files):
    root = _transfer_runs(tmp_path / "runs", results_files, [40.0, 41.0, 42.5], [23.0, 24.0, 23.5])
    _patch(root / "scr" / "transfer" / "synth_voc07" / "trial2" / "results.json", trial=2, resumed=True)
    res = collect(root)
    table = build_tables(res)[0]
    assert _row(table, "scratch").label == "scratch [resumed]" and _row(table, "SimSiam").label == "SimSiam"
    assert any("resumed after an interruption" in n and "scr/transfer/synth_voc07/trial2" in n for n in table.notes)
    ap50 = _claim(build_verdict(res), "SimSiam beats training from scratch: synth_voc07 AP50")
    assert "RESUMED trials: scratch trial 2" in ap50.evidence and ap50.values["resumed_trials"] == 1
    assert "[resumed]" in render([table], "md", res.notes)


def test_results_files_the_tables_cannot_use_are_named(tmp_path, results_files):
    root = _transfer_runs(tmp_path / "runs", results_files, [40.0, 41.0], [23.0])
    foreign = root / "sim" / "transfer" / "synth_voc07" / "trial5" / "results.json"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"bbox": {"AP": 1.0}}))
    partial = results_files.write_trial(root, "sim", "synth_voc07", 2, "SimSiam", 20.0, ap50=60.0)
    data = json.loads(partial.read_text())
    data["results"]["bbox"] = {"AP50": 60.0}  # AP50 only: that cell gets n=3, AP and AP75 stay n=2
    partial.write_text(json.dumps(data))
    res = collect(root)
    assert any(n.startswith("sim/transfer/synth_voc07/trial5/results.json: no 'task' or 'status'") for n in res.notes)
    assert any("trial2/results.json: results.bbox has no AP, AP75: this trial counts in bbox AP50 only" in n
               for n in res.notes)
    cells = _row(build_tables(res)[0], "SimSiam").cells
    assert [c.n for c in cells[:3]] == [3, 2, 2]
    empty = results_files.write_trial(root, "sim", "synth_voc07", 3, "SimSiam", 20.0)
    empty.write_text(empty.read_text().replace('"bbox": {', '"bbox": {}, "x": {'))
    assert any("trial3/results.json: results.bbox has none of AP50, AP, AP75" in n for n in collect(root).notes)
