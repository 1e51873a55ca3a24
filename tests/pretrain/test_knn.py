"""Weighted kNN: vote math on hand-made features, feature extraction, ``siambench knn``."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from siambench.pretrain.knn import extract_features, knn_accuracy, knn_predict, knn_scores
from siambench.pretrain.eval_config import get_knn_defaults
from siambench.pretrain.knn import main as knn_main
from siambench.pretrain.methods.encoders import build_encoder
from siambench.pretrain.utils.config import ConfigError, load_config

CONFIG = str(Path(__file__).resolve().parents[2] / "configs/knn/synth_r18.yaml")
WIDTH = 8  # MODEL.WIDTH of the tiny encoders saved here (64 = torchvision's)
TINY = ["MODEL.WIDTH", str(WIDTH)]


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_separable_clusters_are_classified_perfectly():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 16, generator=g), dim=1)  # 4 classes, 16-d
    train_labels = torch.arange(4).repeat_interleave(10)
    test_labels = torch.arange(4).repeat_interleave(5)
    noise = lambda n: 0.05 * torch.randn(n, 16, generator=g)  # noqa: E731
    train = F.normalize(centres[train_labels] + noise(40), dim=1)
    test = F.normalize(centres[test_labels] + noise(20), dim=1)
    pred = knn_predict(train, train_labels, test, num_classes=4, k=10, t=0.1)
    assert pred.dtype == torch.int64 and torch.equal(pred, test_labels)


def test_votes_are_weighted_by_exp_similarity_over_temperature():
    # One class-0 neighbour at cosine 0.9 against two class-1 neighbours at 0.5.
    train = _unit([0.9, math.sqrt(1 - 0.81)], [0.5, math.sqrt(0.75)], [0.5, -math.sqrt(0.75)])
    labels = torch.tensor([0, 1, 1])
    query = _unit([1.0, 0.0])
    scores = knn_scores(train, labels, query, num_classes=3, k=3, t=0.1)
    expected = torch.tensor([[math.exp(9.0), 2 * math.exp(5.0), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)
    # A low temperature neither overflows nor changes the winner.
    cold = knn_scores(train, labels, query, num_classes=3, k=3, t=0.005)
    assert torch.isfinite(cold).all() and cold.argmax().item() == 0
    assert knn_predict(train, labels, query, 3, k=3, t=0.1).item() == 0  # the close neighbour wins
    assert knn_predict(train, labels, query, 3, k=3, t=10.0).item() == 1  # flat weights: majority wins
    assert knn_predict(train, labels, query, 3, k=1, t=10.0).item() == 0  # only the nearest votes


def test_k_larger_than_bank_and_chunking_do_not_change_scores():
    g = torch.Generator().manual_seed(1)
    train, test = F.normalize(torch.randn(7, 5, generator=g), dim=1), F.normalize(torch.randn(9, 5, generator=g), dim=1)
    labels = torch.randint(0, 3, (7,), generator=g)
    full = knn_scores(train, labels, test, 3, k=200, t=0.07, chunk_size=1024)
    chunked = knn_scores(train, labels, test, 3, k=200, t=0.07, chunk_size=2)
    torch.testing.assert_close(full, chunked, rtol=1e-5, atol=0)  # float32 matmul of other shapes
    # k clipped to the bank: every bank entry votes, so each row sums all weights.
    torch.testing.assert_close(full.sum(1), (test @ train.T / 0.07).exp().sum(1).double(), rtol=1e-5, atol=0)


def test_bad_shapes_and_arguments_raise():
    train, labels = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="MxD and NxD"):
        knn_scores(train, labels, torch.zeros(2, 5), 2)
    with pytest.raises(ValueError, match="labels"):
        knn_scores(train, labels[:3], torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match="t > 0"):
        knn_scores(train, labels, torch.zeros(2, 3), 2, t=0.0)


def test_knn_accuracy_top1_top5():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    acc = knn_accuracy(scores, torch.tensor([1, 2, 0]), topk=(1, 2, 5))
    assert acc[1] == pytest.approx(100 / 3) and acc[2] == pytest.approx(200 / 3) and acc[5] == 100.0


def test_extract_features_normalises_and_restores_training_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6))
    model.train()
    batches = [(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])), (torch.randn(3, 3, 2, 2), torch.tensor([4, 5, 6]))]
    running_mean = model[2].running_mean.clone()
    feats, labels = extract_features(model, batches, "cpu")
    assert feats.shape == (7, 6) and torch.equal(labels, torch.arange(7))
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(7))
    assert model.training and torch.equal(model[2].running_mean, running_mean)  # ran in eval mode
    with pytest.raises(ValueError, match="no batches"):
        extract_features(model, [], "cpu")


def _save_siambench_checkpoint(path, arch: str = "resnet18") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_encoder(arch, num_classes=32, width=WIDTH)  # fc stands in for the projector
    state = {f"module.encoder.{k}": v for k, v in model.state_dict().items()}
    state["module.predictor.0.weight"] = torch.zeros(8, 32)
    torch.save({"state_dict": state, "arch": arch, "epoch": 3, "siambench_version": "test"}, path)
    return model.state_dict()


def test_knn_command_writes_results(synth_root, tmp_path):
    ckpt = tmp_path / "model_final.pth"
    _save_siambench_checkpoint(ckpt)
    out = tmp_path / "knn"
    rc = knn_main(["--config-file", CONFIG, *TINY, "DATA.ROOT", str(synth_root / "imagefolder"),
                   "DATA.IMAGE_SIZE", "32", "MODEL.WEIGHTS", str(ckpt), "OUTPUT_DIR", str(out)])
    assert rc == 0
    res = json.loads((out / "knn_results.json").read_text())
    cfg = load_config(get_knn_defaults(), CONFIG)
    assert res["k"] == cfg.KNN.K and res["temperature"] == cfg.KNN.TEMPERATURE and res["pretrain_epochs"] == 3
    assert res["num_train"] == len(list((synth_root / "imagefolder/train").rglob("*.jpg")))
    assert res["num_val"] == len(list((synth_root / "imagefolder/val").rglob("*.jpg")))
    assert 0.0 <= res["top1"] <= res["top5"] <= 100.0
    assert res["checkpoint"] == str(ckpt.resolve()) and len(res["checkpoint_sha256"]) == 64
    assert (out / "config.yaml").is_file()


def test_knn_command_names_arch_mismatch(synth_root, tmp_path):
    ckpt = tmp_path / "r18.pth"
    _save_siambench_checkpoint(ckpt)
    with pytest.raises(ValueError, match="MODEL.ARCH resnet18"):
        knn_main(["--config-file", CONFIG, *TINY, "DATA.ROOT", str(synth_root / "imagefolder"),
                  "MODEL.ARCH", "resnet34", "MODEL.WEIGHTS", str(ckpt), "OUTPUT_DIR", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="MODEL.WEIGHTS is empty"):
        knn_main(["--config-file", CONFIG, *TINY, "DATA.ROOT", str(synth_root / "imagefolder"),
                  "OUTPUT_DIR", str(tmp_path / "o")])


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_knn_matches_single_process(synth_root, tmp_path):
    """Each rank embeds a disjoint shard; the gathered bank gives the single-process result."""
    ckpt = tmp_path / "model_final.pth"
    _save_siambench_checkpoint(ckpt)
    opts = ["DATA.ROOT", str(synth_root / "imagefolder"), "DATA.IMAGE_SIZE", "32", "MODEL.WEIGHTS", str(ckpt),
            "KNN.BATCH_SIZE", "8", *TINY]
    assert knn_main(["--config-file", CONFIG, *opts, "OUTPUT_DIR", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "siambench.pretrain.knn", "--config-file", CONFIG, *opts, "OUTPUT_DIR", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "knn_results.json").read_text()) for d in ("one", "two"))
    for key in ("num_train", "num_val", "top1", "top5"):  # every image counted exactly once
        assert one[key] == pytest.approx(two[key]), key
    assert "world size 2" in (tmp_path / "two/log_knn.txt").read_text()
