"""Rehearsal of the first GPU run: ``bench_gpu.sh --smoke`` in a Python holding only a bare GPU image's packages.

The GPU image has torch, torchvision, numpy, Pillow, matplotlib, PyYAML and tensorboard (with their
own dependencies) and nothing of ours: no siambench install, no fvcore, detectron2 or pycocotools.
The test builds such an interpreter -- a fresh venv without system site-packages whose one ``.pth``
points at a directory of symlinks to exactly those distributions of this environment -- copies the
working tree (tracked and untracked, not ignored files), runs ``bench_gpu.sh --prepare`` there (no
wheel download: offline) and then ``bench_gpu.sh --smoke`` with that interpreter. Any import or path
error fails it. pycocotools / faster-coco-eval stand in for the wheels ``--prepare`` downloads into
``.whl/`` (cp312 builds, which this cp311 machine cannot install).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
GPU_IMAGE = ("torch", "torchvision", "numpy", "pillow", "matplotlib", "pyyaml", "tensorboard")
WHEEL_STAND_INS = ("pycocotools", "faster-coco-eval")  # what --prepare downloads as cp312 wheels
ABSENT = ("siambench", "fvcore", "yacs", "iopath", "detectron2", "pycocotools")  # must not leak in


def _closure(names: tuple[str, ...]) -> list[md.Distribution]:
    """The distributions ``names`` and everything they require (markers evaluated without extras)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        seen[name] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


def _link_distributions(dists: list[md.Distribution], target: Path) -> None:
    """Symlink each distribution's top-level modules and its .dist-info into ``target``."""
    target.mkdir(parents=True)
    for dist in dists:
        site = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            name = top if (site / top).exists() else ""
            if name and not (target / name).exists() and name != "__pycache__":
                (target / name).symlink_to(site / name)


def _bare_python(tmp: Path) -> Path:
    env = tmp / "venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(env)
    site = next((env / "lib").glob("python3*/site-packages"))
    deps = tmp / "gpu_image_site"
    _link_distributions(_closure(GPU_IMAGE + WHEEL_STAND_INS), deps)
    (site / "gpu_image.pth").write_text(f"{deps}\n")
    return env / "bin" / "python"


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


@pytest.mark.slow
def test_bench_gpu_sh_smoke_runs_in_a_bare_gpu_image_python(tmp_path):
    python = _bare_python(tmp_path)
    probe = "import importlib.util as u, json; print(json.dumps([m for m in %r if u.find_spec(m)]))" % (ABSENT,)
    leaked = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout
    assert set(json.loads(leaked)) <= {"pycocotools"}, leaked  # none of ours (pycocotools: the .whl stand-in)

    tree = tmp_path / "checkout"
    _copy_tree(tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    prepare = subprocess.run(["bash", "benchmarks/bench_gpu.sh", "--prepare"], cwd=tree, capture_output=True,
                             text=True, env={**env, "PYTHON": sys.executable, "SIAMBENCH_PREPARE_WHEELS": "0"},
                             timeout=300)
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    assert (tree / ".pydeps" / "fvcore").is_dir() and (tree / ".pydeps" / "detectron2").is_dir()

    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run(["bash", "benchmarks/bench_gpu.sh", "--smoke"], cwd=tree, capture_output=True, text=True,
                         env={**env, "PYTHON": str(python), "OUT": str(out)}, timeout=1500)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    for error in ("ModuleNotFoundError", "ImportError", "No module named", "not usable", "not importable",
                  "FAILED"):
        assert error not in log, log[-6000:]
    res = json.loads((out / "bench_gpu.json").read_text())
    assert res["pretrain"]["end_to_end"] and "arms" in res["transfer"] and res["coco_eval"]["seconds"]
