"""Linear evaluation: classifier init, frozen backbone, schedule, ``siambench lincls`` end to end."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siambench.pretrain.eval_config import get_lincls_defaults
from siambench.pretrain.lars import LARS
from siambench.pretrain.lincls import build_linear_eval, build_optimizer, sanity_check
from siambench.pretrain.schedule import cosine_lr
from siambench.pretrain.lincls import main as lincls_main
from siambench.pretrain.methods.encoders import build_encoder
from siambench.pretrain.utils.run_dir import RunDirError
from siambench.pretrain.supervised import main as supervised_main
from siambench.pretrain.utils.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
WIDTH = 8  # MODEL.WIDTH of the tiny encoders (64 = torchvision's): checkpoints of < 2 MB
COLOURS = {"blue": (40, 60, 200), "green": (50, 190, 60), "red": (210, 50, 40)}


def make_colour_folder(root: Path, per_class: dict[str, int], size: int = 40, seed: int = 0) -> Path:
    """ImageFolder whose class is the dominant colour of a noisy image: easy, so robust to test."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(np.array(rgb) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, supervised checkpoint) trained for a few epochs on the colour folder."""
    tmp = tmp_path_factory.mktemp("lincls")
    data = make_colour_folder(tmp / "data", {"train": 12, "val": 6})
    out = tmp / "supervised"
    supervised_main(["--config-file", str(CONFIGS / "supervised/synth_r18.yaml"), "DATA.ROOT", str(data),
                     "DATA.IMAGE_SIZE", "32", "SOLVER.EPOCHS", "2", "SOLVER.BATCH_SIZE", "12",
                     "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(out), "MODEL.WIDTH", str(WIDTH)])
    return data, out / "model_final.pth"


def _cfg(**overrides):
    opts = [x for kv in overrides.items() for x in (kv[0].replace("__", "."), str(kv[1]))]
    return load_config(get_lincls_defaults(), None, opts)


def _save_moco_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    query, key = (build_encoder("resnet18", num_classes=128, width=WIDTH) for _ in range(2))
    state = {f"module.encoder_q.{k}": v for k, v in query.state_dict().items()}
    state |= {f"module.encoder_k.{k}": v for k, v in key.state_dict().items()}
    state["module.queue"] = torch.randn(128, 16)
    torch.save({"state_dict": state, "arch": "resnet18", "epoch": 200}, path)
    return query.state_dict()


def test_linear_model_loads_moco_encoder_frozen_with_official_classifier_init(tmp_path):
    source = _save_moco_checkpoint(tmp_path / "moco.pth")
    model, reference, info = build_linear_eval(_cfg(MODEL__ARCH="resnet18", MODEL__WIDTH=WIDTH,
                                                    MODEL__WEIGHTS=tmp_path / "moco.pth"), 100)
    assert info["format"] == "moco" and info["epoch"] == 200
    backbone = model.backbone.state_dict()
    for k, v in source.items():
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked"):
            assert torch.equal(backbone[k], v), k  # the query encoder, not the key encoder
    w, b = model.classifier.weight, model.classifier.bias
    assert w.shape == (100, 8 * WIDTH) and torch.count_nonzero(b) == 0
    assert 0.009 < w.std().item() < 0.011 and abs(w.mean().item()) < 1e-3  # N(0, 0.01^2)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.weight", "classifier.bias"]
    model.train()
    assert model.classifier.training and not model.backbone.training  # frozen BatchNorm statistics
    sanity_check(model.backbone, reference)
    with torch.no_grad():
        model.backbone.layer3[0].bn1.running_var.add_(1e-3)
    with pytest.raises(RuntimeError, match="layer3.0.bn1.running_var"):
        sanity_check(model.backbone, reference)


def test_recipe_defaults_lars_lr_and_cosine_schedule():
    cfg = get_lincls_defaults()
    opt, init_lr = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, LARS) and init_lr == pytest.approx(1.6)  # 0.1 x 4096 / 256
    group = opt.param_groups[0]
    assert group["trust_coefficient"] == 0.001 and group["momentum"] == 0.9 and group["weight_decay"] == 0.0
    assert not group["clip"] and cfg.SOLVER.EPOCHS == 90 and cfg.MODEL.INIT_STD == 0.01
    assert cosine_lr(1.6, 0, 90) == 1.6 and cosine_lr(1.6, 45, 90) == pytest.approx(0.8)
    assert cosine_lr(1.6, 89, 90) == pytest.approx(1.6 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(SOLVER__OPTIMIZER="adam"), [torch.nn.Parameter(torch.zeros(2))])


def _lincls(data: Path, weights: Path, out: Path, *opts: str, resume: bool = False) -> dict:
    rc = lincls_main([*(["--resume", "auto"] if resume else []), "--config-file", str(CONFIGS / "lincls/synth_r18.yaml"),
                      "DATA.ROOT", str(data), "DATA.IMAGE_SIZE", "32", "MODEL.WEIGHTS", str(weights),
                      "OUTPUT_DIR", str(out), "SOLVER.BATCH_SIZE", "12", "MODEL.WIDTH", str(WIDTH), *opts])
    assert rc == 0
    return json.loads((out / "lincls_results.json").read_text())


def test_lincls_from_supervised_checkpoint_beats_chance_and_resumes(colour_run, tmp_path):
    data, weights = colour_run
    out = tmp_path / "lincls"
    res = _lincls(data, weights, out, "SOLVER.EPOCHS", "6")
    assert res["top1"] > 70.0  # 3 classes: chance is 33%
    assert res["top5"] == 100.0 and res["num_classes"] == 3 and res["num_val"] == 18
    assert res["epochs"] == 6 and res["pretrain_epochs"] == 2 and res["arch"] == "resnet18"
    assert res["checkpoint_format"] == "siambench" and res["checkpoint"] == str(weights.resolve())
    base_lr = load_config(get_lincls_defaults(), CONFIGS / "lincls/synth_r18.yaml").SOLVER.BASE_LR
    assert res["lr"] == pytest.approx(base_lr * 12 / 256) and res["best_top1"] >= res["top1"]
    assert {"torch", "torchvision", "git"} <= res["env"].keys()

    # --resume auto continues from the saved classifier: only the new epochs are trained.
    res = _lincls(data, weights, out, "SOLVER.EPOCHS", "7", resume=True)
    state = torch.load(out / "lincls_checkpoint.pth", weights_only=True)
    assert res["epochs"] == 7 and state["epoch"] == 7 and [h["epoch"] for h in state["history"]] == list(range(1, 8))
    assert (out / "log_lincls.txt").read_text().count("resumed from") == 1


def test_lincls_resume_refuses_another_checkpoint(colour_run, tmp_path):
    data, weights = colour_run
    out = tmp_path / "lincls"
    _lincls(data, weights, out, "SOLVER.EPOCHS", "1")
    other = tmp_path / "moco.pth"
    _save_moco_checkpoint(other)
    with pytest.raises(RunDirError, match="another config; changed keys: MODEL.WEIGHTS"):  # before anything is written
        _lincls(data, other, out, "SOLVER.EPOCHS", "2", resume=True)
    with pytest.raises(RunDirError, match="holds a finished run"):  # and a new run into it without --resume
        _lincls(data, weights, out, "SOLVER.EPOCHS", "1")


def test_lincls_resume_refuses_weights_changed_in_place(colour_run, tmp_path):
    """Same MODEL.WEIGHTS path, other content: a user error (exit 2), not a bare SystemExit (exit 1)."""
    data, weights = colour_run
    mine = tmp_path / "weights.pth"
    shutil.copy(weights, mine)
    out = tmp_path / "lincls"
    _lincls(data, mine, out, "SOLVER.EPOCHS", "1")
    _save_moco_checkpoint(mine)
    with pytest.raises(ConfigError, match="different MODEL.WEIGHTS"):
        _lincls(data, mine, out, "SOLVER.EPOCHS", "2", resume=True)


def test_lincls_runs_the_lars_recipe_on_synth(synth_root, colour_run, tmp_path):
    _, weights = colour_run  # a resnet18 checkpoint; the synth set has other classes, which is fine
    res = _lincls(synth_root / "imagefolder", weights, tmp_path / "o", "SOLVER.EPOCHS", "1",
                  "SOLVER.OPTIMIZER", "lars")
    assert res["optimizer"] == "lars" and res["num_classes"] == 6 and 0.0 <= res["top1"] <= 100.0
