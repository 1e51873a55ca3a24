"""Distributed setup from the environment: torchrun, SLURM, or a single process.

``init_distributed_mode`` reads the variables the launcher sets (torchrun:
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; SLURM: ``SLURM_PROCID``/``SLURM_NTASKS``/
``SLURM_LOCALID``) and initialises ``torch.distributed`` with NCCL on GPU and gloo
on CPU. All other helpers query ``torch.distributed`` itself, so there is no
module-level state to keep in sync and they work unchanged in a single process.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import subprocess
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed_mode",
    "is_dist_avail_and_initialized",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_mean",
    "all_gather_cat",
    "broadcast_object",
    "cleanup",
    "slurm_master_addr",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def slurm_master_addr() -> str:
    """First host of the SLURM allocation, the rendezvous host when MASTER_ADDR is unset."""
    nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        hosts = out.stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        hosts = []
    if not hosts:
        raise RuntimeError(
            f"SLURM job without MASTER_ADDR and `scontrol show hostnames {nodelist!r}` gave no host; "
            "export MASTER_ADDR (and MASTER_PORT) in the sbatch script"
        )
    return hosts[0]


def _env_rank_world() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun or SLURM variables, or None when not launched."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local = int(os.environ.get("SLURM_LOCALID", 0))
        # env:// rendezvous reads these; fill them from SLURM so torch.distributed finds them.
        os.environ.setdefault("MASTER_ADDR", slurm_master_addr())
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
        return rank, world, local
    return None


def init_distributed_mode(backend: str | None = None, device: str = "auto", timeout_min: int = 30) -> DistInfo:
    """Initialise the process group if launched by torchrun/SLURM; return this process's place.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; by default NCCL when CUDA is used, gloo otherwise.
        device: ``"auto"`` (CUDA if available), ``"cuda"`` or ``"cpu"``.
        timeout_min: collective timeout; generous because rank 0 also writes checkpoints.

    Returns:
        The rank, world size, local rank and the device this process should use.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; use MODEL.DEVICE cpu")
    found = _env_rank_world()
    rank, world, local = found if found is not None else (0, 1, 0)
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if use_cuda else "gloo")
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank,
                                timeout=datetime.timedelta(minutes=timeout_min))
        logger.info("distributed init: rank %d/%d (local %d), backend %s", rank, world, local, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor:
    """Mean of ``value`` over all ranks (a copy; identity in a single process)."""
    t = torch.as_tensor(value, dtype=torch.float64).clone()
    if is_dist_avail_and_initialized():
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        t /= get_world_size()
    return t.cpu()


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors from all ranks along dim 0 (no gradient)."""
    if not is_dist_avail_and_initialized():
        return t
    out = [torch.empty_like(t) for _ in range(get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist_avail_and_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()
