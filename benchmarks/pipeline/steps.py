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

A transfer task is one step that runs its trials one after the other; with a launcher
(``build_steps(cfg, split_trials=True)``: SLURM) each trial is a step of its own
(``<entry>/transfer/<task>/trial<k>``, ``siambench transfer ... --trial k``), so that the trials
run as jobs at once, in the same directories.

A step is done when its output file exists and is complete; all writers use atomic
writes, so existence means complete (transfer trials carry ``status``).

A step keeps its options as a mapping (config file, ``--flags``, ``KEY VALUE`` overrides):
the checks before launch read it, and :attr:`Step.argv` builds the command line from it in a
fixed order (command and positionals, ``--config-file``, flags, overrides), the order the
recorded fingerprints of earlier runs have. An entry's key that repeats a pipeline-wide one
(say ``MODEL.ARCH`` in its ``OPTS``) replaces its value in place: the key appears once.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from fvcore.common.config import CfgNode

from siambench.pretrain.utils.paths import is_unlabelled_root

from .pipeline_config import METHOD_KINDS, PRETRAIN_KINDS, entry_tasks, resolve_path

__all__ = ["Step", "build_steps", "complete_trials", "eval_notes", "synth_root", "PLAN_COLUMNS"]

logger = logging.getLogger("siambench.run")

PLAN_COLUMNS = ("pretrain", "knn", "lincls", "convert")  # then one column per transfer task


@dataclass
class Step:
    """One subprocess of the pipeline: a ``siambench`` command, its config file, flags and overrides.

    The options stay a mapping (``flags``, ``opts``) that the checks read; :attr:`argv` builds
    the command line only to launch, describe or record the step.
    """

    key: str  # unique, e.g. "simsiam/lincls"; the pipeline_state.json key
    entry: str  # entry name ("" for the dataset step)
    name: str  # plan column: data | pretrain | knn | lincls | convert | transfer:<task>
    command: list[str]  # the `siambench` command and its positional arguments, e.g. ["convert", CKPT, OUT]
    done: Callable[[], bool]
    deps: tuple[str, ...] = ()  # keys that must be done first
    nproc: int = 1  # > 1: launched with torchrun
    outputs: list[Path] = field(default_factory=list)  # what "done" looks at (for messages)
    out_dir: Path | None = None  # the directory the step writes (removed by `siambench run --force`)
    kind: str = ""  # the entry's KIND for pretrain steps: a 0-epoch random init is not timed like SimSiam
    config_file: str = ""  # --config-file ("" = none: the command's defaults, or a transfer --task's file)
    flags: dict[str, str | None] = field(default_factory=dict)  # "--name": value; None: a switch (--verify)
    opts: dict[str, str] = field(default_factory=dict)  # KEY VALUE config overrides, e.g. "SOLVER.EPOCHS": "2"

    @property
    def family(self) -> str:
        """Steps of one family take about as long (used for the ETA)."""
        return f"{self.name}:{self.kind}" if self.kind else self.name

    @property
    def argv(self) -> list[str]:
        """The arguments of ``siambench``: command, ``--config-file``, flags, then ``KEY VALUE`` pairs."""
        out = list(self.command) + (["--config-file", self.config_file] if self.config_file else [])
        for flag, value in self.flags.items():
            out += [flag] if value is None else [flag, value]
        for key, value in self.opts.items():
            out += [key, value]
        return out

    def options(self) -> dict[str, str]:
        """Every option by name: positionals ``#i`` (after the command), flags (a switch: ``(set)``), keys."""
        out = {f"#{i}": arg for i, arg in enumerate(self.command[1:])}
        if self.config_file:
            out["--config-file"] = self.config_file
        out.update({flag: "(set)" if value is None else value for flag, value in self.flags.items()})
        return {**out, **self.opts}


def _complete(results: Path) -> bool:
    """Whether a trial's ``results.json`` says ``status: complete``."""
    try:
        return json.loads(results.read_text(encoding="utf-8")).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def complete_trials(task_dir: Path) -> int:
    """Number of ``trial*/results.json`` under ``task_dir`` with ``status: complete``."""
    return sum(_complete(path) for path in sorted(task_dir.glob("trial*/results.json")))


def _exists(path: Path) -> Callable[[], bool]:
    return lambda: path.is_file()


def _pairs(items: Sequence[Any]) -> dict[str, str]:
    """A YAML ``[KEY, VALUE, ...]`` list (ints, bools, lists) as strings (yacs literal-evals them); last wins."""
    return {str(k): str(v) for k, v in zip(items[0::2], items[1::2])}


def _shared_opts(cfg: CfgNode, data_root: str) -> dict[str, str]:
    """Keys every pretraining/eval command shares (docs/design.md), set once by the pipeline."""
    opts = {"MODEL.ARCH": cfg.MODEL.ARCH}
    if cfg.MODEL.WIDTH != 64:  # only when narrowed: the argv of torchvision-width runs stays as before
        opts["MODEL.WIDTH"] = str(cfg.MODEL.WIDTH)
    if data_root:
        opts["DATA.ROOT"] = data_root
    if cfg.DATA.IMAGE_SIZE > 0:
        opts["DATA.IMAGE_SIZE"] = str(cfg.DATA.IMAGE_SIZE)
    if cfg.DATA.NUM_WORKERS >= 0:
        opts["DATA.NUM_WORKERS"] = str(cfg.DATA.NUM_WORKERS)
    return opts


def _unlabelled_root(opts, data_root: str) -> str:
    """The DATA.ROOT an evaluation step would read (its own in OPTS, else the pipeline's) when it
    holds unlabelled images (pretraining on one's own photos), else ''."""
    root = _pairs(opts).get("DATA.ROOT", data_root)
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


@dataclass
class _Entry:
    """What the steps of one entry share: its name, directory, inputs and the step keys they need."""

    name: str
    e: CfgNode  # ENTRIES.<name>
    d: Path  # OUTPUT_DIR/<name>
    shared: dict[str, str]  # _shared_opts
    data_deps: tuple[str, ...]  # ("synth",) when the dataset is generated first
    ckpt: Path | None = None  # pretraining checkpoint (.pth) to evaluate and convert
    pkl: Path | None = None  # detectron2 weights for transfer
    ckpt_deps: tuple[str, ...] = ()
    split_trials: bool = False  # a step per transfer trial (jobs at once) instead of one per task


def build_steps(cfg: CfgNode, split_trials: bool = False) -> list[Step]:
    """All steps of a pipeline in run order (every step after the steps it depends on); ``split_trials``:
    one step per transfer trial (for a launcher that runs steps as jobs at once)."""
    steps: list[Step] = []
    data_root, data_deps = cfg.DATA.ROOT, ()
    if cfg.SYNTH.ENABLED:
        root = synth_root(cfg)
        steps.append(Step("synth", "", "data", ["data", "synth"], _exists(root / "synth.json"),
                          outputs=[root / "synth.json"], out_dir=root,
                          flags={"--out": str(root), **_pairs(cfg.SYNTH.ARGS)}))
        data_root, data_deps = data_root or str(root / "imagefolder"), ("synth",)
    shared = _shared_opts(cfg, data_root)
    for name, e in cfg.ENTRIES.items():
        en = _Entry(name, e, Path(cfg.OUTPUT_DIR) / name, shared, data_deps, ckpt_deps=data_deps,
                    split_trials=split_trials)
        steps += _pretrain_steps(cfg, en) + _eval_steps(cfg, en) + _transfer_steps(cfg, en)
    return steps


def _pretrain_steps(cfg: CfgNode, en: _Entry) -> list[Step]:
    """The pretraining step of a method / supervised / random_init entry; a checkpoint entry's inputs."""
    e = en.e
    if e.KIND == "checkpoint":
        given = resolve_path(e.CHECKPOINT)
        if given.suffix == ".pkl":  # already detectron2 weights: transfer only
            en.pkl = given
        else:
            en.ckpt, en.ckpt_deps = given, ()
    if e.KIND not in PRETRAIN_KINDS:
        return []
    en.ckpt, en.ckpt_deps = en.d / "pretrain" / "model_final.pth", (f"{en.name}/pretrain",)
    opts = {**en.shared, **_pairs(e.OPTS)}
    if e.KIND in METHOD_KINDS[1:]:  # the row's kind is what runs
        opts["MODEL.METHOD"] = e.KIND
    if e.KIND == "random_init":  # the model as built (seeded) and saved before any step, without the kNN monitor
        opts.update({"SOLVER.EPOCHS": "0", "MONITOR.KNN_PERIOD": "0"})
    opts["OUTPUT_DIR"] = str(en.d / "pretrain")
    return [Step(f"{en.name}/pretrain", en.name, "pretrain", ["supervised" if e.KIND == "supervised" else "pretrain"],
                 _exists(en.ckpt), en.data_deps, 1 if e.KIND == "random_init" else cfg.NUM_GPUS, [en.ckpt],
                 en.d / "pretrain", e.KIND, config_file=_config(e.CONFIG), flags={"--resume": "auto"}, opts=opts)]


def _eval_steps(cfg: CfgNode, en: _Entry) -> list[Step]:
    """kNN and linear evaluation of the entry's encoder (when it has one and EVAL is on)."""
    if en.ckpt is None or not en.e.EVAL:
        return []
    steps = []
    for name, node, nproc, flags in (("knn", cfg.EVAL.KNN, 1, {}),
                                     ("lincls", cfg.EVAL.LINCLS, cfg.NUM_GPUS, {"--resume": "auto"})):
        if not node.ENABLED or not _labelled(node.OPTS, en.shared.get("DATA.ROOT", ""), f"{en.name}/{name}"):
            continue
        res = en.d / name / f"{name}_results.json"
        opts = {**en.shared, **_pairs(node.OPTS), "MODEL.WEIGHTS": str(en.ckpt), "OUTPUT_DIR": str(en.d / name)}
        steps.append(Step(f"{en.name}/{name}", en.name, name, [name], _exists(res), en.ckpt_deps + en.data_deps,
                          nproc, [res], en.d / name, config_file=_config(node.CONFIG), flags=flags, opts=opts))
    return steps


def _transfer_steps(cfg: CfgNode, en: _Entry) -> list[Step]:
    """The conversion to detectron2 weights (if the entry has a checkpoint) and one step per task."""
    e, steps = en.e, []
    tasks = entry_tasks(cfg, en.name)
    transfer_deps = en.data_deps
    if en.ckpt is not None and tasks:
        en.pkl = en.d / "convert" / "model.pkl"
        flags: dict[str, str | None] = {"--format": e.CONVERT_FORMAT} if e.CONVERT_FORMAT else {}
        if cfg.CONVERT.VERIFY:
            flags["--verify"] = None
        steps.append(Step(f"{en.name}/convert", en.name, "convert", ["convert", str(en.ckpt), str(en.pkl)],
                          _exists(en.pkl), en.ckpt_deps, 1, [en.pkl], en.d / "convert", flags=flags))
        transfer_deps = (f"{en.name}/convert",) + en.data_deps
    weights = "scratch" if e.KIND == "scratch" else str(en.pkl)
    for task, trials in tasks:
        task_dir = en.d / "transfer" / task
        what = {"--dataset": f"{task}={cfg.DATASETS[task]}"} if task in cfg.DATASETS else {"--task": task}
        flags = {**what, "--weights": weights, "--trials": str(trials), "--label": e.LABEL or en.name}
        if cfg.NUM_GPUS > 1:
            flags["--num-gpus"] = str(cfg.NUM_GPUS)
        per_node = int(cfg.LAUNCHER.SLURM.GPUS_PER_NODE)
        if en.split_trials and per_node and cfg.NUM_GPUS > per_node:  # SLURM: one task per node, launch across them
            flags.update({"--num-gpus": str(per_node), "--dist-url": "slurm"})
        opts = {**_pairs(cfg.TRANSFER.OPTS), **_pairs(e.TRANSFER_OPTS), "OUTPUT_DIR": str(task_dir)}
        step = Step(f"{en.name}/transfer/{task}", en.name, f"transfer:{task}", ["transfer"],
                    lambda task_dir=task_dir, trials=trials: complete_trials(task_dir) >= trials,
                    transfer_deps, 1, [task_dir / "trial*/results.json"], task_dir, flags=flags, opts=opts)
        steps += _trial_steps(step, task_dir, trials) if en.split_trials else [step]
    return steps


def _trial_steps(task: Step, task_dir: Path, trials: int) -> list[Step]:
    """The task step as one step per trial: ``--trial k``, done when ``trial<k>/results.json`` is complete."""
    steps = []
    for k in range(trials):
        results = task_dir / f"trial{k}" / "results.json"
        steps.append(Step(f"{task.key}/trial{k}", task.entry, task.name, task.command,
                          lambda results=results: _complete(results), task.deps, task.nproc, [results],
                          results.parent, flags={**task.flags, "--trial": str(k)}, opts=task.opts))
    return steps
