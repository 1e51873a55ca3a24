"""`siambench run` with a DATASETS section: unlabelled pretraining data and detection datasets of one's own."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from siambench.benchmarks.pipeline import preflight
from siambench.benchmarks.pipeline.pipeline_config import check_files, load_pipeline
from siambench.benchmarks.pipeline.steps import build_steps
from siambench.pretrain.utils.config import ConfigError

PIPE = """
OUTPUT_DIR: {out}
DATA: {{ROOT: {photos}}}
DATASETS:
  boats: "voc:{voc}"
  fruit: "coco:{coco}/train.json:{coco}/train,{coco}/test.json:{coco}/test"
ENTRIES:
  simsiam: {{KIND: simsiam, CONFIG: configs/pretrain/synth_r18.yaml}}
  scratch: {{KIND: scratch}}
EVAL:
  KNN: {{CONFIG: configs/knn/synth_r18.yaml{knn_opts}}}
  LINCLS: {{CONFIG: configs/lincls/synth_r18.yaml}}
TRANSFER: {{TASKS: ["synth_voc07:1", "boats:3", "fruit"], TRIALS: 1}}
"""


def _pipeline(tmp_path: Path, knn_root: str = "", **extra) -> Path:
    photos = tmp_path / "photos" / "deep" / "er"
    photos.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(photos / "a.jpg")
    knn_opts = f", OPTS: [DATA.ROOT, {knn_root}]" if knn_root else ""
    text = PIPE.format(out=tmp_path / "runs", photos=tmp_path / "photos", voc=tmp_path / "voc",
                       coco=tmp_path / "coco", knn_opts=knn_opts)
    for key, value in extra.items():
        text = text.replace(key, value)
    path = tmp_path / "own.yaml"
    path.write_text(text)
    return path


def test_own_tasks_beside_builtin_ones(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="siambench.run"):
        cfg = load_pipeline(_pipeline(tmp_path))
        steps = {s.key: s for s in build_steps(cfg)}
    assert check_files(cfg) == []  # no configs/transfer/boats.yaml needed
    boats = steps["simsiam/transfer/boats"].argv
    assert boats[:3] == ["transfer", "--dataset", f"boats=voc:{tmp_path / 'voc'}"] and "--task" not in boats
    assert boats[boats.index("--trials") + 1] == "3"
    assert steps["scratch/transfer/fruit"].argv[2].startswith("fruit=coco:")
    assert steps["simsiam/transfer/synth_voc07"].argv[1:3] == ["--task", "synth_voc07"]
    # the pretraining root is unlabelled: kNN / linear evaluation are left out, with a note each
    assert "simsiam/knn" not in steps and "simsiam/lincls" not in steps and "simsiam/pretrain" in steps
    assert "simsiam/knn left out: DATA.ROOT" in caplog.text and "EVAL.*.OPTS" in caplog.text
    from siambench.benchmarks.pipeline.steps import eval_notes

    assert [n.split(":")[0] for n in eval_notes(cfg)] == ["kNN evaluation left out", "linear evaluation left out"]


def test_eval_with_its_own_labelled_root_is_kept(tmp_path):
    labelled = tmp_path / "labelled"
    (labelled / "train" / "c").mkdir(parents=True)
    steps = {s.key: s for s in build_steps(load_pipeline(_pipeline(tmp_path, knn_root=str(labelled))))}
    knn = steps["simsiam/knn"].argv
    assert knn[len(knn) - 1 - knn[::-1].index("DATA.ROOT") + 1] == str(labelled)  # its own root wins
    assert "simsiam/lincls" not in steps


def test_preflight_names_a_bad_dataset_and_accepts_unlabelled_pretraining(tmp_path):
    cfg = load_pipeline(_pipeline(tmp_path))
    found = preflight.problems(cfg, build_steps(cfg))
    assert any(p.startswith("transfer boats: VOC root") and "does not exist" in p for p in found), found
    assert any(p.startswith("transfer fruit: COCO annotation file") for p in found), found
    assert not any("photos" in p for p in found), found  # pretraining reads the unlabelled folder


@pytest.mark.parametrize("entry,match", [('voc07: "voc:/x"', "DATASETS.voc07"), ('boats: "yolo:/x"', "DATASETS.boats"),
                                         ("boats: 3", "DATASETS.boats"), ('9boats: "voc:/x"', "DATASETS.9boats")])
def test_bad_datasets_section(tmp_path, entry, match):
    path = _pipeline(tmp_path, **{'boats: "voc:' + str(tmp_path / "voc") + '"': entry})
    with pytest.raises(ConfigError, match=match):
        load_pipeline(path)


def test_shipped_example_plans(tmp_path):
    from siambench.benchmarks.pipeline.pipeline_config import REPO_ROOT

    cfg = load_pipeline(REPO_ROOT / "configs" / "benchmarks" / "own_data.yaml", ["OUTPUT_DIR", str(tmp_path)])
    assert check_files(cfg) == []
    steps = {s.key: s for s in build_steps(cfg)}
    assert {"simsiam/transfer/boats", "simsiam/transfer/parts", "scratch/transfer/parts"} <= set(steps)
    assert "--dataset" in steps["simsiam/transfer/boats"].argv
