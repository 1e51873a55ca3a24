"""The C4 ROI head of the MoCo/SimSiam detection protocol, registered with detectron2.

``Res5ROIHeadsExtraNorm`` is detectron2's ``Res5ROIHeads`` with one extra norm layer
after the res5 stage. In the protocol every BN is fine-tuned; the extra norm normalises
the per-region features fed to the freshly initialised box/mask predictors (MoCo, He et
al. CVPR 2020, Sec. 4.2; used unchanged by SimSiam's Table 5).

Unlike the stock head it also builds res5 from BasicBlocks for ResNet-18/34, so the tiny
synthetic tasks run on the resnet18 the demo pretrains. Module names stay
``roi_heads.res5.{0,1,..}.*`` (plus ``roi_heads.res5.norm.*``), which is where
detectron2's matching heuristics put a converted checkpoint's ``res5.*`` weights.

Importing this module registers the head: configs naming it work for training,
evaluation-only runs and detectron2's own tools (``import transfer.roi_heads`` first).
"""
from __future__ import annotations

from torch import nn

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.config import CfgNode
from detectron2.layers import get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

__all__ = ["Res5ROIHeadsExtraNorm", "build_res5_stage"]

# Blocks in res5 per ResNet depth (torchvision / He et al. 2016, Table 1).
_RES5_BLOCKS = {18: 2, 34: 3, 50: 3, 101: 3, 152: 3}


def build_res5_stage(cfg: CfgNode) -> tuple[list[nn.Module], int]:
    """The res5 stage of ``cfg.MODEL.RESNETS``, applied per region; returns (blocks, channels).

    Raises:
        ValueError: unsupported depth or options, naming the key.
    """
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _RES5_BLOCKS:
        raise ValueError(f"MODEL.RESNETS.DEPTH {r.DEPTH} is not supported; use one of {sorted(_RES5_BLOCKS)}")
    if r.DEFORM_ON_PER_STAGE[-1]:
        raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable conv is not supported in the res5 head")
    stage_channel_factor = 2**3  # res5 is 8x res2
    out_channels = r.RES2_OUT_CHANNELS * stage_channel_factor  # 2048 for R50, 512 for R18
    num_blocks = _RES5_BLOCKS[r.DEPTH]
    stride_per_block = [2] + [1] * (num_blocks - 1)
    if r.DEPTH in (18, 34):
        if r.RES2_OUT_CHANNELS != 64 or r.NUM_GROUPS != 1:
            raise ValueError("ResNet-18/34 need MODEL.RESNETS.RES2_OUT_CHANNELS 64 and NUM_GROUPS 1")
        blocks = ResNet.make_stage(
            BasicBlock, num_blocks, stride_per_block=stride_per_block,
            in_channels=out_channels // 2, out_channels=out_channels, norm=r.NORM,
        )
    else:
        blocks = ResNet.make_stage(
            BottleneckBlock, num_blocks, stride_per_block=stride_per_block,
            in_channels=out_channels // 2,
            bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP * stage_channel_factor,
            out_channels=out_channels, num_groups=r.NUM_GROUPS, norm=r.NORM,
            stride_in_1x1=r.STRIDE_IN_1X1,
        )
    return blocks, out_channels


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` + a norm (``MODEL.RESNETS.NORM``) after res5; BasicBlock res5 for R18/34."""

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode) -> tuple[nn.Sequential, int]:
        blocks, out_channels = build_res5_stage(cfg)
        res5 = nn.Sequential(*blocks)
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))  # the extra norm
        return res5, out_channels
