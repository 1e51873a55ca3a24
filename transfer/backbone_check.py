"""Weights that do not load are refused: the backbone of a transfer must come from ``--weights``.

detectron2 loads what matches and only logs the rest ("No weights in checkpoint matched
with model", one "will not be loaded" line per tensor), so a narrow checkpoint fine-tuned
with the task's default ``MODEL.RESNETS`` trains from random init under the ``.pkl``'s name.
:func:`prepare_backbone` runs before anything is created:

* a ``.pkl`` written by ``siambench convert`` records the ``MODEL.RESNETS`` keys of the
  backbone it holds (provenance ``detectron2_resnets``); the ones the command line does not
  set are applied to the config (a note in the plan, the log and ``results.json``);
* the model of the resolved config is built on CPU and the weights are loaded into it with
  the checkpointer training uses; every ResNet tensor (stem, res2-res5, wherever the model
  keeps them: ``backbone.*``, ``backbone.bottom_up.*``, the C4 box head's ``roi_heads.res5.*``)
  must load, else one line names the missing / mismatched tensors and the fix
  (``--dry-run``: a warning);
* an encoder whose residual branches are off (every block's last-BN gamma near 0) is
  warned about (:mod:`siambench.convert.residual`).

The counts go into ``results.json`` (``backbone_loaded``, ``backbone_total``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Iterator, Mapping, Sequence

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.config import CfgNode
from detectron2.modeling import build_model
from siambench.convert.residual import residual_warning
from siambench.pretrain.utils.errors import UserError

from . import roi_heads  # noqa: F401  (registers the ROI heads our configs name)
from .checkpoint import SafeDetectionCheckpointer
from .config import overrides
from .trials import SCRATCH, TrialPlan

__all__ = ["BackboneNotLoaded", "prepare_backbone", "provenance_resnets", "backbone_load"]

logger = logging.getLogger("siambench.transfer")

_RESNET_PARTS = {"stem", "res2", "res3", "res4", "res5"}
_QUIET = ("fvcore.common.checkpoint", "detectron2.checkpoint.c2_model_loading",
          "detectron2.checkpoint.detection_checkpoint", "d2.checkpoint.c2_model_loading")


class BackboneNotLoaded(UserError, ValueError):
    """``--weights`` does not fill the model's ResNet (another depth or width, another layout)."""


def provenance_resnets(data: Mapping[str, Any]) -> dict[str, Any]:
    """``MODEL.RESNETS.*`` of the backbone a ``siambench convert`` ``.pkl`` holds ({} for other files)."""
    prov = data.get("provenance")
    resnets = prov.get("detectron2_resnets") if isinstance(prov, dict) else None
    return {f"MODEL.RESNETS.{k}": v for k, v in resnets.items()} if isinstance(resnets, dict) else {}


def _resnet_tail(key: str) -> str | None:
    """``backbone.bottom_up.res2.0.conv1.weight`` -> ``res2.0.conv1.weight``; None for other tensors
    (FPN, RPN, box head, the extra norm after the C4 box head's res5, BN counters)."""
    parts = key.split(".")
    i = next((i for i, p in enumerate(parts) if p in _RESNET_PARTS), None)
    if i is None or key.endswith("num_batches_tracked"):
        return None
    if parts[i] != "stem" and not (i + 1 < len(parts) and parts[i + 1].isdigit()):
        return None  # e.g. the C4 box head's extra norm after res5 (roi_heads.res5.norm): not pretrained
    return ".".join(parts[i:])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The check loads once more than training does: keep detectron2's per-tensor lines out of the console."""
    loggers = [logging.getLogger(n) for n in _QUIET]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclasses.dataclass
class BackboneLoad:
    loaded: int
    total: int
    missing: list[str]  # ResNet tensors of the model the weights do not fill ("res2.0.conv1.weight")
    mismatched: list[str]  # of those, the ones the weights hold in another shape ("name (8, 8) vs (64, 64)")


def backbone_load(cfg: CfgNode, data: dict[str, Any]) -> BackboneLoad:
    """Load ``data`` (as the checkpointer read it) into a CPU model of ``cfg``; count the ResNet tensors filled."""
    cpu = cfg.clone()
    cpu.defrost()
    cpu.MODEL.DEVICE = "cpu"
    model = build_model(cpu)
    resnet = {k: t for k in model.state_dict() if (t := _resnet_tail(k)) is not None}
    given = {_resnet_tail(k) or k: getattr(v, "shape", None) for k, v in data.get("model", {}).items()}
    with _quiet():
        incompatible = SafeDetectionCheckpointer(model)._load_model(dict(data, model=dict(data.get("model", {}))))
    missing = [resnet[k] for k in incompatible.missing_keys if k in resnet]
    missing += [resnet[k] for k, *_ in getattr(incompatible, "incorrect_shapes", []) if k in resnet
                and resnet[k] not in missing]
    shapes = {t: tuple(v.shape) for k, v in model.state_dict().items() if (t := _resnet_tail(k)) is not None}
    mismatched = [f"{t} {tuple(given[t])} vs {shapes[t]}" for t in missing
                  if given.get(t) is not None and tuple(given[t]) != shapes[t]]
    return BackboneLoad(len(resnet) - len(missing), len(resnet), missing, mismatched)


def _read(weights: str) -> dict[str, Any]:
    import torch

    return SafeDetectionCheckpointer(torch.nn.Module())._load_file(weights)


def _apply_provenance(plan: TrialPlan, data: Mapping[str, Any], opts: Sequence[str]) -> tuple[CfgNode, dict]:
    """The config with the ``.pkl``'s ``MODEL.RESNETS`` keys that the command line leaves open; those applied."""
    given = overrides(opts)
    applied = {}
    for key, value in provenance_resnets(data).items():
        node = plan.cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, CfgNode) else None
        if key not in given and node is not None and node != value:
            applied[key] = value
    if not applied:
        return plan.cfg, {}
    cfg = plan.cfg.clone()
    cfg.defrost()
    cfg.merge_from_list([x for kv in applied.items() for x in kv])
    cfg.freeze()
    return cfg, applied


def _fix(data: Mapping[str, Any], opts: Sequence[str]) -> str:
    wanted = provenance_resnets(data)
    given = overrides(opts)
    clash = [f"{k} {given[k]}" for k in wanted if k in given and str(given[k]) != str(wanted[k])]
    if clash:
        return (f"drop the override(s) {', '.join(clash)}: the .pkl holds the backbone of "
                + ", ".join(f"{k} {v}" for k, v in wanted.items()) + " (its provenance), which transfer applies itself")
    if wanted:
        return "the .pkl does not hold the backbone its provenance names: convert the checkpoint again (--verify)"
    return ("pass the MODEL.RESNETS keys that build the backbone of these weights (DEPTH, STEM_OUT_CHANNELS, "
            "RES2_OUT_CHANNELS, WIDTH_PER_GROUP), or convert the checkpoint with `siambench convert`, whose .pkl "
            "records them and transfer applies them")


def _refusal(plan: TrialPlan, load: BackboneLoad, data: Mapping[str, Any], opts: Sequence[str]) -> str:
    shown = load.mismatched or load.missing
    more = f", +{len(shown) - 3} more" if len(shown) > 3 else ""
    what = "shape mismatch" if load.mismatched else "missing from the weights"
    return (f"--weights {plan.weights}: {load.total - load.loaded} of {load.total} ResNet tensors of the "
            f"{plan.task} model do not load ({what}: {'; '.join(shown[:3])}{more}), so the backbone would train "
            f"from random init; {_fix(data, opts)}")


def prepare_backbone(plan: TrialPlan, opts: Sequence[str], dry_run: bool = False) -> tuple[TrialPlan, list[str]]:
    """``plan`` with the weights' backbone keys applied and the load counted; the warnings to show.

    Unreadable weights are left to ``check_weights_file`` (refused when a trial still needs them; with
    ``dry_run`` a warning).

    Raises:
        BackboneNotLoaded: not every ResNet tensor of the model loads from ``--weights`` (not with ``dry_run``).
    """
    if plan.weights == SCRATCH or plan.eval_only:
        return plan, []
    try:
        data = _read(plan.weights)
    except UserError as e:  # refused later (check_weights_file) if a trial still needs the weights
        return plan, [f"weights not checked: {e}"] if dry_run else []
    cfg, applied = _apply_provenance(plan, data, opts)
    notes = [", ".join(f"{k} {v}" for k, v in applied.items()) + f" from the provenance of {plan.weights} "
             "(the backbone it holds)"] if applied else []
    residual = residual_warning(data.get("model", {}), plan.weights)
    warnings = [residual] if residual else []
    load = backbone_load(cfg, data)
    plan = dataclasses.replace(plan, cfg=cfg, runtime_notes=[*plan.runtime_notes, *notes, *warnings],
                               backbone={"loaded": load.loaded, "total": load.total, "resnets_from_weights": applied})
    if load.loaded < load.total:
        message = _refusal(plan, load, data, opts)
        if not dry_run:
            raise BackboneNotLoaded(message)
        warnings.append(message)
    for line in notes:
        logger.info("%s", line)
    return plan, warnings
