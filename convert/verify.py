"""Prove that converted weights are the source network, as Detectron2 will see it.

For each model layout the transfer step uses, :func:`verify_weights` builds the
Detectron2 model (ResNet with ``STRIDE_IN_1X1 False``, RGB input, the pixel mean/std
recorded in the file), loads the ``.pkl`` as ``siambench transfer`` does -- read by
:func:`~siambench.convert.safe_pickle.load_detectron2_weights`, loaded by detectron2's
``DetectionCheckpointer`` with its name-matching heuristics -- and then:

* requires every ResNet tensor of the model to be filled and no weight to be left
  over -- only fresh detection heads (RPN, box/mask predictors, FPN, the extra norm)
  may stay unfilled, and they are reported;
* feeds one image to the Detectron2 model and to the torchvision ResNet (both in
  eval mode, each with its own input normalisation) and requires res2..res5 to agree
  within ``tolerance`` relative to the feature's largest magnitude.

Layouts: ``backbone`` (bare ResNet), ``c4`` (Faster/Mask R-CNN C4: res2-res4 in the
backbone, res5 inside ``roi_heads.res5``) and ``fpn`` (ResNet under ``backbone.bottom_up``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .arch import (INPUT_FORMAT, PIXEL_MEAN, PIXEL_STD, TORCHVISION_WIDTH, ResNetSpec, check_detectron2_buildable,
                   spec_for)
from .checkpoints import summarize_keys
from .errors import VerificationError
from .safe_pickle import load_detectron2_weights, load_weights_pkl

__all__ = ["LAYOUTS", "LayoutReport", "VerifyReport", "verify_weights", "d2_config", "check_loads_into"]

LAYOUTS = ("backbone", "c4", "fpn")
STAGES = ("res2", "res3", "res4", "res5")
# Detectron2 names of ResNet tensors in any model: stem, res2..res5 blocks (incl. roi_heads.res5).
_RESNET_TENSOR = re.compile(
    r"(^|\.)(stem\.conv1|res[2-5]\.\d+\.(conv[1-3]|shortcut))\.(weight|norm\.(weight|bias|running_mean|running_var))$"
)
# torchvision's documented ImageNet normalisation, on [0, 1] images (independent of PIXEL_MEAN).
_TV_MEAN = (0.485, 0.456, 0.406)
_TV_STD = (0.229, 0.224, 0.225)


@dataclass
class LayoutReport:
    """What loading into, and running, one Detectron2 layout showed."""

    layout: str
    rel_err: dict[str, float] = field(default_factory=dict)  # res2..res5 -> max |d2 - tv| / max |tv|
    unfilled: list[str] = field(default_factory=list)  # model keys left at init (fresh heads)
    problems: list[str] = field(default_factory=list)  # anything that fails verification
    note: str = ""


@dataclass
class VerifyReport:
    weights: str
    arch: str
    tolerance: float
    source_unused: list[str]  # checkpoint keys not converted (dropped heads, counters)
    layouts: list[LayoutReport]

    @property
    def ok(self) -> bool:
        return not any(r.problems for r in self.layouts)

    def summary(self) -> str:
        lines = [f"verify {self.weights} ({self.arch}, tolerance {self.tolerance:g} relative):",
                 f"  source keys not converted: {summarize_keys(self.source_unused)}"]
        for r in self.layouts:
            errs = " ".join(f"{k}={v:.1e}" for k, v in r.rel_err.items())
            fresh = _group(r.unfilled)
            lines.append(f"  {r.layout:<8} {'OK' if not r.problems else 'FAILED'}  {errs}"
                         + (f"  fresh: {fresh}" if fresh else "") + (f"  ({r.note})" if r.note else ""))
            lines += [f"    - {p}" for p in r.problems]
        return "\n".join(lines)


def _group(keys: Sequence[str]) -> str:
    """Compact 'module.sub (n)' listing of parameter names."""
    groups: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        # "roi_heads.res5.norm", not "roi_heads.res5": res5's blocks are filled, its extra norm is not
        head = ".".join(parts[:3] if len(parts) > 3 and parts[1].startswith("res") else parts[:2])
        groups[head] = groups.get(head, 0) + 1
    return ", ".join(f"{g} ({n})" for g, n in groups.items())


def _c4_head() -> tuple[str, bool]:
    """ROI head for C4 and whether it handles BasicBlock res5 (siambench's, if importable)."""
    try:
        import siambench.transfer.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
    except ImportError:
        return "Res5ROIHeads", False
    return "Res5ROIHeadsExtraNorm", True


def d2_config(spec: ResNetSpec, layout: str, provenance: Mapping[str, Any] | None = None) -> Any:
    """A minimal Detectron2 config mirroring the transfer protocol for ``spec`` and ``layout``."""
    from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)
    from detectron2.config import get_cfg

    prov = provenance or {}
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.PIXEL_MEAN = list(prov.get("pixel_mean", PIXEL_MEAN))
    cfg.MODEL.PIXEL_STD = list(prov.get("pixel_std", PIXEL_STD))
    cfg.INPUT.FORMAT = prov.get("input_format", INPUT_FORMAT)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # the protocol fine-tunes every layer
    r = cfg.MODEL.RESNETS
    for key, value in spec.detectron2_resnets().items():  # DEPTH, STEM_OUT/RES2_OUT_CHANNELS, groups, width
        setattr(r, key, value)
    r.STRIDE_IN_1X1 = bool(prov.get("stride_in_1x1", False))  # torchvision: stride in the 3x3
    r.NORM = "BN"  # SyncBN in multi-GPU transfer runs: same tensors, same eval-mode function
    r.OUT_FEATURES = list(STAGES)
    if layout == "backbone":
        return cfg
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.MASK_ON = True  # COCO uses Mask R-CNN; the mask head is one more fresh head
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 20
    if layout == "c4":
        r.OUT_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.NAME = _c4_head()[0]
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        cfg.MODEL.RPN.IN_FEATURES = ["res4"]
    elif layout == "fpn":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        cfg.MODEL.FPN.IN_FEATURES = list(STAGES)
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
        cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
        cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
        cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
        cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
        cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    else:
        raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    return cfg


def check_loads_into(model: nn.Module, weights: str | os.PathLike) -> LayoutReport:
    """Load ``weights`` into ``model`` the way the transfer step does and check what got filled.

    Usable with any Detectron2 model (e.g. one built from a transfer config): every ResNet
    tensor must be filled with the right shape and every weight in the file used.
    """
    from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)
    from detectron2.checkpoint import DetectionCheckpointer

    # The two steps of Checkpointer.load (reading the file as transfer's checkpointer does),
    # kept apart to see the incompatible keys it only logs.
    incompatible = DetectionCheckpointer(model)._load_model(load_detectron2_weights(weights))
    report = LayoutReport(layout=type(model).__name__)
    for key, shape_ckpt, shape_model in incompatible.incorrect_shapes:
        report.problems.append(f"{key}: shape {tuple(shape_ckpt)} in the weights, {tuple(shape_model)} in the model")
    for key in incompatible.missing_keys:
        if _RESNET_TENSOR.search(key):
            report.problems.append(f"ResNet tensor {key} was not filled")
        else:
            report.unfilled.append(key)
    if incompatible.unexpected_keys:
        report.problems.append(f"weights not used by the model: {sorted(incompatible.unexpected_keys)[:8]}")
    return report


def _image(size: int, seed: int = 0) -> torch.Tensor:
    """A fixed RGB image, CxHxW float in [0, 255]: smooth gradients plus noise."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 255, size)
    img = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                       ramp.flip(0)[None, :].expand(size, size)])
    return (0.5 * img + 0.5 * torch.randint(0, 256, (3, size, size), generator=g)).round()


@torch.no_grad()
def _torchvision_features(
    spec: ResNetSpec, state_dict: Mapping[str, torch.Tensor], img: torch.Tensor
) -> dict[str, torch.Tensor]:
    from siambench.pretrain.methods.encoders import build_encoder

    tv = build_encoder(spec.arch, width=spec.width).eval()  # torchvision's own constructor at width 64
    missing, unexpected = tv.load_state_dict(dict(state_dict), strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise VerificationError(f"source tensors do not fit torchvision {spec.name}: {missing[:4]} {unexpected[:4]}")
    mean = torch.tensor(_TV_MEAN)[:, None, None]
    std = torch.tensor(_TV_STD)[:, None, None]
    x = ((img / 255.0 - mean) / std)[None]  # 1x3xHxW
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    feats = {}
    for stage, layer in zip(STAGES, (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
        x = layer(x)
        feats[stage] = x
    return feats


def _stage_outputs(resnet: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage output of a Detectron2 ``ResNet`` (its forward returns OUT_FEATURES only)."""
    x = resnet.stem(x)
    feats = {}
    for name, stage in zip(resnet.stage_names, resnet.stages):
        x = stage(x)
        feats[name] = x
    return feats


@torch.no_grad()
def _d2_features(model: nn.Module, layout: str, img: torch.Tensor, cfg: Any) -> dict[str, torch.Tensor]:
    if layout == "backbone":
        mean = torch.tensor(cfg.MODEL.PIXEL_MEAN)[:, None, None]
        std = torch.tensor(cfg.MODEL.PIXEL_STD)[:, None, None]
        return _stage_outputs(model, ((img - mean) / std)[None])
    x = model.preprocess_image([{"image": img}]).tensor  # detectron2's own normalisation
    if layout == "fpn":
        return _stage_outputs(model.backbone.bottom_up, x)
    feats = _stage_outputs(model.backbone, x)  # C4: res2..res4; res5 runs per region in the ROI head
    res5 = feats["res4"]
    for name, block in model.roi_heads.res5.named_children():
        if name.isdigit():  # the blocks; an extra norm after them is a fresh head
            res5 = block(res5)
    feats["res5"] = res5
    return feats


def _build(cfg: Any, layout: str) -> nn.Module:
    from siambench.transfer import d2compat  # noqa: F401
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_model
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    if layout == "backbone":
        return build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))).eval()
    return build_model(cfg).eval()


def _verify_layouts(
    weights: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    spec: ResNetSpec,
    provenance: Mapping[str, Any],
    layouts: Sequence[str],
    img: torch.Tensor,
    tolerance: float,
) -> list[LayoutReport]:
    """One :class:`LayoutReport` per layout, stopping after the first that fails."""
    reference = _torchvision_features(spec, state_dict, img)
    reports = []
    for layout in layouts:
        if layout == "c4" and not spec.bottleneck and not _c4_head()[1]:
            reports.append(LayoutReport(layout, note="skipped: stock Res5ROIHeads builds bottleneck res5 only"))
            continue
        cfg = d2_config(spec, layout, provenance)
        model = _build(cfg, layout)
        report = check_loads_into(model, weights)
        report.layout = layout
        feats = _d2_features(model, layout, img, cfg)
        for stage in STAGES:
            ref = reference[stage]
            if feats[stage].shape != ref.shape:
                report.problems.append(f"{stage}: shape {tuple(feats[stage].shape)} vs torchvision {tuple(ref.shape)}")
                continue
            err = float((feats[stage] - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
            report.rel_err[stage] = err
            if not err <= tolerance:  # also catches NaN
                report.problems.append(f"{stage} differs from torchvision by {err:.2e} relative (> {tolerance:g})")
        reports.append(report)
        if report.problems:  # later layouts would only repeat the failure, slowly
            break
    return reports


def verify_weights(
    weights: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    arch: str | None = None,
    source_unused: Sequence[str] = (),
    layouts: Sequence[str] = LAYOUTS,
    image_size: int = 224,
    tolerance: float = 1e-4,
    width: int | None = None,
) -> VerifyReport:
    """Check a converted ``.pkl`` against the torchvision-named ``state_dict`` it came from.

    Args:
        weights: the ``.pkl`` written by ``siambench convert``.
        state_dict: source backbone tensors (from :func:`siambench.convert.checkpoints.load_backbone_state_dict`).
        arch: torchvision architecture; defaults to the file's provenance.
        source_unused: source keys that were not converted, reported as such.
        layouts: which Detectron2 layouts to build (see module doc).
        image_size: side of the square test image (a multiple of 32 keeps FPN unpadded).
        tolerance: largest allowed ``max|d2 - torchvision| / max|torchvision|`` per stage.
        width: stem channels (siambench MODEL.WIDTH); defaults to the file's provenance, else 64.

    Returns:
        The report; ``report.ok`` is True.

    Raises:
        VerificationError: with the report's summary, at the first layout that fails.
    """
    provenance = load_weights_pkl(weights).get("provenance", {})
    spec = spec_for(arch or provenance.get("arch", ""))
    spec = spec.narrowed(int(width or provenance.get("width", TORCHVISION_WIDTH)))
    check_detectron2_buildable(spec)
    img = _image(image_size)
    with torch.random.fork_rng(devices=[]):  # fresh heads are random: seed them, leave the caller's RNG alone
        torch.manual_seed(0)
        reports = _verify_layouts(weights, state_dict, spec, provenance, layouts, img, tolerance)
    result = VerifyReport(str(weights), spec.name, tolerance, list(source_unused), reports)
    if not result.ok:
        raise VerificationError(result.summary())
    return result
