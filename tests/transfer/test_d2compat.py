"""detectron2 through the compat module: imports, patches, and a real R50-C4 step on synthetic VOC."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from siambench.transfer import d2compat
import detectron2  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import build_detection_test_loader, build_detection_train_loader  # noqa: E402
from detectron2.data.datasets import load_voc_instances  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from detectron2 import model_zoo  # noqa: E402
from PIL import Image  # noqa: E402

from siambench.transfer import datasets  # noqa: E402  (SYNTH_CLASSES; conftest registers the names)


def test_info_reports_the_detectron2_in_use() -> None:
    info = d2compat.info()
    assert info["version"] == detectron2.__version__
    assert Path(info["path"]).parent.name == "detectron2"
    assert info["compiled_ops"] == d2compat.has_compiled_ops()
    assert isinstance(info["source"], str) and info["source"]


def test_missing_compiled_ops_fail_clearly() -> None:
    if d2compat.has_compiled_ops():
        pytest.skip("official build with compiled ops")
    from detectron2 import _C

    assert not hasattr(_C, "deform_conv_forward")  # probing stays quiet
    with pytest.raises(d2compat.CompiledOpsUnavailable, match="deform_conv_forward.*github.com"):
        _C.deform_conv_forward


def test_pillow_and_numpy_compat() -> None:
    from detectron2.data import build

    assert Image.LINEAR == Image.BILINEAR
    if tuple(int(v) for v in np.__version__.split(".")[:2]) >= (1, 24):
        assert build.np.int is int and build.np.zeros is np.zeros  # v0.6 code sees the old aliases
        assert not hasattr(np, "int"), "numpy itself must not be patched"


def test_one_line_voc_split(synth_root: Path, tmp_path: Path) -> None:
    voc = tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for sub in ("Annotations", "JPEGImages"):
        (voc / sub).symlink_to(synth_root / "VOC2007" / sub)
    first = (synth_root / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    (voc / "ImageSets" / "Main" / "one.txt").write_text(first + "\n")
    dicts = load_voc_instances(str(voc), "one", datasets.SYNTH_CLASSES)
    assert [d["image_id"] for d in dicts] == [first]


def _tiny_c4_cfg():
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("PascalVOC-Detection/faster_rcnn_R_50_C4.yaml"))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "",  # random init: no download
        "MODEL.DEVICE", "cpu",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(len(datasets.SYNTH_CLASSES)),
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
        "DATASETS.TRAIN", "('synth_voc_2007_trainval',)", "DATASETS.TEST", "('synth_voc_2007_test',)",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
        "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
    ])
    return cfg


@pytest.mark.slow
def test_faster_rcnn_c4_trains_and_infers_on_synthetic_voc(synth_root: Path) -> None:
    torch.manual_seed(0)
    cfg = _tiny_c4_cfg()
    model = build_model(cfg)
    model.train()
    batch = next(iter(build_detection_train_loader(cfg)))
    assert len(batch) == 2 and all(b["image"].shape[0] == 3 and min(b["image"].shape[1:]) == 96 for b in batch)
    assert all(len(b["instances"]) > 0 for b in batch)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    head = model.roi_heads.box_predictor.cls_score.weight
    before = head.detach().clone()
    with EventStorage(0):  # the training forward logs proposal statistics
        losses = model(batch)
    assert {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= losses.keys()
    total = sum(losses.values())
    assert math.isfinite(total.item())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    assert not torch.equal(before, head.detach())

    model.eval()
    inputs = next(iter(build_detection_test_loader(cfg, "synth_voc_2007_test")))
    with torch.no_grad():
        (out,) = model(inputs)
    instances = out["instances"]
    assert instances.image_size == (inputs[0]["height"], inputs[0]["width"])  # rescaled to the original
    boxes = instances.pred_boxes.tensor
    assert len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE and boxes.shape[1:] == (4,)
    assert (instances.pred_classes < len(datasets.SYNTH_CLASSES)).all()


def test_every_detectron2_import_goes_through_d2compat() -> None:
    """In each source file, the first detectron2 import (in line order, lazy ones included)
    comes after `from transfer import d2compat`: importing detectron2 first would bypass the
    pure-Python fixes."""
    import ast

    repo = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("pretrain", "convert", "transfer", "benchmarks"):
        for path in sorted((repo / package).rglob("*.py")):
            if path.name in ("d2compat.py", "install_d2.py"):
                continue
            imports = sorted((n for n in ast.walk(ast.parse(path.read_text()))
                              if isinstance(n, (ast.Import, ast.ImportFrom))), key=lambda n: n.lineno)
            for node in imports:
                if isinstance(node, ast.ImportFrom) and node.module in ("transfer", "siambench.transfer") and \
                        any(a.name == "d2compat" for a in node.names):
                    break
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m == "detectron2" or m.startswith("detectron2.") for m in modules):
                    offenders.append(f"{path.relative_to(repo)}:{node.lineno}")
                    break
    assert offenders == [], f"import transfer.d2compat before detectron2 in: {offenders}"
