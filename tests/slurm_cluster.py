"""A real SLURM cluster on this machine for the tests: munged, slurmctld and one or two slurmd.

Everything lives in a temp dir (config, munge key and socket, state, spool, logs, pid files);
the daemons run as root on random free ports, so the machine's own /etc/slurm and munge are
untouched and several sessions can run side by side. Two slurmd on one host (the first named
after the host, the second ``localhost`` with ``NodeHostname=localhost``) make a two-node cluster.
Finished jobs stay visible to ``scontrol show job`` for ``MinJobAge`` seconds and are
appended to ``jobcomp.txt`` (``JobCompType=jobcomp/filetxt``).

The ``slurm_cluster`` fixture (exposed by ``tests/conftest.py``) starts it once per session
and exports ``$SLURM_CONF``; without the binaries it installs Debian's ``slurm-wlm`` and
``munge`` when it runs as root with apt-get, else it skips with one line saying how.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
ENABLE_HINT = "as root: apt-get install -y slurm-wlm munge (.ci/run does it)"
APT_TIMEOUT_S = 600
START_TIMEOUT_S = 60
# The head of a test pipeline file (str.format: {out}, {root} = a synthetic dataset) whose steps run as
# CPU-only jobs of this cluster: a width-8 ResNet-50 on 32-px images, no kNN / linear eval, no verify.
PIPELINE_HEAD = """
OUTPUT_DIR: {out}
MODEL: {{ARCH: resnet50, WIDTH: 8}}
DATA: {{ROOT: {root}/imagefolder, IMAGE_SIZE: 32, NUM_WORKERS: 0}}
LAUNCHER: {{NAME: slurm, SLURM: {{GPUS_PER_NODE: 0, CPUS_PER_GPU: 1, MEM_PER_GPU_GB: 0}}}}
EVAL: {{KNN: {{ENABLED: False}}, LINCLS: {{ENABLED: False}}}}
CONVERT: {{VERIFY: False}}
"""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def missing_binaries() -> list[str]:
    return [b for b in DAEMONS + CLIENTS if _which(b) is None]


def install_with_apt() -> str:
    """Install slurm-wlm and munge (root with apt-get only); returns "" or why it could not."""
    if os.geteuid() != 0 or _which("apt-get") is None:
        return "not root with apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} took over {APT_TIMEOUT_S} s"
        if res.returncode != 0:
            lines = (res.stderr or res.stdout).strip().splitlines()
            return f"{' '.join(cmd)} failed: {lines[-1] if lines else f'exit {res.returncode}'}"
    return ""


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free right now (bound to 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SlurmCluster:
    """A running cluster: ``conf`` is its slurm.conf (exported as ``$SLURM_CONF``)."""

    root: Path
    nodes: tuple[str, ...]
    cpus_per_node: int = 2
    partition: str = "debug"

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster (text output)."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict ({} once the controller forgot the job)."""
        res = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        if res.returncode != 0:
            return {}
        return dict(kv.split("=", 1) for kv in res.stdout.split() if "=" in kv)

    def jobcomp(self) -> list[dict[str, str]]:
        """Finished jobs, from the ``jobcomp/filetxt`` file (one ``key=value ...`` line each)."""
        path = self.root / "jobcomp.txt"
        if not path.exists():
            return []
        return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                for line in path.read_text().splitlines() if line.strip()]

    def write_config(self, hostname: str) -> None:
        r = self.root
        for d in ("state", "log", "munge", *(f"spool/{n}" for n in self.nodes)):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ctld_port, *node_ports = free_ports(1 + len(self.nodes))
        node_lines = [
            f"NodeName={name} NodeHostname={hostname if i == 0 else 'localhost'} NodeAddr=127.0.0.1 "
            f"Port={port} CPUs={self.cpus_per_node} State=UNKNOWN"
            for i, (name, port) in enumerate(zip(self.nodes, node_ports))]
        self.conf.write_text("\n".join([
            "ClusterName=siambench",
            f"SlurmctldHost={hostname}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r}/slurmd.%n.pid",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log'}/slurmd.%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin", "MpiDefault=none",
            "JobCompType=jobcomp/filetxt", f"JobCompLoc={r / 'jobcomp.txt'}",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2", "MinJobAge=600", "InactiveLimit=0",
            "KillWait=30",  # SLURM's default: a stopped step has this long to reach its epoch-end checkpoint
            "SlurmctldTimeout=30", "SlurmdTimeout=30", "MessageTimeout=10",
            "MailProg=/bin/true",
            *node_lines,
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    def start(self) -> None:
        hostname = socket.gethostname().split(".")[0]
        self.write_config(hostname)
        r, munge = self.root, self.root / "munge"
        self._daemon("munged", "--force", f"--socket={munge / 'munge.socket'}", f"--key-file={munge / 'munge.key'}",
                     f"--pid-file={r / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                     f"--seed-file={munge / 'munged.seed'}")
        self._daemon("slurmctld", "-i")
        for name in self.nodes:
            self._daemon("slurmd", "-N", name)
        self.wait_idle()

    def _daemon(self, name: str, *args: str) -> None:
        """Start a daemon (it forks and writes its pid file); RuntimeError with its output and logs."""
        res = subprocess.run([_which(name), *args], env=self.env, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"{name} {' '.join(args)} failed (exit {res.returncode}): "
                               f"{(res.stderr or res.stdout).strip()}\n{self.log_tails()}")

    def wait_idle(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``sinfo`` lists every node idle; RuntimeError with the logs' tails otherwise."""
        deadline = time.monotonic() + timeout
        states = ""
        while time.monotonic() < deadline:
            res = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False, timeout=10)
            states = res.stdout.strip()
            lines = [ln.split() for ln in states.splitlines() if ln.strip()]
            if res.returncode == 0 and len(lines) == len(self.nodes) and all(s == "idle" for _, s in lines):
                return
            time.sleep(0.3)
        raise RuntimeError(f"SLURM cluster in {self.root} not idle after {timeout:.0f} s: sinfo says "
                           f"{states!r}\n{self.log_tails()}")

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel every job, stop the daemons by their pid files (SIGTERM, SIGKILL after 10 s),
        then SIGKILL what the jobs left behind (slurmstepd outlives slurmd): the processes
        whose environment carries this cluster's ``SLURM_CONF``."""
        if (self.root / "slurmctld.pid").exists():
            try:
                self.run("scancel", f"--user={getpass.getuser()}", check=False)
                deadline = time.monotonic() + 15
                while self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip() and time.monotonic() < deadline:
                    time.sleep(0.2)
            except (OSError, subprocess.SubprocessError):
                pass  # a controller that does not answer: its jobs' processes are swept below
        pids = []
        for name in [*(f"slurmd.{n}.pid" for n in self.nodes), "slurmctld.pid", "munged.pid"]:
            try:
                pids.append(int((self.root / name).read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        _terminate(pids)
        _terminate(self.leftover_pids(), sig=signal.SIGKILL)

    def leftover_pids(self) -> list[int]:
        """Processes started by this cluster (their environment has its ``SLURM_CONF``), except
        this process and its ancestors (a shell that exported the same ``SLURM_CONF``)."""
        marker = f"SLURM_CONF={self.conf}".encode() + b"\0"
        mine = _ancestors()
        pids = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if int(proc.name) not in mine and marker in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except (OSError, ValueError):
                continue
        return pids


def _ancestors() -> set[int]:
    """This process and its parents up to init."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _terminate(pids: list[int], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Send ``sig`` to each pid; SIGKILL those still alive after ``timeout`` seconds."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            continue
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (a daemon we forked but nobody reaps) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _skip_reason() -> str:
    """"" when the cluster can start here, else the one-line reason to skip."""
    if sys.platform != "linux":
        return f"SLURM tests need Linux; this is {sys.platform}"
    missing = missing_binaries()
    if missing and os.geteuid() == 0 and _which("apt-get"):
        print("slurm_cluster: installing slurm-wlm and munge with apt-get", file=sys.stderr)
        why = install_with_apt()
        missing = missing_binaries()
        if missing:
            return f"SLURM tests skipped: {', '.join(missing)} not found and apt-get could not install them ({why})"
    if missing:
        return f"SLURM tests skipped: {', '.join(missing)} not found; to run them, {ENABLE_HINT}"
    if os.geteuid() != 0:
        return f"SLURM tests skipped: the test cluster's daemons run as root; run pytest as root ({ENABLE_HINT})"
    return ""


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A two-node SLURM cluster for the session, with ``$SLURM_CONF`` exported; skips (one line)
    where it cannot run. Nodes: this host's name and ``localhost``, names that resolve, as the
    first node of an allocation must (``MASTER_ADDR`` of ``pretrain/utils/dist.py``; SLURM sorts
    an allocation's nodes by name); 2 CPUs each (1 on a 1-CPU machine: slurmd drains a node
    with more CPUs than the host); partition ``debug``."""
    reason = _skip_reason()
    if reason and os.environ.get("CI") == "true":  # CI must run them (.ci/run installs SLURM)
        pytest.fail(reason.replace("SLURM tests skipped", "SLURM tests cannot run in CI", 1))
    if reason:
        pytest.skip(reason)
    host = socket.gethostname().split(".")[0]
    second = "localhost" if host != "localhost" else "node2"
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), nodes=(host, second),
                           cpus_per_node=min(2, os.cpu_count() or 1))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(cluster.conf))
            yield cluster
    finally:
        cluster.stop()
