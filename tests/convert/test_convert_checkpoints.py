"""Loading backbones from every checkpoint layout, and every way a file can be wrong."""
from __future__ import annotations

import argparse
import hashlib
import os

import pytest
import torch

from siambench.convert.checkpoints import load_backbone_state_dict
from siambench.convert.errors import ConversionError, UnsafeCheckpointError


def _backbone_keys(tv: dict) -> set[str]:
    return {k for k in tv if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def _counters(tv: dict, prefix: str = "") -> set[str]:
    return {prefix + k for k in tv if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("siambench", [False, True])
def test_simsiam_checkpoint_drops_projector_and_predictor(resnet_state, simsiam_factory, save, siambench):
    tv = resnet_state("resnet18")
    ckpt = simsiam_factory(tv, siambench=siambench)
    path = save(ckpt)
    sd, info = load_backbone_state_dict(path)
    assert set(sd) == _backbone_keys(tv)
    for k in sd:
        assert torch.equal(sd[k], tv[k]), k
    heads = {k for k in ckpt["state_dict"] if ".fc." in k or k.startswith("module.predictor.")}
    assert set(info["unused_keys"]) == heads | _counters(tv, "module.encoder.")
    assert info["format"] == ("siambench" if siambench else "simsiam")
    assert (info["prefix"], info["arch"], info["checkpoint_arch"], info["epoch"]) == (
        "module.encoder.", "resnet18", "resnet18", 100)
    assert info["num_tensors"] == len(sd) == 100  # resnet18: 20 convs + 20 BNs x 4 tensors
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["source"] == str(path.resolve())


def test_moco_checkpoint_uses_query_encoder_only(resnet_state, moco_factory, save):
    tv = resnet_state("resnet18")
    ckpt = moco_factory(tv)
    sd, info = load_backbone_state_dict(save(ckpt))
    assert info["format"] == "moco" and info["prefix"] == "module.encoder_q."
    assert set(sd) == _backbone_keys(tv)
    expected_unused = {k for k in ckpt["state_dict"] if not k.startswith("module.encoder_q.")}
    expected_unused |= {k for k in ckpt["state_dict"] if k.startswith("module.encoder_q.fc.")}
    expected_unused |= _counters(tv, "module.encoder_q.")
    assert set(info["unused_keys"]) == expected_unused


def test_torchvision_state_dict_drops_classifier(resnet_state, save):
    tv = resnet_state("resnet18")
    sd, info = load_backbone_state_dict(save(tv))
    assert info["format"] == "torchvision" and info["prefix"] == ""
    assert info["epoch"] is None and info["checkpoint_arch"] is None
    assert set(info["unused_keys"]) == {"fc.weight", "fc.bias"} | _counters(tv)
    assert set(sd) == _backbone_keys(tv)


def test_plain_state_dict_under_model_with_ddp_prefix(resnet_state, save):
    tv = resnet_state("resnet18")
    body = {f"module.{k}": v for k, v in tv.items() if not k.startswith("fc.")}
    sd, info = load_backbone_state_dict(save({"model": body, "epoch": 3}))
    assert (info["format"], info["prefix"], info["epoch"]) == ("plain", "module.", 3)
    assert set(sd) == _backbone_keys(tv)


def test_custom_prefix_moco_v3_style(resnet_state, save):
    tv = resnet_state("resnet18")
    sd = {f"module.base_encoder.{k}": v for k, v in tv.items()}
    sd |= {f"module.momentum_encoder.{k}": v for k, v in tv.items()}
    sd |= {"module.predictor.0.weight": torch.randn(4, 4)}
    path = save({"epoch": 300, "arch": "resnet18", "state_dict": sd})
    with pytest.raises(ConversionError, match=r"--prefix 'module.base_encoder.'"):
        load_backbone_state_dict(path)
    out, info = load_backbone_state_dict(path, prefix="module.base_encoder.")
    assert info["format"] == "custom" and set(out) == _backbone_keys(tv)
    assert "module.base_encoder.fc.weight" in info["unused_keys"]


def test_wrong_forced_format_suggests_the_right_one(resnet_state, simsiam_factory, moco_factory, save):
    tv = resnet_state("resnet18")
    with pytest.raises(ConversionError, match=r"no key starts with 'module.encoder_q.'.*'module.encoder.\*'"
                       r".*use --format simsiam"):
        load_backbone_state_dict(save(simsiam_factory(tv), "s.pth"), fmt="moco")
    with pytest.raises(ConversionError, match=r"use --format moco"):
        load_backbone_state_dict(save(moco_factory(tv), "m.pth"), fmt="simsiam")


def test_missing_encoder_keys_name_the_stage(resnet_state, simsiam_factory, save):
    ckpt = simsiam_factory(resnet_state("resnet18"))
    del ckpt["state_dict"]["module.encoder.layer3.1.conv2.weight"]
    with pytest.raises(ConversionError, match=r"lacks 1 of 100 resnet18-w8 tensors \(in layer3"):
        load_backbone_state_dict(save(ckpt))


def test_a_missing_stage_is_an_error_not_a_partial_model(resnet_state, simsiam_factory, save):
    ckpt = simsiam_factory(resnet_state("resnet18"))
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if ".layer4." not in k}
    with pytest.raises(ConversionError, match=r"layer4"):
        load_backbone_state_dict(save(ckpt))


def test_wrong_architecture(resnet_state, simsiam_factory, save):
    path = save(simsiam_factory(resnet_state("resnet18")))
    with pytest.raises(ConversionError, match=r"--arch resnet50 was given but the weights are resnet18"):
        load_backbone_state_dict(path, arch="resnet50")
    with pytest.raises(ConversionError, match=r"unsupported architecture 'vit_b_16'"):
        load_backbone_state_dict(path, arch="vit_b_16")


def test_mislabelled_checkpoint_arch(resnet_state, simsiam_factory, save):
    ckpt = simsiam_factory(resnet_state("resnet18"), arch="resnet34")
    with pytest.raises(ConversionError, match=r"records arch 'resnet34' but its weights are resnet18"):
        load_backbone_state_dict(save(ckpt))


def test_zero_matched_keys(resnet_state, simsiam_factory, save):
    path = save(simsiam_factory(resnet_state("resnet18")))
    with pytest.raises(ConversionError, match=r"zero ResNet keys matched under prefix 'module.predictor.'"):
        load_backbone_state_dict(path, prefix="module.predictor.")


def test_shape_mismatch_is_refused(resnet_state, save):
    tv = resnet_state("resnet18")
    tv["layer2.0.conv1.weight"] = torch.zeros(16, 8, 1, 1)  # width 8: layer2 has 16 channels
    with pytest.raises(ConversionError, match=r"layer2.0.conv1.weight: \(16, 8, 1, 1\) vs \(16, 8, 3, 3\)"):
        load_backbone_state_dict(save(tv))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"the file is empty"),
        (b"hello, I am a text file\n", r"not a PyTorch checkpoint"),
        (b"PK\x03\x04 truncated zip", r"not a readable PyTorch checkpoint"),
    ],
)
def test_empty_or_non_checkpoint_files(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=message) as e:
        load_backbone_state_dict(path)
    assert str(path) in str(e.value)


def test_not_a_dict_and_no_state_dict(tmp_path, save):
    with pytest.raises(ConversionError, match=r"holds a Tensor"):
        load_backbone_state_dict(save(torch.zeros(3), "t.pth"))
    with pytest.raises(ConversionError, match=r"no state dict found.*'epoch'"):
        load_backbone_state_dict(save({"epoch": 3, "note": "x"}, "d.pth"))
    with pytest.raises(ConversionError, match=r"no such checkpoint file"):
        load_backbone_state_dict(tmp_path / "absent.pth")


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_reduce_payload_is_refused_and_never_runs(resnet_state, simsiam_factory, save, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = simsiam_factory(resnet_state("resnet18"))
    ckpt["extra"] = _Payload(str(marker))
    path = save(ckpt)
    with pytest.raises(UnsafeCheckpointError, match=r"refused.*posix.mkdir.*--trust-pickle"):
        load_backbone_state_dict(path)
    assert not marker.exists()


def test_trust_pickle_opts_in_to_non_tensor_objects(resnet_state, simsiam_factory, save):
    ckpt = simsiam_factory(resnet_state("resnet18"))
    ckpt["args"] = argparse.Namespace(lr=0.05)  # what many training scripts save; not weights_only-safe
    path = save(ckpt)
    with pytest.raises(UnsafeCheckpointError):
        load_backbone_state_dict(path)
    sd, info = load_backbone_state_dict(path, trust_pickle=True)
    assert info["format"] == "simsiam" and len(sd) == 100
