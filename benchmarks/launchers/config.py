"""The ``LAUNCHER`` section of a pipeline file: where ``siambench run`` runs its steps.

``add_launcher_config(cfg)`` adds the keys with their defaults, ``check_launcher_config`` checks
them (ConfigError naming the key and the fix), ``build_slurm_launcher`` makes the SLURM launcher and
``slurm_resources`` the resources of one step from them.
"""
from __future__ import annotations

from fvcore.common.config import CfgNode

from siambench.pretrain.utils.config import ConfigError

from .base import Resources
from .slurm import SlurmLauncher

__all__ = ["add_launcher_config", "check_launcher_config", "build_slurm_launcher", "slurm_resources", "LAUNCHERS"]

LAUNCHERS = ("local", "slurm")


def add_launcher_config(cfg: CfgNode) -> CfgNode:
    """Add ``cfg.LAUNCHER`` (defaults: local steps; the SLURM keys used with ``NAME slurm``)."""
    cfg.LAUNCHER = CfgNode()
    # local: every step a subprocess of `siambench run` on this machine (JOBS at once);
    # slurm: every step a SLURM batch job (sbatch), up to SLURM.MAX_JOBS at once.
    cfg.LAUNCHER.NAME = "local"
    s = cfg.LAUNCHER.SLURM = CfgNode()
    s.PARTITION = ""  # sbatch --partition; "" = the cluster's default partition
    s.ACCOUNT = ""  # sbatch --account; "" = the user's default account
    s.QOS = ""  # sbatch --qos; "" = the account's default QOS
    # Cap on a step's time limit in minutes (sbatch --time); 0 = the partition's limit. Steps ask
    # their own estimate (pre-flight GPU-hours) up to this cap, and resume if they reach it.
    s.TIME_LIMIT_MIN = 0
    # GPUs per node of a GPU step (sbatch --gpus-per-node); a step on NUM_NODES nodes asks this many
    # on each. 8: the paper's 8-GPU machines. CPU-only steps (convert) ask none.
    s.GPUS_PER_NODE = 8
    # CPUs per GPU (--cpus-per-gpu): the main process and the DataLoader workers of one rank. 10 as MAE's
    # submitit launcher (submitit_pretrain.py: cpus_per_task=10, one task per GPU). CPU steps ask this many.
    s.CPUS_PER_GPU = 10
    # Memory per GPU in GB, an integer (--mem-per-gpu); 40 as MAE's launcher (mem_gb=40 * GPUs per node).
    # CPU steps ask this much.
    s.MEM_PER_GPU_GB = 40
    s.CONSTRAINT = ""  # sbatch --constraint (node features), e.g. "volta32gb"; "" = any node
    s.EXTRA = []  # further sbatch options, each one string "--key=value" or "--flag", e.g. ["--exclusive"]
    s.MAX_JOBS = 0  # steps submitted and not finished at once (pending + running); 0 = no cap
    # Requeues of one step after its time limit or a preemption before it fails with that reason.
    # 3 as submitit's SlurmExecutor (max_num_timeout=3).
    s.MAX_REQUEUES = 3
    # Seconds before the time limit at which SLURM warns a step (sbatch --signal=B:USR1@N): the step gets
    # SIGTERM, ends the epoch it is in (a transfer trial: the iteration) with a checkpoint, and its job
    # is requeued to resume there. Must exceed one epoch of the slowest step, else that epoch is lost
    # (resumed from the previous checkpoint). 120 as MAE's launcher (slurm_signal_delay_s=120).
    s.SIGNAL_DELAY_S = 120
    return cfg


def check_launcher_config(cfg: CfgNode, source: str) -> None:
    """ConfigError (``source``: the pipeline file) for a LAUNCHER value that cannot work."""
    name = cfg.LAUNCHER.NAME
    if name not in LAUNCHERS:
        raise ConfigError(f"{source}: LAUNCHER.NAME {name!r} is not one of {', '.join(LAUNCHERS)}")
    s = cfg.LAUNCHER.SLURM
    for key in ("TIME_LIMIT_MIN", "GPUS_PER_NODE", "CPUS_PER_GPU", "MEM_PER_GPU_GB", "MAX_JOBS", "MAX_REQUEUES",
                "SIGNAL_DELAY_S"):
        value = s[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{source}: LAUNCHER.SLURM.{key} must be an integer >= 0, got {value!r}")
    bad = [o for o in s.EXTRA if not isinstance(o, str) or not o.startswith("--")]
    if bad:
        raise ConfigError(f"{source}: LAUNCHER.SLURM.EXTRA entries are sbatch options written '--key=value', "
                          f"got {bad!r}")
    if s.TIME_LIMIT_MIN and s.SIGNAL_DELAY_S >= s.TIME_LIMIT_MIN * 60:
        raise ConfigError(f"{source}: LAUNCHER.SLURM.SIGNAL_DELAY_S ({s.SIGNAL_DELAY_S} s) must be shorter than "
                          f"TIME_LIMIT_MIN ({s.TIME_LIMIT_MIN} min)")


def build_slurm_launcher(cfg: CfgNode) -> SlurmLauncher:
    """The SLURM launcher of ``cfg.LAUNCHER`` (``NAME slurm``)."""
    s = cfg.LAUNCHER.SLURM
    return SlurmLauncher(max_requeues=s.MAX_REQUEUES, signal_delay_s=s.SIGNAL_DELAY_S, max_jobs=s.MAX_JOBS)


def slurm_resources(cfg: CfgNode, *, nodes: int = 1, gpus: bool = True, tasks_per_node: int = 1,
                    time_min: int = 0) -> Resources:
    """Resources of one step: ``nodes`` x ``GPUS_PER_NODE`` GPUs (``gpus``) or one GPU's share of CPUs
    and memory (CPU steps); ``time_min`` (e.g. the pre-flight estimate) capped by ``TIME_LIMIT_MIN``."""
    s = cfg.LAUNCHER.SLURM
    if s.TIME_LIMIT_MIN:
        time_min = min(time_min, s.TIME_LIMIT_MIN) if time_min else s.TIME_LIMIT_MIN
    shared = {"nodes": nodes, "tasks_per_node": tasks_per_node, "time_min": time_min,
              "partition": s.PARTITION, "account": s.ACCOUNT, "qos": s.QOS, "constraint": s.CONSTRAINT,
              "extra": tuple(s.EXTRA)}
    if gpus:
        return Resources(gpus_per_node=s.GPUS_PER_NODE, cpus_per_gpu=s.CPUS_PER_GPU,
                         mem_per_gpu_gb=s.MEM_PER_GPU_GB, **shared)
    return Resources(cpus_per_task=s.CPUS_PER_GPU, mem_gb=s.MEM_PER_GPU_GB, **shared)
