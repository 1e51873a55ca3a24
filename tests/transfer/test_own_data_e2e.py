"""README "Your own data" end to end, tiny: an unlabelled folder -> SimSiam -> convert -> transfer to a
VOC-format and a COCO-format dataset of one's own (with masks) -> tables and verdict, real subprocesses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siambench.benchmarks.pipeline.pipeline import main

PIPELINE = """
_BASE_: {example}
OUTPUT_DIR: {out}
NUM_GPUS: 1
MODEL: {{ARCH: resnet50, WIDTH: 8}}
DATA: {{ROOT: {photos}, IMAGE_SIZE: 32, NUM_WORKERS: 0}}
DATASETS:
  parts: "coco:{coco}/train.json:{coco}/train,{coco}/test.json:{coco}/test"
  boats: "voc:{voc}"
ENTRIES:
  simsiam:
    KIND: simsiam
    LABEL: SimSiam on my photos
    CONFIG: configs/pretrain/synth_r18.yaml
    OPTS: [SOLVER.EPOCHS, 1, SOLVER.BATCH_SIZE, 8, TRAIN.MAX_STEPS_PER_EPOCH, 1, MONITOR.KNN_PERIOD, 1,
           MODEL.DIM, 64, MODEL.PRED_DIM, 16, MONITOR.TENSORBOARD, False]
EVAL: {{KNN: {{ENABLED: True}}}}  # no labels in the photos: left out, with a note
CONVERT: {{VERIFY: False}}
TRANSFER:
  TASKS: ["boats:2", "parts:1"]
  OPTS: [SOLVER.MAX_ITER, 2, SOLVER.STEPS, "(1,)", SOLVER.WARMUP_ITERS, 0, SOLVER.IMS_PER_BATCH, 2,
         TEST.PRECISE_BN.NUM_ITER, 1, MODEL.RPN.POST_NMS_TOPK_TEST, 10, INPUT.MIN_SIZE_TRAIN, "(64,)",
         INPUT.MIN_SIZE_TEST, 64, DATALOADER.NUM_WORKERS, 0, MODEL.RESNETS.DEPTH, 50,
         MODEL.RESNETS.STEM_OUT_CHANNELS, 8, MODEL.RESNETS.RES2_OUT_CHANNELS, 32, MODEL.RESNETS.WIDTH_PER_GROUP, 8]
"""


@pytest.mark.slow
def test_unlabelled_folder_to_table_on_own_datasets(make_voc, make_coco, tmp_path, capsys):
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for i in range(12):  # nested, mixed formats and modes
        d = photos / f"day{i % 3}" / ("raw" if i % 2 else "")
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        (img.convert("L") if i % 4 == 0 else img).save(d / f"p{i}.{['jpg', 'png', 'webp'][i % 3]}")
    make_voc(tmp_path / "voc", n_train=4)
    make_coco(tmp_path / "coco", masks=True, n_train=4)
    example = Path(__file__).resolve().parents[2] / "configs" / "benchmarks" / "own_data.yaml"
    pipe = tmp_path / "mine.yaml"
    pipe.write_text(PIPELINE.format(example=example, out=tmp_path / "runs", photos=photos, coco=tmp_path / "coco",
                                    voc=tmp_path / "voc"))
    assert main([str(pipe), "--quiet"]) == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    out = tmp_path / "runs"
    state = json.loads((out / "pipeline_state.json").read_text())
    assert {k for k, s in state["steps"].items() if s["status"] == "done"} == {
        "simsiam/pretrain", "simsiam/convert", "simsiam/transfer/boats", "simsiam/transfer/parts",
        "scratch/transfer/boats", "scratch/transfer/parts"}
    log = (out / "simsiam" / "pretrain" / "log.txt").read_text()
    assert "unlabelled images under" in log and ": 12 (jpg 4, png 4, webp 4)" in log
    parts = json.loads((out / "simsiam/transfer/parts/trial0/results.json").read_text())
    assert parts["status"] == "complete" and set(parts["results"]) == {"bbox", "segm"}  # Mask R-CNN from the data
    tables = {t["name"]: t for t in json.loads((out / "tables.json").read_text())["tables"]}
    groups = [c["group"] for c in tables["table5_own"]["columns"]]
    assert groups == ["boats"] * 3 + ["parts"] * 3 + ["parts segm"] * 3
    assert "Transfer to your datasets" in printed and "SimSiam beats training from scratch: boats AP50" in printed
    assert "kNN evaluation left out: DATA.ROOT" in (out / "tables.md").read_text()  # a note with the tables
