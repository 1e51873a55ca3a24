"""The reference rows equal the paper's numbers as recorded in the shared reference file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from siambench.benchmarks.report import reference

REFERENCE_MD = Path("/work/shared/paper/simsiam-reference-numbers.md")


def _md_rows(section: str) -> dict[str, list[float]]:
    text = REFERENCE_MD.read_text(encoding="utf-8")
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and re.fullmatch(r"\d+\.\d", cells[-1]):
            rows[cells[0]] = [float(c) for c in cells if re.fullmatch(r"\d+\.\d", c)]
    return rows


@pytest.mark.skipif(not REFERENCE_MD.is_file(), reason="shared paper notes not present in this checkout")
def test_table5_rows_equal_the_paper() -> None:
    rows = _md_rows("## Table 5")
    assert list(rows) == list(reference.TABLE5_TRANSFER)
    for label, values in reference.TABLE5_TRANSFER.items():
        ours = [values[g][m] for g in reference.PAPER_TASKS for m in reference.METRICS]
        assert ours == rows[label], label


@pytest.mark.skipif(not REFERENCE_MD.is_file(), reason="shared paper notes not present in this checkout")
def test_table4_rows_equal_the_paper() -> None:
    rows = _md_rows("## Table 4")
    assert list(rows) == list(reference.TABLE4_LINEAR_TOP1)
    for label, by_epochs in reference.TABLE4_LINEAR_TOP1.items():
        assert list(by_epochs) == list(reference.TABLE4_EPOCHS)
        assert list(by_epochs.values()) == rows[label], label


def test_reference_rows_are_complete_and_plausible() -> None:
    for label, values in reference.TABLE5_TRANSFER.items():
        assert set(values) == set(reference.PAPER_TASKS), label
        for group in values.values():
            assert group["AP50"] > group["AP"] > 0, label  # AP averages over IoU 0.5:0.95
    # the paper's headline numbers, independently of the shared file
    assert reference.TABLE5_TRANSFER["SimSiam, optimal"][("voc07", "bbox")]["AP50"] == 77.3
    assert reference.TABLE4_LINEAR_TOP1["SimSiam"][100] == 68.1
