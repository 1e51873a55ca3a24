"""End-to-end `siambench pretrain` on tiny synthetic data: files, exact resume, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from siambench.convert.checkpoints import load_backbone_state_dict
from siambench.pretrain import losses
from siambench.pretrain.checkpoint import load_checkpoint
from siambench.pretrain.main import main
from siambench.pretrain.methods.encoders import build_encoder
from siambench.pretrain.utils.config import ConfigError



@pytest.fixture
def run(tiny_opts):
    """run(out, *opts, resume=None) -> exit code of `siambench pretrain` on the tiny config."""
    def _run(out, *opts, resume=None):
        argv = ["OUTPUT_DIR", str(out), *tiny_opts, *opts]
        return main((["--resume", resume] if resume else []) + argv)

    return _run


def test_run_outputs_and_bit_exact_resume(run, tmp_path):
    assert run(tmp_path / "full") == 0
    full = tmp_path / "full"
    assert (full / "last_checkpoint").read_text().strip() == "checkpoint_0002.pth"
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert len(steps) == 4 and [r["epoch"] for r in epochs] == [0, 1]
    assert set(steps[0]) >= {"epoch", "step", "loss", "lr", "z_std"} and set(epochs[0]) >= {"loss", "z_std"}
    assert (full / "config.yaml").is_file()

    ckpt = load_checkpoint(full / "model_final.pth")
    assert {"state_dict", "arch", "epoch", "optimizer", "scaler", "rng", "config", "siambench_version"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "resnet18" and ckpt["width"] == 8
    assert all(k.startswith(("module.encoder.", "module.predictor.")) for k in ckpt["state_dict"])
    # the encoder loads into a torchvision resnet of that width (only fc and the BN step counters are missing)
    resnet = build_encoder("resnet18", width=8)
    missing, unexpected = resnet.load_state_dict(load_backbone_state_dict(full / "model_final.pth")[0], strict=False)
    assert {k for k in missing if not k.endswith("num_batches_tracked")} == {"fc.weight", "fc.bias"} and not unexpected
    torch.testing.assert_close(resnet.conv1.weight, ckpt["state_dict"]["module.encoder.conv1.weight"])

    # interrupted during epoch 2 (its checkpoint never written), resumed: bit-identical weights, same metrics
    half = tmp_path / "half"
    assert run(half) == 0
    (half / "model_final.pth").unlink()
    (half / "last_checkpoint").write_text("checkpoint_0001.pth\n")
    (half / "checkpoint_0002.pth").unlink()
    assert run(half, resume="auto") == 0
    resumed = load_checkpoint(half / "model_final.pth")
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    lines = (half / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in lines] == [r["loss"] for r in records]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(run, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    assert run(out, "SOLVER.EPOCHS", "1") == 0
    before = load_checkpoint(out / "checkpoint_0001.pth")
    monkeypatch.setitem(losses.SIMILARITIES, "cosine", lambda p, z: (p * float("nan")).sum())
    with pytest.raises(FloatingPointError, match="loss is nan"):
        run(out, "SOLVER.EPOCHS", "2", resume="auto")
    assert (out / "last_checkpoint").read_text().strip() == "checkpoint_0001.pth"
    after = load_checkpoint(out / "checkpoint_0001.pth")
    assert all(torch.equal(v, after["state_dict"][k]) for k, v in before["state_dict"].items())
    assert not (out / "checkpoint_0002.pth").exists()


def test_bad_config_is_named(run, tmp_path):
    with pytest.raises(ConfigError, match="SOLVER.BATCH_SZ"):
        run(tmp_path, "SOLVER.BATCH_SZ", "4")
    with pytest.raises(ConfigError, match="TRAIN.AMP"):
        run(tmp_path, "TRAIN.AMP", "fp8")
    with pytest.raises(ValueError, match="DATA.ROOT is empty"):
        run(tmp_path, "DATA.DATASET", "imagefolder")


@pytest.mark.parametrize("opts", [
    ["HYPOTHESIS.MODE", "kstep", "HYPOTHESIS.K_STEPS", "2"],
    ["HYPOTHESIS.MODE", "moving_average", "MODEL.PREDICTOR", "none"],
    ["LOSS.SYMMETRY", "asym2x", "DATA.AUG_BACKEND", "batched", "TRAIN.AMP", "bf16"],
])
def test_ablation_variants_train(run, tmp_path, opts):
    assert run(tmp_path, "SOLVER.EPOCHS", "1", *opts) == 0
    steps = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 3 and all(-1.0 <= r["loss"] <= 1.0 for r in steps)
    ckpt = load_checkpoint(tmp_path / "model_final.pth")
    if "moving_average" in opts:
        assert ckpt["hypothesis"]["seen"].sum() == 32  # every image got a target


def test_synth_config_on_disk_dataset_with_knn_monitor(tmp_path, synth_root):
    cfg = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "synth_r18.yaml"
    rc = main(["--config-file", str(cfg), "OUTPUT_DIR", str(tmp_path), "DATA.ROOT", str(synth_root / "imagefolder"),
               "MODEL.DEVICE", "cpu", "DATA.IMAGE_SIZE", "32", "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "8",
               "DATA.NUM_WORKERS", "0", "MONITOR.TENSORBOARD", "False", "MODEL.WIDTH", "8"])
    assert rc == 0
    epoch = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert epoch["type"] == "epoch" and 0.0 <= epoch["knn_top1"] <= 100.0 and epoch["bad_images"] == 0
