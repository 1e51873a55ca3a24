"""Pipeline steps carry their options as a mapping; the command line is built from it, unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest

from siambench.benchmarks.pipeline.pipeline import main
from siambench.benchmarks.pipeline.pipeline_config import load_pipeline, resolve_path
from siambench.benchmarks.pipeline.pipeline_guard import changes, fingerprint
from siambench.benchmarks.pipeline.steps import Step, build_steps
from siambench.pretrain.utils.config import ConfigError

PIPELINE = """
OUTPUT_DIR: {out}
MODEL: {{ARCH: resnet18}}
DATA: {{IMAGE_SIZE: 32}}
SYNTH: {{ENABLED: True, ROOT: {out}/synth, ARGS: {synth_args}}}
ENTRIES:
  sim: {{KIND: simsiam, CONFIG: configs/pretrain/synth_r18.yaml, OPTS: [SOLVER.EPOCHS, 2, MODEL.ARCH, resnet34]}}
EVAL:
  KNN: {{ENABLED: False}}
  LINCLS: {{ENABLED: False}}
TRANSFER: {{TASKS: ["synth_voc07:2"], OPTS: [SOLVER.MAX_ITER, 5]}}
REPORT: False
"""


def _pipeline(tmp_path: Path, synth_args: str = '["--num-images", "8"]') -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(out=tmp_path / "runs", synth_args=synth_args))
    return path


def test_steps_hold_options_as_a_mapping_and_build_the_same_argv(tmp_path: Path) -> None:
    cfg = load_pipeline(_pipeline(tmp_path))
    steps = {s.key: s for s in build_steps(cfg)}
    out = Path(cfg.OUTPUT_DIR)
    pre = steps["sim/pretrain"]
    config = str(resolve_path("configs/pretrain/synth_r18.yaml"))
    assert (pre.command, pre.config_file, pre.flags) == (["pretrain"], config, {"--resume": "auto"})
    # the entry's MODEL.ARCH replaces the pipeline's: one key, the entry's value (the last one wins in yacs too)
    assert pre.opts == {"MODEL.ARCH": "resnet34", "DATA.ROOT": f"{out}/synth/imagefolder", "DATA.IMAGE_SIZE": "32",
                        "SOLVER.EPOCHS": "2", "OUTPUT_DIR": f"{out}/sim/pretrain"}
    # the command line as before (its argv is the fingerprint that decides reruns)
    assert pre.argv == ["pretrain", "--config-file", config, "--resume", "auto", "MODEL.ARCH", "resnet34",
                        "DATA.ROOT", f"{out}/synth/imagefolder", "DATA.IMAGE_SIZE", "32", "SOLVER.EPOCHS", "2",
                        "OUTPUT_DIR", f"{out}/sim/pretrain"]
    assert steps["synth"].argv == ["data", "synth", "--out", f"{out}/synth", "--num-images", "8"]
    conv = steps["sim/convert"]
    assert conv.argv == ["convert", f"{out}/sim/pretrain/model_final.pth", f"{out}/sim/convert/model.pkl",
                         "--verify"]
    assert conv.options() == {"#0": f"{out}/sim/pretrain/model_final.pth", "#1": f"{out}/sim/convert/model.pkl",
                              "--verify": "(set)"}
    tr = steps["sim/transfer/synth_voc07"]
    assert tr.argv == ["transfer", "--task", "synth_voc07", "--weights", f"{out}/sim/convert/model.pkl",
                       "--trials", "2", "--label", "sim", "SOLVER.MAX_ITER", "5", "OUTPUT_DIR",
                       f"{out}/sim/transfer/synth_voc07"]
    assert fingerprint(tr)["argv"] == tr.argv


def test_a_recorded_command_line_is_compared_with_the_steps_mapping(tmp_path: Path) -> None:
    step = Step("s", "s", "knn", ["knn"], lambda: True, config_file="a.yaml", opts={"K": "1", "OUTPUT_DIR": "o"})
    assert changes(step, {"fingerprint": {"argv": step.argv}}) == []
    assert changes(step, {"fingerprint": {"argv": ["knn", "--config-file", "a.yaml", "K", "2", "OUTPUT_DIR", "o"]}}) \
        == ["K 2 -> 1"]
    # the same options in another order, or a key given twice before (the last one won): no other setting
    assert changes(step, {"command": ["siambench", "knn", "--config-file", "a.yaml", "OUTPUT_DIR", "o", "K", "1"]}) \
        == ["argument order changed"]


def test_synth_args_must_be_flag_value_pairs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"SYNTH.ARGS must be --flag value pairs"):
        load_pipeline(_pipeline(tmp_path, '["--num-images"]'))
    assert main([str(_pipeline(tmp_path, '["num-images", "8"]'))]) == 2
    assert "SYNTH.ARGS" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_run_flags_may_follow_the_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _pipeline(tmp_path)
    assert main([str(path), "OUTPUT_DIR", str(tmp_path / "other"), "--dry-run", "--force", "all",
                 "TRANSFER.TRIALS", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'other'}/sim/pretrain" in out and "sim/transfer/synth_voc07" in out
    assert not (tmp_path / "other").exists()  # a dry run writes nothing
