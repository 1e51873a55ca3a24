"""Your own detection datasets (`--dataset NAME=coco:...` / `voc:...`): declarations, checks, protocol, runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from siambench.pretrain.utils.config import ConfigError
from siambench.transfer.custom import parse_spec
from siambench.transfer.custom_protocol import protocol_iterations
from siambench.transfer.main import build_parser, main, make_plan

TINY_R50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "8", "TEST.PRECISE_BN.NUM_ITER", "1", "INPUT.MIN_SIZE_TRAIN",
            "(64,)", "INPUT.MIN_SIZE_TEST", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "10", "SOLVER.IMS_PER_BATCH", "4",
            "DATALOADER.NUM_WORKERS", "0"]


def _coco_spec(name: str, paths) -> str:
    tj, ti, sj, si = paths
    return f"{name}=coco:{tj}:{ti},{sj}:{si}"


def _plan(*argv: str):
    return make_plan(build_parser().parse_args(["--weights", "scratch", *argv]), cuda_available=False)


def test_spec_syntax(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    voc = parse_spec("mine=voc:data/v:test=val:metric=area:classes=cat+dog")
    assert voc.train == (str(tmp_path / "data/v"), "trainval") and voc.test == (str(tmp_path / "data/v"), "val")
    assert voc.metric == "area" and voc.classes == ("cat", "dog")
    assert parse_spec(voc.spec) == voc  # the canonical text (stored in configs) parses back to the same dataset
    coco = parse_spec("f=coco:a.json:imgs,b.json:timgs")
    assert coco.train == (str(tmp_path / "a.json"), str(tmp_path / "imgs")) and parse_spec(coco.spec) == coco
    for bad, match in [("mine", "NAME must"), ("voc_x=voc:r", "NAME must"), ("m=yolo:r", "unknown format"),
                       ("m=coco:a.json:imgs", "coco:TRAIN_JSON"), ("m=voc:r:metric=x", "metric must"),
                       ("m=voc:r:colour=red", "bad or repeated option"), ("m=voc:r:classes=a+a", "twice")]:
        with pytest.raises(ConfigError, match=match):
            parse_spec(bad)


def test_schedule_scales_with_the_train_set():
    assert protocol_iterations(5011) == 24000 and protocol_iterations(16551) == 24000  # VOC 07 / 07+12
    assert protocol_iterations(118287) == 90000  # COCO 1x
    assert protocol_iterations(2506) == math.ceil(24000 * 2506 / 5011)  # below VOC 07: its epochs (76.6)
    assert 24000 < protocol_iterations(50000) < 90000
    assert protocol_iterations(236574) == 180000  # above COCO: its epochs
    assert protocol_iterations(100, epochs=12) == 75


def test_voc_plan_from_the_data(make_voc, tmp_path):
    root = make_voc(tmp_path / "boats", classes=("boat", "buoy", "dock"))
    plan = _plan("--dataset", f"boats=voc:{root}", *TINY_R50)
    c = plan.cfg
    assert plan.task == "boats" and c.DATASETS.TRAIN == ("boats_train",) and c.DATASETS.TEST == ("boats_test",)
    assert c.MODEL.ROI_HEADS.NUM_CLASSES == 3 and not c.MODEL.MASK_ON
    assert c.SOLVER.MAX_ITER == math.ceil(protocol_iterations(8) * 16 / 4)  # 39 at 16 images -> batch 4
    assert c.SOLVER.STEPS == (round(0.75 * c.SOLVER.MAX_ITER), round(22 / 24 * c.SOLVER.MAX_ITER))
    text = plan.describe()
    assert "from 8 train images in boats" in text and "NUM_CLASSES 3 from boats: boat, buoy, dock" in text
    # every key stays overridable
    plan = _plan("--dataset", f"boats=voc:{root}", *TINY_R50, "SOLVER.MAX_ITER", "7", "SOLVER.STEPS", "(5,)")
    assert plan.cfg.SOLVER.MAX_ITER == 7 and plan.cfg.SOLVER.STEPS == (5,)
    with pytest.raises(ConfigError, match="has 3 classes"):
        _plan("--dataset", f"boats=voc:{root}", "MODEL.ROI_HEADS.NUM_CLASSES", "20")


def test_coco_masks_decide_the_model(make_coco, tmp_path):
    boxes = make_coco(tmp_path / "b", masks=False)
    masks = make_coco(tmp_path / "m", masks=True)
    assert not _plan("--dataset", _coco_spec("fruitbox", boxes)).cfg.MODEL.MASK_ON
    plan = _plan("--dataset", _coco_spec("fruit", masks))
    assert plan.cfg.MODEL.MASK_ON and plan.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    assert not _plan("--dataset", _coco_spec("fruit2", masks), "MODEL.MASK_ON", "False").cfg.MODEL.MASK_ON
    with pytest.raises(ConfigError, match="not every object"):
        _plan("--dataset", _coco_spec("fruitbox2", boxes), "MODEL.MASK_ON", "True")
    tj = masks[0]  # one object without a mask: boxes only (Mask R-CNN's mapper needs a mask per object)
    _edit_json(tj, lambda d: d["annotations"][0].pop("segmentation"))
    assert not _plan("--dataset", _coco_spec("fruit3", masks)).cfg.MODEL.MASK_ON


def test_config_file_declares_the_dataset(make_voc, tmp_path):
    root = make_voc(tmp_path / "boats")
    cfg = tmp_path / "my_task.yaml"
    cfg.write_text(f'_BASE_: "{Path(__file__).resolve().parents[2] / "configs/transfer/Base-Custom.yaml"}"\n'
                   f'SIAMBENCH:\n  CUSTOM:\n    DATASETS: ["harbour=voc:{root}:metric=area"]\n'
                   'DATASETS:\n  TRAIN: ("harbour_train",)\n  TEST: ("harbour_test",)\n')
    plan = _plan("--config-file", str(cfg))
    assert plan.task == "my_task" and plan.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    from detectron2.data import MetadataCatalog

    assert MetadataCatalog.get("harbour_test").year == 2012  # metric=area: detectron2's non-07 VOC AP


def _bad_voc(make_voc, root: Path, case: str) -> Path:
    make_voc(root)
    ann = root / "Annotations"
    if case == "no_test_objects":
        for i in range(8, 12):
            p = ann / f"img{i:03d}.xml"
            p.write_text(p.read_text().split("<object>")[0] + "</annotation>")
    elif case == "unknown_class":
        p = ann / "img009.xml"
        p.write_text(p.read_text().replace("<name>boat</name>", "<name>whale</name>", 1))
    elif case == "box_outside":
        p = ann / "img002.xml"
        p.write_text(p.read_text().replace("<xmin>", "<xmin>9", 1))  # xmin 9x > 64
    elif case == "duplicate_id":
        (root / "ImageSets/Main/test.txt").write_text("img008\nimg009\nimg008\n")
    elif case == "missing_image":
        (root / "JPEGImages" / "img003.jpg").unlink()
    elif case == "eval_tags":
        p = ann / "img010.xml"
        p.write_text(p.read_text().replace("<difficult>0</difficult>", "", 1))
    return {"no_test_objects": ann / "..", "unknown_class": ann / "img009.xml", "box_outside": ann / "img002.xml",
            "duplicate_id": root / "ImageSets/Main/test.txt", "missing_image": root / "JPEGImages" / "img003.jpg",
            "eval_tags": ann / "img010.xml"}[case]


@pytest.mark.parametrize("case,words", [
    ("no_test_objects", "has no objects"), ("unknown_class", "'whale' is not one of"),
    ("box_outside", "lies outside"), ("duplicate_id", "twice"), ("missing_image", "is missing"),
    ("eval_tags", "VOC evaluator needs")])
def test_bad_voc_exits_2_naming_the_file(case, words, make_voc, tmp_path, capsys):
    culprit = _bad_voc(make_voc, tmp_path / "v", case)
    out = tmp_path / "out"
    code = main(["--dataset", f"bad=voc:{tmp_path / 'v'}", "--weights", "scratch", "OUTPUT_DIR", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and len(err.splitlines()) == 1, err
    assert words in err and (culprit.name in err if case != "no_test_objects" else "test.txt" in err), err


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case,words", [
    ("no_test_objects", "test split has no objects"), ("unknown_class", "is not a class of"),
    ("box_outside", "lies outside"), ("duplicate_id", "image id 100 appears twice in"),
    ("missing_image", "missing under"), ("missing_json", "does not exist")])
def test_bad_coco_exits_2_naming_the_file(case, words, make_coco, tmp_path, capsys):
    tj, ti, sj, si = make_coco(tmp_path / "c")
    culprit = {"no_test_objects": sj, "unknown_class": sj, "box_outside": tj, "duplicate_id": tj,
               "missing_image": tj, "missing_json": sj}[case]
    if case == "no_test_objects":
        _edit_json(sj, lambda d: d.update(annotations=[]))
    elif case == "unknown_class":
        _edit_json(sj, lambda d: d["categories"].append({"id": 99, "name": "plum"}))
    elif case == "box_outside":
        _edit_json(tj, lambda d: d["annotations"][0].update(bbox=[70, 5, 10, 10]))
    elif case == "duplicate_id":
        _edit_json(tj, lambda d: d["images"][1].update(id=100))
    elif case == "missing_image":
        (ti / "0003.png").unlink()
    else:
        sj.unlink()
    out = tmp_path / "out"
    code = main(["--dataset", _coco_spec("badc", (tj, ti, sj, si)), "--weights", "scratch", "--dry-run",
                 "OUTPUT_DIR", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and len(err.splitlines()) == 1, err
    assert words in err and str(culprit) in err, err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["voc", "coco_masks", "coco_boxes"])
def test_trains_and_evaluates_own_dataset(fmt, make_voc, make_coco, tmp_path):
    if fmt == "voc":
        spec = f"boats=voc:{make_voc(tmp_path / 'v', n_train=4)}"
    else:
        spec = _coco_spec(f"fruit_{fmt}", make_coco(tmp_path / "c", masks=fmt == "coco_masks", n_train=4))
    out = tmp_path / "run"
    assert main(["--dataset", spec, "--weights", "scratch", *TINY_R50, "SOLVER.MAX_ITER", "2", "SOLVER.STEPS",
                 "(1,)", "SOLVER.WARMUP_ITERS", "0", "OUTPUT_DIR", str(out)]) == 0
    record = json.loads((out / "trial0" / "results.json").read_text())
    assert record["status"] == "complete" and record["task"] == spec.split("=")[0]
    assert set(record["results"]) == ({"bbox", "segm"} if fmt == "coco_masks" else {"bbox"})
    assert record["results"]["bbox"]["AP50"] is not None
    assert any("NUM_CLASSES" in n for n in record["runtime_notes"])  # the keys the data chose are recorded
    assert ("coco_eval_backend" in record) == (fmt != "voc")


TWO_RANKS = """
import json, pickle, sys
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, plan_file, out_dir):
    from siambench.transfer import main  # d2compat first, as every siambench entry point
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[3], rank=rank, world_size=2)
    with open(plan_file, "rb") as f:
        plan = pickle.load(f)
    name = plan.cfg.DATASETS.TEST[0]
    before = name in DatasetCatalog  # a fresh process: nothing registered by unpickling or importing
    main.run(plan)  # what detectron2's launch runs on every rank
    seen = {"before": before, "images": len(DatasetCatalog.get(name)),
            "classes": list(MetadataCatalog.get(name).thing_classes)}
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(seen, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=2)
"""


@pytest.mark.slow
@pytest.mark.dist
def test_two_process_launch_registers_on_every_rank(make_voc, tmp_path):
    """Each rank of a 2-process (gloo) run registers the declared dataset from the plan's config and
    evaluates its shard of it; rank 0 gathers the AP of all 4 test images."""
    import os
    import pickle
    import socket
    import subprocess
    import sys

    spec = f"boats=voc:{make_voc(tmp_path / 'v', n_train=4)}"
    trained = tmp_path / "trained"
    opts = [*TINY_R50, "SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0"]
    assert main(["--dataset", spec, "--weights", "scratch", *opts, "OUTPUT_DIR", str(trained)]) == 0
    plan = make_plan(build_parser().parse_args(["--dataset", spec, "--eval-only", "--weights",
                                                str(trained / "trial0" / "model_final.pth"), *opts, "OUTPUT_DIR",
                                                str(tmp_path / "eval")]), cuda_available=False)
    (tmp_path / "plan.pkl").write_bytes(pickle.dumps(plan))
    (tmp_path / "two_ranks.py").write_text(TWO_RANKS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    run = subprocess.run([sys.executable, str(tmp_path / "two_ranks.py"), str(tmp_path / "plan.pkl"), str(tmp_path),
                          port], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen == {"before": False, "images": 4, "classes": ["boat", "buoy", "dock"]}, (rank, seen)
    record = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert record["status"] == "complete" and record["results"]["bbox"]["AP50"] is not None


def test_example_config_users_copy(make_coco, tmp_path, monkeypatch):
    """configs/transfer/custom/example.yaml runs as shipped once its paths exist (relative to the cwd)."""
    monkeypatch.chdir(tmp_path)
    tj, ti, sj, si = make_coco(tmp_path / "data" / "mine")
    (tmp_path / "data/mine/annotations").mkdir()
    tj.rename(tmp_path / "data/mine/annotations/train.json")
    sj.rename(tmp_path / "data/mine/annotations/test.json")
    example = Path(__file__).resolve().parents[2] / "configs/transfer/custom/example.yaml"
    plan = _plan("--config-file", str(example))
    assert plan.task == "example" and plan.cfg.DATASETS.TEST == ("mine_test",)
    assert plan.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2 and plan.cfg.SOLVER.MAX_ITER > 0


def test_registration_follows_the_latest_declaration(make_voc, tmp_path):
    from detectron2.data import MetadataCatalog

    from siambench.transfer.custom import register_custom_datasets

    a = make_voc(tmp_path / "a", classes=("x", "y"))
    b = make_voc(tmp_path / "b", classes=("u", "v", "w"))
    register_custom_datasets([f"again=voc:{a}"])
    register_custom_datasets([f"again=voc:{a}"])  # idempotent
    assert MetadataCatalog.get("again_test").thing_classes == ["x", "y"]
    register_custom_datasets([f"again=voc:{b}"])
    assert MetadataCatalog.get("again_test").thing_classes == ["u", "v", "w"]
    with pytest.raises(ConfigError, match="registered by detectron2"):
        register_custom_datasets([f"lvis_v1=voc:{a}"])  # lvis_v1_train is one of detectron2's names


def test_explicit_class_list_refuses_other_names(make_voc, tmp_path, capsys):
    root = make_voc(tmp_path / "v", classes=("boat", "buoy", "dock"))
    plan = _plan("--dataset", f"two=voc:{root}:classes=dock+boat+buoy")
    assert plan.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3  # the given order is the class order
    from detectron2.data import MetadataCatalog

    assert MetadataCatalog.get("two_train").thing_classes == ["dock", "boat", "buoy"]
    out = tmp_path / "out"
    assert main(["--dataset", f"three=voc:{root}:classes=boat+buoy", "--weights", "scratch",
                 "OUTPUT_DIR", str(out)]) == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "object class 'dock' is not one of ['boat', 'buoy']" in err and ".xml" in err


def test_builtin_config_hash_unchanged_by_the_custom_keys():
    """Finished trials of built-in tasks stay "complete": their config hash ignores the empty SIAMBENCH.CUSTOM."""
    from siambench.transfer.config import config_hash, load_task_config, task_config_path

    cfg, _ = load_task_config(task_config_path("voc07"))
    with_keys = config_hash(cfg)
    del cfg.SIAMBENCH["CUSTOM"]
    assert config_hash(cfg) == with_keys
