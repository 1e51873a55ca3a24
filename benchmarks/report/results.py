"""Collect every results file under a runs directory into plain records.

Reads the files fixed by docs/design.md: transfer ``trial*/results.json``, linear
evaluation ``lincls_results.json``, kNN ``knn_results.json`` and the pipeline's
``pipeline_state.json`` (entry labels and kinds). Nothing here averages or formats;
:mod:`siambench.benchmarks.report.table` does. Unreadable, partial or NaN results never crash the
collection: they are left out and described in :attr:`RunResults.notes`. A metric
outside [0, 100] (APs and accuracies are percentages) or non-finite is *invalid*: kept
out of every mean, counted per cell so the table shows it, and named in a note.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TransferTrial",
    "EvalResult",
    "RunResults",
    "collect",
    "is_synthetic_task",
    "STATE_FILE",
]

STATE_FILE = "pipeline_state.json"
TABLE_METRICS = ("AP50", "AP", "AP75")  # the metrics of the paper's tables (benchmarks.report.reference.METRICS)
RESULT_TYPES = ("bbox", "segm")  # the transfer results the tables show
VALID_RANGE = (0.0, 100.0)  # detectron2 APs and top-1 accuracies are percentages
_SKIP_DIRS = {"synth", "logs", ".git", "__pycache__"}  # big trees that never hold results


@dataclass(frozen=True)
class TransferTrial:
    """One finished fine-tuning trial (``status == "complete"``)."""

    path: Path
    task: str
    label: str
    weights: str
    seed: int | None
    # {"bbox": {"AP": 47.0, ...}, "segm": {...}}; NaN/None and invalid metrics are kept as NaN here.
    results: dict[str, dict[str, float]]
    invalid: frozenset[str] = frozenset()  # "bbox.AP" etc.: present but outside [0, 100] or non-finite
    trial: int | None = None  # the trial index k (trial{k}/)
    weights_sha256: str | None = None
    config_hash: str | None = None
    resumed: bool = False  # continued from a checkpoint after an interruption
    backbone_loaded: int | None = None  # backbone tensors loaded from the weights (None: not recorded)
    backbone_total: int | None = None  # backbone tensors of the model

    def loaded_weights(self) -> bool:
        """The trial started from weights (a file, or backbone tensors loaded), not from random init."""
        return self.weights != "scratch" or bool(self.backbone_loaded)

    def identity(self) -> tuple | None:
        """What makes two results files the same trial (a copied directory); None when unrecorded."""
        if self.trial is None and self.seed is None:
            return None
        return (self.task, self.label, self.trial, self.seed, self.weights_sha256 or self.weights, self.config_hash)


@dataclass(frozen=True)
class EvalResult:
    """A linear or kNN evaluation of one entry's pretrained encoder."""

    path: Path
    entry: str
    label: str
    protocol: str  # "lincls" | "knn"
    top1: float
    pretrain_epochs: int | None
    synthetic: bool
    num_classes: int | None = None  # lincls records it: chance level = 100 / num_classes
    invalid: bool = False  # top1 present but outside [0, 100] or non-finite (top1 is then NaN)
    num_val: int | None = None  # validation images behind top1 (its binomial sampling error)


@dataclass
class RunResults:
    """Everything found under one runs directory."""

    root: Path
    transfer: list[TransferTrial] = field(default_factory=list)
    evals: list[EvalResult] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # label -> simsiam|supervised|scratch|checkpoint
    notes: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def is_synthetic_task(task: str) -> bool:
    """Tasks on the built-in synthetic dataset are named ``synth_*`` (configs/transfer)."""
    return task.startswith("synth_")


def _read_json(path: Path, notes: list[str], root: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path.relative_to(root)}: unreadable ({e.__class__.__name__}), skipped")
        return None
    if not isinstance(obj, dict):
        notes.append(f"{path.relative_to(root)}: not a JSON object, skipped")
        return None
    return obj


def _number(value: Any) -> float:
    """A metric as float; None, strings and non-finite values become NaN (= missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _is_invalid(value: Any) -> bool:
    """A number that cannot be a percentage: non-finite (also the strings JSON gives for it) or
    outside [0, 100]. ``None`` / absent is *missing*, not invalid."""
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (math.isfinite(value) and VALID_RANGE[0] <= value <= VALID_RANGE[1])


def _show(value: Any) -> str:
    """A bad value for a note, cut so a 1e308 or a long string cannot flood the output."""
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _walk(root: Path, names: set[str]) -> list[Path]:
    """Files called one of ``names`` under root, sorted, skipping dataset/log trees."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if f in names]
    return found


def _entry_of(path: Path, root: Path) -> str:
    """Pipeline layout ``RUNS/<entry>/...``; a lone results dir is its own entry."""
    rel = path.relative_to(root).parts
    return rel[0] if len(rel) > 1 else root.resolve().name


def _config_data_root(result_path: Path) -> str:
    """``DATA.ROOT`` from the ``config.yaml`` saved next to an eval result, or ''."""
    cfg = result_path.parent / "config.yaml"
    if not cfg.is_file():
        return ""
    import yaml

    try:
        data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
        return str((data.get("DATA") or {}).get("ROOT", ""))
    except (OSError, yaml.YAMLError, AttributeError):
        return ""


def _transfer_trial(path: Path, obj: dict[str, Any], out: RunResults) -> None:
    rel = path.relative_to(out.root)
    if obj.get("status") != "complete":
        out.notes.append(f"{rel}: status {obj.get('status')!r} (partial trial), not averaged in")
        return
    task, label = obj.get("task"), obj.get("label")
    if not isinstance(task, str) or not isinstance(label, str) or not isinstance(obj.get("results"), dict):
        out.notes.append(f"{rel}: missing 'task', 'label' or 'results', skipped")
        return
    results: dict[str, dict[str, float]] = {}
    invalid: list[str] = []
    for rtype, metrics in obj["results"].items():
        if not isinstance(metrics, dict):
            if rtype in RESULT_TYPES:
                out.notes.append(f"{rel}: results.{rtype} is {_show(metrics)}, not a mapping of metrics "
                                 f"({', '.join(TABLE_METRICS)}); shown as missing")
            continue
        results[rtype] = {}
        for k, v in metrics.items():
            bad = rtype in RESULT_TYPES and k in TABLE_METRICS and _is_invalid(v)
            if bad:
                invalid.append(f"{rtype}.{k}")
                out.notes.append(f"{rel}: invalid {rtype}.{k} = {_show(v)} (outside [0, 100] or not finite); "
                                 "shown as invalid, not averaged in")
            results[rtype][k] = math.nan if bad else _number(v)
    # Only the tables' metrics matter: COCO's APl is legitimately NaN on images without large objects.
    nan = sorted(f"{t}.{k}" for t, m in results.items() if t in RESULT_TYPES
                 for k, v in m.items() if k in TABLE_METRICS and math.isnan(v) and f"{t}.{k}" not in invalid)
    if nan:
        out.notes.append(f"{rel}: NaN/missing {', '.join(nan)} (shown as missing, not averaged in)")
    _note_missing_metrics(rel, obj["results"], out.notes)
    out.transfer.append(TransferTrial(path, task, label, str(obj.get("weights", "")), _int(obj.get("seed")),
                                      results, frozenset(invalid), _int(obj.get("trial")),
                                      _str(obj.get("weights_sha256")), _str(obj.get("config_hash")),
                                      obj.get("resumed") is True, _int(obj.get("backbone_loaded")),
                                      _int(obj.get("backbone_total"))))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _note_missing_metrics(rel: Path, results: dict[str, Any], notes: list[str]) -> None:
    """A result type with some table metrics absent: this trial counts in some cells of its row only."""
    for rtype in RESULT_TYPES:
        metrics = results.get(rtype)
        if not isinstance(metrics, dict):
            continue
        absent = [k for k in TABLE_METRICS if k not in metrics]
        if len(absent) == len(TABLE_METRICS):
            notes.append(f"{rel}: results.{rtype} has none of {', '.join(TABLE_METRICS)}: counted in no {rtype} cell")
        elif absent:
            has = ", ".join(k for k in TABLE_METRICS if k not in absent)
            notes.append(f"{rel}: results.{rtype} has no {', '.join(absent)}: this trial counts in {rtype} {has} "
                         f"only, so that row's cells have different n")


def _drop_copies(out: RunResults) -> None:
    """Count each trial once: a results file with the same task, label, trial index, seed, weights and
    config as one read before (a copied trial directory, ``cp -r trial1 trial1.bak``) is named in a note."""
    seen: dict[tuple, TransferTrial] = {}
    kept = []
    for t in out.transfer:
        key = t.identity()
        first = seen.get(key) if key is not None else None
        if first is not None:
            what = "a copy" if repr(t.results) == repr(first.results) else "another run of it, other numbers"
            out.notes.append(f"{t.path.relative_to(out.root)}: the same trial as {first.path.relative_to(out.root)} "
                             f"(task {t.task}, trial {t.trial}, seed {t.seed}, same weights and config; {what}): "
                             "counted once")
            continue
        if key is not None:
            seen[key] = t
        kept.append(t)
    out.transfer = kept


def _eval_result(path: Path, obj: dict[str, Any], out: RunResults, labels: dict[str, str],
                 synthetic_run: bool | None) -> None:
    rel = path.relative_to(out.root)
    protocol = "lincls" if path.name == "lincls_results.json" else "knn"
    top1 = _number(obj.get("top1"))
    invalid = _is_invalid(obj.get("top1"))
    if invalid:
        top1 = math.nan
        out.notes.append(f"{rel}: invalid top1 = {_show(obj.get('top1'))} (outside [0, 100] or not finite); "
                         "shown as invalid, not averaged in")
    elif math.isnan(top1):
        out.notes.append(f"{rel}: top1 missing or NaN, skipped")
        return
    entry = _entry_of(path, out.root)
    epochs = obj.get("pretrain_epochs")
    if synthetic_run is None:  # no pipeline state: judge from the eval's own config
        synthetic = "synth" in _config_data_root(path).lower()
    else:
        synthetic = synthetic_run
    classes, num_val = obj.get("num_classes"), obj.get("num_val")
    out.evals.append(EvalResult(path, entry, labels.get(entry, entry), protocol, top1,
                                int(epochs) if isinstance(epochs, (int, float)) and math.isfinite(epochs) else None,
                                synthetic, classes if isinstance(classes, int) and classes > 0 else None, invalid,
                                num_val if isinstance(num_val, int) and num_val > 0 else None))


def collect(runs_dir: str | os.PathLike) -> RunResults:
    """Read every results file under ``runs_dir``.

    Raises:
        FileNotFoundError: ``runs_dir`` does not exist.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory not found: {root} (pass the OUTPUT_DIR of `siambench run`)")
    out = RunResults(root=root)
    labels: dict[str, str] = {}
    synthetic_run: bool | None = None
    state_path = root / STATE_FILE
    if state_path.is_file():
        state = _read_json(state_path, out.notes, root) or {}
        out.state = state
        for name, entry in (state.get("entries") or {}).items():
            labels[name] = entry.get("label", name)
            out.kinds[labels[name]] = entry.get("kind", "")
        if "synthetic" in state:
            synthetic_run = bool(state["synthetic"])

    for path in _walk(root, {"results.json", "lincls_results.json", "knn_results.json"}):
        obj = _read_json(path, out.notes, root)
        if obj is None:
            continue
        if path.name == "results.json":
            if "task" in obj or "status" in obj:
                _transfer_trial(path, obj, out)
            else:  # another tool's results.json, or a damaged trial's
                out.notes.append(f"{path.relative_to(root)}: no 'task' or 'status', not a transfer trial's "
                                 "results.json; skipped")
        else:
            _eval_result(path, obj, out, labels, synthetic_run)

    _drop_copies(out)
    for trial in out.transfer:  # kinds of rows not described by a pipeline state
        if trial.label not in out.kinds:
            if trial.weights == "scratch":
                out.kinds[trial.label] = "scratch"
            elif "supervised" in trial.label.lower():
                out.kinds[trial.label] = "supervised"
    return out
