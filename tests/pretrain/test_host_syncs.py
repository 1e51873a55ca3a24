"""Supervised and linear-eval epochs read the device at most once per print period.

Every way a tensor's value reaches Python (``item``, ``tolist``, ``float``/``int``/
``bool`` of a tensor, ``numpy``) is a host<->device synchronisation on a GPU. On the
CPU we count those calls: the count must not grow with the number of steps beyond
one per print period.
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from siambench.pretrain import lincls, supervised
from siambench.pretrain.eval_config import get_supervised_defaults
from siambench.pretrain.lars import LARS
from siambench.pretrain.utils.config import load_config
from siambench.pretrain.utils.step_stats import DeviceStepStats, is_print_step
from siambench.pretrain.utils.logger import MetricLogger

_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy")


@contextlib.contextmanager
def count_host_reads():
    counter = {"n": 0}
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(fn):
        def counted(self, *a, **k):
            counter["n"] += 1
            return fn(self, *a, **k)
        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(fn))
    try:
        yield counter
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def _loader(steps: int, batch: int = 4, classes: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * batch, 3, 8, 8, generator=g)
    y = torch.randint(0, classes, (steps * batch,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def _tiny(classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def _flushes(steps: int, freq: int) -> int:
    return sum(is_print_step(i, freq, steps) for i in range(steps))


def _supervised_reads(steps: int, freq: int) -> int:
    cfg = load_config(get_supervised_defaults(), None, ["TRAIN.PRINT_FREQ", str(freq), "SOLVER.BATCH_SIZE", "4"])
    model = supervised.SupervisedModel(_tiny())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = _loader(steps)
    with count_host_reads() as c:
        supervised.train_one_epoch(model, loader, opt, scaler, cfg, torch.device("cpu"), 0)
    return c["n"]


def _lincls_reads(steps: int, freq: int) -> int:
    model = lincls.LinearEval(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 3))
    opt = LARS(list(model.classifier.parameters()), lr=0.1)
    loader = _loader(steps)
    with count_host_reads() as c:
        lincls.train_one_epoch(model, loader, opt, torch.device("cpu"), 0, 1, freq)
    return c["n"]


@pytest.mark.parametrize("reads", [_supervised_reads, _lincls_reads], ids=["supervised", "lincls"])
def test_one_host_read_per_print_period(reads):
    freq = 5
    short, long_ = reads(10, freq), reads(40, freq)
    # 30 more steps add exactly the 6 extra print periods' reads, nothing per step
    assert long_ - short == _flushes(40, freq) - _flushes(10, freq) == 6
    assert long_ <= _flushes(40, freq) + 12  # plus a constant (epoch-end averaging of the meters)


def test_counter_sees_per_step_reads():
    # the counter must be able to fail: the old per-step `loss.item()` pattern is 3 reads per step
    with count_host_reads() as c:
        meters = MetricLogger()
        for _ in range(7):
            meters.update(loss=torch.tensor(1.0), acc1=torch.tensor(2.0))
            if not torch.isfinite(torch.tensor(1.0)):
                pass
    assert c["n"] == 21


def test_non_finite_loss_is_caught_at_the_period_end():
    stats, meters = DeviceStepStats(("loss", "acc1"), torch.device("cpu")), MetricLogger()
    stats.add(torch.tensor(2.0), torch.tensor(50.0))
    stats.add(torch.tensor(4.0), torch.tensor(100.0))
    assert stats.flush(meters, "x") == {"loss": 3.0, "acc1": 75.0}
    assert meters.meters["loss"].count == 2 and meters.meters["loss"].global_avg == 3.0
    stats.add(torch.tensor(float("nan")), torch.tensor(0.0))
    stats.add(torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(FloatingPointError, match="epoch 3, step 9: loss is not finite"):
        stats.flush(meters, "epoch 3, step 9")


def test_supervised_nan_stops_the_epoch_before_it_returns():
    cfg = load_config(get_supervised_defaults(), None, ["TRAIN.PRINT_FREQ", "100", "SOLVER.BASE_LR", "1e30"])
    model = supervised.SupervisedModel(_tiny())
    opt = torch.optim.SGD(model.parameters(), lr=1e30)
    with pytest.raises(FloatingPointError, match="not finite"):
        supervised.train_one_epoch(model, _loader(6), opt, torch.amp.GradScaler("cpu", enabled=False), cfg,
                                   torch.device("cpu"), 0)
