"""GPU-only settings checked on a CPU: loader sizing, cuDNN autotuning, compile + SyncBN + DDP, DDP options,
the sharded fp16 kNN monitor, and per-step host work of evaluation and the moving-average targets."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from siambench.pretrain import accel, main as pretrain_main
from siambench.pretrain.config import get_cfg
from siambench.pretrain.data import loader as loader_mod
from siambench.pretrain.data.loader import batch_bytes, build_pretrain_loader, plan_prefetch, resolve_num_workers
from siambench.pretrain.knn import knn_scores, knn_scores_sharded, merge_topk_votes, shard_topk
from siambench.pretrain.classification import evaluate
from siambench.pretrain.monitors import KnnMonitor
from siambench.pretrain.targets import MovingAverageTargets
from siambench.pretrain.utils.config import ConfigError
from siambench.pretrain.utils.dist import DistInfo


class CallLog(TorchFunctionMode):
    """Every torch function call (not attribute reads) with its arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name != "__get__":
            self.calls.append((name, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


# ----------------------------------------------------------------------------- loader sizing
@pytest.mark.parametrize("cpus, env, expected", [
    (16, {}, 15),  # one GPU on a 16-core node: every core but the training process's
    (96, {"LOCAL_WORLD_SIZE": "8"}, 11),  # torchrun, 8 ranks per node
    (64, {"SLURM_NTASKS_PER_NODE": "4(x2)"}, 15),  # SLURM's "tasks(x nodes)" form
    (2, {"LOCAL_WORLD_SIZE": "4"}, 1),  # never 0 workers from the automatic rule
])
def test_default_workers_follow_the_cpus_of_this_process_and_the_ranks_per_node(monkeypatch, cpus, env, expected):
    for k in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(loader_mod.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert get_cfg().DATA.NUM_WORKERS == -1
    assert resolve_num_workers(get_cfg().DATA.NUM_WORKERS) == expected
    assert resolve_num_workers(4) == 4 and resolve_num_workers(0) == 0  # explicit counts are kept


def test_prefetch_keeps_worker_batches_within_half_the_shared_memory(caplog):
    official = batch_bytes("pil", "pil", 512, 2, 224)
    assert official == 512 * 2 * 3 * 224 * 224 * 4  # 616 MB of float32 views per batch
    assert batch_bytes("batched", "pil", 512, 2, 224) == official // 4
    assert get_cfg().DATA.PREFETCH_FACTOR == 2
    assert plan_prefetch(2, 15, batch_bytes("batched", "pil", 512, 2, 224), shm_free=64 << 30) == 2
    with caplog.at_level(logging.WARNING):
        assert plan_prefetch(2, 15, official, shm_free=32 << 30) == 1  # 18.5 GB > 16 GB
    assert "DATA.PREFETCH_FACTOR 2 -> 1" in caplog.text
    loader = build_pretrain_loader(list(range(8)), batch_size=2, num_workers=1)
    assert loader.prefetch_factor == 2  # torch's and the official code's default


# ----------------------------------------------------------------------------- cuDNN, compile, DDP
def test_cudnn_autotuning_is_on_where_cuda_runs():
    try:
        assert accel.set_cudnn_benchmark(torch.device("cuda", 0)) is True
        assert torch.backends.cudnn.benchmark
        assert accel.set_cudnn_benchmark(torch.device("cpu")) is False
    finally:
        torch.backends.cudnn.benchmark = False


@pytest.fixture
def fake_world():
    """torch's fake process group: 4 ranks in this process, collectives are no-ops."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
    yield DistInfo(rank=0, world_size=4, device=torch.device("cpu"))
    dist.destroy_process_group()


def test_compile_with_syncbn_under_ddp_is_refused_in_one_line(fake_world, tiny_cfg, tmp_path):
    cfg = tiny_cfg("TRAIN.COMPILE", "True", "OUTPUT_DIR", str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="TRAIN.COMPILE True with MODEL.SYNC_BN True under DDP") as e:
        pretrain_main.train(cfg, fake_world)
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()  # refused before anything is created
    model, *_ = pretrain_main.build_model_and_optimizer(tiny_cfg("TRAIN.COMPILE", "True", "MODEL.SYNC_BN", "False"),
                                                        fake_world)
    assert hasattr(model, "_orig_mod")  # allowed without SyncBN
    assert pretrain_main.build_model_and_optimizer(tiny_cfg(), DistInfo())[0] is not None  # one process: no DDP


def test_compile_of_moco_under_ddp_warns_about_the_shuffle_broadcast(fake_world, tiny_cfg, caplog):
    cfg = tiny_cfg("TRAIN.COMPILE", "True", "MODEL.METHOD", "moco_v2", "MODEL.SYNC_BN", "False",
                   "MODEL.MOCO.QUEUE", "64")
    with caplog.at_level(logging.WARNING):
        accel.check_compile(cfg, fake_world)
    assert "dist.broadcast" in caplog.text


def test_ddp_skips_buffer_broadcasts_under_syncbn_and_uses_bucket_views(fake_world, tiny_cfg):
    model, *_ = pretrain_main.build_model_and_optimizer(tiny_cfg(), fake_world)
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    assert model.broadcast_buffers is False and model.gradient_as_bucket_view is True
    model, *_ = pretrain_main.build_model_and_optimizer(tiny_cfg("MODEL.SYNC_BN", "False"), fake_world)
    assert model.broadcast_buffers is True  # per-rank BN statistics: rank 0's are broadcast, as the official code


# ----------------------------------------------------------------------------- kNN monitor
def test_sharded_knn_equals_the_whole_bank():
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    labels, queries = torch.randint(0, 5, (50,), generator=g), torch.nn.functional.normalize(torch.randn(7, 8), dim=1)
    for k in (3, 20, 60):  # 60: more than a shard and than the bank
        shards = [shard_topk(bank[i::3], labels[i::3], queries, k) for i in range(3)]  # what each rank finds
        merged = merge_topk_votes(torch.cat([s for s, _ in shards], 1), torch.cat([lab for _, lab in shards], 1), 5,
                                  k, 0.1)
        torch.testing.assert_close(merged, knn_scores(bank, labels, queries, 5, k, 0.1), rtol=1e-6, atol=0)
        torch.testing.assert_close(knn_scores_sharded(bank, labels, queries, 5, k, 0.1, chunk_size=3),
                                   knn_scores(bank, labels, queries, 5, k, 0.1), rtol=1e-6, atol=0)  # one process


@pytest.mark.dist
def test_sharded_knn_across_two_gloo_ranks_equals_the_whole_bank(tmp_path):
    script = tmp_path / "shards.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.distributed as dist, torch.nn.functional as F
        from siambench.pretrain.knn import knn_scores, knn_scores_sharded
        dist.init_process_group("gloo")
        r, w = dist.get_rank(), dist.get_world_size()
        g = torch.Generator().manual_seed(0)
        bank, labels = F.normalize(torch.randn(41, 8, generator=g), dim=1), torch.randint(0, 5, (41,), generator=g)
        queries = F.normalize(torch.randn(13, 8, generator=g), dim=1)
        for k in (3, 30):  # 30: more than a shard (21 / 20 rows)
            got = knn_scores_sharded(bank[r::w], labels[r::w], queries, 5, k, 0.1, chunk_size=4)
            torch.testing.assert_close(got, knn_scores(bank, labels, queries, 5, k, 0.1), rtol=1e-6, atol=0)
        dist.destroy_process_group()
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


class _Images(torch.utils.data.Dataset):
    scans = 0

    def __init__(self, n: int) -> None:
        type(self).scans += 1  # an ImageFolder scans its directory here
        self.x, self.y = torch.randn(n, 3, 8, 8), torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_knn_monitor_keeps_a_fp16_bank_and_its_datasets(monkeypatch, tiny_cfg):
    banks = []
    import siambench.pretrain.knn as knn_mod

    real = knn_mod.knn_scores_sharded
    monkeypatch.setattr(knn_mod, "knn_scores_sharded", lambda bank, *a, **k: banks.append(bank.dtype) or
                        real(bank, *a, **k))
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(4, 2))
    monitor = KnnMonitor(_Images(30), _Images(9), torch.device("cpu"), 3, k=5, batch_size=8)
    assert all(0 <= monitor(encoder) <= 100 for _ in range(2))
    assert banks == [torch.float16, torch.float16]

    _Images.scans = 0
    cfg = tiny_cfg("MONITOR.KNN_PERIOD", "1")
    monkeypatch.setattr(pretrain_main, "build_dataset", lambda cfg, split, tf: _Images(12))
    monkeypatch.setattr(_Images, "classes", ["a", "b", "c"], raising=False)
    knn = pretrain_main.build_knn_monitor(cfg, DistInfo())
    for _ in range(3):
        knn(encoder)
    assert _Images.scans == 2  # train and val scanned once, not at every call


def test_knn_eval_loaders_pin_memory_for_cuda():
    cuda = KnnMonitor(_Images(4), _Images(4), torch.device("cuda", 0), 3)
    cpu = KnnMonitor(_Images(4), _Images(4), torch.device("cpu"), 3)
    assert all(ld.pin_memory for ld in cuda.loaders) and not any(ld.pin_memory for ld in cpu.loaders)


# ----------------------------------------------------------------------------- per-step host work
def test_evaluation_builds_no_tensor_per_step():
    data = [(torch.randn(4, 6), torch.randint(0, 3, (4,))) for _ in range(5)]
    with CallLog() as log:
        res = evaluate(torch.nn.Linear(6, 3), data, torch.device("cpu"), log_period=100)
    assert res["count"] == 20
    assert [c for c in log.calls if c[0] == "tensor"] == []  # a device tensor from len(target) is an H2D copy


def test_moving_average_targets_copy_the_loader_indices_asynchronously():
    targets = MovingAverageTargets(10, 4, 0.8, "cpu")
    index = torch.tensor([1, 3])  # pinned by the loader on CUDA runs
    with CallLog() as log:
        targets(index, [torch.randn(2, 4), torch.randn(2, 4)])
    copies = [kw for name, args, kw in log.calls if name == "to" and args[0] is index]
    assert copies and all(kw.get("non_blocking") for kw in copies)  # a synchronous copy every step before
