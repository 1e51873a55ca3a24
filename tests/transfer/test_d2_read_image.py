"""detectron2's ``read_image`` (and so the DatasetMapper) scales 16-bit PNGs instead of clipping them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siambench.transfer import d2compat
from detectron2.data import DatasetMapper, detection_utils  # noqa: E402


def _unpatched():
    """detectron2's own ``convert_PIL_to_numpy`` (what ``read_image`` did before d2compat)."""
    f = detection_utils.convert_PIL_to_numpy
    return getattr(f, "__wrapped__", f)


@pytest.fixture()
def ramp16(tmp_path: Path) -> tuple[Path, np.ndarray]:
    ramp = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"  # what Pillow decodes it as
    return path, ramp


@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_16_bit_png_is_scaled_not_clipped(ramp16: tuple[Path, np.ndarray], fmt: str) -> None:
    path, ramp = ramp16
    img = detection_utils.read_image(str(path), format=fmt)
    assert img.shape == (64, 256, 3) and img.dtype == np.uint8
    assert (img == 255).mean() < 0.01  # clipping gave 99.6 %
    grey = img[..., 0].astype(int)
    assert np.array_equal(grey, img[..., 2]) and (np.diff(grey.ravel()) >= 0).all()  # a monotone ramp
    assert grey.min() == 0 and grey.max() == 255
    assert np.abs(grey - np.rint(ramp * 255.0 / 65535.0)).max() <= 1
    assert "read_image scales 16-bit images to 8 bits" in d2compat.info()["patches"]


def test_the_dataset_mapper_sees_the_scaled_image(ramp16: tuple[Path, np.ndarray]) -> None:
    path, _ = ramp16
    mapper = DatasetMapper(is_train=False, augmentations=[], image_format="BGR")
    image = mapper({"file_name": str(path), "height": 64, "width": 256})["image"]  # 3xHxW uint8
    assert tuple(image.shape) == (3, 64, 256)
    assert (image == 255).float().mean().item() < 0.01


def test_labels_and_raw_reads_keep_detectron2s_behaviour(ramp16: tuple[Path, np.ndarray]) -> None:
    path, ramp = ramp16
    assert np.array_equal(detection_utils.read_image(str(path)), ramp)  # format=None: the raw array
    # "L" is how the mapper reads semantic-segmentation labels: class ids, never rescaled
    original = _unpatched()
    with Image.open(path) as im:
        assert np.array_equal(detection_utils.read_image(str(path), format="L"), original(im, "L"))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I"])
@pytest.mark.parametrize("fmt", [None, "BGR", "RGB", "L", "YUV-BT.601"])
def test_8_bit_images_are_byte_identical(tmp_path: Path, mode: str, fmt: str | None) -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    # "I" holding 8-bit values (32-bit int PNGs do not exist; PGM/TIFF can give this): kept as values
    img = rgb.convert("L").convert("I") if mode == "I" else rgb.convert(mode)
    path = tmp_path / ("img.tif" if mode == "I" else "img.png")
    img.save(path)
    original = _unpatched()
    with Image.open(path) as im:
        before = original(im, fmt)
    after = detection_utils.read_image(str(path), format=fmt)
    assert after.dtype == before.dtype and np.array_equal(after, before)
    if mode == "RGB" and fmt == "BGR":
        assert np.array_equal(after, np.asarray(rgb)[:, :, ::-1])  # independent of both code paths
