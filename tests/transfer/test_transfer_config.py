"""The merged effective config of every transfer task equals the protocol (SimSiam Table 5 / MoCo)."""
from __future__ import annotations

from pathlib import Path

import pytest

from siambench.pretrain.utils.config import ConfigError
from siambench.transfer.config import available_tasks, config_hash, load_task_config, task_config_path
from siambench.transfer.main import SCRATCH_OVERLAY, build_parser, main, make_plan
from detectron2.config import get_cfg  # noqa: E402  (transfer.config imported d2compat first)

PIXEL_MEAN = [123.675, 116.280, 103.530]
PIXEL_STD = [58.395, 57.120, 57.375]

# Keys every real task shares: the "BN fine-tuned" protocol.
PROTOCOL = {
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "TEST.PRECISE_BN.ENABLED": True,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 0.02,
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": PIXEL_MEAN,
    "MODEL.PIXEL_STD": PIXEL_STD,
    "MODEL.DEVICE": "cuda",
}
C4 = {
    "MODEL.RESNETS.NORM": "naiveSyncBN",  # MoCo's final Base-RCNN-C4-BN.yaml (2020-11-04)
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.RESNETS.OUT_FEATURES": ["res4"],
    "MODEL.ROI_HEADS.NAME": "Res5ROIHeadsExtraNorm",
}
FPN = {
    "MODEL.RESNETS.NORM": "SyncBN",
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.FPN.NORM": "SyncBN",
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
}
VOC = {
    "MODEL.MASK_ON": False,
    "MODEL.ROI_HEADS.NUM_CLASSES": 20,
    "SOLVER.MAX_ITER": 24000,
    "SOLVER.STEPS": [18000, 22000],
    "SOLVER.WARMUP_ITERS": 100,
    "INPUT.MIN_SIZE_TRAIN": list(range(480, 801, 32)),
    "INPUT.MIN_SIZE_TEST": 800,
    "DATASETS.TEST": ["voc_2007_test"],
}
COCO = {
    "MODEL.MASK_ON": True,
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "INPUT.MIN_SIZE_TRAIN": list(range(640, 801, 32)),
    "INPUT.MIN_SIZE_TEST": 800,
    "DATASETS.TRAIN": ["coco_2017_train"],
    "DATASETS.TEST": ["coco_2017_val"],
}
ONE_X = {"SOLVER.MAX_ITER": 90000, "SOLVER.STEPS": [60000, 80000]}
TWO_X = {"SOLVER.MAX_ITER": 180000, "SOLVER.STEPS": [120000, 160000]}

EXPECTED = {
    "voc07": {**PROTOCOL, **C4, **VOC, "DATASETS.TRAIN": ["voc_2007_trainval"]},
    "voc0712": {**PROTOCOL, **C4, **VOC, "DATASETS.TRAIN": ["voc_2007_trainval", "voc_2012_trainval"]},
    "coco": {**PROTOCOL, **C4, **COCO, **ONE_X},
    "coco_2x": {**PROTOCOL, **C4, **COCO, **TWO_X},
    "coco_fpn": {**PROTOCOL, **FPN, **COCO, **ONE_X},
    "coco_fpn_2x": {**PROTOCOL, **FPN, **COCO, **TWO_X},
}


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return list(cfg) if isinstance(cfg, (tuple, list)) else cfg


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.pkl"
    path.write_bytes(b"not read by planning")
    return path


def _plan(args: list[str], cuda: bool = True):
    return make_plan(build_parser().parse_args(args), cuda_available=cuda)


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_real_task_config_equals_protocol(task: str, weights: Path, tmp_path: Path) -> None:
    # 8 GPUs: the protocol's own setting, where SyncBN stays SyncBN.
    plan = _plan(["--task", task, "--weights", str(weights), "--num-gpus", "8", "OUTPUT_DIR", str(tmp_path)])
    wrong = {k: (_get(plan.cfg, k), v) for k, v in EXPECTED[task].items() if _get(plan.cfg, k) != v}
    assert not wrong, f"{task}: key: (actual, protocol) {wrong}"
    assert plan.cfg.MODEL.WEIGHTS == str(weights.resolve())
    assert plan.runtime_notes == [] and not plan.scaling.lr_scaled
    assert plan.trials == (5 if task.startswith("voc") else 1)  # MoCo/SimSiam: VOC is a mean of 5 trials


def test_every_task_has_a_config_loadable_by_stock_detectron2() -> None:
    assert set(EXPECTED) | {"synth_voc07", "synth_voc0712", "synth_coco"} <= set(available_tasks())
    for task in available_tasks():  # detectron2 keys only: its own tools can read our configs
        get_cfg().merge_from_file(str(task_config_path(task)))
    get_cfg().merge_from_file(str(SCRATCH_OVERLAY))


@pytest.mark.parametrize("task", ["synth_voc07", "synth_voc0712", "synth_coco"])
def test_synth_tasks_are_tiny_r18_c4(task: str, weights: Path) -> None:
    plan = _plan(["--task", task, "--weights", str(weights)], cuda=False)
    cfg = plan.cfg
    assert plan.trials == 1
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS) == (18, 64)
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert cfg.SOLVER.MAX_ITER <= 200 and cfg.INPUT.MIN_SIZE_TEST <= 128
    assert all(name.startswith("synth_") for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST))
    assert cfg.MODEL.MASK_ON == (task == "synth_coco")
    assert (cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_MEAN), cfg.MODEL.RESNETS.STRIDE_IN_1X1) == ("RGB", PIXEL_MEAN, False)


def test_world_size_1_uses_bn_and_cpu(weights: Path) -> None:
    plan = _plan(["--task", "coco_fpn", "--weights", str(weights)], cuda=False)
    assert plan.cfg.MODEL.RESNETS.NORM == plan.cfg.MODEL.FPN.NORM == "BN" == plan.norm
    assert plan.cfg.MODEL.DEVICE == "cpu"
    assert any("SyncBN -> BN" in n for n in plan.runtime_notes)
    # The protocol's total batch holds whatever the number of GPUs.
    assert plan.cfg.SOLVER.IMS_PER_BATCH == 16 and plan.cfg.SOLVER.BASE_LR == 0.02


def test_smaller_batch_scales_lr_and_schedule_linearly(weights: Path) -> None:
    plan = _plan(["--task", "voc07", "--weights", str(weights), "SOLVER.IMS_PER_BATCH", "8"])
    cfg, s = plan.cfg, plan.scaling
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.01)
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS), cfg.SOLVER.WARMUP_ITERS) == (48000, (36000, 44000), 200)
    assert s.lr_scaled and s.schedule_scale == 2 and (s.reference_ims_per_batch, s.reference_base_lr) == (16, 0.02)
    assert "linear scaling" in plan.describe()


def test_explicit_schedule_keys_are_not_scaled(weights: Path) -> None:
    plan = _plan(["--task", "voc07", "--weights", str(weights), "SOLVER.IMS_PER_BATCH", "8",
                  "SOLVER.MAX_ITER", "30000"])
    assert plan.cfg.SOLVER.MAX_ITER == 30000 and tuple(plan.cfg.SOLVER.STEPS) == (36000, 44000)
    assert plan.cfg.SOLVER.BASE_LR == pytest.approx(0.01)


def test_explicit_lr_is_not_scaled(weights: Path) -> None:
    plan = _plan(["--task", "voc07", "--weights", str(weights), "SOLVER.IMS_PER_BATCH", "8", "SOLVER.BASE_LR", "0.03"])
    assert plan.cfg.SOLVER.BASE_LR == 0.03 and plan.cfg.SOLVER.MAX_ITER == 24000 and not plan.scaling.lr_scaled


def test_lr_only_scaling_keeps_iterations(weights: Path) -> None:
    plan = _plan(["--task", "voc07", "--weights", str(weights), "SOLVER.IMS_PER_BATCH", "4",
                  "SIAMBENCH.BATCH_SCALING", "lr"])
    assert plan.cfg.SOLVER.BASE_LR == pytest.approx(0.005) and plan.cfg.SOLVER.MAX_ITER == 24000


def test_batch_must_split_over_processes(weights: Path) -> None:
    with pytest.raises(ConfigError, match="not divisible by the world size 3"):
        _plan(["--task", "voc07", "--weights", str(weights), "--num-gpus", "3"])


def test_multi_gpu_needs_cuda(weights: Path) -> None:
    with pytest.raises(ConfigError, match="needs CUDA"):
        _plan(["--task", "voc07", "--weights", str(weights), "--num-gpus", "2"], cuda=False)


def test_scratch_overlay(tmp_path: Path) -> None:
    plan = _plan(["--task", "coco_fpn", "--weights", "scratch", "--num-gpus", "8"])
    assert plan.weights_sha256 is None and plan.cfg.MODEL.WEIGHTS == ""
    assert plan.cfg.MODEL.ROI_MASK_HEAD.NORM == "SyncBN" and plan.label == "scratch"
    assert plan.cfg.SOLVER.MAX_ITER == 90000  # Table 5's scratch rows use the same schedule


def test_config_hash_ignores_per_trial_keys_only(weights: Path) -> None:
    cfg, _ = load_task_config(task_config_path("voc07"))
    other = cfg.clone()
    other.SEED, other.OUTPUT_DIR, other.MODEL.WEIGHTS = 7, "elsewhere", "x.pkl"
    assert config_hash(cfg) == config_hash(other)
    other.SOLVER.BASE_LR = 0.03
    assert config_hash(cfg) != config_hash(other)


def test_unknown_task_and_key_are_clear_errors(weights: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--task", "voc2077", "--weights", str(weights), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown transfer task 'voc2077'" in err and "voc0712" in err
    assert main(["--task", "voc07", "--weights", str(weights), "--dry-run", "SOLVER.NOPE", "1"]) == 2
    assert "SOLVER.NOPE" in capsys.readouterr().err
    assert main(["--task", "voc07", "--weights", "missing.pkl", "--dry-run"]) == 2
    assert "siambench convert" in capsys.readouterr().err


def test_dry_run_prints_config_and_plan(weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_dir = tmp_path / "out"
    rc = main(["--task", "voc0712", "--weights", str(weights), "--dry-run", "OUTPUT_DIR", str(out_dir),
               "SOLVER.IMS_PER_BATCH", "8"])
    out = capsys.readouterr().out
    assert rc == 0 and not out_dir.exists()  # nothing run, nothing written
    assert "NAME: Res5ROIHeadsExtraNorm" in out and "STRIDE_IN_1X1: false" in out
    for line in ("5 trial(s), seeds 0, 1, 2, 3, 4", "batch: 8 images total", "lr: 0.01 (linear scaling of 0.02",
                 "norm: BN", "voc_2007_trainval, voc_2012_trainval"):
        assert line in out, line


def test_dry_run_of_a_multi_gpu_plan_works_without_gpus(weights: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--task", "coco", "--weights", str(weights), "--num-gpus", "8", "--num-machines", "2",
                 "--machine-rank", "1", "--dist-url", "tcp://host0:29500", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "processes: 16 (2 machine(s) x 8 GPU(s))" in out and "batch: 16 images total, 1 per process" in out
    assert "norm: naiveSyncBN" in out and "dry run planned for GPUs" in out


@pytest.mark.parametrize("ims", [8, 4, 32])
def test_batch_scaling_agrees_with_detectron2s_auto_scale_workers(ims: int) -> None:
    """Same arithmetic as detectron2's rule: 16 images on 8 GPUs run on 8 * ims / 16 GPUs."""
    from detectron2.engine import DefaultTrainer

    reference, _ = load_task_config(task_config_path("voc07"))
    reference.SOLVER.REFERENCE_WORLD_SIZE = 8
    d2 = DefaultTrainer.auto_scale_workers(reference, 8 * ims // 16)
    ours, scaling = load_task_config(task_config_path("voc07"), ["SOLVER.IMS_PER_BATCH", str(ims)])
    assert scaling.lr_scaled and d2.SOLVER.IMS_PER_BATCH == ims
    for key in ("SOLVER.MAX_ITER", "SOLVER.WARMUP_ITERS", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD"):
        section, name = key.split(".")
        assert ours[section][name] == d2[section][name], key
    assert tuple(ours.SOLVER.STEPS) == tuple(d2.SOLVER.STEPS)
    assert ours.SOLVER.BASE_LR == pytest.approx(d2.SOLVER.BASE_LR, rel=1e-12)


@pytest.mark.parametrize("override", [["SOLVER.REFERENCE_WORLD_SIZE", "8"],
                                      ["TEST.EXPECTED_RESULTS", "[['bbox', 'AP', 50.0, 1.0]]"]])
def test_detectron2_keys_the_trainer_does_not_honour_are_refused(weights: Path, override: list[str],
                                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["--task", "voc07", "--weights", str(weights), *override]) == 2
    err = capsys.readouterr().err
    assert f"{override[0]} " in err and "is not supported" in err and len(err.strip().splitlines()) == 1
