"""A wheel user's installation, end to end: build the wheel, install it with its declared
dependencies into a fresh venv with the newest pip, install detectron2 as the README tells
(``python -m siambench.transfer.install_d2``), then doctor, data synth, a tiny pretrain,
convert, transfer, table and report from a directory outside the checkout.

Kept to minutes: the fresh venv sees only torch, torchvision and their own dependencies
from the running environment (linked, through a .pth file; gigabytes of CUDA wheels are not
reinstalled), so pip installs everything else siambench declares, pinned by
``requirements/constraints.txt``, from the configured index through pip's cache
(``~/.cache/pip``; offline: point ``PIP_FIND_LINKS``/``PIP_NO_INDEX`` at a wheelhouse). The
detectron2 sdist is cached where install_d2 keeps it for wheel users (``~/.cache/siambench``).
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# Variables that would point the installed copy at this checkout or its data.
SCRUBBED = ("PYTHONPATH", "VIRTUAL_ENV", "SIAMBENCH_SYNTH", "DETECTRON2_DATASETS", "SIAMBENCH_IMAGENET")
TIMINGS: list[tuple[str, float]] = []  # (command, seconds), printed with -s


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    TIMINGS.append((" ".join([Path(cmd[0]).name, *cmd[1:]])[:70], time.perf_counter() - start))
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _torch_closure() -> dict[str, importlib.metadata.Distribution]:
    """torch, torchvision and what they require (extras included), as installed here; not setuptools,
    which siambench[detectron2] pins itself."""
    found: dict[tuple[str, tuple[str, ...]], importlib.metadata.Distribution] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [("torch", ()), ("torchvision", ())]
    while todo:
        name, extras = todo.pop()
        if canonicalize_name(name) == "setuptools" or (name, extras) in found:
            continue
        dist = found[(name, extras)] = importlib.metadata.distribution(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((req.name, tuple(sorted(req.extras))))
    return {canonicalize_name(d.metadata["Name"]): d for d in found.values()}


def _fresh_venv(root: Path) -> Path:
    """A new venv whose site-packages sees only the torch closure of this environment."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    linked = root / "torch-site"
    linked.mkdir()
    for dist in _torch_closure().values():
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            if not (linked / top).exists():
                (linked / top).symlink_to(Path(dist.locate_file(top)))
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "torch-closure.pth").write_text(f"{linked}\n")
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, siambench_wheel: Path) -> tuple[Path, dict[str, str], str]:
    """(venv, environment for its commands, install log): the wheel and detectron2, as a wheel user does."""
    root = tmp_path_factory.mktemp("wheel_user")
    wheel = siambench_wheel
    venv = _fresh_venv(root)
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    python = str(venv / "bin" / "python")
    log = _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], root, env)
    log += _run([python, "-m", "pip", "--version"], root, env)
    log += _run([python, "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements" / "constraints.txt"),
                 f"{wheel}[detectron2]"], root, env)
    log += _run([python, "-m", "siambench.transfer.install_d2", "--skip-github"], root, env)  # README: From a wheel
    return venv, env, log


def test_install_uses_the_newest_pip_and_no_checkout(installed: tuple[Path, dict[str, str], str],
                                                     tmp_path: Path) -> None:
    venv, env, log = installed
    print(log)
    assert "pip download" not in log and "installed detectron2 0.6 (pure Python, sha256 verified)" in log
    code = ("import sys, siambench.benchmarks, detectron2, tensorboard, cloudpickle, omegaconf\n"
            "print(siambench.benchmarks.__file__, detectron2.__file__, *sys.path, sep='\\n')")
    where = _run([str(venv / "bin" / "python"), "-c", code], tmp_path, env).splitlines()
    assert all(Path(p).is_relative_to(venv) for p in where[:2]), where[:2]
    assert str(ROOT) not in where


def test_the_pipeline_runs_from_outside_the_checkout(installed: tuple[Path, dict[str, str], str],
                                                     tmp_path: Path) -> None:
    venv, env, _ = installed
    work = tmp_path / "elsewhere"
    work.mkdir()

    def siambench(*args: str) -> str:
        return _run([str(venv / "bin" / "siambench"), *args], work, env)

    assert "siambench doctor: ok (detectron2 0.6" in siambench("doctor", "--quiet")
    siambench("data", "synth", "--out", "datasets/siambench_synth", "--num-images", "16", "--size", "32",
              "--det-num-images", "8", "--det-size", "64")
    siambench("pretrain", "--config-file", "configs/pretrain/synth_r18.yaml", "DATA.ROOT",
              "datasets/siambench_synth/imagefolder", "OUTPUT_DIR", "runs/pretrain", "SOLVER.EPOCHS", "1",
              "SOLVER.BATCH_SIZE", "8", "MONITOR.KNN_PERIOD", "0")
    siambench("convert", "runs/pretrain/model_final.pth", "runs/simsiam.pkl")
    siambench("transfer", "--task", "synth_voc07", "--weights", "runs/simsiam.pkl", "OUTPUT_DIR",
              "runs/transfer/synth_voc07", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
              "TEST.PRECISE_BN.NUM_ITER", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
              "MODEL.RPN.POST_NMS_TOPK_TEST", "10")
    assert '"status": "complete"' in (work / "runs/transfer/synth_voc07/trial0/results.json").read_text()
    assert "simsiam" in siambench("table", "runs")
    siambench("report", "runs")
    assert (work / "runs" / "report.md").is_file() and (work / "runs" / "report.html").is_file()
    print("\n".join(f"{s:6.1f} s  {step}" for step, s in TIMINGS))
