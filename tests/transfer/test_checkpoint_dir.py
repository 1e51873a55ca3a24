"""One checkpoint-directory rule (pretrain/utils/checkpoint_dir.py) behind pretraining and transfer.

Both sides resume from the file ``last_checkpoint`` names if it loads, else from the newest
file that loads, warning what they skipped; both refuse in one line when none loads; both
keep the newest N numbered files and never the one ``last_checkpoint`` names.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from siambench.transfer import d2compat  # noqa: F401

from siambench.pretrain import checkpoint as pretrain_ckpt  # noqa: E402
from siambench.pretrain.utils import checkpoint_dir  # noqa: E402
from siambench.pretrain.utils.errors import CheckpointError  # noqa: E402
from siambench.transfer.checkpoint import AtomicCheckpointer, RetainingPeriodicCheckpointer  # noqa: E402


def _pretrain_side(d: Path):
    def write(n: int) -> str:
        name = pretrain_ckpt.checkpoint_name(n)
        torch.save({"state_dict": {}, "epoch": n, "optimizer": {}}, d / name)
        checkpoint_dir.tag_last_checkpoint(d, name)
        return name

    def resume() -> Path | None:
        return pretrain_ckpt.find_resume_checkpoint(d, "auto")

    def prune(keep: int) -> None:
        pretrain_ckpt.prune_checkpoints(d, keep)

    return write, resume, prune


def _transfer_side(d: Path):
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), str(d))

    def write(n: int) -> str:
        ckpt.save(f"model_{n:07d}", iteration=n)
        return f"model_{n:07d}.pth"

    def resume() -> Path | None:
        found = ckpt.get_checkpoint_file()
        return Path(found) if found else None

    def prune(keep: int) -> None:
        hook = RetainingPeriodicCheckpointer(ckpt, period=1, max_to_keep=keep)
        hook._prune()

    return write, resume, prune


SIDES = {"pretrain": _pretrain_side, "transfer": _transfer_side}


@pytest.mark.parametrize("side", SIDES)
def test_resume_falls_back_past_a_damaged_or_empty_pointer(side, tmp_path, caplog):
    write, resume, _ = SIDES[side](tmp_path)
    assert resume() is None  # a new run
    first, second = write(1), write(2)
    assert resume() == tmp_path / second
    (tmp_path / second).write_bytes((tmp_path / second).read_bytes()[:80])  # a kill mid-write, in place
    with caplog.at_level(logging.WARNING):
        assert resume() == tmp_path / first
    assert f"resuming from {first} instead of the damaged {second}" in caplog.text
    (tmp_path / checkpoint_dir.LAST_CHECKPOINT).write_text("")
    assert resume() == tmp_path / first
    (tmp_path / first).write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"no readable checkpoint in .*{first} \(.*is empty"):
        resume()


@pytest.mark.parametrize("side", SIDES)
def test_retention_keeps_the_newest_and_the_one_last_checkpoint_names(side, tmp_path):
    write, _, prune = SIDES[side](tmp_path)
    names = [write(n) for n in range(1, 6)]
    checkpoint_dir.tag_last_checkpoint(tmp_path, names[0])  # e.g. the newest loadable one after a fallback
    prune(2)
    assert sorted(p.name for p in tmp_path.glob("*_*.pth")) == sorted([names[0], names[3], names[4]])


@pytest.mark.parametrize("side", SIDES)
def test_both_sides_go_through_the_one_module(side, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(checkpoint_dir, "find_resume_file", lambda *a, **k: calls.append("resume") or None)
    monkeypatch.setattr(checkpoint_dir, "prune", lambda *a, **k: calls.append("prune") or [])
    _, resume, prune = SIDES[side](tmp_path)
    resume()
    prune(1)
    assert calls == ["resume", "prune"]


def test_prune_keep_every_and_numbered_order(tmp_path):
    pattern = re.compile(r"^c_(\d+)\.pth$")
    for n in (1, 2, 10, 3, 20, 11):
        (tmp_path / f"c_{n}.pth").touch()
    (tmp_path / "c_x.pth").touch()
    assert [p.name for p in checkpoint_dir.numbered_files(tmp_path, pattern)] == [
        "c_20.pth", "c_11.pth", "c_10.pth", "c_3.pth", "c_2.pth", "c_1.pth"]
    removed = checkpoint_dir.prune(tmp_path, pattern, keep_last=1, keep_every=10)
    assert sorted(p.name for p in removed) == ["c_1.pth", "c_11.pth", "c_2.pth", "c_3.pth"]
    assert checkpoint_dir.prune(tmp_path, pattern, keep_last=0) == []  # 0 keeps everything
