"""`siambench transfer` refuses bad input before writing anything; checkpoints survive kills."""
from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from siambench.transfer import d2compat  # noqa: F401
from detectron2.structures import BoxMode  # noqa: E402

from siambench.pretrain.utils.config import ConfigError, save_config  # noqa: E402
from siambench.transfer import main as transfer_main  # noqa: E402
from siambench.transfer.annotations import sanitize_boxes  # noqa: E402
from siambench.transfer.checkpoint import AtomicCheckpointer, RetainingPeriodicCheckpointer  # noqa: E402
from siambench.transfer.datasets import DatasetLayoutError, validate_annotations  # noqa: E402
from siambench.transfer.main import build_parser, main, make_plan  # noqa: E402
from siambench.transfer.trials import trial_record, write_results  # noqa: E402


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))




def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    """The one error line of `siambench transfer` (other stderr lines may be log warnings)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("siambench transfer: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_scratch_with_model_weights_is_a_contradiction(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    w = tmp_path / "model.pkl"
    w.write_bytes(b"x")
    args = build_parser().parse_args(["--task", "synth_voc07", "--weights", "scratch", "MODEL.WEIGHTS", str(w)])
    with pytest.raises(ConfigError, match="--weights scratch contradicts MODEL.WEIGHTS"):
        make_plan(args, cuda_available=False)
    other = tmp_path / "other.pkl"
    other.write_bytes(b"y")
    args = build_parser().parse_args(["--task", "synth_voc07", "--weights", str(other), "MODEL.WEIGHTS", str(w)])
    with pytest.raises(ConfigError, match="contradicts --weights"):
        make_plan(args, cuda_available=False)
    # the same file twice is no contradiction
    args = build_parser().parse_args(["--task", "synth_voc07", "--weights", str(w), "MODEL.WEIGHTS", str(w)])
    assert make_plan(args, cuda_available=False).cfg.MODEL.WEIGHTS == str(w.resolve())
    out = tmp_path / "out"
    assert main(["--task", "synth_voc07", "--weights", "scratch", "MODEL.WEIGHTS", str(w), "OUTPUT_DIR", str(out)]) == 2
    assert "contradicts" in _one_line_error(capsys) and not out.exists()


@pytest.mark.parametrize("suffix", [".pth", ".pyth", ".PKL", ".pkl"])
def test_code_carrying_weights_are_refused_in_one_line(suffix: str, synth_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    w = tmp_path / f"evil{suffix}"
    if suffix in (".pth", ".pyth"):
        torch.save({"model": {"x": _RunsCode()}}, w)
    else:
        w.write_bytes(pickle.dumps({"model": {"x": _RunsCode()}, "__author__": "x"}))
    out = tmp_path / "out"
    assert main(["--task", "synth_voc07", "--weights", str(w), "OUTPUT_DIR", str(out)]) == 2
    err = _one_line_error(capsys)
    assert str(w) in err and "refused" in err and not out.exists()


def test_eval_only_on_an_empty_model_is_one_line(synth_root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "trial0" / "model_final.pth"
    model.parent.mkdir()
    model.write_bytes(b"")  # killed during detectron2's save
    out = tmp_path / "eval"
    assert main(["--task", "synth_voc07", "--eval-only", "--weights", str(model), "OUTPUT_DIR", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "model_final.pth is empty" in err and not out.exists()


def test_refused_transfer_rewrites_nothing(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    w = tmp_path / "w.pkl"
    w.write_bytes(b"weights v1")
    argv = ["--task", "synth_voc07", "--weights", str(w), "--trials", "1", "OUTPUT_DIR", str(tmp_path / "out")]
    plan = make_plan(build_parser().parse_args(argv), cuda_available=False)
    save_config(plan.cfg, plan.output_dir)
    save_config(plan.trial_cfg(0), plan.trial_dir(0))
    write_results(plan.trial_dir(0) / "results.json", trial_record(plan, 0, "complete", {"bbox": {"AP": 1.0}}))
    before = {p: p.stat().st_mtime_ns for p in plan.output_dir.rglob("*")}
    config = (plan.output_dir / "config.yaml").read_text()
    assert main([*argv, "SOLVER.BASE_LR", "0.05"]) == 2
    assert "SOLVER.BASE_LR" in _one_line_error(capsys)
    assert (plan.output_dir / "config.yaml").read_text() == config
    assert {p: p.stat().st_mtime_ns for p in plan.output_dir.rglob("*")} == before  # no log.txt either


def test_failed_trial_is_recorded_as_failed(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def __init__(self, cfg):
            raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(transfer_main, "TransferTrainer", Exploding)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        main(["--task", "synth_voc07", "--weights", "scratch", "--trials", "1", "OUTPUT_DIR", str(out)])
    record = json.loads((out / "trial0" / "results.json").read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: CUDA out of memory (simulated)"


def _coco(root: Path, split: str = "train") -> Path:
    return root / "coco" / "annotations" / f"instances_{split}.json"


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.pop("annotations"), "no 'annotations' list"),
    (lambda d: d.pop("images"), "no 'images' list"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"bbox \[1, 2, 3\] is not \[x, y, width, height\]"),
    (lambda d: d["annotations"][0].update(image_id=10**9), "is not in 'images'"),
])
def test_malformed_coco_is_named_before_training(synth_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 damage, message) -> None:
    path = _coco(synth_copy)
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=rf"{path}.*{message}"):
        validate_annotations(["synth_coco_train"])
    out = tmp_path / "out"
    assert main(["--task", "synth_coco", "--weights", "scratch", "OUTPUT_DIR", str(out)]) == 2
    assert str(path) in _one_line_error(capsys) and not out.exists()


def test_voc_test_split_and_missing_images_are_checked_before_training(synth_copy: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    voc = synth_copy / "VOC2007"
    test_id = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    bad = voc / "Annotations" / f"{test_id}.xml"
    bad.write_text(bad.read_text()[:-30])
    out = tmp_path / "out"
    assert main(["--task", "synth_voc07", "--weights", "scratch", "OUTPUT_DIR", str(out)]) == 2
    assert f"{bad} is not valid XML" in _one_line_error(capsys) and not out.exists()
    train_id = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()[1]
    (voc / "JPEGImages" / f"{train_id}.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match=rf"image .*{train_id}.jpg is missing"):
        validate_annotations(["synth_voc_2007_trainval"])


def test_boxes_are_clipped_or_dropped_with_counts(synth_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    def rec(*boxes, mode=BoxMode.XYXY_ABS):
        return {"width": 100, "height": 50, "annotations": [{"bbox": list(b), "bbox_mode": mode} for b in boxes]}

    dicts = [rec((10, 10, 20, 20), (-30, 5, 40, 80), (60, 10, 50, 20), (5, 5, 5, 30), (120, 0, 150, 10)),
             rec((90, 40, 30, 30), (10, 10, -5, 5), mode=BoxMode.XYWH_ABS)]
    assert sanitize_boxes(dicts) == (2, 4)  # 2 clipped; inverted, zero-area, outside, negative size dropped
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[10, 10, 20, 20], [0.0, 5.0, 40.0, 50.0]]
    assert [a["bbox"] for a in dicts[1]["annotations"]] == [[90.0, 40.0, 10.0, 10.0]]
    # through the registered loader: the count is logged
    xml = synth_copy / "VOC2007" / "Annotations" / "000001.xml"
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + "-5" + text[text.index("</xmax>"):])  # inverted box
    from detectron2.data import DatasetCatalog

    with caplog.at_level(logging.WARNING):
        DatasetCatalog.get("synth_voc_2007_trainval")
    assert "dropped 1 empty" in caplog.text


def _checkpointer(save_dir: Path) -> AtomicCheckpointer:
    return AtomicCheckpointer(torch.nn.Linear(2, 2), str(save_dir))


def test_atomic_save_keeps_the_old_file_when_a_write_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpointer(tmp_path)
    ckpt.save("model_0000001", iteration=1)
    good = (tmp_path / "model_0000001.pth").read_bytes()

    def dying_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        ckpt.save("model_0000001", iteration=1)
    assert (tmp_path / "model_0000001.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]  # no temp left


def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = _checkpointer(tmp_path)
    ckpt.save("model_0000001", iteration=1)
    ckpt.save("model_0000003", iteration=3)
    (tmp_path / "model_0000003.pth").write_bytes((tmp_path / "model_0000003.pth").read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        assert ckpt.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    assert "model_0000003.pth" in caplog.text
    (tmp_path / "last_checkpoint").write_text("")  # empty pointer: the newest readable file
    assert ckpt.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    assert ckpt.resume_or_load("", resume=True)["iteration"] == 1


def test_periodic_retention_and_no_duplicate_final(tmp_path: Path) -> None:
    hook = RetainingPeriodicCheckpointer(_checkpointer(tmp_path), period=2, max_to_keep=2)
    hook.max_iter = 8
    for it in range(8):
        hook.step(it)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000003.pth", "model_0000005.pth",
                                                             "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
