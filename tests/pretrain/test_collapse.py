"""Paper Fig. 2 on a tiny scale: without stop-grad the output collapses and the monitor fires."""
from __future__ import annotations

import json
import logging

import pytest

from siambench.pretrain.main import EXIT_COLLAPSED, main

# No BN on the projector output (Table 3 case (b)) and a high lr make the collapse take
# ~10 steps instead of thousands; 1/sqrt(d) = 0.125 for d = 64, the alarm is at 0.3 x that.
# One checkpoint at the end, not one per epoch (12 x 94 MB).
FAST_COLLAPSE = ["MODEL.BN_CASE", "hidden", "SOLVER.BASE_LR", "2.0", "SOLVER.EPOCHS", "12",
                 "MONITOR.COLLAPSE_THRESHOLD", "0.3", "MONITOR.COLLAPSE_PATIENCE", "4", "TRAIN.CHECKPOINT_PERIOD", "12"]


def _steps(out):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "step"]


@pytest.mark.slow
@pytest.mark.parametrize("stop_grad", [False, True])
def test_collapse_without_stop_grad(tmp_path, tiny_opts, caplog, stop_grad):
    with caplog.at_level(logging.WARNING):
        rc = main(["OUTPUT_DIR", str(tmp_path), *tiny_opts, *FAST_COLLAPSE, "MODEL.STOP_GRAD", str(stop_grad)])
    assert rc == 0
    steps = _steps(tmp_path)
    first, last = steps[0], steps[-1]
    if stop_grad:
        assert "collapse" not in caplog.text
        assert last["z_std"] > 0.8 * first["z_std"] and last["loss"] > -0.8
    else:
        assert "representation collapse" in caplog.text
        assert last["z_std"] < 0.3 * first["z_std"] and last["loss"] < -0.95


def test_collapse_abort_stops_early(tmp_path, tiny_opts):
    opts = [*FAST_COLLAPSE, "MODEL.STOP_GRAD", "False", "MONITOR.COLLAPSE_THRESHOLD", "0.6",
            "MONITOR.COLLAPSE_PATIENCE", "2", "MONITOR.COLLAPSE_ABORT", "True"]
    assert main(["OUTPUT_DIR", str(tmp_path), *tiny_opts, *opts]) == EXIT_COLLAPSED
    assert len(_steps(tmp_path)) < 12  # of the 24 steps planned
    assert not (tmp_path / "model_final.pth").exists()
