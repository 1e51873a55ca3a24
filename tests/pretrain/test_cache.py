"""DATA.CACHE_IN_MEMORY: decode once, same pixels, corrupt files still handled."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siambench.pretrain.config import get_cfg
from siambench.pretrain.data import SafeImageFolder, build_dataset
from siambench.pretrain.data.cache import MemoryLoader, cache_in_memory
from siambench.pretrain.data.folder import CorruptDataError, pil_loader


def _folder(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_cached_images_equal_decoded_and_files_are_not_read_again(tmp_path: Path) -> None:
    root = _folder(tmp_path / "train")
    calls: list[str] = []

    def counting_loader(path: str) -> Image.Image:
        calls.append(path)
        return pil_loader(path)

    ds = cache_in_memory(SafeImageFolder(root, loader=counting_loader))
    assert isinstance(ds.loader, MemoryLoader) and ds.loader.nbytes == 8 * 8 * 8 * 3
    assert len(calls) == len(ds) == 8
    for i in range(2):  # two "epochs"
        for k in range(len(ds)):
            img, target = ds[k]
            assert np.array_equal(np.asarray(img), np.asarray(pil_loader(ds.samples[k][0])))
            assert target == ds.samples[k][1]
    assert len(calls) == 8, "a cached dataset must not decode its files again"
    assert cache_in_memory(ds) is ds and len(calls) == 8  # idempotent


def test_unreadable_file_is_left_to_the_folder_error_handling(tmp_path: Path) -> None:
    root = _folder(tmp_path / "train")
    (root / "a" / "1.png").write_bytes(b"not an image")
    ds = cache_in_memory(SafeImageFolder(root, max_bad_fraction=0.5))
    assert len(ds.loader.arrays) == 7
    img, _ = ds[1]  # replaced by the next readable sample, and counted
    assert ds.num_bad == 1 and np.array_equal(np.asarray(img), np.asarray(pil_loader(ds.samples[2][0])))
    strict = cache_in_memory(SafeImageFolder(root, strict=True))
    with pytest.raises(CorruptDataError, match="1.png"):
        strict[1]


def test_config_key_turns_the_cache_on(tmp_path: Path) -> None:
    _folder(tmp_path / "train")
    cfg = get_cfg()
    cfg.DATA.ROOT = str(tmp_path)
    assert not isinstance(build_dataset(cfg, "train", None).loader, MemoryLoader)  # default off (ImageNet)
    cfg.DATA.CACHE_IN_MEMORY = True
    assert isinstance(build_dataset(cfg, "train", None).loader, MemoryLoader)
