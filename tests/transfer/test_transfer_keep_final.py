"""SIAMBENCH.KEEP_FINAL_MODEL False (the demo's disk budget): numbers kept, weights dropped."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from siambench.transfer.main import main

TINY = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
        "TEST.PRECISE_BN.NUM_ITER", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "10",
        # a narrow R50 (stem 4): a periodic checkpoint of ~0.6 MB instead of R18-C4's 47 MB (test disk budget)
        "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "4", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
        "MODEL.RESNETS.WIDTH_PER_GROUP", "4"]

pytestmark = pytest.mark.slow


def test_complete_trial_without_its_weights_is_kept_and_skipped(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["--task", "synth_voc07", "--weights", "scratch", "OUTPUT_DIR", str(out), *TINY,
            "SIAMBENCH.KEEP_FINAL_MODEL", "False"]
    assert main(argv) == 0
    trial = out / "trial0"
    record = json.loads((trial / "results.json").read_text())
    assert record["status"] == "complete" and record["results"]["bbox"]["AP50"] is not None
    assert record["final_model_kept"] is False
    assert not list(trial.glob("*.pth")) and not (trial / "last_checkpoint").exists()  # no weights left
    log = (out / "log.txt").read_text()
    assert "model_final.pth not written" in log and "removed model_0000000.pth" in log  # the periodic one
    # The same command again: complete, nothing trained; the key is disk policy, not part of the config hash.
    assert main(argv[:-2] + ["SIAMBENCH.KEEP_FINAL_MODEL", "True"]) == 0
    assert json.loads((trial / "results.json").read_text()) == record and not list(trial.glob("*.pth"))
