"""Where pipeline steps run: the :class:`Launcher` interface and its SLURM implementation."""
from .base import JobHandle, JobState, JobStatus, Launcher, LauncherError, Resources
from .slurm import SlurmLauncher

__all__ = ["JobHandle", "JobState", "JobStatus", "Launcher", "LauncherError", "Resources", "SlurmLauncher"]
