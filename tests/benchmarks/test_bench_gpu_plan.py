"""bench_gpu's plan (--budget-s), its machine facts and its results written after every arm."""
from __future__ import annotations

import json

from siambench.benchmarks import bench_gpu


def test_the_default_plan_fits_seven_minutes_and_leaves_coco_out():
    args = bench_gpu.parse_args(["--workers", "15"])  # what a 16-core machine defaults to
    assert args.budget_s == 420 and not args.coco
    parts, skipped = bench_gpu.plan_parts(args, cores=16)
    assert parts == ["step", "e2e", "transfer", "compile"] and skipped == []
    assert sum(bench_gpu.estimate_s(p, args, 16) for p in parts) <= 420


def test_a_small_budget_skips_what_does_not_fit_and_says_so():
    args = bench_gpu.parse_args(["--budget-s", "150", "--coco", "--workers", "15"])
    parts, skipped = bench_gpu.plan_parts(args, cores=16)
    assert parts[0] == "step" and "compile" not in parts
    assert any(m.startswith("compile: skipped, ~") and "--budget-s 150" in m for m in skipped)
    assert bench_gpu.plan_parts(bench_gpu.parse_args(["--smoke"]), 2)[0] == ["step", "e2e", "transfer", "coco"]


def test_every_arm_is_on_disk_as_soon_as_it_ran(tmp_path):
    out = tmp_path / "bench.json"
    rec = bench_gpu.Recorder(str(out), {"plan": ["step"]})
    arm = rec.arm("step", "fp32", lambda: 12.5)
    assert arm() == 12.5 and json.loads(out.read_text())["samples"] == {"step": {"fp32": [12.5]}}
    arm()
    assert json.loads(out.read_text())["samples"]["step"]["fp32"] == [12.5, 12.5]


def test_machine_facts_name_open_files_shared_memory_cores_and_gpu(capsys):
    import torch

    info = bench_gpu.machine_facts(torch.device("cpu"))
    assert info["ulimit_n"]["now"] >= info["ulimit_n"]["soft"] and info["cores"] >= 1
    bench_gpu.print_machine(info)
    text = capsys.readouterr().out
    for word in ("ulimit -n:", "/dev/shm:", "cores:", "GPU: none"):
        assert word in text


def test_a_failing_arm_is_recorded_and_the_others_go_on(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rec = bench_gpu.Recorder(str(out), {})

    def broken() -> float:
        raise RuntimeError("nvjpeg says no")

    assert rec.arm("e2e", "gpu_jpeg", broken)() != rec.arm("e2e", "gpu_jpeg", broken)()  # NaN, twice
    res = json.loads(out.read_text())
    assert "nvjpeg says no" in res["errors"]["e2e"]["gpu_jpeg"] and "gpu_jpeg FAILED" in capsys.readouterr().out
    strict = bench_gpu.Recorder(str(out), {}, tolerant=False)  # --smoke: any failure is a test failure
    try:
        strict.arm("e2e", "gpu_jpeg", broken)()
    except RuntimeError:
        pass
    else:
        raise AssertionError("a --smoke arm failure must raise")
