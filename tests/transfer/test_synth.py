"""The built-in synthetic dataset: layouts, exact annotations, determinism, CLI."""
from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from siambench.benchmarks import cli
from siambench.pretrain.data import shapes
from siambench.pretrain.data.shapes import SYNTH_CLASSES, render_scene
from siambench.transfer.synth import generate


SMALL_DET = {"det_num_images": 12, "det_size": 48}  # small detection layouts: fast tests


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(synth_root: Path) -> None:
    summary = json.loads((synth_root / "synth.json").read_text())
    assert summary["classes"] == list(SYNTH_CLASSES) and len(SYNTH_CLASSES) >= 5
    n = summary["num_images"]
    for part, count in (("train", n), ("val", n // 2)):
        dirs = sorted(p.name for p in (synth_root / "imagefolder" / part).iterdir())
        assert dirs == sorted(SYNTH_CLASSES)
        files = list((synth_root / "imagefolder" / part).glob("*/*.jpg"))
        assert len(files) == count == summary["splits"][f"imagefolder_{part}"]["images"]
    for year, splits in (("2007", ("trainval", "test")), ("2012", ("trainval",))):
        voc = synth_root / f"VOC{year}"
        ids = {s: (voc / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in splits}
        all_ids = [i for s in splits for i in ids[s]]
        assert len(all_ids) == len(set(all_ids)), "trainval and test must not share images"
        assert sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg")) == sorted(all_ids)
        assert sorted(p.stem for p in (voc / "Annotations").glob("*.xml")) == sorted(all_ids)
    # every split has objects, and the occlusion / truncation / difficult cases all occur
    stats = summary["splits"]
    assert all(s["objects"] >= s["images"] for s in stats.values())
    assert sum(s["difficult"] for s in stats.values()) > 0
    assert sum(s["truncated"] for s in stats.values()) > 0


def test_voc_objects_have_evaluator_fields_and_boxes_inside(synth_root: Path) -> None:
    difficult = 0
    for xml in sorted((synth_root / "VOC2007" / "Annotations").glob("*.xml")):
        tree = ET.parse(xml)
        width, height = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
        assert Image.open(synth_root / "VOC2007" / "JPEGImages" / f"{xml.stem}.jpg").size == (width, height)
        objects = tree.findall("object")
        assert objects
        for obj in objects:
            assert obj.findtext("name") in SYNTH_CLASSES and obj.findtext("pose")
            assert obj.findtext("truncated") in ("0", "1")
            difficult += int(obj.findtext("difficult"))
            x0, y0, x1, y1 = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 <= x1 <= width and 1 <= y0 <= y1 <= height
    assert difficult > 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_masks_inside_boxes_inside_images(synth_root: Path, split: str) -> None:
    coco = COCO(str(synth_root / "coco" / "annotations" / f"instances_{split}.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SYNTH_CLASSES)
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.imgs[ann["image_id"]]
        assert Image.open(synth_root / "coco" / split / img["file_name"]).size == (img["width"], img["height"])
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"] and w > 0 and h > 0
        poly = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
        assert np.allclose(poly.min(0), [x, y], atol=0.011) and np.allclose(poly.max(0), [x + w, y + h], atol=0.011)
        mask = coco.annToMask(ann).astype(bool)
        assert mask.sum() == ann["area"] > 0
        ys, xs = np.nonzero(mask)
        assert xs.min() >= np.floor(x) and xs.max() < np.ceil(x + w)
        assert ys.min() >= np.floor(y) and ys.max() < np.ceil(y + h)
        assert shapes.MIN_VISIBLE <= ann["visible_fraction"] <= 1 and ann["iscrowd"] == 0


def test_object_pixels_are_drawn_where_the_mask_is() -> None:
    """The rendered image matches the annotation: an unoccluded object's mask pixels
    have the object's colour, clearly different from the surrounding background."""
    rng = np.random.default_rng(3)
    image, objects = render_scene(rng, 96, 96, main_label=1)
    top = objects[-1]
    mask = mask_utils.decode(mask_utils.frPyObjects([top.polygon.ravel().tolist()], 96, 96))[..., 0].astype(bool)
    inside = image[mask].astype(float)
    ring = np.zeros_like(mask)
    x0, y0, x1, y1 = (int(v) for v in top.box)
    ring[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = True
    ring &= ~mask
    assert inside.std(0).mean() < 25  # one colour with mild stripes and noise
    assert np.abs(inside.mean(0) - image[ring].astype(float).mean(0)).sum() > 30


def test_imagefolder_label_is_the_one_dominant_central_upright_object() -> None:
    """The class is unambiguous: one large, whole, near-central, upright shape, at least
    3x the area of the (optional) distractor; grey levels, so colour carries no label."""
    distractors = 0
    for i in range(60):
        label = i % len(SYNTH_CLASSES)
        size = (32, 64)[i % 2]
        image, objects = render_scene(np.random.default_rng(i), size, size, main_label=label)
        main = max(objects, key=lambda o: o.area)
        assert main.label == label and not main.truncated and len(objects) <= 2
        x0, y0, x1, y1 = main.box
        assert abs((x0 + x1) / 2 - size / 2) <= 0.2 * size and abs((y0 + y1) / 2 - size / 2) <= 0.2 * size
        assert (x1 - x0) * (y1 - y0) >= 0.2 * size * size  # large: a random 20 % crop still sees part of it
        for other in objects:
            if other is not main:
                distractors += 1
                assert other.area <= main.area / 3
        rgb = image.reshape(-1, 3).astype(float)
        assert np.abs(rgb - rgb.mean(1, keepdims=True)).mean() < 0.1 * 255  # near-grey pixels
    assert 10 <= distractors <= 50


def test_imagefolder_shapes_stand_upright() -> None:
    """Shapes are rotated by at most CLS_MAX_ROTATION: the square's corners then stay off
    the axes through its centre (a 45-degree square would put them there)."""
    square = SYNTH_CLASSES.index("square")
    for i in range(20):
        _, objects = render_scene(np.random.default_rng(i), 64, 64, main_label=square)
        poly = max(objects, key=lambda o: o.area).polygon
        centre = poly.mean(0)
        angles = np.degrees(np.arctan2(poly[:, 1] - centre[1], poly[:, 0] - centre[0])) % 90
        assert np.all(np.abs(angles - 45) <= shapes.CLS_MAX_ROTATION + 15)  # + anisotropic stretch


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=7, num_images=12, size=48, **SMALL_DET)
    b = generate(tmp_path / "b", seed=7, num_images=12, size=48, **SMALL_DET)
    c = generate(tmp_path / "c", seed=8, num_images=12, size=48, **SMALL_DET)
    da, db, dc = _digests(tmp_path / "a"), _digests(tmp_path / "b"), _digests(tmp_path / "c")
    assert da == db and len(da) > 100
    assert a["splits"] == b["splits"]
    assert da.keys() == dc.keys()
    differing = sum(da[k] != dc[k] for k in da)
    assert differing > 0.9 * len(da)
    assert c["seed"] == 8


def test_more_images_only_appends(tmp_path: Path) -> None:
    generate(tmp_path / "small", seed=0, num_images=12, size=48, **SMALL_DET)
    generate(tmp_path / "big", seed=0, num_images=14, size=48, **SMALL_DET)
    small, big = _digests(tmp_path / "small"), _digests(tmp_path / "big")
    jpgs = [k for k in small if k.endswith(".jpg") and k.startswith("imagefolder")]
    assert jpgs and all(small[k] == big[k] for k in jpgs)


def test_regenerate_is_idempotent_and_never_deletes_foreign_dirs(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    generate(root, seed=0, num_images=12, size=48, **SMALL_DET)
    marker_mtime = (root / "synth.json").stat().st_mtime_ns
    assert generate(root, seed=0, num_images=12, size=48, **SMALL_DET)["num_images"] == 12
    assert (root / "synth.json").stat().st_mtime_ns == marker_mtime  # not rewritten
    generate(root, seed=1, num_images=12, size=48, **SMALL_DET)  # a previous synthetic dataset is replaced
    assert json.loads((root / "synth.json").read_text())["seed"] == 1
    foreign = tmp_path / "home"
    (foreign / "thesis").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a siambench synthetic dataset"):
        generate(foreign, num_images=12, size=48, **SMALL_DET)
    assert (foreign / "thesis").is_dir()
    assert not list(tmp_path.glob(".*tmp*")), "temporary build directories must be cleaned up"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert cli.main(["data", "synth", "--out", str(out), "--num-images", "12", "--size", "40", "--seed", "3",
                     "--det-num-images", "12", "--det-size", "40"]) == 0
    assert "voc_2007_trainval" in capsys.readouterr().out
    summary = json.loads((out / "synth.json").read_text())
    assert (summary["seed"], summary["num_images"], summary["size"]) == (3, 12, 40)
    assert max(Image.open(p).size[0] for p in (out / "VOC2007" / "JPEGImages").glob("*.jpg")) <= 40
    assert cli.main(["data", "synth", "--out", str(tmp_path / "x"), "--num-images", "5"]) == 2
    assert "--num-images must be >= 12" in capsys.readouterr().err
    assert cli.main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "8"]) == 2
    assert "--size must be >= 32" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_detection_layouts_have_their_own_count_and_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path / "base", seed=0, num_images=12, size=48, **SMALL_DET)
    summary = generate(tmp_path / "det", seed=0, num_images=12, size=48, det_num_images=8, det_size=40)
    base, det = _digests(tmp_path / "base"), _digests(tmp_path / "det")
    folder = [k for k in base if k.startswith("imagefolder")]
    assert folder and all(base[k] == det.get(k) for k in folder)  # the ImageFolder part is untouched
    counts = {s: v["images"] for s, v in summary["splits"].items()}
    assert counts == {"imagefolder_train": 12, "imagefolder_val": 6, "voc_2007_trainval": 8, "voc_2007_test": 4,
                      "voc_2012_trainval": 8, "coco_train": 8, "coco_val": 4}
    assert (summary["det_num_images"], summary["det_size"]) == (8, 40)
    sizes = [Image.open(p).size for p in (tmp_path / "det").glob("VOC20*/JPEGImages/*.jpg")]
    assert len(sizes) == 20 and max(max(s) for s in sizes) <= 40
    for xml in (tmp_path / "det" / "VOC2007" / "Annotations").glob("*.xml"):
        assert shapes.DET_OBJECTS[0] <= len(ET.parse(xml).findall("object")) <= shapes.DET_OBJECTS[1]
    assert cli.main(["data", "synth", "--out", str(tmp_path / "x"), "--num-images", "12", "--det-size", "16"]) == 2
    assert "--det-size must be >= 32" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_small_fine_tuning_set_keeps_a_large_test_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--det-test-images: 4 trainval images, 6 test images -- the same test images as with 12 trainval."""
    small = generate(tmp_path / "small", seed=0, num_images=12, size=48, det_num_images=4, det_size=40,
                     det_test_images=6)
    big = generate(tmp_path / "big", seed=0, num_images=12, size=48, det_num_images=12, det_size=40)
    counts = {s: v["images"] for s, v in small["splits"].items()}
    assert counts["voc_2007_trainval"] == counts["coco_train"] == 4
    assert counts["voc_2007_test"] == counts["coco_val"] == big["splits"]["voc_2007_test"]["images"] == 6

    def test_images(root: Path) -> list[str]:
        voc = root / "VOC2007"
        ids = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
        return [hashlib.sha256((voc / "JPEGImages" / f"{i}.jpg").read_bytes()).hexdigest() for i in ids]

    assert test_images(tmp_path / "small") == test_images(tmp_path / "big")  # drawn per index: a comparable test set
    assert cli.main(["data", "synth", "--out", str(tmp_path / "x"), "--det-test-images", "-1"]) == 2
    assert "--det-test-images must be >= 0" in capsys.readouterr().err and not (tmp_path / "x").exists()
