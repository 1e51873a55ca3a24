"""The transfer trainer's DatasetMapper scales 16-bit PNGs instead of clipping them; detectron2's
own ``detection_utils`` is left as it is."""
from __future__ import annotations

import copy
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siambench.transfer import d2compat
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, detection_utils  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

from siambench.transfer.config import get_transfer_cfg  # noqa: E402
from siambench.transfer.mapper import TransferDatasetMapper, read_image  # noqa: E402
from siambench.transfer.trainer import TransferTrainer  # noqa: E402


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
    img = read_image(str(path), format=fmt)
    assert img.shape == (64, 256, 3) and img.dtype == np.uint8
    assert (img == 255).mean() < 0.01  # clipping gave 99.6 %
    grey = img[..., 0].astype(int)
    assert np.array_equal(grey, img[..., 2]) and (np.diff(grey.ravel()) >= 0).all()  # a monotone ramp
    assert grey.min() == 0 and grey.max() == 255
    assert np.abs(grey - np.rint(ramp * 255.0 / 65535.0)).max() <= 1


def test_detectron2s_own_reader_is_untouched(ramp16: tuple[Path, np.ndarray]) -> None:
    path, _ = ramp16
    assert detection_utils.convert_PIL_to_numpy.__module__ == "detectron2.data.detection_utils"
    assert not hasattr(detection_utils.convert_PIL_to_numpy, "__wrapped__")
    assert (detection_utils.read_image(str(path), format="BGR") == 255).mean() > 0.99  # stock: clipped
    assert not any("read_image" in p for p in d2compat.info()["patches"])


def test_the_dataset_mapper_sees_the_scaled_image(ramp16: tuple[Path, np.ndarray]) -> None:
    path, _ = ramp16
    mapper = TransferDatasetMapper(is_train=False, augmentations=[], image_format="BGR")
    image = mapper({"file_name": str(path), "height": 64, "width": 256})["image"]  # 3xHxW uint8
    assert tuple(image.shape) == (3, 64, 256)
    assert (image == 255).float().mean().item() < 0.01


def test_labels_and_raw_reads_keep_detectron2s_behaviour(ramp16: tuple[Path, np.ndarray]) -> None:
    path, ramp = ramp16
    assert np.array_equal(read_image(str(path)), ramp)  # format=None: the raw array
    # "L" is how the mapper reads semantic-segmentation labels: class ids, never rescaled
    assert np.array_equal(read_image(str(path), format="L"), detection_utils.read_image(str(path), format="L"))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I"])
@pytest.mark.parametrize("fmt", [None, "BGR", "RGB", "L", "YUV-BT.601"])
def test_8_bit_images_are_byte_identical(tmp_path: Path, mode: str, fmt: str | None) -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    # "I" holding 8-bit values (32-bit int PNGs do not exist; PGM/TIFF can give this): kept as values
    img = rgb.convert("L").convert("I") if mode == "I" else rgb.convert(mode)
    path = tmp_path / ("img.tif" if mode == "I" else "img.png")
    img.save(path)
    with Image.open(path) as im:
        before = detection_utils.convert_PIL_to_numpy(im, fmt)
    after = read_image(str(path), format=fmt)
    assert after.dtype == before.dtype and np.array_equal(after, before)
    if mode == "RGB" and fmt == "BGR":
        assert np.array_equal(after, np.asarray(rgb)[:, :, ::-1])  # independent of both code paths


def _mapped(mapper_cls: type, dicts: list[dict], is_train: bool) -> list[dict]:
    torch.manual_seed(0)
    np.random.seed(0)  # RandomFlip draws from numpy's global generator
    augs = [T.ResizeShortestEdge((48, 64), 96, "choice"), T.RandomFlip()] if is_train else [T.ResizeShortestEdge(80)]
    mapper = mapper_cls(is_train=is_train, augmentations=augs, image_format="BGR", use_instance_mask=False)
    return [mapper(copy.deepcopy(d)) for d in dicts]


@pytest.mark.parametrize("is_train", [True, False])
def test_mapper_maps_8_bit_images_as_detectron2s(synth_root: Path, is_train: bool) -> None:
    dicts = DatasetCatalog.get("synth_voc_2007_trainval")[:6]
    ours, stock = _mapped(TransferDatasetMapper, dicts, is_train), _mapped(DatasetMapper, dicts, is_train)
    assert [sorted(d) for d in ours] == [sorted(d) for d in stock]
    assert ("instances" in ours[0]) == is_train and "annotations" not in ours[0]
    for a, b in zip(ours, stock):
        assert torch.equal(a["image"], b["image"])
        if is_train:
            assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
            assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)


def test_the_trainers_loaders_read_16_bit_images_scaled(ramp16: tuple[Path, np.ndarray]) -> None:
    path, _ = ramp16
    name = f"siambench_test_ramp16_{uuid.uuid4().hex[:8]}"
    box = {"bbox": [8.0, 8.0, 120.0, 56.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    DatasetCatalog.register(name, lambda: [{"file_name": str(path), "height": 64, "width": 256, "image_id": 0,
                                            "annotations": [box]}])
    MetadataCatalog.get(name).set(thing_classes=["ramp"])
    cfg = get_transfer_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{name}',)", "SOLVER.IMS_PER_BATCH", "1", "DATALOADER.NUM_WORKERS", "0",
                         "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64"])
    (train,) = next(iter(TransferTrainer.build_train_loader(cfg)))
    (test,) = next(iter(TransferTrainer.build_test_loader(cfg, name)))
    for image in (train["image"], test["image"]):
        assert tuple(image.shape) == (3, 64, 256) and (image == 255).float().mean().item() < 0.01
