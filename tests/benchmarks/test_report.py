"""Plots (PNG) and the Markdown + HTML report of a fixture runs directory."""
from __future__ import annotations

import base64
import re
from pathlib import Path

from benchmarks.plots import read_metrics
from benchmarks.report import main

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
    assert "<b>41.2</b> ± 1.3 (n=3)" in html and 'class="paper"' in html
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
