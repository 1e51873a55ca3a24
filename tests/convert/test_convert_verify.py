"""Converted weights inside Detectron2: features equal torchvision's, every ResNet tensor filled."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from convert.checkpoints import load_backbone_state_dict
from convert.cli import main
from convert.errors import UnsafeCheckpointError, VerificationError
from convert.export import convert_checkpoint
from convert.verify import check_loads_into, d2_config, verify_weights
from convert.arch import spec_for

# Keys a detection model may leave at their fresh initialisation: heads, FPN, the extra norm.
_FRESH = ("proposal_generator.", "roi_heads.box_predictor.", "roi_heads.box_head.", "roi_heads.mask_head.",
          "roi_heads.res5.norm.", "backbone.fpn_")


def _convert(save, tmp_path, tv, name="w.pkl"):
    src = save(tv, name.replace(".pkl", ".pth"))
    out = tmp_path / name
    convert_checkpoint(src, out)
    sd, info = load_backbone_state_dict(src)
    return out, sd, info


def test_resnet18_all_layouts(resnet_state, save, tmp_path):
    out, sd, info = _convert(save, tmp_path, resnet_state("resnet18"))
    report = verify_weights(out, sd, source_unused=info["unused_keys"], image_size=64)
    assert report.ok and report.arch == "resnet18"
    assert [r.layout for r in report.layouts] == ["backbone", "c4", "fpn"]
    for r in report.layouts:
        assert set(r.rel_err) == {"res2", "res3", "res4", "res5"}
        assert max(r.rel_err.values()) < 1e-4
        assert all(k.startswith(_FRESH) for k in r.unfilled), r.unfilled
    assert report.layouts[0].unfilled == []  # the bare backbone is filled completely
    assert any(k.startswith("roi_heads.mask_head.") for k in report.layouts[1].unfilled)
    assert "fc.weight" in report.source_unused


@pytest.mark.parametrize("arch, layouts", [("resnet50", ("backbone", "c4")), ("wide_resnet50_2", ("backbone",))])
def test_bottleneck_features_match(resnet_state, save, tmp_path, arch, layouts):
    out, sd, _ = _convert(save, tmp_path, resnet_state(arch))
    report = verify_weights(out, sd, layouts=layouts, image_size=64)
    assert [r.layout for r in report.layouts] == list(layouts)
    assert max(max(r.rel_err.values()) for r in report.layouts) < 1e-4


def test_res5_weights_land_in_the_c4_roi_head(resnet_state, save, tmp_path):
    from detectron2.modeling import build_model

    tv = resnet_state("resnet18")
    out, _, _ = _convert(save, tmp_path, tv)
    model = build_model(d2_config(spec_for("resnet18"), "c4"))
    report = check_loads_into(model, out)
    assert report.problems == []
    assert not any(k.startswith("roi_heads.res5.") and ".norm." not in k.replace("res5.norm.", "") for k in report.unfilled)
    res5 = model.roi_heads.res5
    assert torch.equal(res5[1].conv2.weight, tv["layer4.1.conv2.weight"])
    assert torch.equal(res5[0].shortcut.norm.running_var, tv["layer4.0.downsample.1.running_var"])
    assert torch.equal(model.backbone.res4[0].conv1.norm.running_mean, tv["layer3.0.bn1.running_mean"])
    assert not hasattr(model.backbone, "res5")  # C4: res5 is only in the head


def test_plain_detectron2_checkpointer_loads_the_same(resnet_state, save, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling.backbone.resnet import build_resnet_backbone
    from detectron2.layers import ShapeSpec

    from convert.safe_pickle import SafeDetectionCheckpointer

    out, _, _ = _convert(save, tmp_path, resnet_state("resnet18"))
    cfg = d2_config(spec_for("resnet18"), "backbone")
    a, b = (build_resnet_backbone(cfg, ShapeSpec(channels=3)) for _ in range(2))
    DetectionCheckpointer(a).load(str(out))
    SafeDetectionCheckpointer(b).load(str(out))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_safe_checkpointer_refuses_payload(tmp_path):
    from detectron2.modeling.backbone.resnet import build_resnet_backbone
    from detectron2.layers import ShapeSpec

    from convert.safe_pickle import SafeDetectionCheckpointer

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


def _rewrite(path, edit):
    data = pickle.loads(path.read_bytes())
    edit(data)
    path.write_bytes(pickle.dumps(data))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["model"].__setitem__("res3.1.conv2.weight", d["model"]["res3.1.conv2.weight"] * 1.01),
         r"res3 differs from torchvision"),
        (lambda d: d["model"].pop("res4.0.shortcut.norm.running_var"),
         r"ResNet tensor backbone.res4.0.shortcut.norm.running_var was not filled"),
        (lambda d: d["provenance"].__setitem__("pixel_mean", [103.53, 116.28, 123.675]),  # BGR mean
         r"res2 differs from torchvision"),
    ],
    ids=["perturbed-weight", "missing-tensor", "wrong-pixel-mean"],
)
def test_verification_catches_broken_weights(resnet_state, save, tmp_path, edit, message):
    out, sd, _ = _convert(save, tmp_path, resnet_state("resnet18"))
    _rewrite(out, edit)
    with pytest.raises(VerificationError, match=message):
        verify_weights(out, sd, layouts=("backbone",), image_size=64)


def test_stride_in_1x1_matters_for_bottlenecks(resnet_state, save, tmp_path):
    out, sd, _ = _convert(save, tmp_path, resnet_state("resnet50"))
    _rewrite(out, lambda d: d["provenance"].__setitem__("stride_in_1x1", True))
    with pytest.raises(VerificationError, match=r"res3 differs"):
        verify_weights(out, sd, layouts=("backbone",), image_size=64)


def test_cli_verifies_before_writing(resnet_state, simsiam_factory, save, tmp_path, capsys, monkeypatch):
    src = save(simsiam_factory(resnet_state("resnet18"), siambench=True))
    out = tmp_path / "ok.pkl"
    assert main([str(src), str(out), "--verify", "--verify-size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "format   siambench" in printed and "module.predictor.* (3)" in printed
    assert "c4       OK" in printed and "fpn      OK" in printed and out.is_file()

    import convert.export

    real = convert.export.to_detectron2

    def broken(state_dict):  # a mapping bug: two BNs swapped
        model = real(state_dict)
        model["res2.0.conv1.norm.weight"], model["res2.0.conv2.norm.weight"] = (
            model["res2.0.conv2.norm.weight"], model["res2.0.conv1.norm.weight"])
        return model

    monkeypatch.setattr(convert.export, "to_detectron2", broken)
    bad = tmp_path / "bad.pkl"
    assert main([str(src), str(bad), "--verify", "--verify-size", "64"]) == 1
    assert "res2 differs from torchvision" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth", "ok.pkl"]  # nothing half-verified left
