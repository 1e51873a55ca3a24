"""Table math (mean, std, n, rounding, bold rule), missing/partial/NaN handling, deltas, formats."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from siambench.benchmarks.report import reference
from siambench.benchmarks.report.results import collect
from siambench.benchmarks.report.table import build_tables, main, task_group_name
from siambench.benchmarks.report.table_data import Cell, Column, Row, Table, apply_bold, summarize
from siambench.benchmarks.report.table_format import FORMATS, parse_cell, read_csv, render, tables_from_json



def _by_name(tables: list[Table]) -> dict[str, Table]:
    return {t.name: t for t in tables}


def _cell(table: Table, label: str, group: str, metric: str, source: str | None = None) -> Cell:
    j = next(i for i, c in enumerate(table.columns) if c.group == group and c.metric == metric)
    return next(r for r in table.rows if r.label == label and source in (None, r.source)).cells[j]


def test_summarize_mean_sample_std_and_n() -> None:
    c = summarize([10.0, 11.0, 12.5])
    assert c.n == 3
    assert c.mean == pytest.approx(11.1666667)
    assert c.std == pytest.approx(1.2583057)  # ddof=1
    one = summarize([7.0])
    assert (one.mean, one.std, one.n) == (7.0, None, 1)
    assert summarize([math.nan, None, 4.0]).n == 1  # NaN/None are dropped, never averaged
    assert summarize([]).mean is None and summarize([math.nan]).n == 0


def test_bold_rule_within_half_point_of_rounded_best() -> None:
    cells = [Cell(48.54), Cell(48.04), Cell(48.0), Cell(47.96), None]
    rows = [Row(str(i), "ours", "", [c if c is not None else Cell()]) for i, c in enumerate(cells)]
    t = Table("t", "t", [Column("VOC 07", "AP")], rows)
    apply_bold(t)
    # best displays as 48.5; 48.0 (48.04, 48.0, and 47.96 which displays as 48.0) is exactly 0.5 below -> bold
    assert [r.cells[0].bold for r in rows] == [True, True, True, True, False]
    rows[3].cells[0] = Cell(47.94)  # displays 47.9: 0.6 below
    apply_bold(t)
    assert rows[3].cells[0].bold is False


def test_paper_rows_bold_like_the_paper(tmp_path: Path) -> None:
    t5 = _by_name(build_tables(collect(tmp_path)))["table5"]
    bold = {(r.label, c.group, c.metric) for r in t5.rows for c, cell in zip(t5.columns, r.cells) if cell.bold}
    # VOC07 AP50: best 77.3 -> 77.1 (MoCo v2, BYOL) bold, 75.9 not
    assert ("MoCo v2 (repro.+)", "VOC 07", "AP50") in bold and ("BYOL (repro.)", "VOC 07", "AP50") in bold
    assert ("SimCLR (repro.+)", "VOC 07", "AP50") not in bold
    # COCO det AP75: best 42.5 (MoCo v2) -> 42.1 (SimSiam optimal) bold, 41.2 (supervised) not
    assert ("SimSiam, optimal", "COCO det", "AP75") in bold and ("ImageNet supervised", "COCO det", "AP75") not in bold


def test_synthetic_table_stats_partial_and_notes(synth_runs: Path) -> None:
    res = collect(synth_runs)
    tables = _by_name(build_tables(res))
    t = tables["table5_synthetic"]
    assert any("not comparable to paper rows" in n for n in t.notes)
    assert all(r.source == "ours" for r in t.rows)
    assert [r.label for r in t.rows] == ["scratch", "supervised", "SimSiam"]  # baselines first, like the paper
    ss = _cell(t, "SimSiam", "VOC 07 (synth)", "AP")
    assert (round(ss.mean, 4), round(ss.std, 4), ss.n) == (11.1667, 1.2583, 3)
    scratch = _cell(t, "scratch", "VOC 07 (synth)", "AP")
    assert (scratch.mean, scratch.n) == (3.0, 1)  # the running trial (AP 99) is not averaged in
    assert any("trial1/results.json" in n and "partial" in n for n in res.notes)
    assert _cell(t, "scratch", "COCO seg (synth)", "AP").mean is None  # no scratch COCO run: missing
    # a synthetic-only run: no tables of the paper's real-data rows
    assert "table5" not in tables and "table4" not in tables
    # one top-1 column, the pretraining epochs in the row label (not a sparse diagonal of epoch columns)
    t4s = tables["table4_synthetic"]
    assert [(c.group, c.metric) for c in t4s.columns] == [("linear", "top-1")]
    assert _cell(t4s, "SimSiam, 2 ep", "linear", "top-1").mean == 40.0
    assert _cell(t4s, "supervised, 30 ep", "linear", "top-1").mean == 80.0
    assert "knn_synthetic" in tables and "knn" not in tables
    assert [(c.group, c.metric) for c in tables["knn_synthetic"].columns] == [("kNN", "top-1")]


def test_empty_and_real_runs_keep_the_paper_reference_tables(tmp_path: Path, results_files) -> None:
    assert {"table5", "table4"} <= {t.name for t in build_tables(collect(tmp_path))}
    root = tmp_path / "runs"
    results_files.write_trial(root, "a", "synth_voc07", 0, "mine", 40.0)
    results_files.write_trial(root, "b", "voc07", 0, "mine", 41.0)  # real data beside the synthetic
    assert {"table5", "table5_synthetic", "table4"} <= {t.name for t in build_tables(collect(root))}


def test_deltas_against_our_supervised_and_scratch(synth_runs: Path) -> None:
    tables = _by_name(build_tables(collect(synth_runs)))
    sup = tables["table5_synthetic_delta_supervised"]
    assert sup.delta and [r.label for r in sup.rows] == ["scratch", "SimSiam"]
    assert _cell(sup, "SimSiam", "VOC 07 (synth)", "AP").mean == pytest.approx(11.1666667 - 9.0)
    assert _cell(sup, "SimSiam", "COCO seg (synth)", "AP").mean == pytest.approx(1.0)
    assert _cell(sup, "scratch", "COCO det (synth)", "AP").mean is None
    scr = tables["table5_synthetic_delta_scratch"]
    assert _cell(scr, "supervised", "VOC 07 (synth)", "AP").mean == pytest.approx(6.0)
    md = render([sup], "md")
    assert "| SimSiam | ours | +2.2 | +2.2 | +2.2 | +1.0 | +1.0 | +1.0 | +1.0 | +1.0 | +1.0 |" in md


def test_nan_and_malformed_results_are_missing_with_notes(tmp_path: Path, results_files) -> None:
    root = tmp_path / "runs"
    results_files.write_trial(root, "a", "voc07", 0, "mine", 40.0)
    results_files.write_trial(root, "a", "voc07", 1, "mine", math.nan, ap50=60.0)
    results_files.write_trial(root, "a", "voc07", 2, "mine", 44.0)
    bad = root / "a" / "transfer" / "voc07" / "trial3" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"task": "voc07", "status": "comp')  # cut off mid-write by a non-atomic writer
    res = collect(root)
    t5 = _by_name(build_tables(res))["table5"]
    ap = _cell(t5, "mine", "VOC 07", "AP")
    assert (ap.mean, ap.n) == (42.0, 2)
    assert _cell(t5, "mine", "VOC 07", "AP50").n == 3
    assert ap.invalid == 1  # NaN is not finite: invalid, counted, never averaged
    assert any("invalid bbox.AP = nan" in n and "trial1" in n for n in res.notes)
    assert any("trial3" in n and "unreadable" in n for n in res.notes)
    assert _cell(t5, "mine", "VOC 07+12", "AP").mean is None
    text = render(build_tables(res), "md", res.notes)
    assert ("| mine | ours | 68.0 ± 7.2 (n=3) | 42.0 ± 2.8 (n=2, 1 invalid) | 45.0 ± 2.8 (n=2, 1 invalid) | – |"
            in text)


def test_real_rows_are_bolded_against_paper_rows(tmp_path: Path, results_files) -> None:
    root = tmp_path / "runs"
    results_files.write_state(root, {"ours": ("simsiam", "SimSiam (ours)")}, synthetic=False)
    results_files.write_trial(root, "ours", "voc07", 0, "SimSiam (ours)", 48.3, ap50=77.0, ap75=51.0)
    results_files.write_eval(root, "ours", "lincls", 68.3, 100)
    tables = _by_name(build_tables(collect(root)))
    t5 = tables["table5"]
    assert t5.rows[-1].source == "ours"
    assert _cell(t5, "SimSiam (ours)", "VOC 07", "AP50").bold  # 77.0 vs best 77.3
    assert not _cell(t5, "SimSiam (ours)", "VOC 07", "AP75").bold  # 51.0 vs 52.5
    assert _cell(t5, "MoCo v2 (repro.+)", "VOC 07", "AP").bold  # 48.5 is still the best
    t4 = tables["table4"]
    ours = _cell(t4, "SimSiam (ours)", "100 ep", "top-1")
    assert ours.mean == 68.3 and ours.bold
    assert not _cell(t4, "MoCo v2 (repro.+)", "100 ep", "top-1").bold  # 67.4 < 68.3 - 0.5


def test_task_group_names() -> None:
    assert task_group_name("voc07", "bbox") == "VOC 07"
    assert task_group_name("synth_voc0712", "bbox") == "VOC 07+12 (synth)"
    assert task_group_name("coco", "segm") == "COCO seg"
    assert task_group_name("coco_fpn_2x", "bbox") == "COCO FPN 2x det"


def _split_md(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| pre-train")]


def _split_latex(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.rstrip("\\ ").split(" & ")] for line in text.splitlines()
            if line.endswith("\\\\") and not line.startswith(("pre-train", " & "))]


@pytest.mark.parametrize("fmt", FORMATS)
def test_formats_round_trip(synth_runs: Path, fmt: str) -> None:
    res = collect(synth_runs)
    tables = build_tables(res)
    text = render(tables, fmt, res.notes)
    expected = [(t.name, r.label, r.source, c, t.delta) for t in tables for r in t.rows for c in r.cells]
    if fmt == "json":
        back, notes = tables_from_json(text)
        assert back == tables and notes == res.notes
        return
    if fmt == "csv":
        recs = read_csv(text)
        assert len(recs) == len(expected)
        for rec, (name, label, source, c, _) in zip(recs, expected):
            assert (rec["table"], rec["label"], rec["source"]) == (name, label, source)
            assert rec["mean"] == (None if c.mean is None else pytest.approx(c.mean, abs=5e-5))
            assert (rec["n"], rec["bold"]) == (c.n, c.bold)
        return
    rows = _split_md(text) if fmt == "md" else _split_latex(text)
    assert len(rows) == sum(len(t.rows) for t in tables)
    flat = [(row[1], parse_cell(s, fmt)) for row in rows for s in row[2:]]
    assert len(flat) == len(expected)
    for (source, got), (_, _, src, c, delta) in zip(flat, expected):
        assert source == src
        if c.mean is None:
            assert got.mean is None
            continue
        assert got.mean == pytest.approx(round(c.mean, 1)) and got.bold == c.bold
        assert got.std == (None if c.std is None else pytest.approx(round(c.std, 1)))
        assert got.n == (c.n if source == "ours" and not delta else 0)  # n printed for our rows


def test_parse_cell_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a md table cell"):
        parse_cell("12.34", "md")


def test_cli_writes_atomically_and_reports_missing_dir(synth_runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t" / "table.json"
    assert main([str(synth_runs), "--format", "json", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {t["name"] for t in data["tables"]} >= {"table5_synthetic", "table4_synthetic"}
    assert [p.name for p in out.parent.iterdir()] == ["table.json"]  # no temporary leftovers
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert main([str(synth_runs), "--format", "csv"]) == 0
    assert list(csv.DictReader(io.StringIO(capsys.readouterr().out)))[0]["table"] == "table5_synthetic"
    assert main([str(tmp_path / "nope")]) == 2
    assert "runs directory not found" in capsys.readouterr().err


def test_nan_in_metrics_the_tables_do_not_show_is_not_noted(tmp_path: Path, results_files) -> None:
    path = results_files.write_trial(tmp_path, "a", "synth_coco", 0, "mine", 5.0, segm=4.0)
    data = json.loads(path.read_text())
    data["results"]["bbox"]["APl"] = math.nan  # COCO: no large objects in the val set
    path.write_text(json.dumps(data))
    assert collect(tmp_path).notes == []


def test_out_of_range_values_are_invalid_never_averaged_and_never_crash(tmp_path: Path, results_files) -> None:
    """Regression: an AP of 1e308 was averaged into a 1,923-character cell and crashed the report."""
    import json

    from siambench.benchmarks.report.report import write_report

    root = tmp_path / "runs"
    results_files.write_state(root, {"a": ("simsiam", "mine"), "b": ("scratch", "scr")}, synthetic=False)
    results_files.write_trial(root, "a", "voc07", 0, "mine", 40.0)
    results_files.write_trial(root, "a", "voc07", 1, "mine", 1e308)
    results_files.write_trial(root, "a", "voc07", 2, "mine", -3.0, ap50=101.0)
    only_bad = results_files.write_trial(root, "b", "voc07", 0, "scr", math.inf, weights="scratch")
    malformed = json.loads(only_bad.read_text().replace("Infinity", "1"))
    malformed["results"], malformed["task"] = {"bbox": 5}, "coco"  # a trial of its own (not a copy of voc07's)
    results_files.write_trial(root, "b", "coco", 0, "scr", 1.0, weights="scratch").write_text(json.dumps(malformed))
    results_files.write_eval(root, "a", "lincls", 250.0, 100)
    res = collect(root)
    tables = _by_name(build_tables(res))
    ap = _cell(tables["table5"], "mine", "VOC 07", "AP")
    assert (ap.mean, ap.n, ap.invalid) == (40.0, 1, 2)
    ap50 = _cell(tables["table5"], "mine", "VOC 07", "AP50")
    assert (ap50.mean, ap50.n, ap50.invalid) == (70.0, 1, 2)  # 1e308 + 30 and 101 are out of range
    scr = _cell(tables["table5"], "scr", "VOC 07", "AP")
    assert scr.mean is None and scr.invalid == 1
    lin = _cell(tables["table4"], "mine", "100 ep", "top-1")
    assert lin.mean is None and lin.invalid == 1
    assert any("results.bbox is 5, not a mapping" in n for n in res.notes)
    assert any("invalid bbox.AP = 1e+308" in n for n in res.notes)
    assert any("invalid top1 = 250.0" in n for n in res.notes)
    text = render(list(tables.values()), "md", res.notes)
    assert "| scr | ours | invalid | invalid |" in text  # AP50 inf + 30, AP inf: both shown as invalid
    assert "40.0 (n=1, 2 invalid)" in text
    assert max(len(cell) for line in text.splitlines() for cell in line.split("|")) < 200
    for t in tables.values():  # round trip of the new cells
        for row in t.rows:
            for c in row.cells:
                if c.invalid and c.mean is not None and row.source == "ours" and not t.delta:
                    from siambench.benchmarks.report.table_format import format_cell, parse_cell

                    assert parse_cell(format_cell(c, "md", True), "md").invalid == c.invalid
    md, html = write_report(root)  # matplotlib sees no 1e308
    assert "invalid" in md.read_text() and html.is_file()
