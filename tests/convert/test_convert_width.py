"""Narrow ResNets (MODEL.WIDTH) in convert: the width is read from the tensors, a narrow
bottleneck ResNet becomes a Detectron2 backbone that verifies, a narrow BasicBlock one is refused."""
from __future__ import annotations

import pickle

import pytest
import torch

from siambench.convert.arch import infer_spec, spec_for
from siambench.convert.checkpoints import load_backbone_state_dict
from siambench.convert.cli import main
from siambench.convert.errors import ConversionError
from siambench.convert.export import convert_checkpoint
from siambench.pretrain.classification import build_backbone, load_backbone


@pytest.mark.parametrize("arch,width,wpg", [("resnet18", 8, 8), ("resnet50", 16, 16), ("resnet50", 64, 64),
                                            ("resnext50_32x4d", 16, 1), ("wide_resnet50_2", 8, 16)])
def test_width_is_recognised_from_the_tensors(resnet_state, arch, width, wpg):
    spec = infer_spec(resnet_state(arch, width=width))
    assert (spec.arch, spec.width, spec.width_per_group) == (arch, width, wpg)
    assert spec == spec_for(arch).narrowed(width)
    assert spec.name == (arch if width == 64 else f"{arch}-w{width}")


def test_detectron2_settings_of_a_narrow_bottleneck_resnet():
    assert spec_for("resnet50").narrowed(16).detectron2_resnets() == {
        "DEPTH": 50, "STEM_OUT_CHANNELS": 16, "RES2_OUT_CHANNELS": 64, "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 16}
    assert spec_for("resnet50").detectron2_resnets() == {  # Detectron2's own R50 defaults
        "DEPTH": 50, "STEM_OUT_CHANNELS": 64, "RES2_OUT_CHANNELS": 256, "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64}


def test_narrow_resnet50_converts_and_verifies_in_every_layout(resnet_state, simsiam_factory, tmp_path, capsys):
    src = tmp_path / "ckpt.pth"
    torch.save(simsiam_factory(resnet_state("resnet50", width=8), siambench=True, arch="resnet50"), src)
    out = tmp_path / "r50w8.pkl"
    assert main([str(src), str(out), "--verify", "--verify-size", "64"]) == 0
    text = capsys.readouterr().out
    assert "arch     resnet50, width 8, epoch 100" in text
    assert "STEM_OUT_CHANNELS 8, RES2_OUT_CHANNELS 32, NUM_GROUPS 1, WIDTH_PER_GROUP 8" in text
    assert "(resnet50-w8, tolerance" in text
    for layout in ("backbone", "c4", "fpn"):
        assert any(line.split()[:2] == [layout, "OK"] for line in text.splitlines()), text
    with open(out, "rb") as f:
        payload = pickle.load(f)
    assert payload["provenance"]["width"] == 8
    assert payload["provenance"]["detectron2_resnets"]["STEM_OUT_CHANNELS"] == 8
    assert payload["model"]["stem.conv1.weight"].shape == (8, 3, 7, 7)
    assert payload["model"]["res5.2.conv3.weight"].shape == (256, 64, 1, 1)


def test_narrow_basicblock_resnet_is_refused_in_one_line(resnet_state, simsiam_factory, tmp_path):
    src = tmp_path / "ckpt.pth"
    torch.save(simsiam_factory(resnet_state("resnet18", width=8), siambench=True), src)
    with pytest.raises(ConversionError) as e:
        convert_checkpoint(src, tmp_path / "r18w8.pkl")
    msg = str(e.value)
    assert "\n" not in msg and str(src) in msg
    assert "resnet18-w8 is a narrow BasicBlock ResNet" in msg and "MODEL.WIDTH 64" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]  # nothing written
    state, info = load_backbone_state_dict(src)  # lincls/knn still read it
    assert (info["arch"], info["width"]) == ("resnet18", 8) and state["conv1.weight"].shape == (8, 3, 7, 7)


def test_lincls_checks_the_width_against_the_checkpoint(resnet_state, simsiam_factory, tmp_path):
    src = tmp_path / "ckpt.pth"
    tv = resnet_state("resnet18", width=8)
    torch.save(simsiam_factory(tv, siambench=True), src)
    model = build_backbone("resnet18", num_classes=3, width=8)
    info = load_backbone(model, str(src), "resnet18", width=8)
    assert info["width"] == 8 and torch.equal(model.conv1.weight, tv["conv1.weight"])
    with pytest.raises(ValueError, match="holds a resnet18 of width 8 but MODEL.WIDTH is 64; set MODEL.WIDTH 8"):
        load_backbone(build_backbone("resnet18"), str(src), "resnet18")
    with pytest.raises(ConversionError, match="--arch resnet50 was given but the weights are resnet18-w8"):
        load_backbone_state_dict(src, arch="resnet50")
