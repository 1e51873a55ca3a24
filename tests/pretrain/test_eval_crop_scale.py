"""DATA.CROP_SCALE of lincls / supervised training: torchvision's default unless a config names another."""
from __future__ import annotations

from pathlib import Path

import pytest
import torchvision.transforms as T

from siambench.pretrain.eval_config import get_lincls_defaults, get_supervised_defaults
from siambench.pretrain.classification import build_train_loader
from siambench.pretrain.utils.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _crop(cfg) -> T.RandomResizedCrop:
    loader, _ = build_train_loader(cfg, 4)
    return next(t for t in loader.dataset.transform.transforms if isinstance(t, T.RandomResizedCrop))


def test_default_is_torchvisions_and_a_config_changes_it(synth_root: Path) -> None:
    assert tuple(get_lincls_defaults().DATA.CROP_SCALE) == tuple(get_supervised_defaults().DATA.CROP_SCALE) == \
        T.RandomResizedCrop(8).scale == (0.08, 1.0)
    cfg = get_lincls_defaults()
    cfg.DATA.ROOT, cfg.DATA.IMAGE_SIZE, cfg.DATA.NUM_WORKERS = str(synth_root / "imagefolder"), 32, 0
    assert _crop(cfg).scale == (0.08, 1.0)
    demo = load_config(get_supervised_defaults(), ROOT / "configs" / "supervised" / "synth_r18.yaml")
    cfg.DATA.CROP_SCALE = demo.DATA.CROP_SCALE
    assert _crop(cfg).scale == (0.5, 1.0)  # the demo's supervised baseline (configs/supervised/synth_r18.yaml)


def test_demo_linear_probe_trains_on_crops_that_keep_the_shape() -> None:
    """The demo's linear probe: crops (0.5, 1) like its pretraining, lr 0.02 at batch 128 (0.2 ran above chance loss)."""
    demo = load_config(get_lincls_defaults(), ROOT / "configs" / "lincls" / "synth_r18.yaml")
    assert tuple(demo.DATA.CROP_SCALE) == (0.5, 1.0)
    assert demo.SOLVER.BASE_LR * demo.SOLVER.BATCH_SIZE / 256 == pytest.approx(0.02)
