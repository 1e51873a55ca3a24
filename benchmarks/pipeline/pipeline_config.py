"""Pipeline files for ``siambench run``: defaults, loading and validation.

A pipeline is a yacs YAML file (``_BASE_`` inheritance, trailing ``KEY VALUE``
overrides) like every other config of the suite. It names *entries* (what to
pre-train, or a baseline) under ``ENTRIES``, and the evaluations and transfer tasks
every entry goes through::

    OUTPUT_DIR: runs/simsiam_in1k
    ENTRIES:
      simsiam_100ep:
        KIND: simsiam
        LABEL: "SimSiam, 100 ep (ours)"
        CONFIG: configs/pretrain/simsiam_r50_100ep.yaml
      supervised: {KIND: supervised, CONFIG: configs/supervised/imagenet_r50_90ep.yaml}
      random_init: {KIND: random_init, CONFIG: configs/pretrain/simsiam_r50_100ep.yaml, TRANSFER_TRIALS: 1}
      scratch: {KIND: scratch}
    TRANSFER:
      TASKS: ["voc07:5", "voc0712:5", "coco:1", "boats:5"]
    DATASETS:  # your own detection datasets, as tasks named by the key (transfer/custom.py)
      boats: "voc:data/boats"

Relative paths are resolved against the current directory, then the repository root.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from fvcore.common.config import CfgNode

from siambench.pretrain.utils import paths
from siambench.pretrain.utils.config import ConfigError, merge_overrides, read_config_chain

from ..launchers.config import add_launcher_config, check_launcher_config

__all__ = ["get_pipeline_defaults", "entry_defaults", "load_pipeline", "parse_task", "resolve_path", "entry_tasks",
           "check_files", "KINDS", "METHOD_KINDS", "PRETRAIN_KINDS", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]
# `siambench pretrain` entries, one KIND per method (pretrain/methods/; a test keeps the lists equal): the
# KIND is also passed as MODEL.METHOD, so a row's kind is always the method that was trained.
METHOD_KINDS = ("simsiam", "moco_v2", "simclr", "byol", "swav")
PRETRAIN_KINDS = (*METHOD_KINDS, "supervised", "random_init")  # kinds with a pretrain step (and a CONFIG)
KINDS = (*PRETRAIN_KINDS, "scratch", "checkpoint")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED = {"synth", "logs", "report", "plots"}  # directories the pipeline itself writes in OUTPUT_DIR
_BUILTIN_TASK_PREFIXES = ("voc", "coco", "synth", "Base")  # a DATASETS name must not shadow a built-in task


def entry_defaults() -> CfgNode:
    """Keys of one ``ENTRIES.<name>`` node (every entry is completed with these)."""
    e = CfgNode()
    # simsiam | moco_v2 | simclr | byol | swav | supervised | random_init | scratch | checkpoint.
    # random_init: the untrained encoder (a 0-epoch `siambench pretrain` of CONFIG: same arch, init
    # and seed) through eval, convert and transfer, the reference row of "does pretraining learn anything".
    e.KIND = "simsiam"
    e.LABEL = ""  # row label in the tables; "" = the entry's name
    # pretraining config (a method, random_init: `siambench pretrain`; supervised: `siambench supervised`)
    e.CONFIG = ""
    e.OPTS = []  # extra KEY VALUE overrides for the pretraining command
    e.CHECKPOINT = ""  # KIND checkpoint: a .pth (any format `siambench convert` reads) or a ready .pkl
    e.CONVERT_FORMAT = ""  # `siambench convert --format`; "" = detect from the checkpoint
    e.EVAL = True  # run the kNN / linear evaluations (ignored for scratch: there is no encoder)
    e.TRANSFER = True  # run transfer for this entry (False: kNN / linear eval only, e.g. a collapse ablation)
    e.TRANSFER_TASKS = []  # this entry's "NAME[:TRIALS]" tasks; [] = the pipeline's TRANSFER.TASKS
    e.TRANSFER_TRIALS = 0  # trials of every task of this entry (e.g. 1 for a reference row); 0 = the tasks' own
    e.TRANSFER_OPTS = []  # extra KEY VALUE overrides for this entry's transfer runs
    return e


def get_pipeline_defaults() -> CfgNode:
    """Defaults: the paper's evaluation protocol for whatever entries a pipeline lists."""
    _C = CfgNode()
    _C.OUTPUT_DIR = "runs/pipeline"  # entry <name> writes OUTPUT_DIR/<name>/{pretrain,knn,lincls,convert,transfer}
    _C.NUM_GPUS = 1  # GPUs per training step: > 1 runs pretrain/supervised/lincls under torchrun
    # Steps run at once when the steps they need are done (each with cores/JOBS torch threads): for
    # CPU machines, where one step does not keep every core busy (the demo: 2 on 2 cores). Keep 1 on GPUs.
    _C.JOBS = 1

    # Every pretraining/eval command gets these keys, so one pipeline sets them uniformly.
    _C.MODEL = CfgNode()
    _C.MODEL.ARCH = "resnet50"  # torchvision ResNet of every entry (the paper: ResNet-50)
    # Stem channels of every entry's ResNet (MODEL.WIDTH of the commands): 64 = torchvision's (the paper's);
    # less only for tiny test models (narrow bottleneck ResNets then need narrow MODEL.RESNETS in TRANSFER.OPTS)
    _C.MODEL.WIDTH = 64
    _C.DATA = CfgNode()
    _C.DATA.ROOT = ""  # ImageFolder root (train/, val/); "" = the command configs' own (SYNTH: its imagefolder)
    _C.DATA.IMAGE_SIZE = 0  # crop size; 0 = the command configs' own (224 in the recipes)
    _C.DATA.NUM_WORKERS = -1  # loader processes per rank; -1 = the command configs' own

    # The built-in synthetic dataset (`siambench data synth`); generated first when ENABLED.
    _C.SYNTH = CfgNode()
    _C.SYNTH.ENABLED = False  # real data by default
    _C.SYNTH.ROOT = ""  # "" = OUTPUT_DIR/synth (a run is self-contained); exported as $SIAMBENCH_SYNTH
    _C.SYNTH.ARGS = []  # extra `siambench data synth` arguments, e.g. ["--num-images", "64"]

    # Names a pipeline adds: ENTRIES.<name> with the keys of entry_defaults().
    _C.ENTRIES = CfgNode(new_allowed=True)

    _C.EVAL = CfgNode()
    _C.EVAL.KNN = CfgNode()
    _C.EVAL.KNN.ENABLED = True  # weighted kNN top-1 of every pretrained encoder
    _C.EVAL.KNN.CONFIG = "configs/knn/imagenet_r50.yaml"  # `siambench knn --config-file`
    _C.EVAL.KNN.OPTS = []  # extra KEY VALUE overrides
    _C.EVAL.LINCLS = CfgNode()
    _C.EVAL.LINCLS.ENABLED = True  # linear evaluation (the paper's Table 4)
    _C.EVAL.LINCLS.CONFIG = "configs/lincls/imagenet_r50.yaml"  # `siambench lincls --config-file`
    _C.EVAL.LINCLS.OPTS = []  # extra KEY VALUE overrides

    _C.CONVERT = CfgNode()
    _C.CONVERT.VERIFY = True  # `siambench convert --verify`: check the .pkl against the checkpoint

    _add_transfer_and_report(_C)
    return _C


def _add_transfer_and_report(_C: CfgNode) -> None:
    """The pipeline keys of transfer, datasets of one's own, the report, the budget and the launcher."""
    _C.TRANSFER = CfgNode()
    # "NAME" or "NAME:TRIALS" with NAME a configs/transfer/NAME.yaml; the paper's Table 5.
    _C.TRANSFER.TASKS = ["voc07:5", "voc0712:5", "coco:1"]
    _C.TRANSFER.TRIALS = 5  # trials of a task without ":TRIALS" (MoCo/SimSiam: VOC means of 5)
    _C.TRANSFER.OPTS = []  # extra KEY VALUE overrides for every transfer run

    # Your own detection datasets: NAME -> "coco:TRAIN_JSON:TRAIN_IMAGES,TEST_JSON:TEST_IMAGES" or
    # "voc:ROOT[:train=SPLIT][:test=SPLIT][:metric=voc07|area][:classes=A+B]"; NAME is then a transfer task
    # (`siambench transfer --dataset NAME=...`) to list in TRANSFER.TASKS beside the built-in ones.
    _C.DATASETS = CfgNode(new_allowed=True)

    _C.REPORT = True  # after the steps: print the table, write tables + report.md/html in OUTPUT_DIR

    # A cost budget the verdict checks (wall time of the steps, bytes they write); 0 = none. Only a pipeline
    # that promises one sets it (the demo: 20 min, 1 GB); other pipelines get no budget claims.
    _C.BUDGET = CfgNode()
    _C.BUDGET.MINUTES = 0.0
    _C.BUDGET.DISK_GB = 0.0

    # Where the steps run: LAUNCHER.NAME local (subprocesses here) or slurm (one batch job per step;
    # LAUNCHER.SLURM.* their resources, time limits and requeues; benchmarks/launchers/config.py).
    add_launcher_config(_C)


def parse_task(spec: str, default_trials: int, key: str = "TRANSFER.TASKS") -> tuple[str, int]:
    """``"voc07:5"`` -> ("voc07", 5); ``"coco"`` -> ("coco", default_trials)."""
    name, _, trials = spec.partition(":")
    if not _NAME_RE.match(name) or (trials and not trials.isdigit()) or (trials and int(trials) < 1):
        raise ConfigError(f"{key}: bad task {spec!r}; write NAME or NAME:TRIALS, e.g. 'voc07:5'")
    return name, int(trials) if trials else default_trials


def resolve_path(path: str) -> Path:
    """A config/checkpoint path: as given if it exists (cwd), else in the shipped configs/
    (checkout or installed wheel, :func:`siambench.pretrain.utils.paths.resolve`)."""
    return paths.resolve(path)


def _check_opts(opts: object, key: str) -> None:
    if not isinstance(opts, (list, tuple)) or len(opts) % 2:
        raise ConfigError(f"{key} must be a list of KEY VALUE pairs, got {opts!r}")


def _check_labels(cfg: CfgNode, source: str) -> None:
    """Labels are table rows: entries share one only as pretraining seeds of one recipe (same KIND and CONFIG,
    a different SEED in OPTS; one of them may leave SEED to its config); the report pools them, a value per seed."""
    groups: dict[str, list[tuple[str, CfgNode]]] = {}
    for name, e in cfg.ENTRIES.items():
        groups.setdefault(e.LABEL or name, []).append((name, e))
    for label, group in groups.items():
        seeds = [str(dict(zip(e.OPTS[0::2], e.OPTS[1::2])).get("SEED", "")) for _, e in group]
        if len(group) > 1 and (len({(e.KIND, e.CONFIG) for _, e in group}) > 1 or group[0][1].KIND not in
                               PRETRAIN_KINDS or len(set(seeds)) < len(seeds)):
            raise ConfigError(f"{source}: entries {[n for n, _ in group]} share the LABEL {label!r}; labels are "
                              "table rows and must be unique, except for pretraining seeds of one recipe (same "
                              "KIND and CONFIG, each with its own [SEED, N] in OPTS; one may keep its config's SEED)")


def _validate(cfg: CfgNode, source: str) -> None:
    if not cfg.ENTRIES:
        raise ConfigError(f"{source}: ENTRIES is empty; add at least one entry, e.g. "
                          "ENTRIES: {{simsiam: {{KIND: simsiam, CONFIG: configs/pretrain/...yaml}}}}")
    for name, e in cfg.ENTRIES.items():
        key = f"ENTRIES.{name}"
        if not _NAME_RE.match(name) or name in _RESERVED:
            raise ConfigError(f"{source}: {key}: entry names become directories; use letters, digits, _ . - "
                              f"and none of {sorted(_RESERVED)}")
        if e.KIND not in KINDS:
            raise ConfigError(f"{source}: {key}.KIND is {e.KIND!r}; choose one of {', '.join(KINDS)}")
        if e.KIND in PRETRAIN_KINDS and not e.CONFIG:
            raise ConfigError(f"{source}: {key}.CONFIG is empty; a {e.KIND} entry needs its pretraining config")
        if e.KIND == "checkpoint" and not e.CHECKPOINT:
            raise ConfigError(f"{source}: {key}.CHECKPOINT is empty; a checkpoint entry needs the file to convert")
        _check_opts(e.OPTS, f"{key}.OPTS")
        _check_opts(e.TRANSFER_OPTS, f"{key}.TRANSFER_OPTS")
        if e.TRANSFER_TRIALS < 0:
            raise ConfigError(f"{source}: {key}.TRANSFER_TRIALS must be >= 0 (0 = the tasks' own), "
                              f"got {e.TRANSFER_TRIALS}")
        own = [parse_task(t, 1, f"{key}.TRANSFER_TASKS")[0] for t in e.TRANSFER_TASKS]
        if len(set(own)) != len(own):
            raise ConfigError(f"{source}: {key}.TRANSFER_TASKS lists a task twice: {list(e.TRANSFER_TASKS)}")
    _check_labels(cfg, source)
    for key, opts in (("EVAL.KNN.OPTS", cfg.EVAL.KNN.OPTS), ("EVAL.LINCLS.OPTS", cfg.EVAL.LINCLS.OPTS),
                      ("TRANSFER.OPTS", cfg.TRANSFER.OPTS)):
        _check_opts(opts, key)
    if not all(str(flag).startswith("--") for flag in cfg.SYNTH.ARGS[0::2]) or len(cfg.SYNTH.ARGS) % 2:
        raise ConfigError(f"{source}: SYNTH.ARGS must be --flag value pairs of `siambench data synth`, "
                          f"e.g. ['--num-images', '64'], got {list(cfg.SYNTH.ARGS)}")
    if cfg.BUDGET.MINUTES < 0 or cfg.BUDGET.DISK_GB < 0:
        raise ConfigError(f"{source}: BUDGET.MINUTES and BUDGET.DISK_GB must be >= 0 (0 = no budget), got "
                          f"{cfg.BUDGET.MINUTES}, {cfg.BUDGET.DISK_GB}")
    if cfg.JOBS < 1:
        raise ConfigError(f"{source}: JOBS must be >= 1, got {cfg.JOBS}")
    if cfg.JOBS > 1 and cfg.NUM_GPUS > 1:
        raise ConfigError(f"{source}: JOBS {cfg.JOBS} with NUM_GPUS {cfg.NUM_GPUS}: parallel steps would share the GPUs; "
                          "set JOBS 1 (JOBS is for CPU pipelines)")
    if cfg.NUM_GPUS < 1:
        raise ConfigError(f"{source}: NUM_GPUS must be >= 1, got {cfg.NUM_GPUS}")
    if cfg.TRANSFER.TRIALS < 1:
        raise ConfigError(f"{source}: TRANSFER.TRIALS must be >= 1, got {cfg.TRANSFER.TRIALS}")
    tasks = [parse_task(t, cfg.TRANSFER.TRIALS)[0] for t in cfg.TRANSFER.TASKS]
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"{source}: TRANSFER.TASKS lists a task twice: {list(cfg.TRANSFER.TASKS)}")
    for name, spec in cfg.DATASETS.items():
        if not isinstance(spec, str) or not spec.startswith(("coco:", "voc:")) or not _NAME_RE.match(name) \
                or not name[0].isalpha() or name.startswith(_BUILTIN_TASK_PREFIXES):
            raise ConfigError(f"{source}: DATASETS.{name}: write NAME: \"coco:TRAIN_JSON:TRAIN_IMAGES,TEST_JSON:"
                              "TEST_IMAGES\" or NAME: \"voc:ROOT\" (transfer/custom.py), with a NAME that starts "
                              f"with a letter and not with {', '.join(_BUILTIN_TASK_PREFIXES)}")
    check_launcher_config(cfg, source)


def entry_tasks(cfg: CfgNode, name: str) -> list[tuple[str, int]]:
    """(task, trials) of one entry: its TRANSFER_TASKS or the pipeline's, its TRANSFER_TRIALS applied."""
    e = cfg.ENTRIES[name]
    if not e.TRANSFER:
        return []
    tasks = [parse_task(t, cfg.TRANSFER.TRIALS) for t in (e.TRANSFER_TASKS or cfg.TRANSFER.TASKS)]
    return [(task, e.TRANSFER_TRIALS or trials) for task, trials in tasks]


def check_files(cfg: CfgNode) -> list[str]:
    """Problems with files the pipeline will need (config files, checkpoints), as messages."""
    problems = []
    needed: list[tuple[str, str]] = []
    for name, e in cfg.ENTRIES.items():
        if e.KIND in PRETRAIN_KINDS:
            needed.append((f"ENTRIES.{name}.CONFIG", e.CONFIG))
        if e.KIND == "checkpoint":
            needed.append((f"ENTRIES.{name}.CHECKPOINT", e.CHECKPOINT))
    has_encoder = any(e.KIND != "scratch" and e.EVAL for e in cfg.ENTRIES.values())
    for step in ("KNN", "LINCLS"):
        if cfg.EVAL[step].ENABLED and has_encoder:
            needed.append((f"EVAL.{step}.CONFIG", cfg.EVAL[step].CONFIG))
    tasks = {t for spec in cfg.TRANSFER.TASKS for t in [parse_task(spec, 1)[0]]}
    tasks |= {task for name in cfg.ENTRIES for task, _ in entry_tasks(cfg, name)}
    for task in sorted(tasks - set(cfg.DATASETS)):  # DATASETS tasks have no config file of their own
        needed.append(("TRANSFER.TASKS", f"configs/transfer/{task}.yaml"))
    for key, path in needed:
        if not path or not resolve_path(path).is_file():
            problems.append(f"{key}: file not found: {path or '(empty)'}")
    return problems


def load_pipeline(path: str | Path, opts: Sequence[str] = ()) -> CfgNode:
    """Load, complete and validate a pipeline file; returns a frozen CfgNode.

    Raises:
        ConfigError: missing file, unknown key, bad entry or override, naming the culprit.
    """
    path = paths.resolve(path)
    if not path.is_file():
        raise ConfigError(f"pipeline file not found: {path} (pipelines live under configs/benchmarks/)")
    cfg = get_pipeline_defaults()
    cfg.set_new_allowed(False)
    cfg.ENTRIES.set_new_allowed(True)  # entry names are the pipeline's own
    cfg.DATASETS.set_new_allowed(True)  # and so are the names of its own datasets
    loaded = CfgNode(read_config_chain(path))  # one line for an empty/list/bad file or a missing _BASE_
    try:
        cfg.merge_from_other_cfg(loaded)
    except KeyError as e:
        raise ConfigError(f"{path}: unknown config key {e}; check the spelling against "
                          "benchmarks/pipeline/pipeline_config.py") from e
    except Exception as e:  # yaml errors, type mismatches
        raise ConfigError(f"{path}: {e}") from e
    for name in list(cfg.ENTRIES):
        entry = cfg.ENTRIES[name]
        if not isinstance(entry, CfgNode):
            raise ConfigError(f"{path}: ENTRIES.{name} must be a mapping of entry keys (KIND, CONFIG, ...)")
        full = entry_defaults()
        try:
            full.merge_from_other_cfg(entry)
        except KeyError as e:
            raise ConfigError(f"{path}: ENTRIES.{name}: unknown key {e}; entry keys are "
                              f"{', '.join(entry_defaults())}") from e
        except Exception as e:
            raise ConfigError(f"{path}: ENTRIES.{name}: {e}") from e
        cfg.ENTRIES[name] = full
    cfg.set_new_allowed(False)
    merge_overrides(cfg, opts)
    _validate(cfg, str(path))
    cfg.freeze()
    return cfg
