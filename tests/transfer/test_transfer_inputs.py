"""Dataset checks before training: an image Pillow refuses, COCO annotation ids used twice and test
categories other than the training set's are one line, exit 2, and no OUTPUT_DIR."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from siambench.transfer import d2compat  # noqa: F401
from siambench.transfer.datasets import DatasetLayoutError, validate_annotations  # noqa: E402
from siambench.transfer.main import main  # noqa: E402


def _png_bomb(path: Path, side: int = 20000) -> None:
    """A PNG whose header claims side x side pixels (no pixel data: it is never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _error_line(capsys: pytest.CaptureFixture) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("siambench transfer: error:")]
    assert len(lines) == 1
    return lines[0]


def test_a_decompression_bomb_in_voc_is_refused_before_training(synth_copy: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    voc = synth_copy / "VOC2007"
    image_id = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
    bomb = voc / "JPEGImages" / f"{image_id}.jpg"
    _png_bomb(bomb)
    with pytest.raises(DatasetLayoutError, match=rf"image {bomb} is too large to decode"):
        validate_annotations(["synth_voc_2007_trainval"])
    out = tmp_path / "out"
    assert main(["--task", "synth_voc07", "--weights", "scratch", "OUTPUT_DIR", str(out)]) == 2
    assert "too large to decode" in _error_line(capsys) and not out.exists()


def _coco(root: Path, split: str) -> Path:
    return root / "coco" / "annotations" / f"instances_{split}.json"


def _damage(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_coco_annotation_ids_used_twice_are_refused_before_output_dir(synth_copy: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    path = _coco(synth_copy, "train")
    _damage(path, lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]))
    out = tmp_path / "out"
    assert main(["--task", "synth_coco", "--weights", "scratch", "OUTPUT_DIR", str(out)]) == 2
    assert f"{path}: annotation id" in (line := _error_line(capsys)) and "used twice" in line
    assert not out.exists()


def test_coco_test_categories_must_be_the_training_sets(synth_copy: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    val = _coco(synth_copy, "val")
    _damage(val, lambda d: d["categories"][0].update(name="renamed"))
    with pytest.raises(DatasetLayoutError, match=rf"{val}: its categories differ from those of .*instances_train"):
        validate_annotations(["synth_coco_train", "synth_coco_val"])
    out = tmp_path / "out"
    assert main(["--task", "synth_coco", "--weights", "scratch", "OUTPUT_DIR", str(out)]) == 2
    assert "only here: ['renamed']" in _error_line(capsys) and not out.exists()
