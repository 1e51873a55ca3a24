"""Every method through ``siambench pretrain``: trains, checkpoints, resumes bit-exact, converts."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from siambench.convert.checkpoints import load_backbone_state_dict
from siambench.convert.cli import main as convert_main
from siambench.pretrain.checkpoint import load_checkpoint
from siambench.pretrain.main import main

# tiny per-method heads; every other key is the method's default (LARS, warmup, queues, ...)
METHOD_OPTS = {
    "moco_v2": ["MODEL.MOCO.DIM", "16", "MODEL.MOCO.QUEUE", "32", "MODEL.MOCO.SYMMETRIC", "True"],
    "simclr": ["MODEL.SIMCLR.HIDDEN_DIM", "32", "MODEL.SIMCLR.DIM", "16", "SOLVER.OPTIMIZER", "lars",
               "SOLVER.EXCLUDE_BIAS_BN", "True", "SOLVER.SCHEDULE_UNIT", "step", "SOLVER.WARMUP_EPOCHS", "1",
               "SOLVER.LARS_RULE", "simclr", "DATA.AUGMENTATION", "simclr"],
    "byol": ["MODEL.BYOL.HIDDEN_DIM", "32", "MODEL.BYOL.DIM", "16", "SOLVER.OPTIMIZER", "lars",
             "SOLVER.LARS_RULE", "byol", "SOLVER.EXCLUDE_BIAS_BN", "True", "DATA.AUGMENTATION", "byol"],
    "swav": ["MODEL.SWAV.HIDDEN_DIM", "32", "MODEL.SWAV.DIM", "16", "MODEL.SWAV.NUM_PROTOTYPES", "10",
             "MODEL.SWAV.FREEZE_PROTOTYPES_ITERS", "1", "MODEL.SWAV.QUEUE_LENGTH", "32",
             "MODEL.SWAV.QUEUE_START_EPOCH", "0", "MODEL.SWAV.NUM_SMALL_CROPS", "2",
             "MODEL.SWAV.SMALL_CROP_SIZE", "16", "SOLVER.OPTIMIZER", "lars", "SOLVER.SCHEDULE_UNIT", "step",
             "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.WARMUP_LINSPACE", "True", "DATA.AUGMENTATION", "swav"],
}
ENCODER_PREFIX = {"moco_v2": "module.encoder_q.", "simclr": "module.encoder.", "byol": "module.encoder.",
                  "swav": "module.encoder."}


@pytest.mark.parametrize("method", sorted(METHOD_OPTS))
def test_method_trains_resumes_bit_exact_and_converts(tmp_path, tiny_opts, tiny_convertible, copy_run_dir, method):
    opts = [*tiny_opts, *tiny_convertible, "MODEL.METHOD", method, "MODEL.ZERO_INIT_RESIDUAL", "False",
            *METHOD_OPTS[method]]
    full = tmp_path / "full"
    assert main(["OUTPUT_DIR", str(full), *opts]) == 0
    records = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "step"]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    # model_final.pth is the last checkpoint's file, not a second copy of weights and optimizer state
    assert (full / "model_final.pth").stat().st_ino == (full / "checkpoint_0002.pth").stat().st_ino
    ckpt = load_checkpoint(full / "model_final.pth")
    sd = ckpt["state_dict"]
    assert any(k.startswith(ENCODER_PREFIX[method] + "layer4.") for k in sd)
    if method == "moco_v2":
        assert int(sd["module.queue_ptr"]) == (4 * 2 * 16) % 32  # 4 steps x 2 views (symmetric) x 16 keys
    if method == "swav":
        assert ckpt["method"]["queue_fills"] == 4 and sd["module.queue"].abs().sum() > 0

    # epoch 2 interrupted: resume from checkpoint_0001 reproduces the weights (queues, EMA, ...) bit for bit
    half = tmp_path / "half"
    copy_run_dir(full, half, drop=("model_final.pth", "checkpoint_0002.pth"))
    (half / "last_checkpoint").write_text("checkpoint_0001.pth\n")
    assert main(["--resume", "auto", "OUTPUT_DIR", str(half), *opts]) == 0
    resumed = load_checkpoint(half / "model_final.pth")["state_dict"]
    assert set(resumed) == set(sd)
    for k, v in sd.items():
        assert torch.equal(v, resumed[k]), k

    backbone, info = load_backbone_state_dict(full / "model_final.pth")
    assert info["format"] == ("moco" if method == "moco_v2" else "siambench")
    assert (info["arch"], info["width"]) == ("resnet50", 4)
    torch.testing.assert_close(backbone["conv1.weight"], sd[ENCODER_PREFIX[method] + "conv1.weight"])
    assert convert_main([str(full / "model_final.pth"), str(tmp_path / "model.pkl")]) == 0
    with open(tmp_path / "model.pkl", "rb") as f:
        weights = pickle.load(f)["model"]  # our own file, just written
    assert weights["stem.conv1.weight"].shape == tuple(backbone["conv1.weight"].shape)
