"""OUTPUT_DIR guard (siambench.pretrain.utils.run_dir), resume fallback and retention (pretrain.checkpoint)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from siambench.benchmarks.cli import main as cli_main
from siambench.pretrain.checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint, prune_checkpoints
from siambench.pretrain.main import main
from siambench.pretrain.utils.run_dir import RunDirError, lock_dir, release_dir


@pytest.fixture
def run(tiny_opts):
    def _run(out, *opts, resume=None):
        return main((["--resume", resume] if resume else []) + ["OUTPUT_DIR", str(out), *tiny_opts, *opts])

    return _run


def _snapshot(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "log.txt"}


def test_finished_run_is_not_replaced_and_resume_checks_the_config(run, tmp_path):
    out = tmp_path / "r"
    assert run(out, "SOLVER.EPOCHS", "1") == 0
    before = _snapshot(out)
    config = (out / "config.yaml").read_text()
    with pytest.raises(RunDirError) as e:  # same command again, without --resume
        run(out, "SOLVER.EPOCHS", "1", "SEED", "3")
    msg = str(e.value)
    assert "holds a finished run" in msg and "SEED: 0 -> 3" in msg and "--resume auto" in msg
    assert "SOLVER.EPOCHS" in msg  # names what may change on resume
    for opts, key in ((["SEED", "3"], "SEED: 0 -> 3"), (["SOLVER.BASE_LR", "0.1"], "SOLVER.BASE_LR: 0.05 -> 0.1"),
                      (["MODEL.ARCH", "resnet34"], "MODEL.ARCH: 'resnet18' -> 'resnet34'")):
        with pytest.raises(RunDirError, match="another config") as e:
            run(out, "SOLVER.EPOCHS", "2", *opts, resume="auto")
        assert key in str(e.value)
    assert _snapshot(out) == before and (out / "config.yaml").read_text() == config  # nothing overwritten
    # What may change on resume: more epochs, another print frequency / number of workers.
    assert run(out, "SOLVER.EPOCHS", "2", "TRAIN.PRINT_FREQ", "7", resume="auto") == 0
    assert load_checkpoint(out / "model_final.pth")["epoch"] == 2


def test_arch_mismatch_on_explicit_resume_path_is_one_clean_error(run, tmp_path):
    assert run(tmp_path / "a", "SOLVER.EPOCHS", "1") == 0
    with pytest.raises(CheckpointError, match="does not fit this model"):
        run(tmp_path / "b", "MODEL.ARCH", "resnet34", resume=str(tmp_path / "a" / "checkpoint_0001.pth"))


_HOLD = """
import sys, time
from siambench.pretrain.utils.run_dir import lock_dir
lock_dir(sys.argv[1]); print("locked", flush=True); time.sleep(60)
"""


def test_second_process_on_one_output_dir_is_refused(tiny_opts, tmp_path, capsys):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = cli_main(["pretrain", "OUTPUT_DIR", str(out), *tiny_opts])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "in use by another siambench process (pid" in err
        assert not (out / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    lock_dir(out)  # the lock died with its process
    release_dir(out)


def test_stale_temp_files_are_swept_and_damaged_checkpoints_skipped(run, tmp_path, caplog):
    out = tmp_path / "r"
    assert run(out) == 0
    (out / "model_final.pth").unlink()
    stale = out / ".checkpoint_0003.pth.k2j4h1.tmp"
    stale.write_bytes(b"\0" * 1000)  # left by a kill mid-write
    (out / "checkpoint_0002.pth").write_bytes(b"")  # the newest checkpoint is damaged (e.g. full disk)
    with caplog.at_level(logging.WARNING):
        assert run(out, resume="auto") == 0
    assert not stale.exists()
    assert "checkpoint_0002.pth" in caplog.text and "resuming from checkpoint_0001.pth" in caplog.text
    assert load_checkpoint(out / "model_final.pth")["epoch"] == 2


def test_find_resume_checkpoint_fallbacks(tmp_path):
    assert find_resume_checkpoint(tmp_path, "auto") is None  # a new run
    (tmp_path / "last_checkpoint").write_text("")
    with pytest.raises(CheckpointError, match="no readable checkpoint.*last_checkpoint is empty"):
        find_resume_checkpoint(tmp_path, "auto")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        find_resume_checkpoint(tmp_path, str(tmp_path / "nope.pth"))
    (tmp_path / "checkpoint_0001.pth").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="checkpoint_0001.pth"):
        find_resume_checkpoint(tmp_path, "auto")


def test_retention_keeps_last_and_every_nth_and_resume_still_works(run, tmp_path):
    out = tmp_path / "r"
    keep = ["TRAIN.KEEP_LAST", "2", "TRAIN.KEEP_EVERY", "2", "TRAIN.MAX_STEPS_PER_EPOCH", "1"]
    assert run(out, "SOLVER.EPOCHS", "5", *keep) == 0
    names = sorted(p.name for p in out.glob("*.pth"))
    assert names == ["checkpoint_0002.pth", "checkpoint_0004.pth", "checkpoint_0005.pth", "model_final.pth"]
    assert (out / "last_checkpoint").read_text().strip() == "checkpoint_0005.pth"
    assert run(out, "SOLVER.EPOCHS", "6", *keep, resume="auto") == 0
    names = sorted(p.name for p in out.glob("checkpoint_*.pth"))
    assert names == ["checkpoint_0002.pth", "checkpoint_0004.pth", "checkpoint_0005.pth", "checkpoint_0006.pth"]
    assert load_checkpoint(out / "model_final.pth")["epoch"] == 6


def test_800_epoch_default_retention_is_under_10_files(tmp_path):
    from siambench.pretrain.config import get_cfg

    cfg = get_cfg()
    (tmp_path / "last_checkpoint").write_text("checkpoint_0800.pth")
    for epoch in range(1, 801):
        (tmp_path / f"checkpoint_{epoch:04d}.pth").touch()
        prune_checkpoints(tmp_path, cfg.TRAIN.KEEP_LAST, cfg.TRAIN.KEEP_EVERY)
    left = sorted(int(p.stem.split("_")[1]) for p in tmp_path.glob("checkpoint_*.pth"))
    assert left == [100, 200, 300, 400, 500, 600, 700, 799, 800]  # + model_final.pth = 10 files


@pytest.mark.parametrize("layout", ["missing", "empty", "no_class_dirs", "empty_classes", "env_missing"])
def test_bad_data_root_is_one_line_and_creates_nothing(layout, tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "no_class_dirs":
        (root / "train").mkdir()
        (root / "train" / "notes.txt").write_text("x")
    if layout == "empty_classes":
        (root / "train" / "a").mkdir(parents=True)
    opts = ["DATA.ROOT", str(root)]
    if layout == "env_missing":  # DATA.ROOT "" falls back to $SIAMBENCH_IMAGENET
        monkeypatch.setenv("SIAMBENCH_IMAGENET", str(tmp_path / "imagenet"))
        opts = ["DATA.ROOT", ""]
    out = tmp_path / "out"
    configs = Path(__file__).resolve().parents[2] / "configs"
    for command in ("pretrain", "supervised", "lincls", "knn"):
        rc = cli_main([command, "--config-file", str(configs / command / "synth_r18.yaml"), "MODEL.DEVICE", "cpu",
                       "OUTPUT_DIR", str(out), *opts])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, (command, err)
        assert "DATA.ROOT" in err and str(tmp_path) in err, err
        assert not out.exists(), command


def test_siambench_imagenet_is_the_default_root(tmp_path, monkeypatch):
    from siambench.pretrain.config import get_cfg
    from siambench.pretrain.data.roots import resolve_cfg_data_root

    (tmp_path / "train" / "n01").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "n01" / "x.JPEG")
    monkeypatch.setenv("SIAMBENCH_IMAGENET", str(tmp_path))
    cfg = get_cfg()
    cfg.freeze()
    assert resolve_cfg_data_root(cfg).DATA.ROOT == str(tmp_path)


def test_full_disk_and_read_only_output_dir_are_one_line(tiny_opts, tmp_path, capsys, monkeypatch):
    import errno

    import torch

    import siambench.pretrain.utils.run_dir

    def full_disk(obj, f, *args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:  # torch reports it as a RuntimeError caused by the OSError
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 320") from e

    out = tmp_path / "full"
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        rc = cli_main(["pretrain", "OUTPUT_DIR", str(out), *tiny_opts, "SOLVER.EPOCHS", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "No space left on device" in err and "free space" in err
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # the partial write is removed

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(siambench.pretrain.utils.run_dir.os, "open", read_only)
    rc = cli_main(["pretrain", "OUTPUT_DIR", str(tmp_path / "ro"), *tiny_opts])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Read-only file system" in err and "writable" in err


def test_python_m_pretrain_reports_bad_input_in_one_line(tmp_path):
    """`torchrun -m siambench.pretrain` runs pretrain/__main__.py, not the siambench CLI."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "siambench.pretrain", "MODEL.DEVICE", "cpu", "DATA.ROOT", str(tmp_path / "no"),
                           "OUTPUT_DIR", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "DATA.ROOT" in proc.stderr
    assert not (tmp_path / "out").exists()
