"""Model construction: ``build_model(cfg)`` builds the ``MODEL.METHOD`` network.

The methods live in ``pretrain/methods/`` (one file each); SimSiam and the ResNet
encoder helpers are re-exported here for the code that imported them from this module.
"""
from __future__ import annotations

from .methods import Method, build_method
from .methods.encoders import RESNET_ARCHS, build_encoder, feature_dim
from .methods.simsiam import SimSiam

__all__ = ["RESNET_ARCHS", "build_encoder", "feature_dim", "SimSiam", "build_model"]


def build_model(cfg) -> Method:
    """The pretraining model of ``cfg.MODEL.METHOD`` (default SimSiam)."""
    return build_method(cfg)
