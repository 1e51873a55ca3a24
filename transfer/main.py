"""``siambench transfer``: fine-tune and evaluate detectron2 detectors from converted weights.

Examples::

    siambench transfer --task voc0712 --weights simsiam_r50.pkl --num-gpus 8
    siambench transfer --task coco --weights scratch --num-gpus 8 --num-machines 2 \\
        --machine-rank 0 --dist-url tcp://host0:29500
    siambench transfer --task synth_voc07 --weights r18.pkl --dry-run SOLVER.IMS_PER_BATCH 2
    siambench transfer --task coco --eval-only --weights runs/transfer/coco/simsiam_r50/trial0/model_final.pth

detectron2 is the engine: its ``launch`` starts the processes (one per GPU, any number of
machines), ``DefaultTrainer`` trains, checkpoints and resumes, its evaluators score. This
module plans the trials (:mod:`siambench.transfer.trials`), resolves the config
(:mod:`siambench.transfer.config`) and records one ``results.json`` per trial. A dataset of
one's own is a task too: ``--dataset NAME=voc:ROOT`` or ``NAME=coco:...`` (:mod:`siambench.transfer.custom`).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from siambench.transfer import d2compat  # noqa: F401  (must precede detectron2 imports)

from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from siambench.pretrain.utils.config import ConfigError, add_config_args, save_config
from siambench.pretrain.utils.errors import MissingFileError, exit_2_on_user_error
from siambench.pretrain.utils.io import atomic_write_json, sha256_file
from siambench.pretrain.utils.run_dir import lock_dir, sweep_temp_files
from siambench.pretrain.utils.dist import slurm_master_addr
from siambench.pretrain.utils.stop import stop_on_signal

from . import datasets
from .backbone_check import prepare_backbone
from .checkpoint import check_weights_file, unreadable_reason
from .custom import SPEC_HELP, CustomDataset, parse_spec, register_custom_datasets
from .custom_protocol import apply_custom
from .config import CONFIG_DIR, default_trials, load_task_config, overrides, resolve_runtime, task_config_path
from .trainer import TransferTrainer, load_model_for_eval
from .trials import SCRATCH, TrialPlan, trial_record, trial_state, write_results

__all__ = ["main", "build_parser", "make_plan"]

logger = logging.getLogger("siambench.transfer")

SCRATCH_OVERLAY = CONFIG_DIR / "overlays" / "scratch.yaml"
CUSTOM_CONFIG = CONFIG_DIR / "Base-Custom.yaml"  # the protocol of `--dataset` tasks (keys from the data)
EVAL_RESULTS = "eval_results.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siambench transfer",
        description="Fine-tune and evaluate Faster/Mask R-CNN from converted weights (detectron2).",
        epilog="examples:\n" + __doc__.split("Examples::", 1)[1].split("\n\n", 2)[1],  # the module docstring's
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", help="configs/transfer/TASK.yaml: voc07, voc0712, coco, coco_2x, coco_fpn, "
                   "coco_fpn_2x, synth_voc07, synth_voc0712, synth_coco")
    p.add_argument("--weights", required=True,
                   help="detectron2 weights (.pkl from `siambench convert`, or a trained .pth with "
                        "--eval-only), or 'scratch' for random init with the scratch recipe")
    p.add_argument("--trials", type=int,
                   help="fine-tuning trials, seeds SEED+k (default: SIAMBENCH.TRIALS, else 5 on VOC07 test, 1 otherwise)")
    p.add_argument("--trial", type=int, metavar="K",
                   help="run trial K of the --trials only (seed SEED+K, OUTPUT_DIR/trialK), locking and logging "
                        "in trialK: the trials of a task as separate jobs at once")
    p.add_argument("--label", help="name of these weights in results and tables (default: file stem)")
    p.add_argument("--dry-run", action="store_true", help="print the merged config and the plan, run nothing")
    p.add_argument("--eval-only", action="store_true", help="evaluate --weights (a trained model) only")
    p.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per machine")
    p.add_argument("--num-machines", type=int, default=1, help="machines in the job")
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's rank (0 is the master)")
    p.add_argument("--dist-url", default="auto",
                   help="rendezvous URL, e.g. tcp://host0:29500 (default 'auto': a free local port; one machine); "
                        "'slurm': one srun task per node, machines, rank and rendezvous from the SLURM job")
    p.add_argument("--resume", action="store_true",
                   help="resume interrupted trials from their last checkpoint (always done; accepted as in "
                        "detectron2's train_net.py)")
    p.add_argument("--dataset", metavar="SPEC", help="your own dataset as the task (configs/transfer/Base-Custom.yaml, "
                   f"or --config-file): {SPEC_HELP}; classes, masks and schedule from the data")
    add_config_args(p, "OUTPUT_DIR runs/x SOLVER.MAX_ITER 100")  # --config-file (instead of --task) + KEY VALUE overrides
    return p


def _label(weights: str) -> str:
    return SCRATCH if weights == SCRATCH else Path(weights).stem


def _check_weights_override(args: argparse.Namespace) -> None:
    """``--weights`` names what is loaded; a ``MODEL.WEIGHTS`` override that disagrees is refused
    (the plan and the results would say one file while detectron2 loads another, or none)."""
    value = overrides(args.opts).get("MODEL.WEIGHTS")
    if value is None or value.strip("'\"") == "":
        if value is not None and args.weights != SCRATCH:  # MODEL.WEIGHTS "" with real --weights
            raise ConfigError(f"MODEL.WEIGHTS '' contradicts --weights {args.weights}; drop the MODEL.WEIGHTS "
                              "override (--weights scratch trains from random init)")
        return
    if args.weights == SCRATCH:
        raise ConfigError(f"--weights scratch contradicts MODEL.WEIGHTS {value}: pass --weights {value} to fine-tune "
                          "from that file, or drop MODEL.WEIGHTS to train from scratch")
    if Path(value).resolve() != Path(args.weights).resolve():
        raise ConfigError(f"MODEL.WEIGHTS {value} contradicts --weights {args.weights}; --weights names the "
                          "weights (and the label of the results): drop the MODEL.WEIGHTS override")


def _task(args: argparse.Namespace) -> tuple[Path, str, CustomDataset | None]:
    """(config file, task name, declared dataset or None) of ``--task`` / ``--config-file`` / ``--dataset``."""
    dataset = parse_spec(args.dataset) if args.dataset else None
    if not args.task and not args.config_file and not dataset:
        raise ConfigError("give --task NAME (configs/transfer/NAME.yaml), --dataset SPEC or --config-file FILE")
    config_file = (Path(args.config_file) if args.config_file else task_config_path(args.task) if args.task
                   else CUSTOM_CONFIG)
    return config_file, args.task or (dataset.name if dataset else config_file.stem), dataset


def slurm_machines(env: Mapping[str, str]) -> tuple[int, int, str]:
    """(--num-machines, --machine-rank, --dist-url) of ``--dist-url slurm`` in a SLURM step of one task per
    node: SLURM_NNODES, SLURM_NODEID, and tcp:// to MASTER_ADDR (else the step's first node, as
    pretraining finds it) on MASTER_PORT (the pipeline sets one per step).

    Raises:
        ConfigError: not in a SLURM job step, or no MASTER_PORT.
    """
    missing = [k for k in ("SLURM_NNODES", "SLURM_NODEID", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise ConfigError(f"--dist-url slurm: {', '.join(missing)} unset; run it as one srun task per node of a "
                          "SLURM job with MASTER_PORT exported, or pass --num-machines/--machine-rank/--dist-url")
    host = env.get("MASTER_ADDR") or slurm_master_addr()
    return int(env["SLURM_NNODES"]), int(env["SLURM_NODEID"]), f"tcp://{host}:{int(env['MASTER_PORT'])}"


def make_plan(args: argparse.Namespace, cuda_available: bool | None = None) -> TrialPlan:
    """Resolve the config and everything the run will do, without training.

    Raises:
        ConfigError: unknown task/keys, bad overrides, bad GPU/machine arguments.
        MissingFileError: the weights file does not exist.
    """
    config_file, task, dataset = _task(args)
    scratch = args.weights == SCRATCH
    if scratch and args.eval_only:
        raise ConfigError("--eval-only needs trained --weights, not 'scratch'")
    _check_weights_override(args)
    weights_sha256 = None
    if not scratch:
        if not Path(args.weights).is_file():
            raise MissingFileError(f"--weights {args.weights}: no such file; create it with `siambench convert "
                                    "CHECKPOINT OUT.pkl`, or pass 'scratch'")
        weights_sha256 = sha256_file(args.weights)
    if args.num_gpus < 1 or args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise ConfigError(f"need --num-gpus >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines; "
                          f"got {args.num_gpus}, {args.num_machines}, {args.machine_rank}")
    world_size = args.num_gpus * args.num_machines
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    dry_run_notes = []
    if world_size > 1 and not cuda_available:
        if not args.dry_run:
            raise ConfigError(f"--num-gpus {args.num_gpus} x --num-machines {args.num_machines} needs CUDA GPUs; "
                              "without them run one process (--num-gpus 1) on CPU")
        dry_run_notes.append("dry run planned for GPUs that this machine does not have")
        cuda_available = True
    if args.num_machines > 1 and args.dist_url == "auto":
        raise ConfigError("--dist-url auto works on one machine only; pass --dist-url tcp://MASTER:PORT")

    cfg, scaling = load_task_config(config_file, args.opts, overlays=[SCRATCH_OVERLAY] if scratch else [])
    if dataset is not None:  # the task is this dataset: declared in the config, so every process registers it
        cfg.SIAMBENCH.CUSTOM.DATASETS = [*cfg.SIAMBENCH.CUSTOM.DATASETS, dataset.spec]
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (dataset.train_name,), (dataset.test_name,)
    data_notes = apply_custom(cfg, args.opts)  # classes, masks, schedule of a declared dataset
    if not scratch:
        cfg.MODEL.WEIGHTS = str(Path(args.weights).resolve())
    label = args.label or _label(args.weights)
    if not cfg.OUTPUT_DIR:
        cfg.OUTPUT_DIR = str(Path("runs") / "transfer" / task / label)
    if len(cfg.DATASETS.TEST) != 1:
        raise ConfigError(f"DATASETS.TEST must name exactly one test set (one results.json per trial), "
                          f"got {list(cfg.DATASETS.TEST)}")
    notes = data_notes + resolve_runtime(cfg, world_size, cuda_available) + dry_run_notes
    trials = args.trials if args.trials is not None else default_trials(cfg)
    if trials < 1:
        raise ConfigError(f"--trials / SIAMBENCH.TRIALS must be >= 1, got {trials}")
    cfg.freeze()
    return TrialPlan(task=task, label=label, weights=args.weights, weights_sha256=weights_sha256, cfg=cfg,
                     trials=trials, scaling=scaling, runtime_notes=notes, num_gpus=args.num_gpus,
                     num_machines=args.num_machines, eval_only=args.eval_only)


_LOGGERS = {"detectron2": "d2", "fvcore": "fvcore", "siambench.transfer": "transfer"}


@contextlib.contextmanager
def _logging_to(output_dir: Path) -> Iterator[None]:
    """Console (rank 0) + ``output_dir/log.txt`` (``.rankN`` for other ranks) for this run only.

    The file handler is removed afterwards, so several runs in one process (pipelines,
    tests) do not write into each other's logs.
    """
    rank = comm.get_rank()
    for name, abbrev in _LOGGERS.items():
        setup_logger(None, distributed_rank=rank, name=name, abbrev_name=abbrev)  # console, once per process
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / ("log.txt" if rank == 0 else f"log.txt.rank{rank}"), mode="a")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", "%m/%d %H:%M:%S"))
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _drop_models(tdir: Path) -> None:
    """SIAMBENCH.KEEP_FINAL_MODEL False: remove the trial's periodic weights (model_*.pth; model_final.pth
    was not written) and ``last_checkpoint``, which would name a file that is gone."""
    removed = [p for p in (*tdir.glob("model_*.pth"), tdir / "last_checkpoint") if p.is_file()]
    for path in removed:
        path.unlink()
    logger.info("SIAMBENCH.KEEP_FINAL_MODEL False: removed %s", ", ".join(p.name for p in removed) or "nothing")


def _run_trial(plan: TrialPlan, k: int) -> dict[str, Any] | None:
    """Train + evaluate trial ``k`` (in every process); the record on rank 0, None if skipped."""
    state = trial_state(plan, k)
    tdir = plan.trial_dir(k)
    if state == "complete":
        logger.info("trial %d: complete in %s (same config and weights), skipping", k, tdir)
        return None
    cfg = plan.trial_cfg(k)
    logger.info("trial %d: %s, seed %d -> %s", k, "resuming from the last checkpoint" if state == "resume"
                else "starting", cfg.SEED, tdir)
    resumed = state == "resume"
    if comm.is_main_process():
        sweep_temp_files(tdir)  # left by a killed save; the experiment's lock is ours
        save_config(cfg, tdir)
        write_results(tdir / "results.json", trial_record(plan, k, "running", resumed=resumed))
    comm.synchronize()
    seed_all_rng(cfg.SEED + comm.get_rank())
    start = time.perf_counter()
    try:
        trainer = TransferTrainer(cfg)
        trainer.resume_or_load(resume=True)  # last readable checkpoint if any, else MODEL.WEIGHTS (or random init)
        with stop_on_signal() as trainer.stop:  # SLURM's stop: a checkpoint of the iteration, StopRequested
            results = trainer.train()  # the evaluation after the last iteration (also of a finished resumed run)
        record = None
        if comm.is_main_process():
            if not results:
                raise RuntimeError(f"trial {k}: detectron2 produced no evaluation results (DATASETS.TEST empty?)")
            # "complete" only when its files load (KEEP_FINAL_MODEL False: the numbers are the result)
            damaged = unreadable_reason(tdir / "model_final.pth") if cfg.SIAMBENCH.KEEP_FINAL_MODEL else None
            if damaged:
                raise RuntimeError(f"trial {k}: the trained model does not load: {damaged}")
            record = trial_record(plan, k, "complete", results, time.perf_counter() - start, resumed=resumed)
            write_results(tdir / "results.json", record)
            logger.info("trial %d: %s", k, _summary(record))
            if not cfg.SIAMBENCH.KEEP_FINAL_MODEL:  # periodic checkpoints, once "complete" is on disk
                _drop_models(tdir)
    except BaseException as e:
        if comm.is_main_process():  # never leave "running" behind an error
            reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:500]}"
            write_results(tdir / "results.json", trial_record(plan, k, "failed", None, time.perf_counter() - start,
                                                              resumed=resumed, error=reason))
            logger.error("trial %d failed: %s", k, reason)
        raise
    comm.synchronize()
    return record


def _evaluate(plan: TrialPlan) -> dict[str, Any] | None:
    start = time.perf_counter()
    model = load_model_for_eval(plan.cfg, plan.weights)
    results = TransferTrainer.test(plan.cfg, model)
    record = None
    if comm.is_main_process():
        record = trial_record(plan, None, "complete", results, time.perf_counter() - start)
        atomic_write_json(plan.output_dir / EVAL_RESULTS, record)
        logger.info("evaluation: %s", _summary(record))
    return record


def _summary(record: dict[str, Any]) -> str:
    return "; ".join(f"{task} " + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a"
                                            for k, v in m.items() if k in ("AP", "AP50", "AP75"))
                     for task, m in record["results"].items())


def run(plan: TrialPlan, trial: int | None = None) -> list[dict[str, Any]]:
    """Run the plan in this process (called by detectron2's ``launch`` on every rank): every trial, or
    ``trial`` only (then it locks and logs in that trial's directory: other trials may run at once)."""
    datasets.register_datasets()  # launch's workers are fresh processes: register in each
    register_custom_datasets(plan.cfg.SIAMBENCH.CUSTOM.DATASETS)
    own = plan.output_dir if trial is None else plan.trial_dir(trial)
    if comm.is_main_process():
        lock_dir(own)  # one process per OUTPUT_DIR, or per trial directory (held until this process ends)
        sweep_temp_files(own)
    with _logging_to(own):
        if comm.is_main_process():
            logger.info("plan:\n%s", plan.describe())
            save_config(plan.cfg, plan.output_dir)  # atomic: trials running at once write the same file
        if plan.eval_only:
            record = _evaluate(plan)
            return [record] if record else []
        records = [_run_trial(plan, k) for k in (range(plan.trials) if trial is None else [trial])]
        return [r for r in records if r]


def _check_trial(args: argparse.Namespace, plan: TrialPlan) -> list[int]:
    """The trial indices this run trains: ``--trial K`` (checked against the plan), else all."""
    if args.trial is None:
        return list(range(plan.trials))
    if plan.eval_only or not 0 <= args.trial < plan.trials:
        raise ConfigError(f"--trial {args.trial}: give a trial of the {plan.trials} planned (0 to {plan.trials - 1}),"
                          " without --eval-only")
    return [args.trial]


@exit_2_on_user_error("siambench transfer")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.dist_url == "slurm":
        args.num_machines, args.machine_rank, args.dist_url = slurm_machines(os.environ)
    datasets.register_datasets()
    plan = make_plan(args)
    trials = _check_trial(args, plan)  # before anything is written
    plan, warnings = prepare_backbone(plan, args.opts, dry_run=args.dry_run)  # refuses weights that do not load
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.dry_run:
        print(plan.cfg.dump())
        print(plan.describe())
        try:
            datasets.check_datasets([*plan.cfg.DATASETS.TRAIN, *plan.cfg.DATASETS.TEST])
        except datasets.DatasetLayoutError as e:
            print(f"warning: {e}")
        return 0
    datasets.check_datasets([*plan.cfg.DATASETS.TRAIN, *plan.cfg.DATASETS.TEST])
    # Refuse before anything is written: a trial of another config, weights that cannot be read
    # (empty, truncated, code-carrying) and malformed annotations (train and test).
    pending = plan.eval_only or any(trial_state(plan, k) != "complete" for k in trials)
    if pending and plan.weights != SCRATCH:
        check_weights_file(plan.weights)
    if pending:
        datasets.validate_annotations([*([] if plan.eval_only else plan.cfg.DATASETS.TRAIN),
                                       *plan.cfg.DATASETS.TEST])
    if plan.world_size == 1:  # in this process: tests and CPU runs need no spawn
        run(plan, args.trial)
    else:
        launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(plan, args.trial))
    return 0


if __name__ == "__main__":
    sys.exit(main())
