"""Plots (PNG) and the Markdown + HTML report of a fixture runs directory."""
from __future__ import annotations

import base64
import math
import re
import statistics
from pathlib import Path

import pytest

from siambench.benchmarks.report.metrics import read_metrics
from siambench.benchmarks.report.report import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_md_html_and_plots(synth_runs: Path, capsys) -> None:
    (synth_runs / "simsiam" / "pretrain" / "config.yaml").write_text("MODEL:\n  DIM: 512\nSOLVER:\n  EPOCHS: 2\n")
    assert main([str(synth_runs)]) == 0
    assert "report.md" in capsys.readouterr().out
    plots = sorted(p.name for p in (synth_runs / "plots").iterdir())
    assert plots == ["pretraining_curves.png", "transfer_ap_table5_synthetic.png"]
    for name in plots:
        assert (synth_runs / "plots" / name).read_bytes()[:8] == PNG_MAGIC

    md = (synth_runs / "report.md").read_text()
    assert "![pretraining_curves](plots/pretraining_curves.png)" in md
    assert "| SimSiam | ours | **41.2** ± 1.3 (n=3) | **11.2** ± 1.3 (n=3) |" in md
    assert "synthetic data: not comparable to paper rows" in md
    assert "simsiam/pretrain/config.yaml" in md and "DIM: 512" in md
    assert '"torch":' in md  # environment
    assert "status 'running' (partial trial)" in md

    html = (synth_runs / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2 and all(base64.b64decode(i)[:8] == PNG_MAGIC for i in images)  # self-contained
    assert "<b>41.2</b> ± 1.3 (n=3)" in html
    assert 'class="paper"' not in html and "paper reference rows" not in md  # synthetic-only: no real-data tables
    assert "<script" not in html


def test_report_of_missing_dir_is_an_error(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "runs directory not found" in capsys.readouterr().err


def test_read_metrics_dedups_resumed_steps_and_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "step", "epoch": 0, "step": 0, "loss": 1.0}\n'
                    '{"type": "step", "epoch": 0, "step": 1, "loss": 2.0}\n'
                    '{"type": "step", "epoch": 0, "step": 1, "loss": 3.0}\n'  # re-logged after a resume
                    '{"type": "epoch", "epoch": 0, "knn_top1": 40.0}\n'
                    '[1, 2]\n{"type": "step", "ep')
    steps, epochs = read_metrics(path)
    assert [s["loss"] for s in steps] == [1.0, 3.0]
    assert epochs == [{"type": "epoch", "epoch": 0, "knn_top1": 40.0}]


def test_report_steps_in_run_order_with_total_scroll_boxes_and_verdict(synth_runs: Path) -> None:
    """Regression: steps were listed alphabetically, with no total; 14-column tables overflowed."""
    import json

    state = json.loads((synth_runs / "pipeline_state.json").read_text())
    state["order"] = ["synth", "simsiam/pretrain", "simsiam/knn", "scr/transfer/synth_voc07"]
    state["steps"] = {k: {"status": "done", "wall_s": w, "cpu_s": w * 2} for k, w in
                      (("scr/transfer/synth_voc07", 30), ("simsiam/knn", 5), ("simsiam/pretrain", 90), ("synth", 5))}
    (synth_runs / "pipeline_state.json").write_text(json.dumps(state, sort_keys=True))
    assert main([str(synth_runs)]) == 0
    md = (synth_runs / "report.md").read_text()
    steps = md[md.index("## Pipeline steps"):]
    pos = [steps.index(k) for k in state["order"]]
    assert pos == sorted(pos)  # run order, not alphabetical
    assert "| total (4 steps)" in steps and "2m10s" in steps and "4m20s" in steps
    assert md.index("## Verdict") < md.index("## Tables") and "SimSiam beats training from scratch" in md
    html = (synth_runs / "report.html").read_text()
    assert html.count('<div class="scroll"><table>') == html.count("<table>") - 1  # all but the steps table
    assert ".scroll{overflow-x:auto" in html and "<h2>Verdict</h2>" in html


def test_transfer_plot_says_points_and_shows_ap50(synth_runs: Path, monkeypatch) -> None:
    from siambench.benchmarks.report import plots
    from siambench.benchmarks.report.results import collect
    from siambench.benchmarks.report.table import build_tables

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figs.append(fig))
    table = next(t for t in build_tables(collect(synth_runs)) if t.name == "table5_synthetic")
    assert plots.plot_transfer(table, synth_runs / "x.png") is not None
    axes = [ax for ax in figs[0].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["AP50", "AP"]
    assert all("points, 0-100" in ax.get_ylabel() for ax in axes)


def test_transfer_plot_shows_trials_95ci_and_legend_outside(tmp_path: Path, results_files, monkeypatch) -> None:
    """Every trial a dot; whiskers are the 95 % CI of the mean clipped at 0 (not std running below 0); the
    legend sits right of the axes, not over the bars."""
    from matplotlib.collections import PathCollection

    from siambench.benchmarks.report import plots
    from siambench.benchmarks.report.results import collect
    from siambench.benchmarks.report.stats import t_ppf
    from siambench.benchmarks.report.table import build_tables

    root = tmp_path / "runs"
    for k, ap in enumerate([0.4, 3.5]):  # n = 2 near 0: mean - std = -0.24
        results_files.write_trial(root, "a", "synth_voc07", k, "mine", ap, ap50=20.0 + 10 * k)
    results_files.write_trial(root, "b", "synth_voc07", 0, "scratch", 1.0, ap50=15.0, weights="scratch")
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figs.append(fig))
    table = next(t for t in build_tables(collect(root)) if t.name == "table5_synthetic")
    assert plots.plot_transfer(table, root / "x.png") is not None
    ax50, ax = [a for a in figs[0].axes if a.get_visible()]
    dots = [c for c in ax50.collections if isinstance(c, PathCollection)]
    assert sorted(y for c in dots for y in c.get_offsets()[:, 1]) == [15.0, 20.0, 30.0]  # 3 trials, 3 dots
    half = t_ppf(0.975, 1) * statistics.stdev([20.0, 30.0]) / math.sqrt(2)
    assert plots.ci95([20.0, 30.0]) == pytest.approx((max(0.0, 25.0 - half), min(100.0, 25.0 + half)))
    assert plots.ci95([0.4, 3.5])[0] == 0.0 and plots.ci95([7.0]) is None
    whiskers = [seg for c in ax.collections if not isinstance(c, PathCollection) for seg in c.get_segments()]
    assert whiskers and min(p[1] for seg in whiskers for p in seg) >= 0.0  # AP whisker clipped at 0
    figs[0].canvas.draw()
    legend = figs[0].legends[0].get_window_extent()
    assert [t.get_text() for t in figs[0].legends[0].get_texts()] == ["scratch", "mine"]
    assert all(legend.x0 >= a.get_window_extent().x1 for a in (ax50, ax))  # outside, right of both panels


def test_pretraining_curves_have_one_legend_outside_the_panels(tmp_path: Path, monkeypatch) -> None:
    import json

    from siambench.benchmarks.report import plots

    runs = {}
    for label, z in (("SimSiam", 0.04), ("no stop-grad", 0.001)):
        path = tmp_path / label / "metrics.jsonl"
        path.parent.mkdir()
        path.write_text("\n".join(json.dumps({"type": "step", "epoch": 0, "step": i, "loss": -0.5 - i / 10, "z_std": z})
                                  for i in range(5)))
        runs[label] = path
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figs.append(fig))
    assert plots.plot_pretraining(runs, tmp_path / "x.png") is not None
    fig = figs[0]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["SimSiam", "no stop-grad", "1/sqrt(d), d=2048"]
    fig.canvas.draw()
    assert fig.legends[0].get_window_extent().x0 >= max(ax.get_window_extent().x1 for ax in fig.axes)
