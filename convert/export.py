"""Write a backbone as a Detectron2 ``.pkl``: plain types, numpy arrays, provenance.

The file is what Detectron2's model zoo ships (``{"model": {name: ndarray},
"__author__": ..., "matching_heuristics": True}``) plus a ``provenance`` dict, so
detectron2's ``DetectionCheckpointer`` and our restricted unpickler both read it.
With ``matching_heuristics`` detectron2 matches each checkpoint name as a suffix of
the model's names: ``res2.0.conv1.weight`` fills ``backbone.res2.0.conv1.weight``
(C4), ``backbone.bottom_up.res2...`` (FPN) and ``res5.*`` fills the C4 box head's
``roi_heads.res5.*``.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

import numpy as np
import torch

from siambench.pretrain.utils.env import siambench_version
from siambench.pretrain.utils.io import atomic_open

from .arch import INPUT_FORMAT, PIXEL_MEAN, PIXEL_STD, check_detectron2_buildable, spec_for
from .checkpoints import BackboneInfo, load_backbone_state_dict
from .errors import ConversionError
from .naming import to_detectron2_name
from .residual import last_bn_gammas

if TYPE_CHECKING:
    from .verify import VerifyReport

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "INPUT_FORMAT",
    "Provenance",
    "to_detectron2",
    "write_detectron2_pkl",
    "convert_checkpoint",
]

_PICKLE_PROTOCOL = 4  # readable by any Python 3 detectron2; numpy arrays go in-band


class Provenance(TypedDict):
    """Everything needed to trace a weights file back to its checkpoint and use it right."""

    source: str
    source_sha256: str
    source_format: str
    source_prefix: str
    arch: str
    width: int  # stem channels (MODEL.RESNETS.STEM_OUT_CHANNELS); 64 = torchvision's ResNet
    checkpoint_arch: str | None
    epoch: int | None
    num_tensors: int
    dropped_keys: list[str]  # source keys not converted (heads, key encoder, BN counters)
    pixel_mean: list[float]  # Detectron2 MODEL.PIXEL_MEAN the weights expect
    pixel_std: list[float]  # MODEL.PIXEL_STD
    input_format: str  # INPUT.FORMAT (channel order)
    stride_in_1x1: bool  # MODEL.RESNETS.STRIDE_IN_1X1 (torchvision: stride in the 3x3)
    # MODEL.RESNETS.{DEPTH, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS, NUM_GROUPS, WIDTH_PER_GROUP} of this backbone
    detectron2_resnets: dict[str, int]
    # mean |gamma| of each residual block's last BN: blocks, min, median, max (near 0: branches off, convert.residual)
    last_bn_gamma: dict[str, float | int] | None
    siambench_version: str


def to_detectron2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Rename torchvision ResNet tensors to Detectron2's and turn them into float32 numpy.

    Raises:
        ConversionError: a key is not a torchvision ResNet tensor.
    """
    out: dict[str, np.ndarray] = {}
    for name, tensor in state_dict.items():
        d2_name = to_detectron2_name(name)
        if d2_name is None:
            raise ConversionError(f"{name!r} is not a torchvision ResNet tensor; it has no Detectron2 name")
        # float32 copies: checkpoints may hold fp16/bf16 (numpy has no bfloat16).
        out[d2_name] = np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())
    return out


def provenance_from(info: BackboneInfo) -> Provenance:
    return {
        "source": info["source"],
        "source_sha256": info["sha256"],
        "source_format": info["format"],
        "source_prefix": info["prefix"],
        "arch": info["arch"],
        "width": info["width"],  # stem channels: Detectron2 MODEL.RESNETS.STEM_OUT_CHANNELS (64 = torchvision's)
        "checkpoint_arch": info["checkpoint_arch"],
        "epoch": info["epoch"],
        "num_tensors": info["num_tensors"],
        "dropped_keys": list(info["unused_keys"]),
        "pixel_mean": list(PIXEL_MEAN),
        "pixel_std": list(PIXEL_STD),
        "input_format": INPUT_FORMAT,
        "stride_in_1x1": False,
        # the MODEL.RESNETS keys of a Detectron2 config that builds this backbone (narrow ones differ from R50's)
        "detectron2_resnets": spec_for(info["arch"]).narrowed(info["width"]).detectron2_resnets(),
        "last_bn_gamma": None,  # filled from the converted tensors (convert_checkpoint)
        "siambench_version": siambench_version(),
    }


def write_detectron2_pkl(
    path: str | os.PathLike, model: Mapping[str, np.ndarray], provenance: Mapping[str, Any]
) -> Path:
    """Pickle ``model`` + ``provenance`` to ``path`` atomically (no partial file on failure)."""
    payload = {
        "model": dict(model),
        "__author__": "siambench",
        "matching_heuristics": True,
        "provenance": dict(provenance),
    }
    with atomic_open(path, "wb") as f:
        pickle.dump(payload, f, protocol=_PICKLE_PROTOCOL)
    return Path(path)


def convert_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str | None = None,
    prefix: str | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    verify: bool = False,
    verify_size: int = 224,
) -> tuple[Provenance, "VerifyReport | None"]:
    """Checkpoint ``src`` -> Detectron2 weights ``out``.

    With ``verify`` the weights are written to a temporary sibling, checked with
    :func:`siambench.convert.verify.verify_weights` and only then moved to ``out``, so ``out``
    never holds weights that failed verification.

    Returns:
        The provenance written into ``out`` and the verification report (None without ``verify``).

    Raises:
        ConversionError: see :func:`siambench.convert.checkpoints.load_backbone_state_dict`.
        VerificationError: ``verify`` found a difference; ``out`` is left untouched.
    """
    out = Path(out)
    if out.suffix != ".pkl":
        raise ConversionError(f"{out}: the output must end in .pkl (that is how Detectron2 recognises weights)")
    state_dict, info = load_backbone_state_dict(src, fmt=fmt, prefix=prefix, trust_pickle=trust_pickle, arch=arch)
    try:
        check_detectron2_buildable(spec_for(info["arch"]).narrowed(info["width"]))
    except ConversionError as e:
        raise ConversionError(f"{src}: {e}") from None
    provenance = provenance_from(info)
    model = to_detectron2(state_dict)
    provenance["last_bn_gamma"] = last_bn_gammas(model).summary()
    if not verify:
        write_detectron2_pkl(out, model, provenance)
        return provenance, None

    from .verify import verify_weights  # lazy: imports detectron2

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".unverified.pkl", dir=out.parent)
    os.close(fd)
    staged = Path(tmp)
    try:
        write_detectron2_pkl(staged, model, provenance)
        report = verify_weights(staged, state_dict, info["arch"], info["unused_keys"], image_size=verify_size,
                                width=info["width"])
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    report.weights = str(out)
    return provenance, report
