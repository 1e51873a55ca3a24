"""The steps of a pipeline: which ``siambench`` command, when it is done, what it needs.

:func:`build_steps` turns a loaded pipeline config into an ordered list of
:class:`Step` s. Layout under ``OUTPUT_DIR``::

    synth/ (or SYNTH.ROOT)              siambench data synth        done: synth.json
    <entry>/pretrain/model_final.pth     siambench pretrain|supervised (random_init: 0 epochs)
    <entry>/knn/knn_results.json         siambench knn
    <entry>/lincls/lincls_results.json   siambench lincls
    <entry>/convert/model.pkl            siambench convert
    <entry>/transfer/<task>/trial*/results.json   siambench transfer (status complete)
    logs/<entry>.<step>.log              each step's output

A step is done when its output file exists and is complete; all writers use atomic
writes, so existence means complete (transfer trials carry ``status``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fvcore.common.config import CfgNode

from siambench.pretrain.utils.paths import is_unlabelled_root

from .pipeline_config import METHOD_KINDS, PRETRAIN_KINDS, entry_tasks, resolve_path

__all__ = ["Step", "build_steps", "complete_trials", "eval_notes", "synth_root", "PLAN_COLUMNS"]

logger = logging.getLogger("siambench.run")

PLAN_COLUMNS = ("pretrain", "knn", "lincls", "convert")  # then one column per transfer task


@dataclass
class Step:
    """One subprocess of the pipeline."""

    key: str  # unique, e.g. "simsiam/lincls"; the pipeline_state.json key
    entry: str  # entry name ("" for the dataset step)
    name: str  # plan column: data | pretrain | knn | lincls | convert | transfer:<task>
    argv: list[str]  # arguments of `siambench`, e.g. ["lincls", "--config-file", ...]
    done: Callable[[], bool]
    deps: tuple[str, ...] = ()  # keys that must be done first
    nproc: int = 1  # > 1: launched with torchrun
    outputs: list[Path] = field(default_factory=list)  # what "done" looks at (for messages)
    out_dir: Path | None = None  # the directory the step writes (removed by `siambench run --force`)
    kind: str = ""  # the entry's KIND for pretrain steps: a 0-epoch random init is not timed like SimSiam

    @property
    def family(self) -> str:
        """Steps of one family take about as long (used for the ETA)."""
        return f"{self.name}:{self.kind}" if self.kind else self.name


def complete_trials(task_dir: Path) -> int:
    """Number of ``trial*/results.json`` under ``task_dir`` with ``status: complete``."""
    n = 0
    for path in sorted(task_dir.glob("trial*/results.json")):
        try:
            n += json.loads(path.read_text(encoding="utf-8")).get("status") == "complete"
        except (OSError, ValueError, AttributeError):
            continue
    return n


def _exists(path: Path) -> Callable[[], bool]:
    return lambda: path.is_file()


def _str_opts(opts) -> list[str]:
    """YAML gives ints/bools/lists; the commands take KEY VALUE strings (yacs literal-evals them)."""
    return [str(o) for o in opts]


def _shared_opts(cfg: CfgNode, data_root: str) -> list[str]:
    """Keys every pretraining/eval command shares (docs/design.md), set once by the pipeline."""
    opts = ["MODEL.ARCH", cfg.MODEL.ARCH]
    if cfg.MODEL.WIDTH != 64:  # only when narrowed: the argv of torchvision-width runs stays as before
        opts += ["MODEL.WIDTH", str(cfg.MODEL.WIDTH)]
    if data_root:
        opts += ["DATA.ROOT", data_root]
    if cfg.DATA.IMAGE_SIZE > 0:
        opts += ["DATA.IMAGE_SIZE", str(cfg.DATA.IMAGE_SIZE)]
    if cfg.DATA.NUM_WORKERS >= 0:
        opts += ["DATA.NUM_WORKERS", str(cfg.DATA.NUM_WORKERS)]
    return opts


def _unlabelled_root(opts, data_root: str) -> str:
    """The DATA.ROOT an evaluation step would read (its own in OPTS, else the pipeline's) when it
    holds unlabelled images (pretraining on one's own photos), else ''."""
    own = [str(v) for k, v in zip(list(opts)[0::2], list(opts)[1::2]) if k == "DATA.ROOT"]
    root = own[-1] if own else data_root
    return root if root and is_unlabelled_root(root) else ""


def eval_notes(cfg: CfgNode) -> list[str]:
    """One note per evaluation left out for want of labels (shown with the plan and the tables)."""
    notes = []
    for step in ("KNN", "LINCLS"):
        root = _unlabelled_root(cfg.EVAL[step].OPTS, cfg.DATA.ROOT)
        if cfg.EVAL[step].ENABLED and root:
            notes.append(f"{'kNN' if step == 'KNN' else 'linear'} evaluation left out: DATA.ROOT {root} holds "
                         f"unlabelled images; give it a labelled split with EVAL.{step}.OPTS [DATA.ROOT, DIR]")
    return notes


def _labelled(opts, data_root: str, key: str) -> bool:
    """Whether an evaluation step has labels to read; a step without is left out, with a warning."""
    root = _unlabelled_root(opts, data_root)
    if root:
        logger.warning("%s left out: DATA.ROOT %s holds unlabelled images; give the evaluation a labelled "
                       "split with [DATA.ROOT, DIR] in its EVAL.*.OPTS", key, root)
    return not root


def synth_root(cfg: CfgNode) -> Path:
    """Where the synthetic dataset of a pipeline lives (SYNTH.ROOT, default OUTPUT_DIR/synth)."""
    return Path(cfg.SYNTH.ROOT or Path(cfg.OUTPUT_DIR) / "synth")


def _config(path: str) -> str:
    return str(resolve_path(path))


def build_steps(cfg: CfgNode) -> list[Step]:
    """All steps of a pipeline in run order (every step after the steps it depends on)."""
    out = Path(cfg.OUTPUT_DIR)
    steps: list[Step] = []
    data_root = cfg.DATA.ROOT
    data_deps: tuple[str, ...] = ()
    if cfg.SYNTH.ENABLED:
        root = synth_root(cfg)
        steps.append(Step("synth", "", "data", ["data", "synth", "--out", str(root), *_str_opts(cfg.SYNTH.ARGS)],
                          _exists(root / "synth.json"), outputs=[root / "synth.json"], out_dir=root))
        data_root = data_root or str(root / "imagefolder")
        data_deps = ("synth",)
    shared = _shared_opts(cfg, data_root)

    for name, e in cfg.ENTRIES.items():
        d = out / name
        label = e.LABEL or name
        ckpt: Path | None = None  # pretraining checkpoint (.pth) to evaluate and convert
        pkl: Path | None = None  # detectron2 weights for transfer
        ckpt_deps: tuple[str, ...] = data_deps
        if e.KIND in PRETRAIN_KINDS:
            command = "supervised" if e.KIND == "supervised" else "pretrain"
            method = ["MODEL.METHOD", e.KIND] if e.KIND in METHOD_KINDS[1:] else []  # the row's kind is what runs
            ckpt = d / "pretrain" / "model_final.pth"
            # random init: the model as built (seeded) and saved before any step, without the kNN monitor
            untrained = ["SOLVER.EPOCHS", "0", "MONITOR.KNN_PERIOD", "0"] if e.KIND == "random_init" else []
            steps.append(Step(f"{name}/pretrain", name, "pretrain",
                              [command, "--config-file", _config(e.CONFIG), "--resume", "auto", *shared,
                               *_str_opts(e.OPTS), *method, *untrained, "OUTPUT_DIR", str(d / "pretrain")],
                              _exists(ckpt), data_deps, 1 if e.KIND == "random_init" else cfg.NUM_GPUS, [ckpt],
                              d / "pretrain", e.KIND))
            ckpt_deps = (f"{name}/pretrain",)
        elif e.KIND == "checkpoint":
            given = resolve_path(e.CHECKPOINT)
            if given.suffix == ".pkl":  # already detectron2 weights: transfer only
                pkl = given
            else:
                ckpt, ckpt_deps = given, ()

        if ckpt is not None and e.EVAL:
            if cfg.EVAL.KNN.ENABLED and _labelled(cfg.EVAL.KNN.OPTS, data_root, f"{name}/knn"):
                res = d / "knn" / "knn_results.json"
                steps.append(Step(f"{name}/knn", name, "knn",
                                  ["knn", "--config-file", _config(cfg.EVAL.KNN.CONFIG), *shared,
                                   *_str_opts(cfg.EVAL.KNN.OPTS), "MODEL.WEIGHTS", str(ckpt),
                                   "OUTPUT_DIR", str(d / "knn")],
                                  _exists(res), ckpt_deps + data_deps, 1, [res], d / "knn"))
            if cfg.EVAL.LINCLS.ENABLED and _labelled(cfg.EVAL.LINCLS.OPTS, data_root, f"{name}/lincls"):
                res = d / "lincls" / "lincls_results.json"
                steps.append(Step(f"{name}/lincls", name, "lincls",
                                  ["lincls", "--config-file", _config(cfg.EVAL.LINCLS.CONFIG), "--resume", "auto",
                                   *shared, *_str_opts(cfg.EVAL.LINCLS.OPTS), "MODEL.WEIGHTS", str(ckpt),
                                   "OUTPUT_DIR", str(d / "lincls")],
                                  _exists(res), ckpt_deps + data_deps, cfg.NUM_GPUS, [res], d / "lincls"))
        transfer_deps: tuple[str, ...] = data_deps
        tasks = entry_tasks(cfg, name)
        if ckpt is not None and tasks:
            pkl = d / "convert" / "model.pkl"
            argv = ["convert", str(ckpt), str(pkl)]
            argv += ["--format", e.CONVERT_FORMAT] if e.CONVERT_FORMAT else []
            argv += ["--verify"] if cfg.CONVERT.VERIFY else []
            steps.append(Step(f"{name}/convert", name, "convert", argv, _exists(pkl), ckpt_deps, 1, [pkl],
                              d / "convert"))
            transfer_deps = (f"{name}/convert",) + data_deps
        weights = "scratch" if e.KIND == "scratch" else str(pkl)
        for task, trials in tasks:
            task_dir = d / "transfer" / task
            what = ["--dataset", f"{task}={cfg.DATASETS[task]}"] if task in cfg.DATASETS else ["--task", task]
            argv = ["transfer", *what, "--weights", weights, "--trials", str(trials), "--label", label]
            if cfg.NUM_GPUS > 1:
                argv += ["--num-gpus", str(cfg.NUM_GPUS)]
            argv += [*_str_opts(cfg.TRANSFER.OPTS), *_str_opts(e.TRANSFER_OPTS), "OUTPUT_DIR", str(task_dir)]
            steps.append(Step(f"{name}/transfer/{task}", name, f"transfer:{task}", argv,
                              lambda task_dir=task_dir, trials=trials: complete_trials(task_dir) >= trials,
                              transfer_deps, 1, [task_dir / "trial*/results.json"], task_dir))
    return steps
