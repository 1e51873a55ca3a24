"""Fixtures shared by the transfer tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, writable copy of the session dataset, active via $SIAMBENCH_SYNTH."""
    root = tmp_path / "synth"
    shutil.copytree(synth_root, root)
    monkeypatch.setenv("SIAMBENCH_SYNTH", str(root))
    return root


@pytest.fixture(autouse=True, scope="session")
def _registered_datasets() -> None:
    """The ``synth_*`` names, registered as siambench's entry points do (importing registers nothing)."""
    from siambench.transfer.datasets import register_datasets

    register_datasets()


def _draw(path: Path, size: int, boxes: list[tuple[int, int, int, int, int]]) -> None:
    """A grey image with one filled rectangle per (x0, y0, x1, y1, class index) box."""
    import numpy as np
    from PIL import Image

    img = np.full((size, size, 3), 128, np.uint8)
    colours = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]
    for x0, y0, x1, y1, c in boxes:
        img[y0:y1, x0:x1] = colours[c % 3]
    Image.fromarray(img).save(path)


def _boxes(i: int, n_classes: int, size: int) -> list[tuple[int, int, int, int, int]]:
    """Deterministic 1-2 boxes of image ``i``."""
    out = []
    for j in range(1 + i % 2):
        s = size // 4 + (i * 7 + j * 5) % (size // 4)
        x0, y0 = (i * 11 + j * 29) % (size - s), (i * 13 + j * 17) % (size - s)
        out.append((x0, y0, x0 + s, y0 + s, (i + j) % n_classes))
    return out


@pytest.fixture
def make_voc():
    """make_voc(root, classes, n_train=8, n_test=4, size=64) -> root: a Pascal VOC folder of coloured squares."""
    def make(root: Path, classes=("boat", "buoy", "dock"), n_train: int = 8, n_test: int = 4, size: int = 64) -> Path:
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ids = [f"img{i:03d}" for i in range(n_train + n_test)]
        for i, image_id in enumerate(ids):
            boxes = _boxes(i, len(classes), size)
            _draw(root / "JPEGImages" / f"{image_id}.jpg", size, boxes)
            objs = "".join(f"<object><name>{classes[c]}</name><pose>Unspecified</pose><truncated>0</truncated>"
                           f"<difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
                           f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1, c in boxes)
            (root / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><filename>{image_id}.jpg</filename><size><width>{size}</width><height>{size}</height>"
                f"<depth>3</depth></size>{objs}</annotation>")
        (root / "ImageSets/Main/trainval.txt").write_text("\n".join(ids[:n_train]) + "\n")
        (root / "ImageSets/Main/test.txt").write_text("\n".join(ids[n_train:]) + "\n")
        return root

    return make


@pytest.fixture
def make_coco():
    """make_coco(root, classes, masks, n_train=8, n_test=4, size=64) -> (train json, train dir, test json, test dir)."""
    import json

    def split(root: Path, name: str, first: int, n: int, classes, masks: bool, size: int) -> tuple[Path, Path]:
        images, anns = [], []
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(first, first + n):
            boxes = _boxes(i, len(classes), size)
            _draw(root / name / f"{i:04d}.png", size, boxes)
            images.append({"id": 100 + i, "file_name": f"{i:04d}.png", "width": size, "height": size})
            for x0, y0, x1, y1, c in boxes:
                ann = {"id": len(anns) + 1 + 1000 * first, "image_id": 100 + i, "category_id": 10 + c,
                       "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
                if masks:
                    ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                anns.append(ann)
        cats = [{"id": 10 + k, "name": c} for k, c in enumerate(classes)]
        path = root / f"{name}.json"
        path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
        return path, root / name

    def make(root: Path, classes=("apple", "pear"), masks: bool = False, n_train: int = 8, n_test: int = 4,
             size: int = 64) -> tuple[Path, Path, Path, Path]:
        return (*split(root, "train", 0, n_train, classes, masks, size),
                *split(root, "test", n_train, n_test, classes, masks, size))

    return make
