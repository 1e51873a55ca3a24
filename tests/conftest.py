"""Fixtures shared by every test area.

``synth_root``: one small built-in synthetic dataset per test session (all layouts:
ImageFolder, VOC2007/VOC2012, COCO; see ``transfer/synth.py``), with
``SIAMBENCH_SYNTH`` pointing at it so ``siambench.transfer.datasets`` resolves the ``synth_*``
detectron2 names to it. Treat it as read-only: other tests share it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

# Small enough to generate in about a second, big enough that every class is present
# in every split and a detectron2 batch of 2 finds images in each aspect-ratio group.
SYNTH_SEED = 0
SYNTH_NUM_IMAGES = 24  # train/trainval splits; val/test get 12
SYNTH_SIZE = 64


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny CPU models: one intra-op thread. Two threads on a 2-core machine that also runs
    DataLoader workers or other jobs were measured ~10x slower (spinning, oversubscription)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """``siambench run`` exports ``$SIAMBENCH_SYNTH`` in its own process (benchmarks/pipeline/preflight.py);
    a test that runs it in-process would leave it pointing at its tmp dir for every later test.
    Restored after the test body (fixtures, like ``synth_root``, set it during setup)."""
    before = os.environ.get("SIAMBENCH_SYNTH")
    yield
    if before is None:
        os.environ.pop("SIAMBENCH_SYNTH", None)
    else:
        os.environ["SIAMBENCH_SYNTH"] = before


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Path of the session's synthetic dataset; also exported as ``$SIAMBENCH_SYNTH``."""
    from siambench.transfer.synth import generate

    root = tmp_path_factory.mktemp("synth") / "siambench_synth"
    generate(root, seed=SYNTH_SEED, num_images=SYNTH_NUM_IMAGES, size=SYNTH_SIZE,
             det_num_images=SYNTH_NUM_IMAGES, det_size=SYNTH_SIZE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIAMBENCH_SYNTH", str(root))
        yield root


def _copy_run_dir(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    """Copy a run directory without the files named in ``drop``; checkpoints (``*.pth``)
    are hard-linked, not copied: they are written atomically (temp file + rename) and never
    changed in place, so sharing them is safe and saves ~100 MB of disk writes each.
    Everything else (``metrics.jsonl`` is appended, ``last_checkpoint`` rewritten) is copied."""
    import shutil

    def copy(s: str, d: str) -> None:
        if s.endswith(".pth"):
            os.link(s, d)
        else:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop), copy_function=copy)
    return Path(dst)


@pytest.fixture(scope="session")
def copy_run_dir():
    """``copy_run_dir(src, dst, drop=(names,))``: a run directory "interrupted" by dropping
    files, for resume tests; checkpoints hard-linked (see ``_copy_run_dir``)."""
    return _copy_run_dir


# --- Disk written per test (opt-in): SIAMBENCH_TEST_IO=1 python -m pytest ... -------------------
# Linux /proc/self/io counters of the pytest process; a reaped child's (torchrun, subprocess,
# DataLoader worker) are added to its parent's on wait, so they are included. ``write_bytes``
# is what reached the page cache for a disk (what fills a disk; tmpfs excluded), ``wchar``
# every byte passed to write(). Session-scoped fixtures count towards the first test using them.
# SIAMBENCH_TEST_IO=<file.tsv> also writes the per-test table there.
_IO_ENV = "SIAMBENCH_TEST_IO"
_io_rows: list[tuple[str, int, int]] = []


def _proc_io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem) -> Iterator[None]:
    if not os.environ.get(_IO_ENV):
        yield
        return
    before = _proc_io()
    yield
    after = _proc_io()
    _io_rows.append((item.nodeid, after["write_bytes"] - before["write_bytes"],
                     after["wchar"] - before["wchar"]))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    dest = os.environ.get(_IO_ENV)
    if not dest or not _io_rows:
        return
    mb = 1e6
    rows = sorted(_io_rows, key=lambda r: -r[1])
    tr = terminalreporter
    tr.section("disk written per test (write_bytes, MB)")
    for nodeid, wb, wc in rows[:25]:
        tr.write_line(f"{wb / mb:9.1f} {wc / mb:9.1f}  {nodeid}")
    per_file: dict[str, list[int]] = {}
    for nodeid, wb, wc in _io_rows:
        acc = per_file.setdefault(nodeid.split("::")[0], [0, 0, 0])
        acc[0] += wb
        acc[1] += wc
        acc[2] += 1
    tr.section("disk written per file (write_bytes MB, wchar MB, tests)")
    for path, (wb, wc, n) in sorted(per_file.items(), key=lambda kv: -kv[1][0]):
        if wb >= mb:
            tr.write_line(f"{wb / mb:9.1f} {wc / mb:9.1f} {n:4d}  {path}")
    total_wb = sum(r[1] for r in _io_rows)
    total_wc = sum(r[2] for r in _io_rows)
    tr.write_line(f"{total_wb / mb:9.1f} {total_wc / mb:9.1f} {len(_io_rows):4d}  TOTAL")
    if dest not in ("1", "true", "yes"):
        with open(dest, "w") as f:
            f.write("nodeid\twrite_bytes\twchar\n")
            f.writelines(f"{n}\t{wb}\t{wc}\n" for n, wb, wc in _io_rows)


@pytest.fixture(scope="session")
def siambench_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once per session from a copy (building in place would
    leave build/ and *.egg-info in the checkout)."""
    import shutil
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"
    shutil.copytree(Path(__file__).resolve().parents[1], src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".venv", ".cache", "runs", "datasets", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(src)], check=True, cwd=out)
    (whl,) = out.glob("siambench-*.whl")
    return whl


# --- A real SLURM cluster (tests/slurm_cluster.py), loaded by path: pytest imports test files
# with --import-mode=importlib, so tests/ is not on sys.path.
def _load_slurm_cluster():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("siambench_tests_slurm_cluster",
                                                  Path(__file__).with_name("slurm_cluster.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


slurm_cluster = _load_slurm_cluster().slurm_cluster
