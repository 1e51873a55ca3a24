"""Facts about the running environment, recorded in checkpoints and results."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any


def siambench_version() -> str:
    try:
        return importlib.metadata.version("siambench")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def git_revision() -> str | None:
    """The repository's commit (with ``-dirty``), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return rev.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Versions and devices; small enough to store in every results file."""
    import torch  # lazy: importing this module must not cost torch's ~0.6 GB (light commands)
    import torchvision

    env: dict[str, Any] = {
        "siambench": siambench_version(),
        "git": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    return env
