"""``atomic_link``: model_final.pth is the last checkpoint's file, not a second copy on disk."""
from __future__ import annotations

import os

import pytest

from siambench.pretrain.utils.io import atomic_link


def test_links_replace_the_destination_and_leave_no_temp_file(tmp_path):
    src, dst = tmp_path / "checkpoint_0002.pth", tmp_path / "model_final.pth"
    src.write_bytes(b"new")
    dst.write_bytes(b"old final of an earlier, shorter run")
    atomic_link(src, dst)
    assert dst.stat().st_ino == src.stat().st_ino and dst.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_0002.pth", "model_final.pth"]


def test_copies_where_hard_links_are_unsupported(tmp_path, monkeypatch):
    def no_links(*args):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    src, dst = tmp_path / "checkpoint_0001.pth", tmp_path / "model_final.pth"
    src.write_bytes(b"weights")
    atomic_link(src, dst)
    assert dst.read_bytes() == b"weights" and dst.stat().st_ino != src.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_0001.pth", "model_final.pth"]


def test_missing_source_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_link(tmp_path / "nope.pth", tmp_path / "model_final.pth")
    assert list(tmp_path.iterdir()) == []
