"""``siambench doctor``: the report and its exit codes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from siambench.benchmarks import cli, doctor


def test_healthy_install_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for word in ("torch", "torchvision", "detectron2", "compiled ops", "CUDA", "NCCL", "voc2007", "coco", "synth"):
        assert word in out
    import detectron2

    assert f"siambench doctor: ok (detectron2 {detectron2.__version__}" in out


def test_quiet_prints_only_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main(["--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[0].startswith("siambench doctor: ok")


@pytest.mark.parametrize("module", ["pycocotools", "fvcore", "detectron2", "tensorboard", "cloudpickle", "omegaconf"])
def test_missing_required_package_exits_one(module: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    assert doctor.main(["--quiet"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and f"{module}:" in err
    if module == "detectron2":
        assert "make setup" in err


@pytest.mark.parametrize("module, fix", [
    ("cloudpickle", "`pip install 'siambench[detectron2]'`"),
    ("tensorboard", "`pip install 'siambench[detectron2]'`"),
    ("pycocotools", "`pip install pycocotools`"),
    ("detectron2", "`pip install 'siambench[detectron2]' && python -m siambench.transfer.install_d2`"),
])
def test_a_wheel_install_gets_pip_fixes_not_make_setup(module: str, fix: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from siambench.transfer import install_d2

    monkeypatch.setattr(install_d2, "CHECKOUT", Path(sys.prefix) / "no-checkout")  # as from site-packages
    monkeypatch.setitem(sys.modules, module, None)
    assert doctor.main(["--quiet"]) == 1
    failure = next(line for line in capsys.readouterr().err.splitlines() if line.strip().startswith(f"{module}:"))
    assert fix in failure and "make setup" not in failure


def test_detectron2_missing_a_dependency_names_that_dependencys_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from siambench.transfer import install_d2

    monkeypatch.setattr(install_d2, "CHECKOUT", Path(sys.prefix) / "no-checkout")
    assert doctor._detectron2_fix(ModuleNotFoundError("No module named 'omegaconf'", name="omegaconf")) \
        == "`pip install 'siambench[detectron2]'`"
    assert "install_d2" in doctor._detectron2_fix(ModuleNotFoundError("no", name="detectron2"))
    monkeypatch.undo()
    assert doctor._detectron2_fix(ModuleNotFoundError("no", name="omegaconf")) == "`make setup`"  # this checkout


def test_missing_optional_package_is_only_reported(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    assert doctor.main([]) == 0
    assert "faster_coco_eval" in capsys.readouterr().out


def test_broken_torchvision_ops_fail(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torchvision

    def broken_nms(*args: object) -> None:
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(torchvision.ops, "nms", broken_nms)
    assert doctor.main(["--quiet"]) == 1
    assert "torchvision::nms" in capsys.readouterr().err


def test_required_datasets(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main(["--quiet", "--require-datasets", "synth"]) == 0
    monkeypatch.setenv("SIAMBENCH_SYNTH", str(tmp_path / "missing"))
    assert doctor.main(["--quiet", "--require-datasets", "synth"]) == 1
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert doctor.main(["--quiet"]) == 0  # informational unless required


def test_imagenet_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMBENCH_IMAGENET", str(tmp_path))
    assert doctor.main(["--quiet", "--require-datasets", "imagenet"]) == 1
    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True)
    assert doctor.main(["--quiet", "--require-datasets", "imagenet"]) == 0
    monkeypatch.delenv("SIAMBENCH_IMAGENET")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert doctor.imagenet_root() == tmp_path / "imagenet"


def test_doctor_uses_pretrainings_imagenet_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from siambench.pretrain.data import folder, roots

    assert doctor.imagenet_root is folder.imagenet_root  # one rule, not a copy that can drift
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    monkeypatch.setenv("SIAMBENCH_IMAGENET", str(tmp_path / "in1k"))  # wins over DETECTRON2_DATASETS
    assert roots.resolve_data_root("") == str(tmp_path / "in1k")  # where an empty DATA.ROOT trains from
    assert doctor.main(["--quiet", "--require-datasets", "imagenet"]) == 1
    assert f"{tmp_path / 'in1k'}: no train/val" in capsys.readouterr().err


def test_bad_choice_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        doctor.main(["--require-datasets", "imagenet21k"])
    assert e.value.code == 2


def _row(name: str) -> doctor.Check:
    return next(r for r in doctor.collect() if r.name == name)


def test_nccl_is_not_called_available_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import torch.distributed as dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)  # compiled in, as in the CUDA wheels
    detail = _row("NCCL").detail
    assert not detail.startswith("available") and "unusable here" in detail


def test_a_missing_dataset_root_is_named_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    if os.environ.get("DETECTRON2_DATASETS"):
        pytest.skip("builtin roots are absolute here")
    monkeypatch.chdir(tmp_path)  # no ./datasets: detectron2's builtin roots are relative to the cwd
    assert _row("coco").detail == f"directory {Path('datasets/coco')} does not exist"
    (tmp_path / "datasets" / "coco" / "annotations").mkdir(parents=True)
    detail = _row("coco").detail  # the root exists: each missing file is listed, once
    assert "train2017" in detail and "val2017" in detail and "does not exist" not in detail


def test_detectron2_projects_are_reported() -> None:
    import importlib.util

    from siambench.transfer.install_d2 import PROJECTS

    detail = _row("projects").detail
    installed = all(importlib.util.find_spec(f"detectron2.projects.{p}") for p in PROJECTS)
    assert detail.startswith("detectron2.projects.") if installed else "install_d2" in detail
