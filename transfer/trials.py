"""Trial planning and bookkeeping for ``siambench transfer``.

An experiment (task x weights) runs ``N`` trials under ``OUTPUT_DIR``; trial ``k`` uses
seed ``SEED + k`` (``SEED`` is the experiment's base seed, 0 in our configs) and lives in
``OUTPUT_DIR/trial{k}/`` (detectron2's checkpoints, ``metrics.json``, ``config.yaml``)
with its ``results.json`` (fields in docs/design.md).

``results.json`` says ``status: "running"`` while a trial trains, ``"failed"`` (with the
``error``) when it stopped on an error, and ``"complete"`` only once its evaluation is
written and its ``model_final.pth`` loads, so on a rerun:

* a complete trial with the same config hash and weights is skipped;
* a complete trial with a *different* config or weights is an error listing what
  changed (never silently skipped nor overwritten);
* an unfinished trial resumes from detectron2's ``last_checkpoint`` (again only if its
  saved config matches).
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siambench.transfer import d2compat  # must precede detectron2 imports; also reports its version

from detectron2.config import CfgNode
from siambench.pretrain.utils.env import environment
from siambench.pretrain.utils.errors import UserError
from siambench.pretrain.utils.io import atomic_write_json

from .config import ScalingInfo, config_hash, diff_configs, get_transfer_cfg
from .evaluation import resolve_backend

__all__ = ["TrialConfigMismatch", "TrialPlan", "trial_state", "trial_record", "write_results", "to_json_metrics"]

RESULTS = "results.json"
SCRATCH = "scratch"


class TrialConfigMismatch(UserError, RuntimeError):
    """A trial directory holds a run with another config or other weights."""


@dataclass
class TrialPlan:
    """Everything one ``siambench transfer`` invocation will do; printed by ``--dry-run``.

    ``cfg`` is the resolved config (hardware adjustments applied) with the experiment's
    ``OUTPUT_DIR`` and base ``SEED``; :meth:`trial_cfg` derives each trial's.
    """

    task: str
    label: str
    weights: str  # path of the .pkl/.pth, or "scratch"
    weights_sha256: str | None
    cfg: CfgNode
    trials: int
    scaling: ScalingInfo
    runtime_notes: list[str] = field(default_factory=list)
    num_gpus: int = 1
    num_machines: int = 1
    eval_only: bool = False
    # ResNet tensors loaded from the weights and MODEL.RESNETS applied from their provenance (backbone_check)
    backbone: dict[str, Any] | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.OUTPUT_DIR)

    @property
    def world_size(self) -> int:
        return max(1, self.num_gpus * self.num_machines)

    @property
    def norm(self) -> str:
        return self.cfg.MODEL.RESNETS.NORM

    def seed(self, k: int) -> int:
        return self.cfg.SEED + k

    def trial_dir(self, k: int) -> Path:
        return self.output_dir / f"trial{k}"

    def trial_cfg(self, k: int) -> CfgNode:
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.SEED = self.seed(k)
        cfg.OUTPUT_DIR = str(self.trial_dir(k))
        cfg.freeze()
        return cfg

    def describe(self) -> str:
        """The plan in a few lines (for ``--dry-run`` and the log)."""
        c, s = self.cfg, self.scaling
        lr = f"{c.SOLVER.BASE_LR:g}"
        if s.lr_scaled:
            lr += f" (linear scaling of {s.reference_base_lr:g} @ {s.reference_ims_per_batch} images)"
        rows = [
            ("task", self.task),
            ("label", self.label),
            ("weights", self.weights + (f" (sha256 {self.weights_sha256[:12]}...)" if self.weights_sha256 else "")),
            ("mode", "evaluation only" if self.eval_only else f"{self.trials} trial(s), seeds "
             f"{', '.join(str(self.seed(k)) for k in range(self.trials))}"),
            ("output", str(self.output_dir)),
            ("processes", f"{self.world_size} ({self.num_machines} machine(s) x {self.num_gpus} GPU(s)), "
             f"device {c.MODEL.DEVICE}"),
            ("batch", f"{c.SOLVER.IMS_PER_BATCH} images total, "
                      f"{c.SOLVER.IMS_PER_BATCH // self.world_size} per process"),
            ("lr", lr),
            ("schedule", f"{c.SOLVER.MAX_ITER} iterations, steps {tuple(c.SOLVER.STEPS)}, warmup "
             f"{c.SOLVER.WARMUP_ITERS}" + (f" (x{s.schedule_scale:g})" if s.schedule_scale != 1 else "")),
            ("norm", f"{self.norm} (backbone), ROI head {c.MODEL.ROI_HEADS.NAME}; precise BN "
             f"{'on' if c.TEST.PRECISE_BN.ENABLED else 'off'}"),
            ("train", ", ".join(c.DATASETS.TRAIN)),
            ("test", ", ".join(c.DATASETS.TEST)),
            ("config hash", config_hash(c)),
        ]
        rows += [("note", n) for n in self.runtime_notes]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:>{width}}: {v}" for k, v in rows)


def _read_results(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise TrialConfigMismatch(f"{path} is not valid JSON ({e}); delete it to rerun the trial") from e


def _saved_config_diffs(plan: TrialPlan, k: int) -> list[str]:
    """Keys where trial ``k``'s saved ``config.yaml`` differs from the planned config."""
    saved = plan.trial_dir(k) / "config.yaml"
    if not saved.is_file():
        return []
    old = get_transfer_cfg()
    old.set_new_allowed(True)  # a config saved by another siambench version may have other keys
    old.merge_from_file(str(saved))
    return diff_configs(old, plan.trial_cfg(k))


def _mismatch(plan: TrialPlan, k: int, what: str, diffs: list[str]) -> TrialConfigMismatch:
    tdir = plan.trial_dir(k)
    detail = ("; changed keys: " + "; ".join(diffs[:20])) if diffs else ""
    return TrialConfigMismatch(
        f"{tdir} holds a trial run with {what}{detail}. Refusing to skip or overwrite it: use a new "
        f"OUTPUT_DIR for the new setup, or delete {tdir} to rerun it."
    )


def trial_state(plan: TrialPlan, k: int) -> str:
    """``"complete"`` (skip), ``"resume"`` (a checkpoint to continue from) or ``"new"``.

    Raises:
        TrialConfigMismatch: the directory holds a run of another config or other weights.
    """
    tdir = plan.trial_dir(k)
    record = _read_results(tdir / RESULTS)
    want_hash = config_hash(plan.trial_cfg(k))
    if record is not None:
        if record.get("config_hash") != want_hash:
            raise _mismatch(plan, k, f"config hash {record.get('config_hash')} (now {want_hash})",
                            _saved_config_diffs(plan, k))
        if record.get("weights_sha256") != plan.weights_sha256:
            raise _mismatch(plan, k, f"weights sha256 {record.get('weights_sha256')} (now "
                            f"{plan.weights_sha256})", [])
        if record.get("status") == "complete":
            return "complete"
    if (tdir / "last_checkpoint").is_file():
        diffs = _saved_config_diffs(plan, k)  # killed before results.json was written
        if diffs:
            raise _mismatch(plan, k, "another config", diffs)
        return "resume"
    return "new"


def to_json_metrics(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """detectron2's ``{"bbox": {"AP": .., "AP-cls": ..}}`` -> summary metrics, NaN as None."""
    out: dict[str, dict[str, float | None]] = {}
    for task, metrics in results.items():
        if isinstance(metrics, dict):
            out[task] = {k: (None if math.isnan(v) else float(v)) for k, v in metrics.items()
                         if "-" not in k}  # "AP-<class>" entries go to per_class
    return out


def _per_class(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    return {task: {k.split("-", 1)[1]: (None if math.isnan(v) else float(v))
                   for k, v in metrics.items() if k.startswith("AP-")}
            for task, metrics in results.items() if isinstance(metrics, dict)}


def trial_record(plan: TrialPlan, k: int | None, status: str, results: dict[str, Any] | None = None,
                 wall_time_s: float | None = None, resumed: bool = False, error: str | None = None) -> dict[str, Any]:
    """The ``results.json`` object of trial ``k`` (``None``: an evaluation-only run).

    ``status`` is "running", "complete" or "failed" (then ``error`` says why).
    """
    cfg = plan.cfg if k is None else plan.trial_cfg(k)
    record: dict[str, Any] = {
        "task": plan.task,
        "label": plan.label,
        "weights": plan.weights,
        "weights_sha256": plan.weights_sha256,
        "config_hash": config_hash(cfg),
        "trial": k,
        "seed": cfg.SEED,
        "iterations": cfg.SOLVER.MAX_ITER,
        "norm": plan.norm,
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "base_lr": cfg.SOLVER.BASE_LR,
        "lr_scaled": plan.scaling.lr_scaled,
        "scaling": plan.scaling.as_dict(),
        "world_size": plan.world_size,
        "device": cfg.MODEL.DEVICE,
        "runtime_notes": list(plan.runtime_notes),
        "datasets": {"train": list(cfg.DATASETS.TRAIN), "test": list(cfg.DATASETS.TEST)},
        "eval_only": plan.eval_only,
        "resumed": resumed,
        "backbone_loaded": (plan.backbone or {}).get("loaded"),  # ResNet tensors filled from the weights ...
        "backbone_total": (plan.backbone or {}).get("total"),  # ... of the model's (None: scratch, eval only)
        "resnets_from_weights": (plan.backbone or {}).get("resnets_from_weights", {}),
        "final_model_kept": bool(cfg.SIAMBENCH.KEEP_FINAL_MODEL),  # False: the numbers are the whole result
        "results": to_json_metrics(results or {}),
        "per_class": _per_class(results or {}),
        "wall_time_s": wall_time_s,
        "env": {**environment(), "detectron2": d2compat.info()},
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "status": status,
    }
    if error is not None:
        record["error"] = error
    if cfg.MODEL.MASK_ON or any(name.startswith(("coco", "synth_coco")) for name in cfg.DATASETS.TEST):
        record["coco_eval_backend"] = resolve_backend(cfg.SIAMBENCH.COCO_EVAL_BACKEND)
    return record


def write_results(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path, record)
