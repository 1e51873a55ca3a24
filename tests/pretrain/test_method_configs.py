"""The methods' configs load, pass the checks, and the synthetic ones train a step from disk."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from siambench.pretrain.config import get_cfg
from siambench.pretrain.main import _check_cfg, main
from siambench.pretrain.utils.config import ConfigError, load_config
from siambench.pretrain.utils.dist import DistInfo

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain"
METHODS = ("moco_v2", "simclr", "byol", "swav")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("epochs", (100, 200))
def test_paper_configs(method, epochs):
    cfg = load_config(get_cfg(), str(CONFIGS / f"{method}_r50_{epochs}ep.yaml"), [])
    _check_cfg(cfg, DistInfo(world_size=8))
    assert cfg.MODEL.METHOD == method and cfg.MODEL.ARCH == "resnet50" and cfg.SOLVER.EPOCHS == epochs
    assert cfg.SOLVER.BATCH_SIZE == (256 if method == "moco_v2" else 4096)  # SimSiam paper Table 4
    assert cfg.DATA.IMAGE_SIZE == 224 and (method != "swav" or cfg.MODEL.SWAV.NUM_SMALL_CROPS == 0)  # 2 x 224


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_synthetic_config_trains_from_disk(tmp_path, synth_root, method):
    rc = main(["--config-file", str(CONFIGS / f"synth_{method}_r18.yaml"), "OUTPUT_DIR", str(tmp_path),
               "DATA.ROOT", str(synth_root / "imagefolder"), "MODEL.DEVICE", "cpu", "DATA.IMAGE_SIZE", "32",
               "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "2",
               "DATA.NUM_WORKERS", "0", "MONITOR.TENSORBOARD", "False", "MONITOR.KNN_PERIOD", "0",
               "MODEL.MOCO.QUEUE", "64", "MODEL.WIDTH", "8"])  # tiny encoder: the test is about the config
    assert rc == 0
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["type"] == "epoch" and records[-1]["loss"] is not None
    assert (tmp_path / "model_final.pth").is_file()


def test_method_config_errors_name_the_key(tiny_cfg):
    with pytest.raises(ConfigError, match="MODEL.METHOD"):
        _check_cfg(tiny_cfg("MODEL.METHOD", "dino"), DistInfo())
    with pytest.raises(ConfigError, match="SOLVER.LARS_RULE must be one of larc, byol, simclr"):
        _check_cfg(tiny_cfg("SOLVER.LARS_RULE", "lamb"), DistInfo())
    with pytest.raises(ConfigError, match="MODEL.MOCO.QUEUE"):
        _check_cfg(tiny_cfg("MODEL.METHOD", "moco_v2", "MODEL.MOCO.QUEUE", "100"), DistInfo())
    with pytest.raises(ConfigError, match="AUG_BACKEND"):
        _check_cfg(tiny_cfg("DATA.AUGMENTATION", "byol", "DATA.AUG_BACKEND", "batched"), DistInfo())
    with pytest.raises(ConfigError, match="NUM_SMALL_CROPS"):
        _check_cfg(tiny_cfg("MODEL.METHOD", "swav", "MODEL.SWAV.NUM_SMALL_CROPS", "2", "DATA.AUG_BACKEND", "batched"),
                   DistInfo())
    with pytest.raises(ConfigError, match="SCHEDULE_UNIT"):
        _check_cfg(tiny_cfg("SOLVER.WARMUP_EPOCHS", "1"), DistInfo())
