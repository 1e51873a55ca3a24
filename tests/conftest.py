"""Fixtures shared by every test area.

``synth_root``: one small built-in synthetic dataset per test session (all layouts:
ImageFolder, VOC2007/VOC2012, COCO; see ``benchmarks/synth.py``), with
``SIAMBENCH_SYNTH`` pointing at it so ``transfer.datasets`` resolves the ``synth_*``
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
    """``siambench run`` exports ``$SIAMBENCH_SYNTH`` in its own process (benchmarks/preflight.py);
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
    from benchmarks.synth import generate

    root = tmp_path_factory.mktemp("synth") / "siambench_synth"
    generate(root, seed=SYNTH_SEED, num_images=SYNTH_NUM_IMAGES, size=SYNTH_SIZE,
             det_num_images=SYNTH_NUM_IMAGES, det_size=SYNTH_SIZE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIAMBENCH_SYNTH", str(root))
        yield root
