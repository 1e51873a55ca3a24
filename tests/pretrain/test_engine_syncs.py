"""train_one_epoch reads the device at most once per print period (plus a constant)."""
from __future__ import annotations

import math

import pytest
import torch

from pretrain.engine import TrainContext, train_one_epoch
from pretrain.methods import build_method

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
