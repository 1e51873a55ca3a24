"""The Tables 4-5 comparison pipeline: all five methods + supervised + scratch, planned by --dry-run."""
from __future__ import annotations

from siambench.benchmarks.pipeline.pipeline import main
from siambench.benchmarks.pipeline.pipeline_config import METHOD_KINDS, REPO_ROOT, check_files, load_pipeline
from siambench.benchmarks.pipeline.steps import build_steps

PIPELINE = REPO_ROOT / "configs" / "benchmarks" / "table4_table5.yaml"
SYNTH_PIPELINE = REPO_ROOT / "configs" / "benchmarks" / "synth_table4_table5.yaml"


def test_pretrain_kinds_are_the_methods():
    from siambench.pretrain.methods import METHODS

    assert METHOD_KINDS == tuple(METHODS)


def test_table4_table5_plans_the_whole_comparison(tmp_path, capsys):
    cfg = load_pipeline(PIPELINE, ["OUTPUT_DIR", str(tmp_path / "r")])
    assert check_files(cfg) == []
    assert {e.KIND for e in cfg.ENTRIES.values()} == {*METHOD_KINDS, "supervised", "scratch"}
    steps = {s.key: s for s in build_steps(cfg)}
    for kind in METHOD_KINDS:
        argv = steps[f"{kind}/pretrain"].argv
        assert argv[argv.index("--config-file") + 1].endswith(f"{kind}_r50_200ep.yaml")  # Table 5: 200 epochs
        assert (argv[argv.index("MODEL.METHOD") + 1] == kind) if kind != "simsiam" else "MODEL.METHOD" not in argv
        for task in ("voc07", "voc0712", "coco"):
            assert f"{kind}/transfer/{task}" in steps
        assert f"{kind}/lincls" in steps and f"{kind}/convert" in steps
    assert "scratch/transfer/coco" in steps and "supervised/convert" in steps
    assert main([str(PIPELINE), "--dry-run", "OUTPUT_DIR", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert all(f"{k}/pretrain:" in out for k in METHOD_KINDS) and not (tmp_path / "r").exists()


def test_synthetic_comparison_plans_every_method(tmp_path):
    cfg = load_pipeline(SYNTH_PIPELINE, ["OUTPUT_DIR", str(tmp_path)])
    assert check_files(cfg) == [] and cfg.SYNTH.ENABLED
    steps = {s.key: s for s in build_steps(cfg)}
    for kind in METHOD_KINDS:
        argv = steps[f"{kind}/pretrain"].argv
        assert "synth" in argv[argv.index("--config-file") + 1] and f"{kind}/transfer/synth_coco" in steps
