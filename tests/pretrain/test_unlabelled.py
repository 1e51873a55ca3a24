"""Pretraining on unlabelled images: a nested folder of mixed formats, or a list file."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siambench.pretrain.data.folder import DataRootError
from siambench.pretrain.data.roots import check_data_root, list_images
from siambench.pretrain.data.unlabelled import UnlabelledImages
from siambench.pretrain.main import main as pretrain_main

_ORIENTATION = 0x0112


def _rgb(seed: int, size=(40, 24)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def make_mixed_folder(root: Path) -> dict[str, Path]:
    """Images at depths 0-3: JPEG, PNG, WebP, greyscale, CMYK, 16-bit, EXIF-rotated, truncated; plus noise."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / ".hidden").mkdir()
    files = {
        "jpeg": root / "top.jpg", "png": root / "a" / "p.png", "webp": root / "a" / "w.webp",
        "grey": root / "a" / "b" / "g.jpeg", "cmyk": root / "a" / "b" / "k.jpg",
        "16bit": root / "a" / "b" / "c" / "d.png", "exif": root / "a" / "b" / "c" / "r.JPG",
        "truncated": root / "a" / "t.jpg",
    }
    _rgb(0).save(files["jpeg"])
    _rgb(1).save(files["png"])
    _rgb(2).save(files["webp"])
    _rgb(3).convert("L").save(files["grey"])
    _rgb(4).convert("CMYK").save(files["cmyk"])
    ramp = (np.arange(24 * 40, dtype=np.uint32).reshape(24, 40) * 68).astype(np.uint16)  # 0..65212
    Image.fromarray(ramp).save(files["16bit"])
    exif = Image.Exif()
    exif[_ORIENTATION] = 6  # stored landscape, shown rotated 90 degrees: upright it is 24 x 40
    _rgb(5).save(files["exif"], exif=exif)
    _rgb(6).save(files["truncated"])
    data = files["truncated"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 3])
    _rgb(7).save(root / ".hidden" / "skip.jpg")  # hidden: skipped
    (root / "a" / "notes.txt").write_text("not an image")
    return files


def test_folder_at_any_depth_mixed_formats(tmp_path, caplog):
    files = make_mixed_folder(tmp_path / "photos")
    assert sorted(list_images(tmp_path / "photos")) == sorted(str(p) for p in files.values())
    with caplog.at_level(logging.INFO, logger="siambench.pretrain.data.unlabelled"):
        ds = UnlabelledImages(tmp_path / "photos", max_bad_fraction=0.5)
    assert len(ds) == 8 and ds.classes == [] and set(ds.targets) == {0}
    line = next(r.getMessage() for r in caplog.records if "unlabelled images under" in r.getMessage())
    assert ": 8 (jpeg 1, jpg 4, png 2, webp 1)" in line  # formats by extension
    assert "CMYK 1" in line and "L 1" in line and "I;16 1" in line and "1 EXIF-rotated" in line

    got = {}
    for i, (path, _) in enumerate(ds.samples):
        img, _, used = ds.load(i)
        got[Path(ds.samples[used][0])] = img
        assert img.mode == "RGB"
    assert ds.num_bad == 1 and ds.bad_paths() == [str(files["truncated"])]  # replaced by the next image, counted
    assert got[files["exif"]].size == (24, 40)  # EXIF orientation applied (stored 40 x 24)
    assert got[files["png"]].size == (40, 24)
    top = np.asarray(got[files["16bit"]])[..., 0]
    assert top.max() >= 250 and top.min() == 0  # 16-bit scaled to 8 bits, not clipped to white
    assert (top == 255).mean() < 0.05


def test_list_file_relative_and_absolute(tmp_path):
    files = make_mixed_folder(tmp_path / "photos")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\nphotos/top.jpg\n\n{files['png']}\n")
    assert list_images(listing) == [str(tmp_path / "photos" / "top.jpg"), str(files["png"])]
    listing.write_text("photos/top.jpg\nphotos/gone.jpg\n")
    with pytest.raises(DataRootError, match=r"list.txt:2: listed image .*gone.jpg does not exist"):
        list_images(listing)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataRootError, match="lists no image"):
        list_images(tmp_path / "empty.txt")
    (tmp_path / "noimg").mkdir()
    with pytest.raises(DataRootError, match="holds no image"):
        check_data_root(tmp_path / "noimg", unlabelled_ok=True)


def test_which_roots_are_unlabelled(tmp_path):
    from siambench.pretrain.utils.paths import is_unlabelled_root

    make_mixed_folder(tmp_path / "photos")
    (tmp_path / "imagenet" / "train" / "c").mkdir(parents=True)
    (tmp_path / "list.txt").write_text("photos/top.jpg\n")
    assert is_unlabelled_root(tmp_path / "photos") and is_unlabelled_root(tmp_path / "list.txt")
    assert not is_unlabelled_root(tmp_path / "imagenet") and not is_unlabelled_root(tmp_path / "gone")
    assert not is_unlabelled_root("")  # "" means ImageNet


def test_labelled_commands_refuse_in_one_line(tmp_path):
    make_mixed_folder(tmp_path / "photos")
    with pytest.raises(DataRootError) as e:
        check_data_root(tmp_path / "photos", ("train", "val"))
    msg = str(e.value)
    assert "\n" not in msg and "holds unlabelled images" in msg and "EVAL.KNN.OPTS" in msg
    check_data_root(tmp_path / "photos", ("train",), unlabelled_ok=True)  # pretraining reads it


@pytest.mark.parametrize("method", ["simsiam", "moco_v2", "simclr", "byol", "swav"])
def test_every_method_pretrains_on_unlabelled_folder(method, tmp_path, tiny_opts):
    root = tmp_path / "photos"
    make_mixed_folder(root)
    for i in range(10):  # enough good images for a batch of 8 per step
        _rgb(100 + i).save(root / "a" / "b" / f"more{i}.png")
    out = tmp_path / "run"
    extra = {"moco_v2": ["MODEL.MOCO.QUEUE", "16"], "swav": ["MODEL.SWAV.NUM_PROTOTYPES", "8"]}.get(method, [])
    opts = [*tiny_opts, "DATA.DATASET", "imagefolder", "DATA.ROOT", str(root), "SOLVER.BATCH_SIZE", "8",
            "SOLVER.EPOCHS", "1", "MONITOR.KNN_PERIOD", "1", "DATA.MAX_BAD_FRACTION", "0.2", "MODEL.METHOD", method,
            "SOLVER.OPTIMIZER", "sgd" if method in ("simsiam", "moco_v2") else "lars", *extra]
    assert pretrain_main(["OUTPUT_DIR", str(out), *opts]) == 0
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "kNN monitor needs labels: skipped" in log and "unlabelled images under" in log


def test_knn_on_unlabelled_root_exits_2_creating_nothing(tmp_path, capsys):
    from siambench.benchmarks.cli import main as cli

    make_mixed_folder(tmp_path / "photos")
    out = tmp_path / "knn"
    code = cli(["knn", "MODEL.DEVICE", "cpu", "DATA.ROOT", str(tmp_path / "photos"), "OUTPUT_DIR", str(out)])
    assert code == 2 and not out.exists()
    assert "holds unlabelled images" in capsys.readouterr().err


def test_pretrain_on_bad_unlabelled_roots_exits_2_creating_nothing(tmp_path, capsys, tiny_opts):
    from siambench.benchmarks.cli import main as cli

    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("a/b.jpg\n")
    for root, words in ((tmp_path / "empty", "holds no image"), (tmp_path / "list.txt", "list.txt:1: listed image")):
        out = tmp_path / "run"
        assert cli(["pretrain", *tiny_opts, "DATA.DATASET", "imagefolder", "DATA.ROOT", str(root),
                    "OUTPUT_DIR", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1 and not out.exists(), err
