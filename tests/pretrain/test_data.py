"""Robust ImageFolder, MoCo v2 transforms, batched augmentation."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from siambench.pretrain.data import (BatchAugment, CorruptDataError, SafeImageFolder, SyntheticShapes, TwoCropsTransform,
                           build_crop_transform, build_eval_transform, build_moco_v2_transform)
from siambench.pretrain.data import gpu_aug



def _folder(root: Path, n_per_class: int = 5, classes=("a", "b")) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.new("RGB", (40, 30), (40 * i, 100, 200)).save(root / c / f"{i}.jpg")
    return root


def test_layout_and_samples(tmp_path):
    ds = SafeImageFolder(_folder(tmp_path / "train"), transform=build_eval_transform(32))
    assert ds.classes == ["a", "b"] and len(ds) == 10 and ds.targets.count(1) == 5
    img, target = ds[7]
    assert img.shape == (3, 32, 32) and target == 1


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SafeImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-directories"):
        SafeImageFolder(tmp_path / "empty")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "x.jpg")
    with pytest.raises(ValueError, match="one sub-directory per class"):
        SafeImageFolder(flat)
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="no images"):
        SafeImageFolder(tmp_path / "noimg")
    _folder(tmp_path / "root" / "train")
    _folder(tmp_path / "root" / "val")
    with pytest.raises(ValueError, match="pass the split directory"):
        SafeImageFolder(tmp_path / "root")


def _corrupt(path: Path, truncated: bool) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if truncated else b"not an image at all")


def test_corrupt_images_replaced_counted_logged(tmp_path, caplog):
    root = _folder(tmp_path / "train", n_per_class=50)
    _corrupt(root / "a" / "3.jpg", truncated=True)
    ds = SafeImageFolder(root, transform=build_eval_transform(16), max_bad_fraction=0.05)
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("a/3.jpg")][0]
    with caplog.at_level(logging.WARNING):
        img, target = ds[bad]
        ds[bad]  # a second read is not counted twice
    assert img.shape == (3, 16, 16) and target == 0  # replaced by the next sample (a/4.jpg)
    assert ds.num_bad == 1 and ds.bad_paths() == [str(root / "a" / "3.jpg")]
    assert str(root / "a" / "3.jpg") in caplog.text
    # in a DataLoader with workers the count is shared with the main process
    _corrupt(root / "b" / "0.jpg", truncated=False)
    list(torch.utils.data.DataLoader(ds, batch_size=25, num_workers=2))
    assert ds.num_bad == 2


def test_corrupt_over_fraction_or_strict_raises(tmp_path):
    root = _folder(tmp_path / "train", n_per_class=5)
    _corrupt(root / "a" / "1.jpg", truncated=False)
    strict = SafeImageFolder(root, strict=True)
    with pytest.raises(CorruptDataError, match="strict"):
        strict[1]
    lenient = SafeImageFolder(root, max_bad_fraction=0.01)  # 1 of 10 > 1%
    with pytest.raises(CorruptDataError, match="max_bad_fraction"):
        lenient[1]
    assert SafeImageFolder(root, max_bad_fraction=0.2)[1][1] == 0


def test_moco_v2_views():
    tf = build_moco_v2_transform(48)
    names = [type(t).__name__ for t in tf.transforms]
    assert names == ["RandomResizedCrop", "RandomApply", "RandomGrayscale", "RandomApply", "RandomHorizontalFlip",
                     "ToTensor", "Normalize"]
    assert tf.transforms[0].scale == (0.2, 1.0) and tf.transforms[1].p == 0.8 and tf.transforms[3].p == 0.5
    jitter = tf.transforms[1].transforms[0]
    assert (jitter.brightness, jitter.hue) == ((0.6, 1.4), (-0.1, 0.1))
    img = SyntheticShapes(4, 64).image(0)
    v1, v2 = TwoCropsTransform(tf)(img)
    assert v1.shape == v2.shape == (3, 48, 48) and not torch.equal(v1, v2)
    crop = build_crop_transform(48)(img)
    assert crop.dtype == torch.uint8 and crop.shape == (3, 48, 48)


def test_batched_jitter_ops_match_torchvision():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 20, 20, generator=g)
    f = torch.tensor([0.6, 1.3, 1.0])
    h = torch.tensor([0.1, -0.05, 0.0])
    for op, ref, factor in [(gpu_aug._brightness, TF.adjust_brightness, f), (gpu_aug._contrast, TF.adjust_contrast, f),
                            (gpu_aug._saturation, TF.adjust_saturation, f), (gpu_aug._hue, TF.adjust_hue, h)]:
        expected = torch.stack([ref(x[i], float(factor[i])) for i in range(3)])
        torch.testing.assert_close(op(x.clone(), factor), expected, atol=1e-4, rtol=0)
    sigma = torch.tensor([0.3, 1.0, 2.0])
    blurred = gpu_aug._gaussian_blur(x, sigma, max_sigma=2.0)  # radius ceil(3 * 2) = 6
    expected = torch.stack([TF.gaussian_blur(x[i], [13, 13], [float(sigma[i])] * 2) for i in range(3)])
    # torchvision pads by reflection, we replicate edges like PIL: equal away from the border
    torch.testing.assert_close(blurred[..., 6:-6, 6:-6], expected[..., 6:-6, 6:-6], atol=1e-5, rtol=0)


def test_batch_augment_probabilities_and_normalisation():
    crops = (torch.rand(64, 3, 24, 24) * 255).to(torch.uint8)
    identity = BatchAugment(jitter_p=0, grayscale_p=0, blur_p=0)(crops)
    plain = TF.normalize(crops.float() / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.testing.assert_close(identity, plain)
    gray = BatchAugment(jitter_p=0, grayscale_p=1, blur_p=0, mean=(0, 0, 0), std=(1, 1, 1))(crops)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    torch.manual_seed(0)
    out = BatchAugment(channels_last=True)(crops)
    assert out.shape == (64, 3, 24, 24) and out.is_contiguous(memory_format=torch.channels_last)
    changed = (out - plain).abs().flatten(1).amax(1) > 1e-3
    assert 0.75 < changed.float().mean() < 1.0  # p(no op at all) = 0.2 * 0.8 * 0.5 = 8%
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment()(crops.float())
