"""The speed benchmarks' machinery: alternation, timing brackets, ImageNet-like JPEGs, bench_gpu end to end."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from siambench.benchmarks import bench_gpu
from siambench.benchmarks.speed.bench_common import TimedLoader, alternate, write_jpeg_folder


def test_alternate_interleaves_arms_and_ratios_are_per_round():
    calls, values = [], {"a": iter([10.0, 20.0, 10.0]), "b": iter([30.0, 20.0, 25.0])}

    def arm(name):
        def run():
            calls.append(name)
            return next(values[name])
        return run

    res = alternate([("a", arm("a")), ("b", arm("b"))], rounds=3, log=lambda m: None)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # A B A B, not A A A B B B
    d = res["b"].as_dict()
    assert d["median"] == 25.0 and (d["min"], d["max"]) == (20.0, 30.0)
    assert d["ratio"] == 2.5 and (d["ratio_min"], d["ratio_max"]) == (1.0, 3.0)  # medians of 3, 1, 2.5
    assert res["a"].as_dict()["ratio"] == 1.0


def test_timed_loader_brackets_exactly_the_timed_batches():
    loader = TimedLoader(range(100), warmup=2, timed=5, device=torch.device("cpu"))
    assert len(loader) == 8 and list(loader) == list(range(8))
    assert loader.seconds >= 0


def test_jpegs_are_imagenet_like(tmp_path):
    root, kb = write_jpeg_folder(tmp_path, 3, workers=1)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 3 and Image.open(files[0]).size == (500, 375)
    assert 60 < kb < 200  # ImageNet's JPEGs average ~110 KB


def test_bench_gpu_refuses_to_run_without_cuda_unless_smoke(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 2
    assert "--smoke" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_gpu_smoke_runs_every_section_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    assert bench_gpu.main(["--smoke", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    step, e2e = res["pretrain"]["step"], res["pretrain"]["end_to_end"]
    assert set(step) == {"official: fp32, NCHW, eager", "bf16 + channels_last"}
    assert len(e2e) == 4 and "official: fp32, PIL per-sample ops, 8 workers" in e2e and step[
        "official: fp32, NCHW, eager"]["ratio"] == 1.0
    for arm in (*step.values(), *e2e.values()):
        assert len(arm["samples"]) == 2 and arm["median"] > 0 and arm["ratio"] > 0
    assert e2e["official: fp32, PIL per-sample ops, 8 workers"]["ratio"] == 1.0
    assert {len(v) for arms in res["samples"].values() for v in arms.values()} == {2}  # every arm's samples, as run
    assert "arms" in res["transfer"] or "skipped" in res["transfer"]
    if "arms" in res["transfer"]:
        assert next(iter(res["transfer"]["arms"].values()))["s_per_iter"] > 0
    assert res["coco_eval"]["seconds"]["pycocotools"] > 0
    if "max_stat_difference" in res["coco_eval"]:
        assert res["coco_eval"]["max_stat_difference"] <= 1e-4
