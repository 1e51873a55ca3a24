"""End to end on CPU: converted siambench weights -> detectron2 fine-tuning -> AP -> results.json.

Tiny on purpose (a width-8 R50-C4, 64 px, 2-3 iterations): these check that everything is wired,
loads, trains, resumes and evaluates -- not accuracy. The synthetic configs' ResNet-18 is narrowed
by overrides: Detectron2 builds BasicBlock ResNets only at width 64, bottleneck ones at any width.
"""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from siambench.convert.export import convert_checkpoint
from siambench.pretrain.methods.encoders import build_encoder
from siambench.transfer.main import EVAL_RESULTS, main

WIDTH = 8  # stem channels of the tiny encoder (MODEL.WIDTH; torchvision's: 64)
# The Detectron2 backbone of that encoder (what `siambench convert` records as provenance "detectron2_resnets").
NARROW_R50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", str(WIDTH),
              "MODEL.RESNETS.RES2_OUT_CHANNELS", str(4 * WIDTH), "MODEL.RESNETS.WIDTH_PER_GROUP", str(WIDTH)]

# 3 iterations with a checkpoint after the 2nd (iteration 1), so the resume test can restart from it.
TINY = ["SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2",
        "TEST.PRECISE_BN.NUM_ITER", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "10", *NARROW_R50]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A siambench/SimSiam-layout resnet50 (width 8) checkpoint converted with `siambench convert`'s code."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    state = build_encoder("resnet50", width=WIDTH).state_dict()
    ckpt = {"state_dict": {f"module.encoder.{k}": v for k, v in state.items()}, "arch": "resnet50", "epoch": 1}
    torch.save(ckpt, root / "checkpoint.pth")
    prov, _ = convert_checkpoint(root / "checkpoint.pth", root / "r50w8.pkl")
    overrides = dict(zip(NARROW_R50[::2], map(int, NARROW_R50[1::2])))
    assert overrides == {f"MODEL.RESNETS.{k}": v for k, v in prov["detectron2_resnets"].items() if k != "NUM_GROUPS"}
    return root / "r50w8.pkl"


def _results(path: Path) -> dict:
    return json.loads(path.read_text())


def _assert_finite_ap(metrics: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = metrics[key]
        assert value is None or (math.isfinite(value) and 0 <= value <= 100), (key, value)
    assert metrics["AP"] is not None and metrics["AP50"] is not None


@pytest.fixture(scope="module")
def voc_run(synth_root: Path, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("voc") / "run"
    argv = ["--task", "synth_voc07", "--weights", str(tiny_weights), "OUTPUT_DIR", str(out), *TINY]
    assert main(argv) == 0
    return out


def test_faster_rcnn_c4_on_synthetic_voc(voc_run: Path, tiny_weights: Path) -> None:
    record = _results(voc_run / "trial0" / "results.json")
    assert record["status"] == "complete" and record["task"] == "synth_voc07" and record["label"] == "r50w8"
    assert record["iterations"] == 3 and record["seed"] == 0 and record["norm"] == "BN"
    assert record["weights_sha256"] is not None and record["wall_time_s"] > 0
    assert set(record["results"]) == {"bbox"}
    _assert_finite_ap(record["results"]["bbox"], ("AP", "AP50", "AP75"))
    assert sorted(p.name for p in (voc_run / "trial0").glob("*.pth")) == ["model_0000001.pth", "model_final.pth"]
    assert (voc_run / "trial0" / "config.yaml").is_file() and (voc_run / "config.yaml").is_file()
    # A rerun of the same command finds the trial complete and trains nothing.
    model_mtime = (voc_run / "trial0" / "model_final.pth").stat().st_mtime_ns
    assert main(["--task", "synth_voc07", "--weights", str(tiny_weights), "OUTPUT_DIR", str(voc_run), *TINY]) == 0
    assert _results(voc_run / "trial0" / "results.json") == record
    assert (voc_run / "trial0" / "model_final.pth").stat().st_mtime_ns == model_mtime


def test_eval_only_reproduces_the_trial_ap(voc_run: Path, tmp_path: Path) -> None:
    model = voc_run / "trial0" / "model_final.pth"
    out = tmp_path / "eval"
    assert main(["--task", "synth_voc07", "--eval-only", "--weights", str(model), "OUTPUT_DIR", str(out), *TINY]) == 0
    evaluated = _results(out / EVAL_RESULTS)
    trained = _results(voc_run / "trial0" / "results.json")
    assert evaluated["eval_only"] is True and evaluated["status"] == "complete"
    for key in ("AP", "AP50", "AP75"):
        assert evaluated["results"]["bbox"][key] == pytest.approx(trained["results"]["bbox"][key], abs=1e-6)


def test_interrupted_trial_resumes_from_last_checkpoint(voc_run: Path, tiny_weights: Path, tmp_path: Path,
                                                        copy_run_dir) -> None:
    out = tmp_path / "run"
    copy_run_dir(voc_run, out, drop=("model_final.pth",))  # checkpoints hard-linked, written atomically
    tdir = out / "trial0"
    first = _results(tdir / "results.json")
    # Simulate a kill after iteration 1's checkpoint while the next one was written in place (as stock
    # detectron2 does): a truncated newest checkpoint, the pointer naming it, and a running record.
    (tdir / "model_0000002.pth").write_bytes((tdir / "model_0000001.pth").read_bytes()[:1000])
    (tdir / "last_checkpoint").write_text("model_0000002.pth")
    (tdir / "results.json").write_text(json.dumps({**first, "status": "running"}))
    (out / "log.txt").unlink()
    argv = ["--task", "synth_voc07", "--weights", str(tiny_weights), "OUTPUT_DIR", str(out), *TINY]
    assert main(argv) == 0
    resumed = _results(tdir / "results.json")
    assert resumed["status"] == "complete" and resumed["resumed"] is True and first["resumed"] is False
    assert (tdir / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 2" in log  # not from 0
    assert "resuming from model_0000001.pth instead of the damaged model_0000002.pth" in log


def test_trial_signalled_mid_run_saves_its_iteration_and_resumes_once(synth_root: Path, tiny_weights: Path,
                                                                      tmp_path: Path, monkeypatch) -> None:
    from siambench.pretrain.utils.stop import StopRequested
    from siambench.transfer.trainer import TransferTrainer

    out, original, calls = tmp_path / "run", TransferTrainer.run_step, []

    def run_step(self):  # SLURM's SIGTERM arrives during the 2nd iteration (periodic checkpoints: none)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    argv = ["--task", "synth_voc07", "--weights", str(tiny_weights), "OUTPUT_DIR", str(out), *TINY,
            "SOLVER.CHECKPOINT_PERIOD", "100"]
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with monkeypatch.context() as m:
        m.setattr(TransferTrainer, "run_step", run_step)
        with pytest.raises(StopRequested) as stopped:
            main(argv)
    tdir = out / "trial0"
    assert stopped.value.code == 128 + signal.SIGTERM and len(calls) == 2
    assert sorted(p.name for p in tdir.glob("*.pth")) == ["model_0000001.pth"]
    assert (tdir / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    stopped_record = _results(tdir / "results.json")
    assert stopped_record["status"] == "failed" and "stopped by SIGTERM after iteration 2" in stopped_record["error"]
    assert main(argv) == 0  # the requeued job
    record = _results(tdir / "results.json")
    assert record["status"] == "complete" and record["resumed"] is True
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 2" in log and log.count("trial 0: bbox") == 1
    assert main(argv) == 0 and _results(tdir / "results.json") == record  # complete: never run twice


def test_trials_run_one_at_a_time_with_trial_flag_equal_the_task_run(synth_root: Path, tiny_weights: Path,
                                                                     tmp_path: Path, capsys) -> None:
    argv = ["--task", "synth_voc07", "--weights", str(tiny_weights), "--trials", "2", *TINY]
    assert main([*argv, "--trial", "2", "OUTPUT_DIR", str(tmp_path / "bad")]) == 2
    assert "--trial 2: give a trial of the 2 planned (0 to 1)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*argv, "OUTPUT_DIR", str(tmp_path / "task")]) == 0
    for k in (1, 0):  # as separate jobs would, in any order, each locking and logging in its own directory
        assert main([*argv, "--trial", str(k), "OUTPUT_DIR", str(tmp_path / "split")]) == 0
        assert (tmp_path / "split" / f"trial{k}" / "log.txt").is_file()
    for k in (0, 1):
        whole, alone = (_results(tmp_path / d / f"trial{k}" / "results.json") for d in ("task", "split"))
        assert alone["status"] == "complete" and alone["seed"] == whole["seed"] == k
        assert alone["results"]["bbox"]["AP"] == pytest.approx(whole["results"]["bbox"]["AP"], abs=1e-6)
    assert not (tmp_path / "split" / "log.txt").exists()


def test_mask_rcnn_c4_on_synthetic_coco(synth_root: Path, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["--task", "synth_coco", "--weights", str(tiny_weights), "OUTPUT_DIR", str(out), *TINY]) == 0
    record = _results(out / "trial0" / "results.json")
    assert record["status"] == "complete" and record["coco_eval_backend"] == "faster_coco_eval"
    assert set(record["results"]) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert set(record["results"][task]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        _assert_finite_ap(record["results"][task], ("AP", "AP50", "AP75", "APs", "APm", "APl"))
    assert (out / "trial0" / "inference" / "coco_instances_results.json").is_file()
