"""Weights whose ResNet does not load are refused before anything is created; a siambench .pkl brings its
own MODEL.RESNETS (provenance); results.json records how many backbone tensors loaded."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from siambench.convert.export import convert_checkpoint
from siambench.pretrain.methods.encoders import build_encoder
from siambench.transfer.backbone_check import BackboneNotLoaded, prepare_backbone
from siambench.transfer.main import build_parser, main, make_plan
from siambench.transfer.trials import trial_record

WIDTH = 8
RESNET_TENSORS = 265  # stem + res2-res5 of a ResNet-50 with their BN statistics (no counters)


def _pkl(tmp_path: Path, name: str, last_gamma: float | None = None, provenance: bool = True) -> Path:
    torch.manual_seed(0)
    state = build_encoder("resnet50", width=WIDTH).state_dict()
    if last_gamma is not None:
        state = {k: torch.full_like(v, last_gamma) if k.endswith("bn3.weight") else v for k, v in state.items()}
    torch.save({"state_dict": {f"module.encoder.{k}": v for k, v in state.items()}, "arch": "resnet50"},
               tmp_path / f"{name}.pth")
    convert_checkpoint(tmp_path / f"{name}.pth", tmp_path / f"{name}.pkl")
    if not provenance:  # a .pkl of another tool: no MODEL.RESNETS to take from it
        with open(tmp_path / f"{name}.pkl", "rb") as f:
            data = pickle.load(f)
        del data["provenance"]
        with open(tmp_path / f"{name}.pkl", "wb") as f:
            pickle.dump(data, f)
    return tmp_path / f"{name}.pkl"


def _plan(argv: list[str]):
    args = build_parser().parse_args(argv)
    return make_plan(args, cuda_available=False), args.opts


def test_a_narrow_pkl_brings_its_resnets_and_every_tensor_loads(tmp_path: Path) -> None:
    weights = _pkl(tmp_path, "r50_width8")
    plan, opts = _plan(["--task", "synth_voc07", "--weights", str(weights), "OUTPUT_DIR", str(tmp_path / "o")])
    assert plan.cfg.MODEL.RESNETS.STEM_OUT_CHANNELS == 64  # the task's own ResNet-18 ...
    plan, warnings = prepare_backbone(plan, opts)
    r = plan.cfg.MODEL.RESNETS
    assert (r.DEPTH, r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.WIDTH_PER_GROUP) == (50, 8, 32, 8)  # ... the .pkl's
    assert warnings == [] and any("from the provenance of" in n and "STEM_OUT_CHANNELS 8" in n
                                  for n in plan.runtime_notes)
    record = trial_record(plan, 0, "running")
    assert (record["backbone_loaded"], record["backbone_total"]) == (RESNET_TENSORS, RESNET_TENSORS)
    assert record["resnets_from_weights"]["MODEL.RESNETS.STEM_OUT_CHANNELS"] == 8


def test_weights_that_do_not_load_are_refused_in_one_line(tmp_path: Path, synth_root: Path, capsys) -> None:
    weights, out = _pkl(tmp_path, "r50_width8"), tmp_path / "out"
    argv = ["--task", "synth_voc07", "--weights", str(weights), "OUTPUT_DIR", str(out),
            "MODEL.RESNETS.STEM_OUT_CHANNELS", "64"]  # contradicts the .pkl's backbone
    assert main(argv) == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"7 of {RESNET_TENSORS} ResNet tensors of the synth_voc07 model do not load" in err
    assert "stem.conv1.weight (8, 3, 7, 7) vs (64, 3, 7, 7)" in err
    assert "drop the override(s) MODEL.RESNETS.STEM_OUT_CHANNELS 64" in err
    assert main(["--dry-run", *argv]) == 0  # the dry run warns
    assert "warning: --weights" in capsys.readouterr().err


def test_a_pkl_without_provenance_needs_the_resnets_keys(tmp_path: Path, synth_root: Path, capsys) -> None:
    weights, out = _pkl(tmp_path, "foreign", provenance=False), tmp_path / "out"
    assert main(["--task", "synth_voc07", "--weights", str(weights), "OUTPUT_DIR", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists() and "do not load" in err and "pass the MODEL.RESNETS keys" in err
    plan, opts = _plan(["--task", "synth_voc07", "--weights", str(weights), "MODEL.RESNETS.DEPTH", "50",
                        "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
                        "MODEL.RESNETS.WIDTH_PER_GROUP", "8"])
    assert prepare_backbone(plan, opts)[0].backbone["loaded"] == RESNET_TENSORS
    with pytest.raises(BackboneNotLoaded):
        prepare_backbone(*_plan(["--task", "synth_voc07", "--weights", str(weights)]))


def test_transfer_warns_when_the_residual_branches_are_off(tmp_path: Path) -> None:
    weights = _pkl(tmp_path, "zero_init", last_gamma=0.01)
    plan, warnings = prepare_backbone(*_plan(["--task", "synth_voc07", "--weights", str(weights)]))
    assert len(warnings) == 1 and "residual branches are off" in warnings[0] and "3.8 AP50" in warnings[0]
    assert warnings[0] in plan.runtime_notes  # in the log and results.json
