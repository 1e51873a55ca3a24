"""The written .pkl: names, dtypes, provenance, and atomicity."""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch

import siambench.convert.export
from siambench.convert.errors import ConversionError
from siambench.convert.export import PIXEL_MEAN, PIXEL_STD, convert_checkpoint
from siambench.convert.naming import to_detectron2_name
from siambench.convert.safe_pickle import load_weights_pkl


@pytest.mark.parametrize(
    "tv, d2",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer1.0.conv3.weight", "res2.0.conv3.weight"),
        ("layer3.22.bn2.bias", "res4.22.conv2.norm.bias"),
        ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
        ("layer4.0.downsample.1.running_mean", "res5.0.shortcut.norm.running_mean"),
        ("fc.weight", None),
        ("bn1.num_batches_tracked", None),
        ("layer5.0.conv1.weight", None),
        ("layer1.0.conv4.weight", None),
        ("encoder.conv1.weight", None),
    ],
)
def test_name_mapping(tv, d2):
    assert to_detectron2_name(tv) == d2


def test_pkl_holds_detectron2_names_float32_and_provenance(resnet_state, simsiam_factory, save, tmp_path):
    tv = resnet_state("resnet50")
    src = save(simsiam_factory(tv, siambench=True, arch="resnet50"))
    out = tmp_path / "w" / "simsiam_r50w8.pkl"
    prov, report = convert_checkpoint(src, out)
    assert report is None
    data = load_weights_pkl(out)
    assert pickle.loads(out.read_bytes()).keys() == data.keys()  # detectron2's plain pickle path agrees
    assert data["__author__"] == "siambench" and data["matching_heuristics"] is True
    expected = {to_detectron2_name(k): v for k, v in tv.items() if to_detectron2_name(k)}
    assert set(data["model"]) == set(expected) and len(expected) == 265  # resnet50: 53 convs + 53 BNs x 4
    for name, value in data["model"].items():
        assert type(value) is np.ndarray and value.dtype == np.float32
        np.testing.assert_array_equal(value, expected[name].numpy())
    p = data["provenance"]
    assert p == prov
    assert p["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (p["source_format"], p["arch"], p["width"], p["epoch"], p["input_format"]) == (
        "siambench", "resnet50", 8, 100, "RGB")
    assert p["detectron2_resnets"] == {"DEPTH": 50, "STEM_OUT_CHANNELS": 8, "RES2_OUT_CHANNELS": 32, "NUM_GROUPS": 1,
                                       "WIDTH_PER_GROUP": 8}
    assert p["pixel_mean"] == list(PIXEL_MEAN) and p["pixel_std"] == list(PIXEL_STD)
    assert p["stride_in_1x1"] is False and p["siambench_version"]
    assert "module.predictor.0.weight" in p["dropped_keys"] and p["num_tensors"] == 265


def test_half_precision_checkpoint_becomes_float32(resnet_state, save, tmp_path):
    tv = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in resnet_state("resnet50").items()}
    convert_checkpoint(save(tv), tmp_path / "w.pkl")
    model = load_weights_pkl(tmp_path / "w.pkl")["model"]
    assert {v.dtype for v in model.values()} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(model["res2.0.conv1.weight"], tv["layer1.0.conv1.weight"].float().numpy())


def test_interrupted_write_leaves_no_partial_output(resnet_state, save, tmp_path, monkeypatch):
    src = save(resnet_state("resnet50"))
    out = tmp_path / "out.pkl"
    out.write_bytes(b"previous good weights")

    def dump_then_crash(obj, f, protocol=None):
        f.write(b"\x80\x04 half of a pickle")
        raise KeyboardInterrupt  # e.g. Ctrl-C or a kill mid-write

    monkeypatch.setattr(siambench.convert.export.pickle, "dump", dump_then_crash)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(src, out)
    assert out.read_bytes() == b"previous good weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth", "out.pkl"]  # no temp file left
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(src, tmp_path / "fresh.pkl")
    assert not (tmp_path / "fresh.pkl").exists()


def test_output_must_be_pkl(resnet_state, save, tmp_path):
    with pytest.raises(ConversionError, match=r"must end in .pkl"):
        convert_checkpoint(save(resnet_state("resnet50")), tmp_path / "w.pth")
