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


def test_monitor_from_config_and_replay_follow_one_rule(caplog):
    from siambench.pretrain.collapse import CollapseMonitor
    from siambench.pretrain.config import get_cfg

    default = CollapseMonitor.from_config(get_cfg())
    assert (default.dim, default.patience, default.abort) == (2048, 20, False)
    assert default.limit == pytest.approx(0.1 / 2048 ** 0.5)
    partial = {"MODEL": {"DIM": 64}, "MONITOR": {"COLLAPSE_THRESHOLD": 0.5, "COLLAPSE_PATIENCE": 6}}  # a config.yaml
    assert (partial_m := CollapseMonitor.from_config(partial)).limit == 0.5 / 8 and partial_m.patience == 6
    assert CollapseMonitor.from_config(partial, dim=256).limit == 0.5 / 16  # the method's own C

    # period means (std, steps) as the engine feeds them; low = below 0.5 / 8 = 0.0625
    periods = [(0.1, 1), (0.01, 3), (0.2, 2), (0.01, 1), (0.01, 3), (float("nan"), 1), (0.01, 2), (0.1, 3)]
    live = CollapseMonitor.from_config(partial)
    fired_at = []
    with caplog.at_level(logging.WARNING):
        for i, (std, n) in enumerate(periods):
            if std == std:  # the engine stops on a NaN loss, never feeding it; replay skips it
                live.update(std, i, steps=n)
            fired_at.append(live.collapsed)
    assert fired_at == [False] * 6 + [True] * 2 and "representation collapse at step 6" in caplog.text
    records = [{"type": "step", "epoch": 0, "step": i, "steps": n, "z_std": std} for i, (std, n) in enumerate(periods)]
    assert CollapseMonitor.from_config(partial).replay(records) is True
    assert CollapseMonitor.from_config(partial).replay(records[:6]) is False  # 4 low steps < 6
    # records without "steps" (older files) count one step each
    assert CollapseMonitor.from_config(partial).replay([{"type": "step", "z_std": 0.0}] * 5) is False
    assert CollapseMonitor.from_config(partial).replay([{"type": "step", "z_std": 0.0}] * 6) is True
