"""Converted weights inside Detectron2: features equal torchvision's, every ResNet tensor filled."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from siambench.transfer import d2compat  # noqa: F401  (before detectron2)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from siambench.convert.arch import spec_for
from siambench.convert.cli import main
from siambench.convert.errors import UnsafeCheckpointError, VerificationError
from siambench.convert.export import convert_checkpoint, to_detectron2, write_detectron2_pkl
from siambench.convert.naming import is_resnet_key
from siambench.transfer.checkpoint import SafeDetectionCheckpointer
from siambench.convert.verify import check_loads_into, d2_config, verify_weights

# Keys a detection model may leave at their fresh initialisation: heads, FPN, the extra norm.
_FRESH = ("proposal_generator.", "roi_heads.box_predictor.", "roi_heads.box_head.", "roi_heads.mask_head.",
          "roi_heads.res5.norm.", "backbone.fpn_")


@pytest.fixture(scope="module")
def r18(resnet_state, tmp_path_factory):
    """torchvision resnet18 weights at width 64 (Detectron2 builds BasicBlock ResNets at width 64
    only: the one full-size network here) written as convert's ``.pkl`` and verified in all layouts
    at 64 px. Only the 45 MB ``.pkl`` is written: reading checkpoints is tested on ``tiny``."""
    tmp = tmp_path_factory.mktemp("r18")
    tv = resnet_state("resnet18", width=64)
    backbone = {k: v for k, v in tv.items() if is_resnet_key(k)}  # what load_backbone_state_dict returns
    out = write_detectron2_pkl(tmp / "r18.pkl", to_detectron2(backbone), {"arch": "resnet18", "width": 64})
    report = verify_weights(out, backbone, image_size=64)
    return tv, out, report


@pytest.fixture(scope="module")
def tiny(resnet_state, simsiam_factory, tmp_path_factory):
    """A siambench narrow resnet50 (width 8, 1.6 MB) checkpoint converted with verification."""
    tmp = tmp_path_factory.mktemp("tiny")
    tv = resnet_state("resnet50")
    src = tmp / "ckpt.pth"
    torch.save(simsiam_factory(tv, siambench=True, arch="resnet50"), src)
    prov, report = convert_checkpoint(src, tmp / "tiny.pkl", verify=True, verify_size=64)
    return tv, src, tmp / "tiny.pkl", report


def test_resnet18_all_layouts(r18):
    tv, out, report = r18
    assert report.ok and report.arch == "resnet18" and report.weights == str(out)
    assert [r.layout for r in report.layouts] == ["backbone", "c4", "fpn"]
    for r in report.layouts:
        assert set(r.rel_err) == {"res2", "res3", "res4", "res5"}
        assert max(r.rel_err.values()) < 1e-4
        assert all(k.startswith(_FRESH) for k in r.unfilled), r.unfilled
    assert report.layouts[0].unfilled == []  # the bare backbone is filled completely
    assert any(k.startswith("roi_heads.mask_head.") for k in report.layouts[1].unfilled)


def test_convert_with_verify_reports_dropped_keys_and_leaves_no_staged_copy(tiny):
    _, _, out, report = tiny
    assert report.ok and report.arch == "resnet50-w8" and report.weights == str(out)
    assert [r.layout for r in report.layouts] == ["backbone", "c4", "fpn"]
    assert max(max(r.rel_err.values()) for r in report.layouts) < 1e-4
    assert set(report.source_unused) >= {"module.predictor.0.weight", "module.encoder.fc.0.weight"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["ckpt.pth", "tiny.pkl"]  # staged copy gone


def test_res5_weights_land_in_the_c4_roi_head(r18):
    tv, out, _ = r18
    model = build_model(d2_config(spec_for("resnet18"), "c4"))
    report = check_loads_into(model, out)
    assert report.problems == []
    assert {k for k in report.unfilled if k.startswith("roi_heads.res5.")} == {
        f"roi_heads.res5.norm.{t}" for t in ("bias", "running_mean", "running_var", "weight")}
    res5 = model.roi_heads.res5
    assert torch.equal(res5[1].conv2.weight, tv["layer4.1.conv2.weight"])
    assert torch.equal(res5[0].shortcut.norm.running_var, tv["layer4.0.downsample.1.running_var"])
    assert torch.equal(model.backbone.res4[0].conv1.norm.running_mean, tv["layer3.0.bn1.running_mean"])
    assert not hasattr(model.backbone, "res5")  # C4: res5 is only in the head


def test_plain_detectron2_checkpointer_loads_the_same(tiny):
    cfg = d2_config(spec_for("resnet50").narrowed(8), "backbone")
    a, b = (build_resnet_backbone(cfg, ShapeSpec(channels=3)) for _ in range(2))
    DetectionCheckpointer(a).load(str(tiny[2]))
    SafeDetectionCheckpointer(b).load(str(tiny[2]))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_safe_checkpointer_refuses_payload(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {}, "__author__": "x", "p": Payload()}))
    backbone = build_resnet_backbone(d2_config(spec_for("resnet18"), "backbone"), ShapeSpec(channels=3))
    with pytest.raises(UnsafeCheckpointError, match=r"posix.mkdir"):
        SafeDetectionCheckpointer(backbone).load(str(evil))
    assert not marker.exists()


def _rewrite(src, dst, edit):
    data = pickle.loads(src.read_bytes())
    edit(data)
    dst.write_bytes(pickle.dumps(data))
    return dst


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["model"].__setitem__("res3.1.conv2.weight", d["model"]["res3.1.conv2.weight"] * 1.01),
         r"res3 differs from torchvision"),
        (lambda d: d["model"].pop("res4.0.shortcut.norm.running_var"),
         r"ResNet tensor res4.0.shortcut.norm.running_var was not filled"),
        (lambda d: d["model"].__setitem__("res9.0.conv1.weight", d["model"]["res2.0.conv1.weight"]),
         r"weights not used by the model: \['res9.0.conv1.weight'\]"),
        (lambda d: d["provenance"].__setitem__("pixel_mean", [103.53, 116.28, 123.675]),  # BGR mean
         r"res2 differs from torchvision"),
    ],
    ids=["perturbed-weight", "missing-tensor", "stray-tensor", "wrong-pixel-mean"],
)
def test_verification_catches_broken_weights(tiny, tmp_path, edit, message):
    tv, _, out, _ = tiny
    broken = _rewrite(out, tmp_path / "broken.pkl", edit)
    with pytest.raises(VerificationError, match=message):
        verify_weights(broken, tv, layouts=("backbone",), image_size=64)


@pytest.fixture(scope="module")
def r50(resnet_state, tmp_path_factory):
    """A torchvision-layout resnet50 (width 8) state dict converted (without verification)."""
    tmp = tmp_path_factory.mktemp("r50")
    tv = resnet_state("resnet50")
    torch.save(tv, tmp / "resnet50.pth")
    convert_checkpoint(tmp / "resnet50.pth", tmp / "r50.pkl")
    return tv, tmp / "r50.pkl"


def test_resnet50_features_match_in_backbone_and_c4(r50):
    tv, out = r50
    report = verify_weights(out, tv, layouts=("backbone", "c4"), image_size=64)
    assert report.arch == "resnet50-w8" and [r.layout for r in report.layouts] == ["backbone", "c4"]
    assert max(max(r.rel_err.values()) for r in report.layouts) < 1e-4
    assert all(k.startswith(_FRESH) for k in report.layouts[1].unfilled)


def test_stride_in_1x1_matters_for_bottlenecks(r50, tmp_path):
    # Caffe2-style stride placement is a different network for the same tensors.
    tv, out = r50
    caffe2 = _rewrite(out, tmp_path / "caffe2.pkl", lambda d: d["provenance"].__setitem__("stride_in_1x1", True))
    with pytest.raises(VerificationError, match=r"res3 differs"):
        verify_weights(caffe2, tv, layouts=("backbone",), image_size=64)


def test_cli_summary_and_failed_verification_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    _, src, _, _ = tiny
    os.link(src, tmp_path / "ckpt.pth")  # read only: shares the module checkpoint
    assert main([str(tmp_path / "ckpt.pth"), str(tmp_path / "ok.pkl")]) == 0
    printed = capsys.readouterr().out
    assert "format   siambench (prefix 'module.encoder.')" in printed
    assert "module.predictor.* (3)" in printed and "module.encoder.fc.* (4)" in printed
    assert "arch     resnet50, width 8, epoch 100" in printed

    import siambench.convert.export

    real = siambench.convert.export.to_detectron2

    def swapped_bns(state_dict):  # the kind of mapping bug verification exists for
        model = real(state_dict)
        model["res2.0.conv1.norm.weight"], model["res2.0.conv2.norm.weight"] = (
            model["res2.0.conv2.norm.weight"], model["res2.0.conv1.norm.weight"])
        return model

    monkeypatch.setattr(siambench.convert.export, "to_detectron2", swapped_bns)
    rc = main([str(tmp_path / "ckpt.pth"), str(tmp_path / "bad.pkl"), "--verify", "--verify-size", "64"])
    assert rc == 1
    assert "res2 differs from torchvision" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth", "ok.pkl"]  # nothing unverified left
