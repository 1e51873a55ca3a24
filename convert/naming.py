"""torchvision ResNet names -> Detectron2 ResNet names.

Detectron2 (``detectron2/modeling/backbone/resnet.py``) names a ResNet after the
Caffe2 convention: ``stem``, stages ``res2``..``res5``, and each conv owns its norm
(``Conv2d(norm=...)``), so a BatchNorm lives *inside* the conv it follows::

    conv1.weight                    -> stem.conv1.weight
    bn1.running_mean                -> stem.conv1.norm.running_mean
    layer3.4.conv2.weight           -> res4.4.conv2.weight
    layer3.4.bn2.weight             -> res4.4.conv2.norm.weight
    layer2.0.downsample.0.weight    -> res3.0.shortcut.weight
    layer2.0.downsample.1.bias      -> res3.0.shortcut.norm.bias

The mapping is a bijection on ResNet tensors; anything else (classifier ``fc``,
BatchNorm's ``num_batches_tracked`` counter, heads) has no Detectron2 name.
"""
from __future__ import annotations

import re

__all__ = ["to_detectron2_name", "is_resnet_key", "BN_TENSORS"]

# BatchNorm tensors that carry weights or statistics (the step counter does not).
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")

_BN = "|".join(BN_TENSORS)
_STEM_CONV = re.compile(r"^conv1\.weight$")
_STEM_BN = re.compile(rf"^bn1\.({_BN})$")
_CONV = re.compile(r"^layer([1-4])\.(\d+)\.conv([1-3])\.weight$")
_BLOCK_BN = re.compile(rf"^layer([1-4])\.(\d+)\.bn([1-3])\.({_BN})$")
_SHORTCUT_CONV = re.compile(r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$")
_SHORTCUT_BN = re.compile(rf"^layer([1-4])\.(\d+)\.downsample\.1\.({_BN})$")


def _stage(layer: str) -> str:
    return f"res{int(layer) + 1}"  # torchvision layer1 is Detectron2's res2


def to_detectron2_name(name: str) -> str | None:
    """The Detectron2 name of a torchvision ResNet tensor, or None if it has none."""
    if _STEM_CONV.match(name):
        return "stem.conv1.weight"
    if m := _STEM_BN.match(name):
        return f"stem.conv1.norm.{m.group(1)}"
    if m := _CONV.match(name):
        return f"{_stage(m.group(1))}.{m.group(2)}.conv{m.group(3)}.weight"
    if m := _BLOCK_BN.match(name):
        return f"{_stage(m.group(1))}.{m.group(2)}.conv{m.group(3)}.norm.{m.group(4)}"
    if m := _SHORTCUT_CONV.match(name):
        return f"{_stage(m.group(1))}.{m.group(2)}.shortcut.weight"
    if m := _SHORTCUT_BN.match(name):
        return f"{_stage(m.group(1))}.{m.group(2)}.shortcut.norm.{m.group(3)}"
    return None


def is_resnet_key(name: str) -> bool:
    """Whether ``name`` is a torchvision ResNet backbone tensor (weights or BN statistics)."""
    return to_detectron2_name(name) is not None
