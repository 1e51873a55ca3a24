"""Detectron2 configs for the transfer benchmarks: stock keys + a few ``SIAMBENCH.*`` keys.

A task's config is ``configs/transfer/<task>.yaml`` (yacs, ``_BASE_`` inheritance) merged
onto :func:`get_transfer_cfg`, then trailing ``KEY VALUE`` overrides. Two adjustments are
applied on top, both logged and recorded in every trial's ``results.json``:

* **Batch scaling** (:func:`apply_batch_scaling`): the protocol fixes the *total* batch
  (16 images) and lr (0.02) whatever the number of GPUs. Where the hardware cannot hold
  the config's batch, override ``SOLVER.IMS_PER_BATCH``; unless ``SOLVER.BASE_LR`` is
  overridden too, the linear scaling rule (Goyal et al., 2017) scales the lr by
  ``new/old`` batch and stretches the schedule (iterations, steps, warmup, periods) by
  ``old/new`` so the run sees the same number of images. Keys overridden explicitly keep
  their given values. detectron2's own rule (``SOLVER.REFERENCE_WORLD_SIZE``) is refused:
  see :func:`apply_batch_scaling` for why.
* **Runtime** (:func:`resolve_runtime`): SyncBN needs a process group, so with world
  size 1 (one GPU or CPU) every ``SyncBN``/``naiveSyncBN`` becomes ``SIAMBENCH.WORLD_SIZE_1_NORM``
  (plain BN with batch statistics, fine-tuned; precise BN still runs before testing).
  Without CUDA the device becomes CPU.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.config import CfgNode, get_cfg
from siambench.pretrain.utils.config import ConfigError, config_diff, flatten, load_config, plain
from siambench.pretrain.utils.paths import CONFIG_ROOT, resolve

__all__ = [
    "CONFIG_DIR",
    "ScalingInfo",
    "add_siambench_config",
    "apply_batch_scaling",
    "config_hash",
    "diff_configs",
    "get_transfer_cfg",
    "load_task_config",
    "overrides",
    "resolve_runtime",
    "task_config_path",
    "available_tasks",
    "default_trials",
]

logger = logging.getLogger(__name__)

CONFIG_DIR = CONFIG_ROOT / "transfer"  # the checkout's or the installed wheel's (pretrain/utils/paths.py)

# Keys that differ between trials of one experiment by design, or do not change what is computed
# (checkpoint retention); excluded from the config hash.
_PER_TRIAL_KEYS = ("SEED", "OUTPUT_DIR", "MODEL.WEIGHTS", "SIAMBENCH.TRIALS", "SIAMBENCH.KEEP_CHECKPOINTS",
                   "SIAMBENCH.KEEP_FINAL_MODEL")

# Every norm key that may name SyncBN in our configs (backbone, FPN, R-CNN heads).
_NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")

# detectron2's synchronised BNs: torch's SyncBatchNorm and its own NaiveSyncBatchNorm.
_SYNC_NORMS = ("SyncBN", "naiveSyncBN")

# Iteration counts stretched by the linear scaling rule (scalars and the STEPS tuple).
_SCHEDULE_KEYS = ("SOLVER.MAX_ITER", "SOLVER.WARMUP_ITERS", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD")


def add_siambench_config(cfg: CfgNode) -> CfgNode:
    """Add the ``SIAMBENCH`` node (our keys, each commented) to a detectron2 config."""
    cfg.SIAMBENCH = CfgNode()
    # Norm that replaces "SyncBN" when the world size is 1 (one GPU or CPU): SyncBN needs a
    # process group, and over one process it equals BN anyway. "BN" = batch statistics,
    # fine-tuned, like the protocol's SyncBN; precise BN still recomputes the statistics.
    cfg.SIAMBENCH.WORLD_SIZE_1_NORM = "BN"
    # Linear scaling rule when SOLVER.IMS_PER_BATCH is overridden without SOLVER.BASE_LR:
    # "lr_and_schedule" (lr x new/old, iterations x old/new: same images seen, Goyal et al.
    # 2017), "lr" (lr only, same iterations) or "none" (keep the config's lr).
    cfg.SIAMBENCH.BATCH_SCALING = "lr_and_schedule"
    # COCO evaluator: "auto" (faster-coco-eval when installed, else pycocotools),
    # "faster_coco_eval" (require it) or "pycocotools" (the official API). AP is identical.
    cfg.SIAMBENCH.COCO_EVAL_BACKEND = "auto"
    # Fine-tuning trials (seeds SEED+k) when --trials is not given; 0 = the protocol's number:
    # 5 when testing on real VOC (MoCo and SimSiam report VOC as the mean of 5 trials), else 1
    # (COCO is reported from one run; synthetic tasks are demos).
    cfg.SIAMBENCH.TRIALS = 0
    # Periodic checkpoints (model_NNNNNNN.pth, every SOLVER.CHECKPOINT_PERIOD) kept per trial: the newest N
    # (0 = all, detectron2's default), older ones deleted once a new one is written; model_final.pth is
    # always kept and is the only file written at the last iteration. A disk policy (COCO 1x: 18 periodic
    # files of ~0.5 GB each otherwise), not part of the protocol.
    cfg.SIAMBENCH.KEEP_CHECKPOINTS = 2
    # False: do not write a trial's model_final.pth (the model is evaluated in memory) and delete its
    # periodic checkpoints once results.json says "complete", for runs that only need the numbers (the CPU
    # demo's disk budget: 16 trials x 47 MB). `--eval-only` on such a trial needs it trained again.
    cfg.SIAMBENCH.KEEP_FINAL_MODEL = True
    return cfg


# Test sets whose published numbers are means over several fine-tuning trials.
_MULTI_TRIAL_TEST_SETS = {"voc_2007_test": 5}


def default_trials(cfg: CfgNode) -> int:
    """``SIAMBENCH.TRIALS``, or the protocol's number of trials for ``cfg.DATASETS.TEST`` if 0."""
    if cfg.SIAMBENCH.TRIALS:
        return cfg.SIAMBENCH.TRIALS
    return max([1] + [_MULTI_TRIAL_TEST_SETS.get(name, 1) for name in cfg.DATASETS.TEST])


def get_transfer_cfg() -> CfgNode:
    """detectron2's defaults plus the ``SIAMBENCH`` keys; the base every task config merges onto."""
    return add_siambench_config(get_cfg())


def available_tasks() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("Base"))


def task_config_path(task: str) -> Path:
    """``configs/transfer/<task>.yaml`` as every config path resolves (:func:`resolve`): the working
    directory's own copy if it has one (the file ``siambench run`` fingerprints), else the shipped
    one; a clear error lists the tasks that exist."""
    path = resolve(f"configs/transfer/{task}.yaml").absolute()
    if not path.is_file() or task.startswith("Base"):
        raise ConfigError(f"unknown transfer task {task!r} (no {CONFIG_DIR / f'{task}.yaml'}); available tasks: "
                          f"{', '.join(available_tasks())}; or pass --config-file FILE")
    if path.resolve() != (CONFIG_DIR / f"{task}.yaml").resolve():
        logger.warning("--task %s: using %s (from the working directory), not the shipped %s", task, path,
                       CONFIG_DIR / f"{task}.yaml")
    return path


@dataclass(frozen=True)
class ScalingInfo:
    """How the batch/lr/schedule relate to the config file's recipe (recorded in results)."""

    reference_ims_per_batch: int
    reference_base_lr: float
    ims_per_batch: int
    base_lr: float
    lr_scaled: bool
    schedule_scale: float  # iterations multiplied by this (1.0 = the recipe's schedule)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def overrides(opts: Sequence[str]) -> dict[str, str]:
    """Trailing ``KEY VALUE`` overrides (``--`` dropped) by key, as merged: the last value of a key wins."""
    opts = [o for o in opts if o != "--"]
    return dict(zip(opts[0::2], opts[1::2]))


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def _overridden(opts: Sequence[str], key: str) -> bool:
    return key in overrides(opts)


def apply_batch_scaling(cfg: CfgNode, recipe: CfgNode, opts: Sequence[str]) -> ScalingInfo:
    """Apply the linear scaling rule in place if ``SOLVER.IMS_PER_BATCH`` left the recipe.

    Why not detectron2's ``DefaultTrainer.auto_scale_workers`` (run when
    ``SOLVER.REFERENCE_WORLD_SIZE`` is set): its arithmetic is the same (lr x k; ``MAX_ITER``,
    ``STEPS``, ``WARMUP_ITERS``, ``CHECKPOINT_PERIOD``, ``TEST.EVAL_PERIOD`` / k, rounded; a test
    checks that both give the same config), but its k is the number of GPUs over the
    reference number: it keeps the per-GPU batch, so the total batch changes with the GPUs.
    The MoCo/SimSiam protocol fixes the total batch (16) whatever the GPUs, so here k follows
    an explicit ``SOLVER.IMS_PER_BATCH``, keys given explicitly keep their values, and
    ``SIAMBENCH.BATCH_SCALING`` can scale the lr alone or nothing. A config that sets
    ``SOLVER.REFERENCE_WORLD_SIZE`` is refused (:func:`load_task_config`): both rules would
    apply, and results.json would not record detectron2's.

    Args:
        cfg: the merged config (file + overrides), not frozen.
        recipe: the config file and overlays alone (the protocol's batch, lr and schedule).
        opts: the ``KEY VALUE`` overrides, to tell an explicit ``SOLVER.BASE_LR`` apart.
    """
    ref_ims, ref_lr = recipe.SOLVER.IMS_PER_BATCH, recipe.SOLVER.BASE_LR
    ims = cfg.SOLVER.IMS_PER_BATCH
    mode = cfg.SIAMBENCH.BATCH_SCALING
    if mode not in ("lr_and_schedule", "lr", "none"):
        raise ConfigError(f"SIAMBENCH.BATCH_SCALING must be lr_and_schedule, lr or none, got {mode!r}")
    if ims <= 0:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH must be positive, got {ims}")
    if ims == ref_ims or mode == "none" or _overridden(opts, "SOLVER.BASE_LR"):
        return ScalingInfo(ref_ims, ref_lr, ims, cfg.SOLVER.BASE_LR, False, 1.0)
    cfg.SOLVER.BASE_LR = ref_lr * ims / ref_ims
    schedule_scale = 1.0
    if mode == "lr_and_schedule":  # keys given explicitly on the command line are kept as given
        schedule_scale = ref_ims / ims
        for key in _SCHEDULE_KEYS:
            if not _overridden(opts, key):
                _set(cfg, key, int(round(_get(recipe, key) * schedule_scale)))
        if not _overridden(opts, "SOLVER.STEPS"):
            cfg.SOLVER.STEPS = tuple(int(round(s * schedule_scale)) for s in recipe.SOLVER.STEPS)
    logger.warning(
        "SOLVER.IMS_PER_BATCH %d differs from the recipe's %d: linear scaling rule, BASE_LR %g -> %g%s",
        ims, ref_ims, ref_lr, cfg.SOLVER.BASE_LR,
        f", schedule x{schedule_scale:g} (MAX_ITER {cfg.SOLVER.MAX_ITER}, STEPS {cfg.SOLVER.STEPS})"
        if schedule_scale != 1.0 else "",
    )
    return ScalingInfo(ref_ims, ref_lr, ims, cfg.SOLVER.BASE_LR, True, schedule_scale)


def resolve_runtime(cfg: CfgNode, world_size: int, cuda_available: bool) -> list[str]:
    """Adapt ``cfg`` in place to the hardware; return one note per change (logged, recorded).

    Raises:
        ConfigError: the total batch does not split evenly over the processes.
    """
    notes = []
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
                          f"world size {world_size}; choose a multiple of it")
    if world_size == 1:
        for key in _NORM_KEYS:
            if (norm := _get(cfg, key)) in _SYNC_NORMS:
                _set(cfg, key, cfg.SIAMBENCH.WORLD_SIZE_1_NORM)
                notes.append(f"{key}: {norm} -> {cfg.SIAMBENCH.WORLD_SIZE_1_NORM} (world size 1)")
    if cfg.MODEL.DEVICE.startswith("cuda") and not cuda_available:
        cfg.MODEL.DEVICE = "cpu"
        notes.append("MODEL.DEVICE: cuda -> cpu (CUDA not available)")
    for note in notes:
        logger.warning(note)
    return notes


def load_task_config(
    config_file: str | Path, opts: Sequence[str] = (), overlays: Sequence[str | Path] = ()
) -> tuple[CfgNode, ScalingInfo]:
    """Merge ``config_file``, then ``overlays`` (e.g. the scratch recipe), then ``opts``.

    The file plus overlays is the *recipe*; :func:`apply_batch_scaling` compares the
    overridden batch with it.

    Returns:
        The merged config (not frozen) and how its batch/lr relate to the recipe.

    Raises:
        ConfigError: missing file, unknown key or malformed override, naming the culprit.
    """
    recipe = load_config(get_transfer_cfg(), config_file)
    for overlay in overlays:
        recipe = load_config(recipe, overlay)
    opts = [o for o in opts if o != "--"]
    cfg = load_config(recipe, None, opts).clone()
    cfg.defrost()
    _refuse_unsupported(cfg)
    scaling = apply_batch_scaling(cfg, recipe, opts)
    return cfg, scaling


# detectron2 keys that the transfer trainer does not honour: key -> (the value it needs, why). EXPECTED_RESULTS:
# DefaultTrainer.train checks it against the private attribute that the stock evaluation hook sets, and
# TransferTrainer's hook keeps the results in TransferTrainer.eval_results instead.
_UNSUPPORTED = {
    "SOLVER.REFERENCE_WORLD_SIZE": (0, "detectron2's auto_scale_workers would change the total batch with the "
                                       "number of GPUs; the protocol fixes it: set SOLVER.IMS_PER_BATCH instead"),
    "TEST.EXPECTED_RESULTS": ([], "detectron2's CI check of the results is not run; results.json records them"),
}


def _refuse_unsupported(cfg: CfgNode) -> None:
    for key, (needed, why) in _UNSUPPORTED.items():
        if plain(_get(cfg, key)) != needed:
            raise ConfigError(f"{key} {_get(cfg, key)!r} is not supported ({why}); leave it at {needed!r}")


def _comparable(cfg: CfgNode) -> dict[str, Any]:
    flat = flatten(cfg)
    for key in _PER_TRIAL_KEYS:
        flat.pop(key, None)
    return flat


def config_hash(cfg: CfgNode) -> str:
    """A short, stable hash of everything in ``cfg`` that defines the experiment.

    Excludes the keys that legitimately differ per trial or per machine path
    (``SEED``, ``OUTPUT_DIR``, ``MODEL.WEIGHTS``; the weights are identified by sha256).
    """
    text = repr(sorted(_comparable(cfg).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff_configs(old: CfgNode, new: CfgNode) -> list[str]:
    """``KEY: old -> new`` for every experiment-defining key that differs."""
    return config_diff(_comparable(old), _comparable(new))
