"""`siambench pretrain --resume` on a checkpoint written by the official main_simsiam.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from siambench.pretrain.checkpoint import load_checkpoint, load_optimizer_state, official_state_dict
from siambench.pretrain.main import build_model_and_optimizer, main
from siambench.pretrain.utils.dist import DistInfo


def _official_checkpoint(cfg, path: Path) -> tuple[dict, torch.nn.Module, torch.optim.Optimizer]:
    """What main_simsiam.py saves after one step: SGD over *all* encoder parameters (the frozen
    projector bias included) and the predictor, groups tagged ``fix_lr``; no RNG or config."""
    _, bare, ours, _ = build_model_and_optimizer(cfg, DistInfo())
    official = torch.optim.SGD([{"params": bare.encoder.parameters(), "fix_lr": False},
                                {"params": bare.predictor.parameters(), "fix_lr": True}],
                               lr=0.1, momentum=0.9, weight_decay=1e-4)
    ps, zs = bare([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    (-(ps[0] * zs[1]).sum() - (ps[1] * zs[0]).sum()).backward()
    official.step()
    state = {"epoch": 1, "arch": cfg.MODEL.ARCH, "state_dict": official_state_dict(bare),
             "optimizer": official.state_dict()}
    torch.save(state, path)
    return state, bare, official


def test_official_optimizer_state_loads_without_the_frozen_bias(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    state, bare, official = _official_checkpoint(cfg, tmp_path / "checkpoint_0000.pth.tar")
    counts = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    _, _, optimizer, _ = build_model_and_optimizer(cfg, DistInfo())
    assert [len(g["params"]) for g in optimizer.param_groups] == [counts[0] - 1, counts[1]]  # the frozen bias
    with pytest.raises(ValueError):  # what resuming did before
        optimizer.load_state_dict(state["optimizer"])
    load_optimizer_state(optimizer, state["optimizer"])
    assert [g["name"] for g in optimizer.param_groups] == ["encoder", "predictor"]  # fix_pred_lr reads them
    trained = [p for p in bare.parameters() if p.requires_grad]
    mine = [p for g in optimizer.param_groups for p in g["params"]]
    for theirs, p in zip(trained, mine):
        assert torch.equal(optimizer.state[p]["momentum_buffer"], official.state[theirs]["momentum_buffer"])


def test_foreign_optimizer_state_is_refused_clearly(tiny_cfg) -> None:
    _, _, optimizer, _ = build_model_and_optimizer(tiny_cfg(), DistInfo())
    saved = {"state": {}, "param_groups": [{"params": list(range(161)), "lr": 0.1}]}
    with pytest.raises(ValueError, match=r"groups of \[161\] tensors.*another model"):
        load_optimizer_state(optimizer, saved)


def test_pretrain_resumes_an_official_checkpoint(tiny_cfg, tiny_opts, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_0000.pth.tar"
    _official_checkpoint(tiny_cfg(), path)
    out = tmp_path / "run"
    assert main(["--resume", str(path), "OUTPUT_DIR", str(out), *tiny_opts, "TRAIN.CHECKPOINT_PERIOD", "2"]) == 0
    final = load_checkpoint(out / "model_final.pth")
    assert final["epoch"] == 2 and "rng" in final
