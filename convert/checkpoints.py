"""Read a pretrained checkpoint safely and pull out its ResNet backbone.

:func:`load_backbone_state_dict` is the one entry point: it accepts the checkpoint
formats below, detected from the keys or forced, and returns torchvision-named
backbone tensors -- the encoder only, never the SimSiam projector/predictor, the
MoCo key encoder/queue or a classifier -- plus where they came from.

=============  =========================  ==========================================
format         encoder prefix             dropped
=============  =========================  ==========================================
siambench      ``module.encoder.``        projector ``fc.*``, ``module.predictor.*``; our SimCLR,
                                          BYOL (``target_encoder.*``), SwAV (``prototypes``)
simsiam        ``module.encoder.``        (official SimSiam, same layout)
moco           ``module.encoder_q.``      MLP/fc head, ``module.encoder_k.*``, queue (also ours)
swav           ``module.``                ``projection_head.*``, ``prototypes.*`` (official SwAV)
torchvision    (none)                     ImageNet classifier ``fc.*``
plain          (none or ``module.``)      ``fc.*`` if present
custom         ``--prefix`` (MoCo v3 ``module.base_encoder.``, BYOL-style, ...)
=============  =========================  ==========================================

Files are read with ``torch.load(weights_only=True)``; one that needs arbitrary
unpickling is refused unless the caller passes ``trust_pickle=True``.
"""
from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence, TypedDict

import torch
from siambench.pretrain.utils.io import check_torch_file, load_weights_only, sha256_file

from .arch import RESNETS, TORCHVISION_WIDTH, ResNetSpec, infer_spec, spec_for
from .errors import ConversionError
from .naming import is_resnet_key

__all__ = [
    "FORMATS",
    "BackboneInfo",
    "load_backbone_state_dict",
    "read_checkpoint",
    "summarize_keys",
]

logger = logging.getLogger(__name__)

# format -> (encoder prefix, description). "plain" also accepts a DDP "module." prefix.
FORMATS: dict[str, tuple[str, str]] = {
    "siambench": ("module.encoder.", "siambench SimSiam checkpoint"),
    "simsiam": ("module.encoder.", "official SimSiam checkpoint"),
    "moco": ("module.encoder_q.", "MoCo v1/v2 checkpoint (query encoder)"),
    "swav": ("module.", "official SwAV checkpoint (ResNet at module.*, projection_head and prototypes dropped)"),
    "torchvision": ("", "torchvision ResNet state dict"),
    "plain": ("", "plain ResNet state dict"),
}
# Under the encoder prefix, "fc." is a head: SimSiam's projector, MoCo v2's MLP, a classifier.
_HEAD = "fc."
_UNSAFE_FIX = ("if you trust where the file came from, re-run with --trust-pickle; better, re-save just the "
               "state_dict with torch.save")


class BackboneInfo(TypedDict):
    """Where a backbone state dict came from (plain types: it goes into provenance)."""

    source: str  # absolute path of the checkpoint
    sha256: str  # of the checkpoint file
    format: str  # one of FORMATS, or "custom" (explicit prefix)
    prefix: str  # encoder prefix stripped from the keys
    arch: str  # torchvision name recognised from the tensors
    width: int  # stem channels recognised from conv1.weight (64 = torchvision's; less = MODEL.WIDTH narrow)
    checkpoint_arch: str | None  # the "arch" the checkpoint itself records, if any
    epoch: int | None  # pretraining epochs, when recorded
    num_tensors: int  # tensors returned
    unused_keys: list[str]  # every source key not returned (heads, key encoder, counters)


def read_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """``torch.load`` a checkpoint on CPU, refusing files that need arbitrary unpickling.

    Raises:
        ConversionError: missing, empty or not a PyTorch checkpoint.
        UnsafeCheckpointError: loading needs code execution and ``trust_pickle`` is False.
    """
    if not trust_pickle:
        return load_weights_only(path, error=ConversionError, unsafe_fix=_UNSAFE_FIX)
    check_torch_file(path, ConversionError)
    logger.warning("%s: loading with weights_only=False (--trust-pickle): the file may run code", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConversionError(f"{path}: cannot be loaded even with --trust-pickle: {e}") from e


def _find_state_dict(ckpt: Any, path: Path) -> tuple[Mapping[str, Any], bool]:
    """The tensor dict inside ``ckpt`` and whether it is the top level itself."""
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict or state dict")
    for container in ("state_dict", "model"):
        inner = ckpt.get(container)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner, False
    if any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, True
    raise ConversionError(
        f"{path}: no state dict found (top-level keys: {_sample(ckpt.keys())}); expected tensors at the "
        "top level or under 'state_dict' / 'model'"
    )


def _sample(keys: Any, n: int = 6) -> str:
    keys = list(keys)
    return ", ".join(map(repr, keys[:n])) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _shapes_of_keys(keys: Any) -> str:
    """'module.encoder.*' style summary of the most common two-level prefixes."""
    counts = Counter(".".join(k.split(".")[:2]) + (".*" if k.count(".") >= 2 else "") for k in keys)
    return ", ".join(repr(p) for p, _ in counts.most_common(3))


def _resnet_prefixes(keys: Any) -> list[str]:
    """Prefixes under which a ResNet sits, found from its first block's conv."""
    anchor = "layer1.0.conv1.weight"
    return sorted(k[: -len(anchor)] for k in keys if k.endswith(anchor) and k[: -len(anchor)][-1:] in ("", "."))


def _detect(ckpt: Mapping[str, Any], sd: Mapping[str, Any], top_level: bool) -> tuple[str, str]:
    """(format, prefix) recognised from the keys; raises naming the likely prefix."""
    keys = list(sd)
    if any(k.startswith("module.encoder_q.") for k in keys):
        return "moco", FORMATS["moco"][0]
    if any(k.startswith("module.prototypes.") for k in keys) and "module.layer1.0.conv1.weight" in sd:
        return "swav", FORMATS["swav"][0]
    if any(k.startswith("module.encoder.") for k in keys):
        return ("siambench" if "siambench_version" in ckpt else "simsiam"), "module.encoder."
    if "layer1.0.conv1.weight" in sd:
        return ("torchvision" if top_level and "fc.weight" in sd else "plain"), ""
    if "module.layer1.0.conv1.weight" in sd:
        return "plain", "module."
    candidates = _resnet_prefixes(keys)
    hint = f"use --prefix {candidates[0]!r}" if candidates else "pass the encoder's key prefix with --prefix"
    raise ConversionError(f"unrecognised checkpoint layout: keys look like {_shapes_of_keys(keys)}; {hint}")


def _choose_prefix(
    fmt: str | None, prefix: str | None, ckpt: Mapping[str, Any], sd: Mapping[str, Any], top_level: bool
) -> tuple[str, str]:
    if fmt in (None, "auto"):
        return ("custom", prefix) if prefix is not None else _detect(ckpt, sd, top_level)
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
    if prefix is not None:
        return fmt, prefix
    if fmt == "plain" and "layer1.0.conv1.weight" not in sd and "module.layer1.0.conv1.weight" in sd:
        return fmt, "module."
    return fmt, FORMATS[fmt][0]


def _suggest(ckpt: Mapping[str, Any], sd: Mapping[str, Any], top_level: bool) -> str:
    try:
        fmt, prefix = _detect(ckpt, sd, top_level)
    except ConversionError:
        candidates = _resnet_prefixes(sd)
        return f"use --prefix {candidates[0]!r}" if candidates else "check that this is a ResNet checkpoint"
    return f"use --format {fmt}" + (f" (prefix {prefix!r})" if prefix else "")


def summarize_keys(keys: Sequence[str], prefix: str = "") -> str:
    """'module.encoder.fc.* (6), module.predictor.* (5), *.num_batches_tracked (53)'."""
    groups: Counter[str] = Counter()
    for key in keys:
        if key.endswith("num_batches_tracked"):
            groups["*.num_batches_tracked"] += 1
            continue
        if prefix and key.startswith(prefix):
            head, rest = prefix, key[len(prefix):]
        elif key.startswith("module."):
            head, rest = "module.", key[len("module."):]
        else:
            head, rest = "", key
        first = rest.split(".", 1)[0]
        groups[head + first + (".*" if "." in rest else "")] += 1
    return ", ".join(f"{g} ({n})" for g, n in groups.items()) or "none"


@functools.lru_cache(maxsize=None)
def expected_shapes(arch: str, width: int = TORCHVISION_WIDTH) -> dict[str, tuple[int, ...]]:
    """torchvision names and shapes of ``arch``'s backbone tensors (no fc, no counters) at ``width``."""
    from siambench.pretrain.methods.encoders import build_encoder

    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_encoder(arch, width=width)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if is_resnet_key(k)}


def _resolve_spec(
    backbone: Mapping[str, torch.Tensor], arch: str | None, checkpoint_arch: str | None, where: str
) -> ResNetSpec:
    """The architecture, cross-checked between the tensors, ``--arch`` and the checkpoint."""
    try:
        inferred: ResNetSpec | None = infer_spec(backbone)
        reason = ""
    except ConversionError as e:
        inferred, reason = None, str(e)
    if arch is not None:
        try:
            spec = spec_for(arch)
        except ConversionError as e:
            raise ConversionError(f"{where}: {e}") from None
        if inferred is not None and inferred.arch != spec.arch:
            raise ConversionError(
                f"{where}: wrong architecture: --arch {arch} was given but the weights are "
                f"{inferred.name}; drop --arch or pass a {arch} checkpoint"
            )
        return inferred or spec
    if inferred is not None:
        if checkpoint_arch in RESNETS and checkpoint_arch != inferred.arch:
            raise ConversionError(
                f"{where}: the checkpoint records arch {checkpoint_arch!r} but its weights are "
                f"{inferred.name}; the file is mislabelled or corrupt"
            )
        return inferred
    if checkpoint_arch in RESNETS:
        return spec_for(checkpoint_arch)  # the completeness check below names what is missing
    raise ConversionError(f"{where}: {reason}; check --format/--prefix, or pass --arch")


def load_backbone_state_dict(
    path: str | os.PathLike,
    fmt: str | None = None,
    prefix: str | None = None,
    trust_pickle: bool = False,
    arch: str | None = None,
) -> tuple[dict[str, torch.Tensor], BackboneInfo]:
    """Load the ResNet encoder of a pretrained checkpoint with torchvision names.

    Args:
        path: checkpoint file (``torch.save`` output).
        fmt: one of :data:`FORMATS`, or None/"auto" to detect it from the keys.
        prefix: encoder key prefix, overriding the format's (e.g. ``module.base_encoder.``).
        trust_pickle: allow ``torch.load(weights_only=False)``; only for trusted files.
        arch: expected torchvision architecture; by default recognised from the tensors.

    Returns:
        ``(state_dict, info)``: the backbone tensors named as in ``torchvision.models.resnet*``
        (``conv1.weight`` ... ``layer4.*``; no ``fc.*``, no ``num_batches_tracked``), complete
        for ``info["arch"]``, in torchvision's order; and their provenance.

    Raises:
        ConversionError: unreadable file, no key under the prefix, a missing or misshapen
            backbone tensor, or an architecture mismatch; the message names the fix.
        UnsafeCheckpointError: the file needs arbitrary unpickling and ``trust_pickle`` is False.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, trust_pickle=trust_pickle)
    sd, top_level = _find_state_dict(ckpt, path)
    meta = ckpt if not top_level else {}  # a bare state dict records no format, arch or epoch
    fmt, prefix, backbone = _encoder_tensors(path, meta, sd, top_level, fmt, prefix)
    checkpoint_arch = meta.get("arch") if isinstance(meta.get("arch"), str) else None
    spec = _resolve_spec(backbone, arch, checkpoint_arch, str(path))
    state_dict = _complete_backbone(path, backbone, spec, prefix)
    used = {prefix + k for k in state_dict}
    epoch = meta.get("epoch")
    info: BackboneInfo = {
        "source": str(path.resolve()),
        "sha256": sha256_file(path),
        "format": fmt,
        "prefix": prefix,
        "arch": spec.arch,
        "width": spec.width,
        "checkpoint_arch": checkpoint_arch,
        "epoch": int(epoch) if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        "num_tensors": len(state_dict),
        "unused_keys": sorted(k for k in sd if k not in used),
    }
    return state_dict, info


def _encoder_tensors(path: Path, meta: Mapping[str, Any], sd: Mapping[str, Any], top_level: bool,
                     fmt: str | None, prefix: str | None) -> tuple[str, str, dict[str, torch.Tensor]]:
    """(format, prefix, ResNet tensors under the prefix without it and without the head)."""
    try:
        fmt, prefix = _choose_prefix(fmt, prefix, meta, sd, top_level)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None
    under = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if not under:
        raise ConversionError(
            f"{path}: no key starts with {prefix!r}; keys look like {_shapes_of_keys(sd)} -- "
            f"{_suggest(meta, sd, top_level)}"
        )
    backbone = {k: v for k, v in under.items() if not k.startswith(_HEAD) and is_resnet_key(k)}
    if not backbone:
        raise ConversionError(
            f"{path}: zero ResNet keys matched under prefix {prefix!r} (found e.g. {_sample(under)}); "
            f"{_suggest(meta, sd, top_level)}"
        )
    return fmt, prefix, backbone


def _complete_backbone(path: Path, backbone: Mapping[str, torch.Tensor], spec: ResNetSpec,
                       prefix: str) -> dict[str, torch.Tensor]:
    """``backbone`` in torchvision's order, checked to hold exactly ``spec``'s tensors and shapes."""
    expected = expected_shapes(spec.arch, spec.width)
    missing = [k for k in expected if k not in backbone]
    if missing:
        stages = sorted({k.split(".")[0] for k in missing})
        raise ConversionError(
            f"{path}: the encoder under prefix {prefix!r} lacks {len(missing)} of {len(expected)} "
            f"{spec.name} tensors (in {', '.join(stages)}; e.g. {_sample(missing, 3)}); the file is "
            "truncated or holds another network -- check --format/--prefix/--arch"
        )
    extra = [k for k in backbone if k not in expected]
    if extra:
        raise ConversionError(f"{path}: tensors {_sample(extra, 3)} do not exist in {spec.name}; check --arch")
    wrong = [f"{k}: {tuple(v.shape)} vs {expected[k]}" for k, v in backbone.items() if tuple(v.shape) != expected[k]]
    if wrong:
        raise ConversionError(f"{path}: shapes differ from {spec.name} ({_sample(wrong, 3)}); check --arch")
    return {k: backbone[k].detach() for k in expected}
