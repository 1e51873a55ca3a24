"""The in-memory synthetic dataset draws the classes and outlines of `siambench data synth`."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from siambench.pretrain.data import SyntheticShapes
from siambench.pretrain.data.shapes import SYNTH_CLASSES, outline, render_scene
from siambench.pretrain.data.synthetic import _draw_shape
from siambench.transfer import datasets


def test_one_class_list_for_every_synthetic_dataset() -> None:
    assert SyntheticShapes(4, 32, num_classes=6).classes == list(SYNTH_CLASSES) == list(datasets.SYNTH_CLASSES)
    assert SyntheticShapes(4, 32).classes == ["circle", "square", "triangle", "star"]


@pytest.mark.parametrize("label", range(len(SYNTH_CLASSES)))
def test_the_in_memory_shapes_are_the_outlines_render_scene_places(label: int) -> None:
    """The dataset fills ``outline(label)`` (pixel area = polygon area), the outline the scenes of that class use."""
    data = SyntheticShapes(1, 64, num_classes=6)
    img = Image.new("L", (64, 64), 0)
    draw = ImageDraw.Draw(img)
    _draw_shape(draw, label, 32.0, 32.0, 20.0, 255)
    poly = outline(label) * 20
    area = abs(np.dot(poly[:, 0], np.roll(poly[:, 1], -1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], -1))) / 2
    assert (np.asarray(img) > 0).sum() == pytest.approx(area, rel=0.15)  # PIL fills the boundary pixels too
    _, objects = render_scene(np.random.default_rng([0, label]), 64, 64, main_label=label)
    assert max(objects, key=lambda o: o.area).label == label and data.classes[label] == SYNTH_CLASSES[label]


def test_labels_are_the_largest_shape_and_deterministic() -> None:
    a, b = SyntheticShapes(16, 48, num_classes=6, seed=2), SyntheticShapes(16, 48, num_classes=6, seed=2)
    assert all(np.array_equal(np.asarray(a.image(i)), np.asarray(b.image(i))) for i in range(16))
    assert [a[i][1] for i in range(16)] == a.targets and set(a.targets) <= set(range(6))


def test_bad_number_of_classes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"num_classes must be in \[2, 6\]"):
        SyntheticShapes(4, num_classes=7)
