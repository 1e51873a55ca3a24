"""Synthetic datasets through detectron2's own loaders, and dataset-root errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from siambench.transfer import d2compat  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from siambench.transfer import synth  # noqa: E402
from siambench.transfer import datasets  # noqa: E402
from siambench.transfer.datasets import DatasetLayoutError, check_dataset_root, check_datasets  # noqa: E402




def test_classes_match_generator() -> None:
    assert datasets.SYNTH_CLASSES == synth.SYNTH_CLASSES


@pytest.mark.parametrize("name", sorted(datasets.SYNTH_VOC))
def test_voc_through_detectron2_loader(synth_root: Path, name: str) -> None:
    dicts = DatasetCatalog.get(name)
    dirname, split, year = datasets.SYNTH_VOC[name]
    summary = json.loads((synth_root / "synth.json").read_text())["splits"][name.removeprefix("synth_")]
    assert len(dicts) == summary["images"]
    assert sum(len(d["annotations"]) for d in dicts) == summary["objects"]
    xml_objects = sum(len(ET.parse(synth_root / dirname / "Annotations" / f"{d['image_id']}.xml").findall("object"))
                      for d in dicts)
    assert xml_objects == summary["objects"]
    for d in dicts:
        assert Path(d["file_name"]).is_file()
        for ann in d["annotations"]:
            x0, y0, x1, y1 = ann["bbox"]
            assert 0 <= x0 < x1 <= d["width"] and 0 <= y0 < y1 <= d["height"]
            assert 0 <= ann["category_id"] < len(synth.SYNTH_CLASSES)
    meta = MetadataCatalog.get(name)
    assert (meta.evaluator_type, meta.split, meta.year) == ("pascal_voc", split, year)
    assert meta.dirname == str(synth_root / dirname) and meta.thing_classes == list(synth.SYNTH_CLASSES)


@pytest.mark.parametrize("name", sorted(datasets.SYNTH_COCO))
def test_coco_through_detectron2_and_pycocotools(synth_root: Path, name: str) -> None:
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    coco = COCO(meta.json_file)
    assert meta.evaluator_type == "coco" and Path(meta.image_root).is_dir()
    assert len(dicts) == len(coco.getImgIds())
    assert sum(len(d["annotations"]) for d in dicts) == len(coco.getAnnIds())
    summary = json.loads((synth_root / "synth.json").read_text())["splits"][name.removeprefix("synth_")]
    assert len(coco.getAnnIds()) == summary["objects"]
    assert all(Path(d["file_name"]).is_file() and d["annotations"] for d in dicts)
    assert all(len(a["segmentation"][0]) >= 6 for d in dicts for a in d["annotations"])


def test_root_follows_the_environment(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMBENCH_SYNTH", str(tmp_path / "elsewhere"))
    assert MetadataCatalog.get("synth_voc_2007_test").dirname == str(tmp_path / "elsewhere" / "VOC2007")
    monkeypatch.delenv("SIAMBENCH_SYNTH")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert datasets.synth_root() == tmp_path / "siambench_synth"
    assert MetadataCatalog.get("synth_coco_val").image_root == str(tmp_path / "siambench_synth" / "coco" / "val")


def test_missing_synth_root_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMBENCH_SYNTH", str(tmp_path / "nope"))
    for name in ("synth_voc_2007_trainval", "synth_coco_train"):
        with pytest.raises(DatasetLayoutError, match="siambench data synth") as e:
            DatasetCatalog.get(name)
        assert str(tmp_path / "nope") in str(e.value) and "SIAMBENCH_SYNTH" in str(e.value)


def test_malformed_synth_root(synth_copy: Path) -> None:
    (synth_copy / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"test\.txt.*Expected .*ImageSets/Main/<split>\.txt"):
        check_dataset_root("synth_voc_2007_test")
    check_dataset_root("synth_voc_2007_trainval")  # the other split is intact
    summary = json.loads((synth_copy / "synth.json").read_text())
    (synth_copy / "synth.json").write_text(json.dumps({**summary, "classes": ["a", "b"]}))
    with pytest.raises(DatasetLayoutError, match="regenerate"):
        check_datasets(["synth_coco_val"])


def test_corrupt_xml_names_the_file(synth_copy: Path) -> None:
    first = (synth_copy / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").read_text().split()[3]
    bad = synth_copy / "VOC2007" / "Annotations" / f"{first}.xml"
    bad.write_text(bad.read_text()[:-40])
    with pytest.raises(DatasetLayoutError, match=rf"{bad}.*not valid XML"):
        DatasetCatalog.get("synth_voc_2007_trainval")
    bad.write_text("<annotation><size><width>4</width><height>4</height></size>"
                   "<object><name>dog</name></object></annotation>")
    with pytest.raises(DatasetLayoutError, match=rf"{bad}: object class 'dog'"):
        DatasetCatalog.get("synth_voc_2007_trainval")


def test_corrupt_json_names_the_file(synth_copy: Path) -> None:
    ann = synth_copy / "coco" / "annotations" / "instances_val.json"
    ann.write_text(ann.read_text()[:100])
    with pytest.raises(DatasetLayoutError, match=rf"{ann}: corrupt JSON"):
        DatasetCatalog.get("synth_coco_val")
    ann.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DatasetLayoutError, match=rf"{ann}: malformed COCO"):
        DatasetCatalog.get("synth_coco_val")


def test_builtin_names_checked_under_detectron2_datasets(synth_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # detectron2 registered its builtin VOC/COCO at import with relative paths ("datasets/..."
    # unless $DETECTRON2_DATASETS was set): make the working directory hold the root.
    dirname = Path(MetadataCatalog.get("voc_2007_trainval").dirname)
    if dirname.is_absolute():
        pytest.skip("DETECTRON2_DATASETS was set to an absolute path before detectron2 was imported")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"DETECTRON2_DATASETS.*") as e:
        check_dataset_root("voc_2007_trainval")
    assert "VOC20XX/{JPEGImages" in str(e.value) and str(dirname) in str(e.value)
    with pytest.raises(DatasetLayoutError, match=r"annotations.*DETECTRON2_DATASETS"):
        check_dataset_root("coco_2017_val")
    # a VOC-layout root passes the check; detectron2's own loader then meets the synthetic
    # class names, and the error names the offending file instead of a bare ValueError
    shutil.copytree(synth_root / "VOC2007", tmp_path / dirname)
    assert check_dataset_root("voc_2007_test") == dirname
    with pytest.raises(DatasetLayoutError, match=r"Annotations/.*\.xml: object class '\w+' is not one of"):
        DatasetCatalog.get("voc_2007_test")


def test_unknown_name() -> None:
    with pytest.raises(DatasetLayoutError, match="not registered.*synth_voc_2007_trainval"):
        check_dataset_root("voc_2007_trainvall")


def test_registration_is_idempotent() -> None:
    before = DatasetCatalog.list()
    datasets.register_synth_datasets()
    assert DatasetCatalog.list() == before


FRESH_PROCESS = """
import sys
from pathlib import Path
from types import SimpleNamespace
from siambench.transfer import d2compat, datasets, main
from siambench.transfer.config import get_transfer_cfg
from detectron2.data import DatasetCatalog

names = [*datasets.SYNTH_VOC, *datasets.SYNTH_COCO]
assert not any(n in DatasetCatalog for n in names), "importing registered names"
assert not getattr(DatasetCatalog["voc_2007_test"], "_siambench_diagnosing", False)
seen = []
main._evaluate = lambda plan: seen.append([n in DatasetCatalog for n in names])  # what a launch worker runs
main.run(SimpleNamespace(output_dir=Path(sys.argv[1]), eval_only=True, describe=str, cfg=get_transfer_cfg()))
assert seen == [[True] * len(names)], seen
assert DatasetCatalog["voc_2007_test"]._siambench_diagnosing  # builtin loaders name a corrupt file
before = DatasetCatalog.list()
datasets.register_datasets()
assert DatasetCatalog.list() == before
print("ok")
"""


def test_registration_happens_in_the_entry_point_not_at_import(tmp_path: Path) -> None:
    """A fresh process (as each of detectron2's launch workers is) has the names once ``run`` starts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "out")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == "ok", run.stderr[-3000:]
