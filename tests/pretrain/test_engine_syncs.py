"""train_one_epoch reads the device at most once per print period (plus a constant)."""
from __future__ import annotations

import math

import pytest
import torch

from siambench.pretrain.engine import TrainContext, train_one_epoch
from siambench.pretrain.methods import build_method

PRINT_FREQ = 4  # reads at steps 0, 4, 8, ... and the last step
CONSTANT = 8  # per epoch: the meters' cross-rank averages at the end


@pytest.fixture
def count_syncs(monkeypatch):
    """Count Tensor.item / .tolist / float(tensor) calls (each a host-device sync on a GPU)."""
    calls = {"n": 0}
    for name in ("item", "tolist", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            calls["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize("method", ["simsiam", "moco_v2", "swav"])  # the ones with queues on the device
def test_host_syncs_per_print_period(tiny_cfg, count_syncs, method):
    torch.manual_seed(0)
    opts = {"moco_v2": ["MODEL.MOCO.QUEUE", "16"], "swav": ["MODEL.SWAV.NUM_PROTOTYPES", "8"],
            "byol": ["MODEL.BYOL.HIDDEN_DIM", "32"], "simclr": ["MODEL.SIMCLR.HIDDEN_DIM", "32"]}.get(method, [])
    model = build_method(tiny_cfg("MODEL.METHOD", method, "MODEL.ARCH", "resnet18", *opts))
    # a tiny backbone keeps the test fast: the bookkeeping, not the network, is under test
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    counts = {}
    for steps in (4, 12):
        batches = [([torch.randn(4, 3, 16, 16) for _ in range(model.num_views)], torch.arange(4))
                   for _ in range(steps)]
        ctx = TrainContext(device=torch.device("cpu"), init_lr=0.01, epochs=1, print_freq=PRINT_FREQ,
                           schedule_per_step=True)
        count_syncs["n"] = 0
        stats = train_one_epoch(model, optimizer, batches, 0, ctx)
        assert math.isfinite(stats["loss"]) and ctx.global_step == steps
        counts[steps] = count_syncs["n"]
        periods = math.ceil(steps / PRINT_FREQ) + 1
        assert counts[steps] <= periods + CONSTANT, f"{counts[steps]} host syncs in {steps} steps"
    assert counts[12] - counts[4] <= 3, counts  # 8 more steps = 2-3 more print periods, not 8 more syncs


def test_nan_inside_a_print_period_never_reaches_a_checkpoint(tmp_path, tiny_opts, monkeypatch):
    from siambench.pretrain.checkpoint import load_checkpoint
    from siambench.pretrain.losses import SimSiamLoss
    from siambench.pretrain.main import check_finite, main

    calls = {"n": 0}
    original = SimSiamLoss.__call__

    def nan_at_step_5(self, ps, zs):  # epoch 1, step 1 of 4: inside the period read at step 3
        calls["n"] += 1
        loss = original(self, ps, zs)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(SimSiamLoss, "__call__", nan_at_step_5)
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1 steps 1-3"):
        main(["OUTPUT_DIR", str(tmp_path), *tiny_opts, "SOLVER.BATCH_SIZE", "8"])
    assert (tmp_path / "last_checkpoint").read_text().strip() == "checkpoint_0001.pth"
    assert not (tmp_path / "checkpoint_0002.pth").exists() and not (tmp_path / "model_final.pth").exists()
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "checkpoint_0001.pth")["state_dict"].values()
               if v.is_floating_point())
    bad = torch.nn.Linear(2, 2)
    with torch.no_grad():
        bad.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="weight"):
        check_finite(bad, 0)
    check_finite(torch.nn.Linear(2, 2), 0)
