"""The SimSiam paper's published numbers, shown as reference rows in our tables.

Source: Xinlei Chen and Kaiming He, "Exploring Simple Siamese Representation
Learning", CVPR 2021 (arXiv:2011.10566), Table 4 (ImageNet linear evaluation,
ResNet-50) and Table 5 (transfer to VOC / COCO; all unsupervised entries pretrained
200 epochs on ImageNet; Faster / Mask R-CNN with the C4 backbone; VOC numbers are
means over 5 trials). The "repro.+" rows are the paper's improved reproductions.

These rows are facts to compare against, never results of this suite: the tables
always mark them as ``paper``.
"""
from __future__ import annotations

from typing import Final

__all__ = [
    "CITATION",
    "METRICS",
    "PAPER_TASKS",
    "TABLE4_EPOCHS",
    "TABLE4_LINEAR_TOP1",
    "TABLE5_TRANSFER",
    "BOLD_MARGIN",
]

CITATION: Final = (
    "Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021 (arXiv:2011.10566)"
)

# The paper bolds "the entries within 0.5 below the best of each column" (Table 5).
BOLD_MARGIN: Final = 0.5

# Column order of Table 5 within each task group.
METRICS: Final = ("AP50", "AP", "AP75")

# Table 5 column groups: (task, results type). "coco" has a detection and an
# instance segmentation group, exactly like the paper's two COCO blocks.
PAPER_TASKS: Final = (("voc07", "bbox"), ("voc0712", "bbox"), ("coco", "bbox"), ("coco", "segm"))

TABLE4_EPOCHS: Final = (100, 200, 400, 800)

# Table 4: ImageNet linear evaluation top-1 (%) by pretraining epochs.
TABLE4_LINEAR_TOP1: Final[dict[str, dict[int, float]]] = {
    "SimCLR (repro.+)": {100: 66.5, 200: 68.3, 400: 69.8, 800: 70.4},
    "MoCo v2 (repro.+)": {100: 67.4, 200: 69.9, 400: 71.0, 800: 72.2},
    "BYOL (repro.)": {100: 66.5, 200: 70.6, 400: 73.2, 800: 74.3},
    "SwAV (repro.+)": {100: 66.5, 200: 69.1, 400: 70.7, 800: 71.8},
    "SimSiam": {100: 68.1, 200: 70.0, 400: 70.8, 800: 71.3},
}


def _row(*values: float) -> dict[tuple[str, str], dict[str, float]]:
    """Twelve numbers in the paper's column order -> {(task, type): {metric: value}}."""
    assert len(values) == 3 * len(PAPER_TASKS)
    out: dict[tuple[str, str], dict[str, float]] = {}
    for g, group in enumerate(PAPER_TASKS):
        out[group] = dict(zip(METRICS, values[3 * g: 3 * g + 3]))
    return out


# Table 5: AP50 / AP / AP75 on VOC 07, VOC 07+12, COCO detection, COCO instance seg.
TABLE5_TRANSFER: Final[dict[str, dict[tuple[str, str], dict[str, float]]]] = {
    "scratch": _row(35.9, 16.8, 13.0, 60.2, 33.8, 33.1, 44.0, 26.4, 27.8, 46.9, 29.3, 30.8),
    "ImageNet supervised": _row(74.4, 42.4, 42.7, 81.3, 53.5, 58.8, 58.2, 38.2, 41.2, 54.7, 33.3, 35.2),
    "SimCLR (repro.+)": _row(75.9, 46.8, 50.1, 81.8, 55.5, 61.4, 57.7, 37.9, 40.9, 54.6, 33.3, 35.3),
    "MoCo v2 (repro.+)": _row(77.1, 48.5, 52.5, 82.3, 57.0, 63.3, 58.8, 39.2, 42.5, 55.5, 34.3, 36.6),
    "BYOL (repro.)": _row(77.1, 47.0, 49.9, 81.4, 55.3, 61.1, 57.8, 37.9, 40.9, 54.3, 33.2, 35.0),
    "SwAV (repro.+)": _row(75.5, 46.5, 49.6, 81.5, 55.4, 61.4, 57.6, 37.6, 40.3, 54.2, 33.1, 35.1),
    "SimSiam, base": _row(75.5, 47.0, 50.2, 82.0, 56.4, 62.8, 57.5, 37.9, 40.9, 54.2, 33.2, 35.2),
    "SimSiam, optimal": _row(77.3, 48.5, 52.5, 82.4, 57.0, 63.7, 59.3, 39.2, 42.1, 56.0, 34.4, 36.7),
}
