"""Checkpoint layouts of the compared methods: official SwAV, and our own MoCo v2 / BYOL / SwAV."""
from __future__ import annotations

import torch

from siambench.convert.checkpoints import load_backbone_state_dict


def _swav_official(tv: dict[str, torch.Tensor], top_level: bool) -> dict:
    """facebookresearch/swav main_swav.py: DDP ResNet at module.*, projection_head, prototypes."""
    sd = {f"module.{k}": v for k, v in tv.items() if not k.startswith("fc.")}
    sd |= {"module.projection_head.0.weight": torch.randn(32, 512), "module.projection_head.0.bias": torch.zeros(32),
           "module.projection_head.1.weight": torch.ones(32), "module.projection_head.3.weight": torch.randn(8, 32),
           "module.prototypes.weight": torch.randn(10, 8)}
    return sd if top_level else {"epoch": 200, "state_dict": sd, "optimizer": {}}


def test_official_swav_layout_is_detected_and_heads_dropped(resnet_state, save):
    tv = resnet_state("resnet18")
    for top_level in (False, True):  # training checkpoint, or the released state dict
        ckpt = _swav_official(tv, top_level)
        sd, info = load_backbone_state_dict(save(ckpt, f"swav{top_level}.pth"))
        assert info["format"] == "swav" and info["prefix"] == "module." and info["arch"] == "resnet18"
        assert set(sd) == {k for k in tv if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
        torch.testing.assert_close(sd["layer4.1.bn2.running_var"], tv["layer4.1.bn2.running_var"])
        unused = set(info["unused_keys"])
        assert {"module.prototypes.weight", "module.projection_head.3.weight"} <= unused
        assert not any(k.startswith("module.layer") and not k.endswith("num_batches_tracked") for k in unused)


def test_our_method_layouts_take_the_online_encoder(resnet_state, save):
    tv = resnet_state("resnet18")
    enc = {k: v for k, v in tv.items() if not k.startswith("fc.")}
    other = {k: v + 1 for k, v in enc.items() if v.is_floating_point()}  # a different (target/key) encoder
    layouts = {
        "moco": ({f"module.encoder_q.{k}": v for k, v in enc.items()} | {f"module.encoder_k.{k}": v for k, v in other.items()}
                 | {"module.queue": torch.randn(8, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}),
        "byol": ({f"module.encoder.{k}": v for k, v in enc.items()} | {f"module.target_encoder.{k}": v for k, v in other.items()}
                 | {"module.predictor.0.weight": torch.randn(4, 4)}),
        "swav": {f"module.encoder.{k}": v for k, v in enc.items()} | {"module.prototypes.weight": torch.randn(10, 8)},
    }
    for name, sd in layouts.items():
        ckpt = {"state_dict": sd, "epoch": 2, "arch": "resnet18", "optimizer": {}, "siambench_version": "0"}
        got, info = load_backbone_state_dict(save(ckpt, f"{name}.pth"))
        assert info["format"] == ("moco" if name == "moco" else "siambench"), name
        assert all(torch.equal(got[k], tv[k]) for k in got), name  # the online/query encoder, never the other
