"""Image decoding edge cases: corrupt images in DataLoader workers, 16-bit PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siambench.pretrain.data import CorruptDataError, SafeImageFolder, pil_loader


def test_corrupt_image_in_a_worker_is_one_line_naming_the_path(tmp_path: Path) -> None:
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / c / f"{i}.jpg")
    (tmp_path / "b" / "1.jpg").write_bytes(b"not an image")
    ds = SafeImageFolder(tmp_path, transform=lambda im: torch.zeros(1), strict=True)
    with pytest.raises(CorruptDataError) as e:
        list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1))
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg  # torch puts the worker's traceback in the message
    assert msg.startswith("unreadable image") and str(tmp_path / "b" / "1.jpg") in msg


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"  # what Pillow decodes it as
    rgb = np.asarray(pil_loader(str(tmp_path / "ramp.png")))
    assert rgb.shape == (64, 256, 3) and rgb.dtype == np.uint8
    assert (rgb == 255).mean() < 0.01  # clipping gave 99.6 %
    expected = np.rint(ramp.astype(np.float64) * 255 / 65535)
    assert np.abs(rgb[..., 0] - expected).max() <= 1 and np.array_equal(rgb[..., 0], rgb[..., 2])
    # 8-bit images are untouched
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "g8.png")
    assert np.array_equal(np.asarray(pil_loader(str(tmp_path / "g8.png")))[..., 1], ramp >> 8)
