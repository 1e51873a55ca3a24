"""Res5ROIHeadsExtraNorm: registered, BasicBlock res5 for R18, extra norm, converted weights land in it."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from siambench.transfer import d2compat  # noqa: F401
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import ROI_HEADS_REGISTRY, build_model  # noqa: E402
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402

import siambench.transfer.roi_heads  # noqa: E402,F401  (registers the head)
from siambench.convert.naming import to_detectron2_name  # noqa: E402
from siambench.pretrain.methods.encoders import build_encoder  # noqa: E402
from siambench.transfer.config import load_task_config, resolve_runtime, task_config_path  # noqa: E402
from siambench.transfer.roi_heads import build_res5_stage  # noqa: E402
from siambench.transfer.trainer import safe_checkpointer  # noqa: E402


def _cfg(task: str, *opts: str):
    cfg, _ = load_task_config(task_config_path(task), list(opts))
    resolve_runtime(cfg, world_size=1, cuda_available=False)
    return cfg


def test_registered_under_the_config_name() -> None:
    assert ROI_HEADS_REGISTRY.get("Res5ROIHeadsExtraNorm") is siambench.transfer.roi_heads.Res5ROIHeadsExtraNorm


def test_task_configs_work_with_stock_detectron2_config_and_builder() -> None:
    # detectron2's own tools use get_cfg() + merge_from_file + build_model: our task configs
    # hold detectron2 keys only, and importing siambench.transfer.roi_heads is all the head needs.
    cfg = get_cfg()
    cfg.merge_from_file(str(task_config_path("voc07")))
    cfg.MODEL.DEVICE, cfg.MODEL.RESNETS.NORM = "cpu", "BN"  # one CPU process: no SyncBN group
    model = build_model(cfg)
    assert type(model.roi_heads).__name__ == "Res5ROIHeadsExtraNorm"
    assert isinstance(model.roi_heads.res5.norm, nn.BatchNorm2d) and model.roi_heads.res5.norm.num_features == 2048


def test_r18_c4_head_has_basicblock_res5_and_extra_norm() -> None:
    model = build_model(_cfg("synth_coco"))
    heads = model.roi_heads
    assert type(heads).__name__ == "Res5ROIHeadsExtraNorm"
    blocks = [m for name, m in heads.res5.named_children() if name != "norm"]
    assert [type(b) for b in blocks] == [BasicBlock, BasicBlock]  # ResNet-18 res5: 2 basic blocks
    assert isinstance(heads.res5.norm, nn.BatchNorm2d) and heads.res5.norm.num_features == 512
    assert heads.box_predictor.cls_score.in_features == 512 and heads.box_predictor.cls_score.out_features == 7
    heads.eval()
    feats = {"res4": torch.randn(1, 256, 4, 4)}  # 1x256x4x4: a 64 px image at stride 16
    x = heads._shared_roi_transform([feats["res4"]], [Boxes(torch.tensor([[0.0, 0.0, 32.0, 32.0]]))])
    assert x.shape == (1, 512, 2, 2)  # 4x4 regions -> res5 (stride 2) -> extra norm


def test_r50_res5_is_three_bottlenecks_with_torchvision_stride() -> None:
    blocks, channels = build_res5_stage(_cfg("coco"))
    assert channels == 2048 and [type(b) for b in blocks] == [BottleneckBlock] * 3
    assert blocks[0].conv1.stride == (1, 1) and blocks[0].conv2.stride == (2, 2)  # STRIDE_IN_1X1 False


# A width-8 ResNet-50 in the synthetic task (its ResNet-18 at width 64 is a 45 MB file; the BasicBlock
# res5 of the C4 head is loaded and checked against torchvision in tests/convert/test_convert_verify.py).
NARROW_R50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS",
              "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "8"]


def test_converted_weights_load_into_backbone_and_res5(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = build_encoder("resnet50", width=8).state_dict()
    d2 = {to_detectron2_name(k): v.numpy() for k, v in state.items() if to_detectron2_name(k)}
    path = tmp_path / "r50w8.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "siambench", "matching_heuristics": True}, f)
    model = build_model(_cfg("synth_voc07", *NARROW_R50))
    assert [type(b) for n, b in model.roi_heads.res5.named_children() if n != "norm"] == [BottleneckBlock] * 3
    norm_before = model.roi_heads.res5.norm.weight.detach().clone()
    safe_checkpointer(model).load(str(path))
    got = model.state_dict()
    for d2_name, model_name in [("stem.conv1.weight", "backbone.stem.conv1.weight"),
                                ("res4.1.conv2.norm.running_var", "backbone.res4.1.conv2.norm.running_var"),
                                ("res5.0.conv1.weight", "roi_heads.res5.0.conv1.weight"),
                                ("res5.1.conv2.norm.weight", "roi_heads.res5.1.conv2.norm.weight")]:
        np.testing.assert_array_equal(got[model_name].numpy(), d2[d2_name], err_msg=model_name)
    # The extra norm is new (not in any backbone checkpoint) and keeps its initialisation.
    assert torch.equal(model.roi_heads.res5.norm.weight, norm_before)
