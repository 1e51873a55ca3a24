"""Checks before ``siambench run`` launches anything, and the GPU-hours a plan costs.

:func:`problems` looks at every step of a plan for what it will need and the machine
does not have — GPUs for torchrun steps, the ImageFolder root of the pretraining /
evaluation steps, the detectron2 datasets of the transfer tasks, the weights of
checkpoint entries — so a run on the wrong machine ends in one line per problem
before the first launch, not in eight tracebacks per rank.

:func:`estimate` gives the GPU-hours (V100) of one step, scaled from published timings:

* pretraining, ResNet-50 on ImageNet: MoCo's README reports 53 hours for 200 epochs on
  8 V100 (2.12 GPU-h / epoch, https://github.com/facebookresearch/moco); SimSiam
  back-propagates through both views where MoCo does one view and a forward pass of the
  key encoder, so we take 1.5x that (3.2 GPU-h / epoch; our estimate, not a measurement).
  The supervised baseline (one view): 0.5x SimSiam; linear evaluation (frozen backbone,
  forward only): 0.15x; kNN: one forward pass over train + val, 0.3 GPU-h.
  Other ResNets scale with their FLOPs (torchvision), other crop sizes with pixels.
* transfer: detectron2's MODEL_ZOO.md R50-C4 1x on 8 V100 at 16 images per batch,
  0.551 s/iter (Faster R-CNN) and 0.584 s/iter (Mask R-CNN), times MAX_ITER, scaled by
  IMS_PER_BATCH / 16; e.g. VOC07 24k iterations: 29 GPU-h per trial; COCO 1x: 117 GPU-h.

On synthetic data (CPU) no GPU-hour estimate is given: the runner's ETA uses the
measured times of earlier steps instead.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from fvcore.common.config import CfgNode
from siambench.pretrain.utils.config import flatten, load_yaml_chain

from .pipeline_config import resolve_path
from .steps import Step, synth_root

__all__ = ["problems", "estimate", "load_yaml_chain"]

PRETRAIN_GPU_H_PER_EPOCH = 2.12 * 1.5  # MoCo README (53 h / 200 ep on 8 V100) x 1.5 for SimSiam's two backprops
RELATIVE_COST = {"pretrain": 1.0, "supervised": 0.5, "lincls": 0.15}  # per epoch, against SimSiam pretraining
KNN_GPU_H = 0.3  # one forward pass of ImageNet train + val with ResNet-50
D2_S_PER_ITER = {False: 0.551, True: 0.584}  # detectron2 MODEL_ZOO.md R50-C4 1x, MASK_ON False / True, 8 V100
ARCH_FLOPS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 4.1, "resnet101": 7.8, "resnet152": 11.5}  # GFLOPs


def _step_config(step: Step) -> dict[str, Any]:
    """The step's config file (with bases): ``--config-file`` or the transfer task's."""
    if step.config_file:
        return load_yaml_chain(resolve_path(step.config_file))
    if step.command[0] == "transfer":
        task = "Base-Custom" if "--dataset" in step.flags else step.flags.get("--task")  # a dataset of one's own
        return load_yaml_chain(resolve_path(f"configs/transfer/{task}.yaml"))
    return {}


def _value(step: Step, cfg: dict, key: str, default: Any = None) -> Any:
    """A config key as the step will see it: the command-line override, else the file's."""
    given = step.opts.get(key)
    if given is None:
        return flatten(cfg).get(key, default)
    import ast

    try:
        return ast.literal_eval(given)
    except (ValueError, SyntaxError):
        return given


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def problems(cfg: CfgNode, steps: Sequence[Step], count_gpus: bool = True) -> list[str]:
    """What the plan's not-yet-done steps need and this machine lacks, one message each; ``count_gpus``
    False: the steps run elsewhere (SLURM jobs), so this machine's GPUs are not counted."""
    todo = [s for s in steps if not s.done()]
    out: list[str] = []
    synth_made = any(s.key == "synth" for s in todo)
    synth_dir = synth_root(cfg).resolve() if cfg.SYNTH.ENABLED else None
    need_gpus = max([s.nproc for s in todo] + [int(s.flags.get("--num-gpus") or 1) for s in todo] + [1])
    if need_gpus > 1 and count_gpus:
        have = _gpus()
        if have < need_gpus:
            out.append(f"NUM_GPUS {need_gpus}: this machine has {have} CUDA GPU(s); run on a machine with "
                       f"{need_gpus} GPUs or set NUM_GPUS {max(have, 1)} (the recipes' batch sizes are global)")
    roots: dict[str, str] = {}
    real_tasks: dict[str, list[str]] = {}
    for s in todo:
        if s.name in ("pretrain", "knn", "lincls"):
            root = str(_value(s, _step_config(s), "DATA.ROOT", "") or "")
            roots.setdefault((root, s.argv[0] == "pretrain"), s.key)  # pretraining reads unlabelled images too
        elif s.name.startswith("transfer:"):
            task = s.name.split(":", 1)[1]
            sets = _step_config(s).get("DATASETS") or {}
            names = [n for key in ("TRAIN", "TEST") for n in _as_list(sets.get(key))]
            if not (task.startswith("synth_") and synth_made):
                real_tasks.setdefault(task, names)
            if "--dataset" in s.argv:
                out += _own_dataset_problems(s.flags.get("--dataset") or "")
    for (root, unlabelled_ok), key in roots.items():
        if synth_made and synth_dir is not None and root and synth_dir in Path(root).expanduser().resolve().parents:
            continue  # the synth step writes it first
        from siambench.pretrain.data.folder import DataRootError  # imports torch
        from siambench.pretrain.data.roots import check_data_root, resolve_data_root

        try:  # "" = ImageNet: $SIAMBENCH_IMAGENET, else $DETECTRON2_DATASETS/imagenet (the commands' rule)
            check_data_root(resolve_data_root(root), ("train", "val"), unlabelled_ok=unlabelled_ok)
        except DataRootError as e:
            out.append(f"{key} (and the other pretrain/eval steps): {e}")
    if real_tasks:
        out += _dataset_problems(real_tasks)
    for s in todo:  # weights no step of the plan makes (a checkpoint entry's)
        given = [s.command[1]] if s.command[0] == "convert" else []
        given += [w for w in (s.opts.get("MODEL.WEIGHTS"), s.flags.get("--weights")) if w and w != "scratch"]
        made = {str(o) for d in steps if d.key in s.deps for o in d.outputs}
        for path in given:
            if path not in made and not Path(path).is_file():
                out.append(f"{s.key}: weights {path} not found")
    return list(dict.fromkeys(out))


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):  # yacs tuples come from YAML as the string "('a', 'b')"
        import ast

        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return [value]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def _own_dataset_problems(spec: str) -> list[str]:
    """Problems of a dataset of one's own (``--dataset NAME=...``), the checks `siambench transfer` runs."""
    from siambench.pretrain.utils.config import ConfigError
    from siambench.transfer.custom import _coco_json, parse_spec
    from siambench.transfer.custom_checks import custom_problems

    try:
        ds = parse_spec(spec, "DATASETS")
        return [f"transfer {ds.name}: {p}" for p in custom_problems(ds)[:1]]
    except ConfigError as e:
        return [str(e)]
    finally:
        _coco_json.cache_clear()  # the pipeline process lives on: do not keep a large COCO file


def _dataset_problems(tasks: dict[str, list[str]]) -> list[str]:
    """detectron2 dataset roots of the transfer tasks (imports detectron2 via transfer.datasets)."""
    from siambench.transfer.datasets import DatasetLayoutError, check_dataset_root, register_datasets

    register_datasets()
    out, seen = [], set()
    for task, names in tasks.items():
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            try:
                check_dataset_root(name)
            except DatasetLayoutError as e:
                first = str(e).split(". Expected", 1)[0]
                out.append(f"transfer {task}: {first} (set $DETECTRON2_DATASETS to the directory that holds it)")
    return out


def estimate(step: Step, cfg: CfgNode) -> tuple[float | None, str]:
    """(GPU-hours on V100, basis) of one step; (None, why) where no published timing applies."""
    if cfg.SYNTH.ENABLED:
        return None, "synthetic data: see the measured step times (ETA)"
    conf = _step_config(step)
    arch = str(_value(step, conf, "MODEL.ARCH", "resnet50"))
    scale = ARCH_FLOPS.get(arch, ARCH_FLOPS["resnet50"]) / ARCH_FLOPS["resnet50"]
    if step.name in ("pretrain", "lincls", "knn"):
        size = int(_value(step, conf, "DATA.IMAGE_SIZE", 224) or 224)
        scale *= (size / 224) ** 2
    if step.name == "knn":
        return KNN_GPU_H * scale, "one ResNet-50 forward pass of ImageNet"
    if step.name in ("pretrain", "lincls"):
        kind = step.command[0] if step.name == "pretrain" else "lincls"
        epochs = int(_value(step, conf, "SOLVER.EPOCHS", 100) or 0)
        hours = PRETRAIN_GPU_H_PER_EPOCH * RELATIVE_COST[kind] * epochs * scale
        return hours, f"{epochs} ep x {PRETRAIN_GPU_H_PER_EPOCH * RELATIVE_COST[kind] * scale:.2f} GPU-h/ep " \
                      "(MoCo README timing, see benchmarks/pipeline/preflight.py)"
    if step.name.startswith("transfer:"):
        iters = int(_value(step, conf, "SOLVER.MAX_ITER", 0) or 0)
        batch = int(_value(step, conf, "SOLVER.IMS_PER_BATCH", 16) or 16)
        mask = bool(_value(step, conf, "MODEL.MASK_ON", False))
        trials = 1 if "--trial" in step.flags else int(step.flags.get("--trials") or 1)  # one trial's job
        per_trial = D2_S_PER_ITER[mask] * iters * 8 / 3600 * batch / 16 * scale
        return per_trial * trials, f"{trials} x {iters} it x {D2_S_PER_ITER[mask]} s/it x 8 GPUs " \
                                   "(detectron2 MODEL_ZOO R50-C4 1x)"
    if step.name == "convert":
        return 0.0, "CPU, seconds"
    return None, "no timing"


def format_estimates(steps: Sequence[Step], cfg: CfgNode) -> str:
    """One line per step (``done`` or its GPU-hours and basis) and the total still to run."""
    from tabulate import tabulate

    rows, total, unknown = [], 0.0, 0
    for s in steps:
        if s.done():
            rows.append([s.key, "done", ""])
            continue
        hours, basis = estimate(s, cfg)
        total += hours or 0.0
        unknown += hours is None
        rows.append([s.key, "?" if hours is None else f"{hours:.1f}", basis])
    rows.append(["total (steps to run)", f"{total:.1f}" + (f" + {unknown} not estimated" if unknown else ""), ""])
    return tabulate(rows, ["step", "GPU-h", "basis"], tablefmt="simple", disable_numparse=True) + \
        "\nGPU-hours on V100 from published timings (benchmarks/pipeline/preflight.py); " \
        "estimates of the order of magnitude, not measurements of this machine"


@contextlib.contextmanager
def env_for_checks(cfg: CfgNode) -> Iterator[None]:
    """Point $SIAMBENCH_SYNTH at the pipeline's synthetic root, as the steps will see it,
    for the checks inside the block only (the caller's environment is restored after)."""
    before = os.environ.get("SIAMBENCH_SYNTH")
    if cfg.SYNTH.ENABLED:
        os.environ["SIAMBENCH_SYNTH"] = str(synth_root(cfg).resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SIAMBENCH_SYNTH", None)
        else:
            os.environ["SIAMBENCH_SYNTH"] = before
