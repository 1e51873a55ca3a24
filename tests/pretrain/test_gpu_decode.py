"""DATA.DECODE gpu_jpeg: the device decode path, run on CPU tensors (decode_jpeg decodes there too)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T

from siambench.pretrain.config import get_cfg
from siambench.pretrain.data import gpu_decode
from siambench.pretrain.data.folder import CorruptDataError, pil_loader
from siambench.pretrain.data.gpu_decode import DecodeAugment, EncodedBatch, EncodedCropTransform, read_encoded
from siambench.pretrain.data.gpu_aug import BatchAugment
from siambench.pretrain.data.loader import IndexedDataset, build_dataset, build_pretrain_loader
from siambench.pretrain.data.transforms import TwoCropsTransform
from siambench.pretrain.data.views import build_view_pipeline
from siambench.pretrain.utils.config import ConfigError, load_config

CPU = torch.device("cpu")


def _smooth(seed: int, w: int, h: int) -> np.ndarray:
    """A smooth colourful image (JPEG-friendly, so decoders agree closely)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = [np.sin(xx * rng.uniform(2, 8) + yy * rng.uniform(2, 8) + rng.uniform(0, 6)) for _ in range(3)]
    return ((np.stack(chans, -1) * 0.5 + 0.5) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(_smooth(i, 80 + 8 * i, 60 + 4 * i)).save(root / "train" / "ab"[i % 2] / f"{i}.jpg", quality=95)
    Image.fromarray(_smooth(7, 64, 48)[..., 0]).save(root / "train" / "a" / "gray.jpg", quality=95)  # mode L
    Image.fromarray(_smooth(8, 50, 70)).save(root / "train" / "b" / "img.png")  # not a JPEG
    Image.fromarray(_smooth(9, 60, 60)).convert("CMYK").save(root / "train" / "b" / "cmyk.jpg", quality=95)
    return root


def _cfg(root: Path, *opts: str):
    return load_config(get_cfg(), None, ["DATA.ROOT", str(root), "DATA.IMAGE_SIZE", "32", "DATA.AUG_BACKEND",
                                         "batched", "DATA.DECODE", "gpu_jpeg", *opts])


def test_loader_hands_bytes_for_jpegs_and_pixels_otherwise(folder):
    rgb = read_encoded(str(folder / "train" / "a" / "0.jpg"))
    assert rgb.encoded and rgb.data.dim() == 1 and (rgb.width, rgb.height) == (80, 60)
    assert read_encoded(str(folder / "train" / "a" / "gray.jpg")).encoded
    for name in ("img.png", "cmyk.jpg"):
        im = read_encoded(str(folder / "train" / "b" / name))
        assert not im.encoded and im.data.dtype == torch.uint8 and im.data.shape == (3, im.height, im.width)


def test_crop_boxes_are_the_pil_paths_draws():
    img = Image.new("RGB", (500, 375))
    enc = gpu_decode.EncodedImage(torch.zeros(1, dtype=torch.uint8), True, 500, 375, "x.jpg")
    rrc = T.RandomResizedCrop(224, scale=(0.2, 1.0))
    for seed in range(20):  # same generator state -> the same box as RandomResizedCrop on the PIL image
        torch.manual_seed(seed)
        spec = EncodedCropTransform(224, (0.2, 1.0))(enc)
        torch.manual_seed(seed)
        assert spec.box == tuple(rrc.get_params(img, list(rrc.scale), list(rrc.ratio)))


def test_device_crops_match_pil_crops_on_the_same_box(folder):
    paths = sorted((folder / "train").rglob("*.*"))
    torch.manual_seed(0)
    specs = [EncodedCropTransform(32)(read_encoded(str(p))) for p in paths]
    views, _ = gpu_decode.collate_encoded([(s, i) for i, s in enumerate(specs)])
    ours = DecodeAugment(32, BatchAugment()).crops(views.to(CPU)).float()
    ref = []
    for p, s in zip(paths, specs):
        crop = TF.resized_crop(pil_loader(str(p)), *s.box, [32, 32])  # what build_crop_transform does
        ref.append(TF.pil_to_tensor(TF.hflip(crop) if s.flip else crop).float())
    d = (ours - torch.stack(ref)).abs().flatten(1).mean(1)  # /255 per image
    assert d.max() < 0.5, d  # measured <= 0.2: two JPEG decoders, torch's antialiased bilinear vs PIL's


def test_whole_gpu_jpeg_path_through_the_loader_decodes_once(folder, monkeypatch):
    cfg = _cfg(folder)
    views = build_view_pipeline(cfg, CPU, decode_on_cpu=True)
    assert isinstance(views.batch_aug, DecodeAugment)
    ds = build_dataset(cfg, "train", TwoCropsTransform(views.view_tf), image_loader=views.image_loader)
    loader = build_pretrain_loader(IndexedDataset(ds), batch_size=4, num_workers=0, collate_fn=views.collate_fn)
    calls = []
    real = gpu_decode.decode_jpeg
    monkeypatch.setattr(gpu_decode, "decode_jpeg", lambda data, **k: calls.append(len(data)) or real(data, **k))
    (v1, v2), index = next(iter(loader))
    assert isinstance(v1, EncodedBatch) and index.shape == (4,)
    x1, x2 = (views.batch_aug(v.to(CPU, non_blocking=True)) for v in (v1, v2))  # what TrainContext.to_device does
    assert x1.shape == x2.shape == (4, 3, 32, 32) and x1.dtype == torch.float32 and not torch.equal(x1, x2)
    assert len(calls) == 1  # one batched decode shared by both views
    assert -3 < float(x1.min()) and float(x1.max()) < 3  # normalised


def test_gpu_jpeg_falls_back_to_pil_without_cuda(folder, caplog):
    with caplog.at_level(logging.WARNING):
        views = build_view_pipeline(_cfg(folder), CPU)
    assert "no CUDA device" in caplog.text and "DATA.DECODE pil" in caplog.text
    assert views.image_loader is pil_loader and views.collate_fn is None and isinstance(views.batch_aug, BatchAugment)


@pytest.mark.parametrize("opts, match", [
    (["DATA.DECODE", "nvjpeg"], "DATA.DECODE must be one of"),
    (["DATA.AUG_BACKEND", "pil"], "needs DATA.AUG_BACKEND batched"),
    (["DATA.DATASET", "synthetic"], "has none"),
    (["DATA.CACHE_IN_MEMORY", "True"], "nothing to decode"),
])
def test_bad_decode_configs_are_refused(folder, opts, match):
    with pytest.raises(ConfigError, match=match):
        build_view_pipeline(_cfg(folder, *opts), CPU)


def test_corrupt_jpeg_is_named(tmp_path, folder):
    bad = tmp_path / "bad.jpg"
    data = (folder / "train" / "a" / "0.jpg").read_bytes()
    bad.write_bytes(data[:200] + b"\x00" * 50)  # a valid header, garbage after it
    spec = EncodedCropTransform(32)(read_encoded(str(bad)))
    views, _ = gpu_decode.collate_encoded([(spec, 0)])
    with pytest.raises(CorruptDataError, match="bad.jpg"):
        DecodeAugment(32, BatchAugment())(views)


def test_a_jpeg_the_device_decoder_refuses_is_decoded_by_pil(folder, monkeypatch, caplog):
    paths = [str(folder / "train" / "a" / f"{i}.jpg") for i in (0, 2)]
    specs = [EncodedCropTransform(32)(read_encoded(p)) for p in paths]
    views, _ = gpu_decode.collate_encoded([(s, i) for i, s in enumerate(specs)])
    real, refused = gpu_decode.decode_jpeg, specs[1].image.data

    def picky(data, **k):  # stands in for an nvJPEG that cannot take the second file
        if any(torch.equal(d, refused) for d in (data if isinstance(data, list) else [data])):
            raise RuntimeError("unsupported JPEG")
        return real(data, **k)

    monkeypatch.setattr(gpu_decode, "decode_jpeg", picky)
    with caplog.at_level(logging.WARNING):
        crops = DecodeAugment(32, BatchAugment()).crops(views)
    assert crops.shape == (2, 3, 32, 32) and "decoded by PIL" in caplog.text and "2.jpg" in caplog.text


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd (Linux)")
def test_a_batch_crosses_from_the_workers_in_a_few_file_descriptors(folder):
    """Worker batches arrive through shared memory, one file descriptor per tensor: a batch of
    packed bytes holds a constant few, not one per image (ulimit -n 1024 at batch 256 x 8 prefetched)."""
    cfg = _cfg(folder)
    views = build_view_pipeline(cfg, CPU, decode_on_cpu=True)
    ds = build_dataset(cfg, "train", TwoCropsTransform(views.view_tf), image_loader=views.image_loader)
    ds.samples = ds.samples * 8  # 72 images
    loader = build_pretrain_loader(IndexedDataset(ds), batch_size=16, num_workers=2, collate_fn=views.collate_fn,
                                   prefetch_factor=1)
    it = iter(loader)
    held = [next(it), next(it)]  # both workers' first batches in: their start-up descriptors are open
    before = _open_fds()
    held += [next(it) for _ in range(2)]
    per_batch = (_open_fds() - before) / 2
    assert per_batch <= 6, per_batch  # measured: 16 images -> 4 fds per batch (before: 17, one per image + 1)
    del it


def test_cropping_a_batch_costs_a_constant_number_of_host_ops(folder):
    """Crop + resize + flip of a batch are batched: the torch calls do not grow with the batch."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls += getattr(func, "__name__", "") != "__get__"  # calls, not attribute reads (.shape)
            return func(*args, **(kwargs or {}))

    paths = [p for p in sorted((folder / "train").rglob("*.jpg")) if "cmyk" not in p.name]
    augment = DecodeAugment(32, BatchAugment())
    calls = {}
    for n in (4, 16):
        torch.manual_seed(0)
        specs = [EncodedCropTransform(32)(read_encoded(str(paths[i % len(paths)]))) for i in range(n)]
        views, _ = gpu_decode.collate_encoded([(s, i) for i, s in enumerate(specs)])
        views.packed.decode(CPU)  # decoding is one decode_jpeg call either way; count the cropping
        with Count() as count:
            crops = augment.crops(views)
        assert crops.shape == (n, 3, 32, 32)
        calls[n] = count.calls
    assert calls[16] == calls[4] and calls[4] <= 80, calls  # measured 67 and 67 (before: 32 and 121, ~7.4 per image)


def test_crops_are_the_same_in_one_padded_chunk_or_many(folder):
    paths = [p for p in sorted((folder / "train").rglob("*.*"))]  # sizes differ: padding and edges matter
    torch.manual_seed(0)
    specs = [EncodedCropTransform(32, scale=(0.9, 1.0))(read_encoded(str(p))) for p in paths]  # boxes at the edges
    views, _ = gpu_decode.collate_encoded([(s, i) for i, s in enumerate(specs)])
    one = DecodeAugment(32, BatchAugment()).crops(views)
    many = DecodeAugment(32, BatchAugment(), pad_budget=1).crops(views)  # one image per chunk, reordered back
    assert torch.equal(one, many)
