"""lincls / knn / supervised check their inputs before OUTPUT_DIR exists: a refusal is one line,
exit 2, and nothing created or rewritten; MODEL.WIDTH comes from the checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from siambench.benchmarks import cli
from siambench.pretrain.checkpoint import save_checkpoint
from siambench.pretrain.methods.encoders import build_encoder

ROOT = Path(__file__).resolve().parents[2]
KNN = str(ROOT / "configs/knn/synth_r18.yaml")
LINCLS = str(ROOT / "configs/lincls/synth_r18.yaml")
SUPERVISED = str(ROOT / "configs/supervised/synth_r18.yaml")
METHODS = ("simsiam", "moco_v2", "simclr", "byol", "swav")


def _folder(root: Path, train: tuple[str, ...], val: tuple[str, ...]) -> Path:
    for split, classes in (("train", train), ("val", val)):
        for i, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (32, 32), (40 * i, 9 * k, 90)).save(root / split / c / f"{k}.jpg")
    return root


def _encoder_ckpt(path: Path, width: int = 8) -> Path:
    torch.manual_seed(0)
    state = {f"module.encoder.{k}": v for k, v in build_encoder("resnet18", num_classes=16, width=width).state_dict().items()}
    torch.save({"state_dict": state, "arch": "resnet18", "epoch": 1}, path)
    return path


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


def _refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], match: str) -> None:
    before = _files(out)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert _files(out) == before and out.exists() == bool(before)  # nothing created, nothing rewritten


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folder(tmp_path_factory.mktemp("two"), ("a", "b"), ("a", "b"))


def test_knn_takes_model_width_from_the_checkpoint(two_classes: Path, tmp_path: Path) -> None:
    out = tmp_path / "knn"
    ckpt = _encoder_ckpt(tmp_path / "w8.pth", width=8)  # no MODEL.WIDTH on the command line
    assert cli.main(["knn", "--config-file", KNN, "DATA.ROOT", str(two_classes), "DATA.CACHE_IN_MEMORY", "False",
                     "MODEL.WEIGHTS", str(ckpt), "OUTPUT_DIR", str(out)]) == 0
    assert json.loads((out / "knn_results.json").read_text())["width"] == 8
    assert "WIDTH: 8" in (out / "config.yaml").read_text()


def test_lincls_takes_model_width_from_the_checkpoint(two_classes: Path, tmp_path: Path) -> None:
    from siambench.pretrain.lincls import _check_inputs
    from siambench.pretrain.eval_config import get_lincls_defaults
    from siambench.pretrain.utils.config import load_config

    ckpt = _encoder_ckpt(tmp_path / "w4.pth", width=4)
    cfg = load_config(get_lincls_defaults(), LINCLS, ["DATA.ROOT", str(two_classes), "MODEL.WEIGHTS", str(ckpt)])
    assert cfg.MODEL.WIDTH == 64 and _check_inputs(cfg).MODEL.WIDTH == 4


@pytest.fixture(scope="module")
def method_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pretraining checkpoint of every method, written by the pretraining checkpointer."""
    from siambench.pretrain.builder import build_model
    from siambench.pretrain.config import get_cfg
    from tests.pretrain.conftest import TINY_OPTS

    out = {}
    for method in METHODS:
        cfg = get_cfg()
        cfg.merge_from_list([*TINY_OPTS, "MODEL.METHOD", method])
        model = build_model(cfg)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        out[method] = save_checkpoint(tmp_path_factory.mktemp(method), 1, model, opt, None, cfg)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_truncated_weights_of_every_method_create_nothing(method: str, method_checkpoints: dict[str, Path],
                                                         two_classes: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    good = method_checkpoints[method]
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for command, config in (("knn", KNN), ("lincls", LINCLS)):
        out = tmp_path / command
        _refused([command, "--config-file", config, "DATA.ROOT", str(two_classes), "MODEL.WEIGHTS", str(truncated),
                  "OUTPUT_DIR", str(out)], out, capsys, str(truncated))


def test_bad_weights_into_a_finished_knn_dir_rewrite_nothing(two_classes: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "knn"
    ckpt = _encoder_ckpt(tmp_path / "w.pth")
    assert cli.main(["knn", "--config-file", KNN, "DATA.ROOT", str(two_classes), "DATA.CACHE_IN_MEMORY", "False",
                     "MODEL.WEIGHTS", str(ckpt), "OUTPUT_DIR", str(out)]) == 0
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    _refused(["knn", "--config-file", KNN, "DATA.ROOT", str(two_classes), "MODEL.WEIGHTS", str(garbage),
              "OUTPUT_DIR", str(out)], out, capsys, "garbage.pth")


@pytest.mark.parametrize("command", ["knn", "lincls"])
def test_train_and_val_with_other_classes_create_nothing(command: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "data", ("a", "b"), ("a", "c"))
    ckpt = _encoder_ckpt(tmp_path / "w.pth")
    out = tmp_path / "out"
    _refused([command, "--config-file", KNN if command == "knn" else LINCLS, "DATA.ROOT", str(data),
              "MODEL.WEIGHTS", str(ckpt), "OUTPUT_DIR", str(out)], out, capsys, "only in val: ['c']")


@pytest.mark.parametrize("command", ["knn", "lincls", "supervised"])
def test_one_class_is_refused(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder(tmp_path / "data", ("only",), ("only",))
    config = {"knn": KNN, "lincls": LINCLS, "supervised": SUPERVISED}[command]
    weights = [] if command == "supervised" else ["MODEL.WEIGHTS", str(_encoder_ckpt(tmp_path / "w.pth"))]
    out = tmp_path / "out"
    _refused([command, "--config-file", config, "DATA.ROOT", str(data), *weights, "OUTPUT_DIR", str(out)], out,
             capsys, "needs at least 2")
