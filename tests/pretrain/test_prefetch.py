"""Host-to-device copies one batch ahead on a side stream (``pretrain/data/prefetch.py``)."""
from __future__ import annotations

import torch

from siambench.pretrain.data.prefetch import prefetch_to_device


class RecordingStream:
    """Stands in for a CUDA copy stream: records the order of copies, waits and hand-outs."""

    def __init__(self, events: list) -> None:
        self.events = events

    def copy(self, views):
        batch = int(views[0][0, 0])
        self.events.append(("copy", batch))
        return [v.clone() for v in views], batch

    def wait(self, views, token):
        self.events.append(("wait", token))


def _batches(n: int):
    return [([torch.full((2, 3), float(i)), torch.full((2, 3), float(i))], torch.arange(2) + 10 * i) for i in range(n)]


def test_the_next_batch_is_copied_before_the_current_one_is_handed_out():
    events: list = []
    out = []
    for views, index in prefetch_to_device(_batches(3), torch.device("cpu"), stream=RecordingStream(events)):
        events.append(("step", int(views[0][0, 0])))
        out.append(index)
    assert events == [("copy", 0), ("copy", 1), ("wait", 0), ("step", 0), ("copy", 2), ("wait", 1), ("step", 1),
                      ("wait", 2), ("step", 2)]
    assert [i.tolist() for i in out] == [[0, 1], [10, 11], [20, 21]]


def test_the_compute_side_waits_only_for_its_own_batch():
    """Each wait names the batch it hands out (an event per batch), never 'everything queued so far',
    which would also wait for the next batch's copy and undo the overlap."""
    events: list = []
    list(prefetch_to_device(_batches(4), torch.device("cpu"), stream=RecordingStream(events)))
    waits = [token for kind, token in events if kind == "wait"]
    assert waits == [0, 1, 2, 3]


def test_cpu_batches_pass_through_unchanged():
    batches = _batches(2)
    got = list(prefetch_to_device(batches, torch.device("cpu")))
    assert got == batches  # the same objects: the engine moves them (a no-op on CPU)


def test_an_empty_loader_yields_nothing():
    assert list(prefetch_to_device([], torch.device("cpu"), stream=RecordingStream([]))) == []


def test_the_engine_reads_its_batches_through_the_prefetcher(tiny_cfg, monkeypatch):
    """train_one_epoch hands the loader to prefetch_to_device with its device (on CUDA: copies
    one step ahead); before, every copy was queued on the compute stream right before its step."""
    from siambench.pretrain import engine
    from siambench.pretrain.methods import build_method

    seen = []

    def recording(batches, device, stream=None):
        seen.append(device)
        yield from batches

    monkeypatch.setattr(engine, "prefetch_to_device", recording)
    torch.manual_seed(0)
    model = build_method(tiny_cfg("MODEL.ARCH", "resnet18"))
    batches = [([torch.randn(4, 3, 16, 16) for _ in range(model.num_views)], torch.arange(4)) for _ in range(2)]
    ctx = engine.TrainContext(device=torch.device("cpu"), init_lr=0.01, epochs=1, print_freq=1)
    engine.train_one_epoch(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, 0, ctx)
    assert seen == [torch.device("cpu")] and ctx.global_step == 2


def test_evaluation_loaders_size_their_workers_from_the_machine(monkeypatch, tmp_path):
    """lincls/knn/supervised default to DATA.NUM_WORKERS -1 (the machine's CPUs per rank, as
    pretraining) instead of a fixed 8; an explicit count is used as given."""
    from PIL import Image

    from siambench.pretrain import classification
    from siambench.pretrain.data import loader
    from siambench.pretrain.eval_config import get_lincls_defaults

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "0.png")
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cfg = get_lincls_defaults()
    assert cfg.DATA.NUM_WORKERS == -1
    cfg.DATA.ROOT = str(tmp_path)
    train, _ = classification.build_train_loader(cfg, 2)
    val, _ = classification.build_eval_loader(cfg, "val", 2)
    assert train.num_workers == val.num_workers == 15
    cfg.DATA.NUM_WORKERS = 0
    assert classification.build_eval_loader(cfg, "val", 2)[0].num_workers == 0
