"""`siambench run`: config validation, plan, idempotence and resume, with fake fast steps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from siambench.benchmarks.pipeline.pipeline import PipelineState, SubprocessRunner, format_plan, main, run_pipeline
from siambench.benchmarks.pipeline.pipeline_config import load_pipeline
from siambench.benchmarks.pipeline.steps import Step, build_steps
from siambench.pretrain.utils.config import ConfigError

PIPELINE = """
OUTPUT_DIR: {out}
MODEL: {{ARCH: resnet18}}
DATA: {{IMAGE_SIZE: 32}}
SYNTH: {{ENABLED: True, ROOT: {out}/synth, ARGS: ["--num-images", "8"]}}
ENTRIES:
  simsiam: {{KIND: simsiam, LABEL: SimSiam, CONFIG: configs/pretrain/synth_r18.yaml, OPTS: [SOLVER.EPOCHS, 2]}}
  sup: {{KIND: supervised, LABEL: supervised, CONFIG: configs/supervised/synth_r18.yaml}}
  scr: {{KIND: scratch, LABEL: scratch}}
EVAL:
  KNN: {{CONFIG: configs/knn/synth_r18.yaml}}
  LINCLS: {{CONFIG: configs/lincls/synth_r18.yaml}}
TRANSFER: {{TASKS: ["synth_voc07:2", "synth_coco"], TRIALS: 1, OPTS: [SOLVER.MAX_ITER, 5]}}
REPORT: False
"""


def _opt(argv: list[str], key: str) -> str:
    """Value of the last KEY VALUE pair or --flag VALUE in argv."""
    return argv[len(argv) - 1 - argv[::-1].index(key) + 1]


class FakeSteps:
    """Writes each step's outputs instantly; can fail or be interrupted at a chosen step."""

    def __init__(self, interrupt_at: str | None = None, fail_at: str | None = None) -> None:
        self.calls: list[Step] = []
        self.interrupt_at, self.fail_at = interrupt_at, fail_at

    def __call__(self, step: Step, log: Path, env: dict[str, str]) -> int:
        self.calls.append(step)
        cmd, argv = step.argv[0], step.argv
        if cmd == "data":
            root = Path(_opt(argv, "--out"))
            root.mkdir(parents=True)
            (root / "synth.json").write_text("{}")
            assert env["SIAMBENCH_SYNTH"] == str(root.resolve())
            return 0
        if step.key == self.fail_at:
            return 1
        out = Path(_opt(argv, "OUTPUT_DIR")) if cmd != "convert" else Path(argv[2])
        if cmd in ("pretrain", "supervised", "lincls"):
            assert _opt(argv, "--resume") == "auto"
            out.mkdir(parents=True, exist_ok=True)
            partial = out / "checkpoint_0001.pth"
            if step.key == self.interrupt_at:
                partial.write_text("epoch 1")
                raise KeyboardInterrupt
            step.resumed_from = partial.read_text() if partial.exists() else None  # type: ignore[attr-defined]
        if cmd in ("pretrain", "supervised"):
            (out / "model_final.pth").write_text("weights")
        elif cmd in ("knn", "lincls"):
            assert _opt(argv, "DATA.IMAGE_SIZE") == "32" and _opt(argv, "MODEL.ARCH") == "resnet18"
            (out / f"{cmd}_results.json").parent.mkdir(parents=True, exist_ok=True)
            (out / f"{cmd}_results.json").write_text(json.dumps({"top1": 50.0, "pretrain_epochs": 2}))
        elif cmd == "convert":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"pkl")
        elif cmd == "transfer":
            trials = [int(_opt(argv, "--trial"))] if "--trial" in argv else range(int(_opt(argv, "--trials")))
            for k in trials:
                res = out / f"trial{k}" / "results.json"
                res.parent.mkdir(parents=True, exist_ok=True)
                res.write_text(json.dumps({"task": _opt(argv, "--task"), "label": _opt(argv, "--label"),
                                           "weights": _opt(argv, "--weights"), "status": "complete",
                                           "results": {"bbox": {"AP": 10.0 + k, "AP50": 20.0, "AP75": 9.0}}}))
        return 0


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(PIPELINE.format(out=tmp_path / "runs"))
    return path


def test_steps_layout_and_commands(pipeline_file: Path) -> None:
    cfg = load_pipeline(pipeline_file)
    steps = {s.key: s for s in build_steps(cfg)}
    assert list(steps) == [
        "synth",
        "simsiam/pretrain", "simsiam/knn", "simsiam/lincls", "simsiam/convert",
        "simsiam/transfer/synth_voc07", "simsiam/transfer/synth_coco",
        "sup/pretrain", "sup/knn", "sup/lincls", "sup/convert", "sup/transfer/synth_voc07", "sup/transfer/synth_coco",
        "scr/transfer/synth_voc07", "scr/transfer/synth_coco",
    ]
    pre = steps["simsiam/pretrain"].argv
    assert pre[0] == "pretrain" and pre[-2:] == ["OUTPUT_DIR", str(cfg.OUTPUT_DIR + "/simsiam/pretrain")]
    assert _opt(pre, "DATA.ROOT") == f"{cfg.OUTPUT_DIR}/synth/imagefolder" and _opt(pre, "SOLVER.EPOCHS") == "2"
    assert steps["sup/pretrain"].argv[0] == "supervised"
    conv = steps["sup/convert"].argv
    assert conv[1:3] == [f"{cfg.OUTPUT_DIR}/sup/pretrain/model_final.pth", f"{cfg.OUTPUT_DIR}/sup/convert/model.pkl"]
    t = steps["scr/transfer/synth_voc07"]
    assert [_opt(t.argv, k) for k in ("--weights", "--trials", "SOLVER.MAX_ITER")] == ["scratch", "2", "5"]
    assert t.deps == ("synth",)
    assert steps["simsiam/transfer/synth_coco"].deps == ("simsiam/convert", "synth")
    assert _opt(steps["simsiam/transfer/synth_coco"].argv, "--trials") == "1"  # TRANSFER.TRIALS


def test_run_twice_does_no_work_the_second_time(pipeline_file: Path) -> None:
    cfg = load_pipeline(pipeline_file)
    first = FakeSteps()
    status = run_pipeline(cfg, first, str(pipeline_file), log=lambda *_: None)
    assert len(first.calls) == 15 and set(status.values()) == {"done"}
    state = json.loads((Path(cfg.OUTPUT_DIR) / "pipeline_state.json").read_text())
    assert state["entries"]["sup"] == {"kind": "supervised", "label": "supervised"} and state["synthetic"]
    assert all(s["status"] == "done" and "wall_s" in s for s in state["steps"].values())
    second = FakeSteps()
    lines: list[str] = []
    status = run_pipeline(cfg, second, str(pipeline_file), log=lines.append)
    assert second.calls == [] and set(status.values()) == {"skipped"}
    assert "todo" not in lines[0] and "done" in lines[0]  # the plan shows every step done
    assert not any("warning" in line for line in lines)


def test_interrupted_pipeline_resumes(pipeline_file: Path) -> None:
    cfg = load_pipeline(pipeline_file)
    first = FakeSteps(interrupt_at="sup/pretrain")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, first, log=lambda *_: None)
    assert [s.key for s in first.calls][-1] == "sup/pretrain" and len(first.calls) == 8
    state = PipelineState(Path(cfg.OUTPUT_DIR) / "pipeline_state.json", cfg, "")
    assert state.step("sup/pretrain")["status"] == "interrupted"
    plan = format_plan(build_steps(cfg), state)
    sup_row = next(line.split() for line in plan.splitlines() if line.startswith("sup "))
    assert sup_row == ["sup", "resume", "todo", "todo", "todo", "todo", "todo"]
    second = FakeSteps()
    status = run_pipeline(cfg, second, log=lambda *_: None)
    keys = [s.key for s in second.calls]
    assert keys == ["sup/pretrain", "sup/knn", "sup/lincls", "sup/convert", "sup/transfer/synth_voc07",
                    "sup/transfer/synth_coco", "scr/transfer/synth_voc07", "scr/transfer/synth_coco"]
    assert second.calls[0].resumed_from == "epoch 1"  # continued from its checkpoint (--resume auto)
    assert sum(v == "skipped" for v in status.values()) == 7


def test_failed_step_blocks_dependents_only(pipeline_file: Path, tmp_path: Path) -> None:
    cfg = load_pipeline(pipeline_file)
    fake = FakeSteps(fail_at="simsiam/convert")
    lines: list[str] = []
    status = run_pipeline(cfg, fake, log=lines.append)
    assert status["simsiam/convert"] == "failed"
    assert status["simsiam/transfer/synth_voc07"] == status["simsiam/transfer/synth_coco"] == "blocked"
    assert status["simsiam/lincls"] == "done" and status["scr/transfer/synth_coco"] == "done"
    assert any("FAILED (exit status 1" in line for line in lines)
    assert any("ETA" in line for line in lines)


def test_step_that_exits_zero_without_output_fails(pipeline_file: Path) -> None:
    cfg = load_pipeline(pipeline_file)

    def lazy(step: Step, log: Path, env: dict[str, str]) -> int:
        return FakeSteps()(step, log, env) if step.name != "knn" else 0

    status = run_pipeline(cfg, lazy, log=lambda *_: None)
    assert status["simsiam/knn"] == "failed" and status["simsiam/lincls"] == "done"


@pytest.mark.parametrize("yaml_text, match", [
    ("ENTRIES: {}", "ENTRIES is empty"),
    ("ENTRIES: {a: {KIND: dino}}", r"ENTRIES.a.KIND is 'dino'"),
    ("ENTRIES: {a: {KIND: simsiam}}", r"ENTRIES.a.CONFIG is empty"),
    ("ENTRIES: {a: {KIND: checkpoint}}", r"ENTRIES.a.CHECKPOINT is empty"),
    ("ENTRIES: {a: {KIND: scratch, EPOCHS: 3}}", r"ENTRIES.a: unknown key"),
    ("ENTRIES: {a: {KIND: scratch, OPTS: [SOLVER.EPOCHS]}}", r"ENTRIES.a.OPTS must be a list of KEY VALUE pairs"),
    ("ENTRIES: {a b: {KIND: scratch}}", "entry names become directories"),
    ("ENTRIES: {a: {KIND: scratch, LABEL: x}, b: {KIND: scratch, LABEL: x}}", "share the LABEL"),
    ("ENTRIES: {a: {KIND: simsiam, CONFIG: c.yaml, LABEL: x}, b: {KIND: simsiam, CONFIG: c.yaml, "
     "LABEL: x}}", "share the LABEL 'x'"),  # seeds of one row: a different SEED each
    ("ENTRIES: {a: {KIND: simsiam, CONFIG: c.yaml, LABEL: x, OPTS: [SEED, 1]}, b: {KIND: simsiam, CONFIG: d.yaml, "
     "LABEL: x, OPTS: [SEED, 2]}}", "same KIND and CONFIG"),
    ("ENTRIES: {a: {KIND: scratch}}\nTRANSFER: {TASKS: ['voc07:x']}", "TRANSFER.TASKS: bad task"),
    ("ENTRIES: {a: {KIND: scratch}}\nTRANSFER: {TASK: [voc07]}", "unknown config key"),
])
def test_bad_pipelines_name_the_key(tmp_path: Path, yaml_text: str, match: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_pipeline(path)


def test_pretraining_seeds_share_a_label(tmp_path: Path) -> None:
    """Two seeds of one recipe are one table row: their entries may share the LABEL."""
    path = tmp_path / "p.yaml"
    path.write_text("ENTRIES:\n  s0: {KIND: simsiam, CONFIG: c.yaml, LABEL: SimSiam}\n"
                    "  s1: {KIND: simsiam, CONFIG: c.yaml, LABEL: SimSiam, OPTS: [SEED, 1]}\n")
    cfg = load_pipeline(path)
    assert [e.LABEL for e in cfg.ENTRIES.values()] == ["SimSiam", "SimSiam"]


def test_base_inheritance_and_overrides(tmp_path: Path, pipeline_file: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {pipeline_file.name}\nENTRIES:\n  extra: {{KIND: scratch}}\n")
    cfg = load_pipeline(child, ["TRANSFER.TRIALS", "3", "ENTRIES.scr.LABEL", "random init"])
    assert list(cfg.ENTRIES) == ["simsiam", "sup", "scr", "extra"]
    assert cfg.ENTRIES.extra.EVAL is True and cfg.ENTRIES.scr.LABEL == "random init"
    assert cfg.TRANSFER.TRIALS == 3
    with pytest.raises(ConfigError, match="bad override"):
        load_pipeline(child, ["ENTRIES.scr.NOPE", "1"])


def test_main_reports_missing_files_and_dry_run(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"OUTPUT_DIR: {tmp_path / 'r'}\nENTRIES: {{a: {{KIND: simsiam, CONFIG: nope.yaml}}}}\n"
                    "TRANSFER: {TASKS: [not_a_task]}\nEVAL: {KNN: {ENABLED: False}, LINCLS: {ENABLED: False}}\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "ENTRIES.a.CONFIG: file not found: nope.yaml" in err and "configs/transfer/not_a_task.yaml" in err
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "pipeline file not found" in capsys.readouterr().err


def test_subprocess_runner_command_and_log(tmp_path: Path) -> None:
    step = Step("x/knn", "x", "knn", ["--help"], lambda: True)
    cmd = SubprocessRunner.command(step)
    assert cmd[1:4] == ["-m", "siambench.benchmarks.cli", "--help"]
    step.nproc = 4
    assert "--nproc_per_node=4" in SubprocessRunner.command(step)
    step.nproc = 1
    log = tmp_path / "logs" / "x.log"
    import os

    assert SubprocessRunner(echo=False)(step, log, dict(os.environ)) == 0
    assert "usage: siambench COMMAND" in log.read_text()


@pytest.mark.parametrize("name", ["demo", "simsiam_in1k_100ep", "simsiam_in1k_200ep"])
def test_shipped_pipelines_load_and_find_their_files(name: str) -> None:
    from siambench.benchmarks.pipeline.pipeline_config import REPO_ROOT, check_files

    cfg = load_pipeline(REPO_ROOT / "configs" / "benchmarks" / f"{name}.yaml")
    assert check_files(cfg) == []
    kinds = {e.KIND for e in cfg.ENTRIES.values()}
    assert kinds == ({"simsiam", "supervised", "scratch", "random_init"} if name == "demo" else
                     {"simsiam", "supervised", "scratch"})
    if name == "demo":
        assert cfg.SYNTH.ENABLED and all(t.startswith("synth_") for t in cfg.TRANSFER.TASKS)
        # the demo's rows: the collapse ablation (kNN / linear only) and the untrained reference
        steps = {s.key: s for s in build_steps(cfg)}
        assert "no_stop_grad/lincls" in steps and not any(k.startswith("no_stop_grad/transfer") for k in steps)
        assert "--trials" in steps["simsiam/transfer/synth_voc07"].argv
        assert _opt(steps["simsiam/transfer/synth_voc07"].argv, "--trials") == "3"  # VOC07: mean of 3 trials
        # SimSiam 30 epochs (its margins over random init hold over seeds); random init: kNN / linear only
        assert _opt(steps["simsiam/pretrain"].argv, "SOLVER.EPOCHS") == "30"
        assert "random_init/lincls" in steps and not any(k.startswith("random_init/transfer") for k in steps)
        assert "random_init/convert" not in steps
    else:  # the paper's protocol: R50, 8 GPUs, VOC x5 trials, COCO, linear eval
        assert (cfg.MODEL.ARCH, cfg.NUM_GPUS, cfg.EVAL.LINCLS.ENABLED) == ("resnet50", 8, True)
        assert list(cfg.TRANSFER.TASKS) == ["voc07:5", "voc0712:5", "coco:1"]


def test_checkpoint_entries_skip_pretraining(tmp_path: Path) -> None:
    (tmp_path / "official.pth.tar").write_bytes(b"x")
    (tmp_path / "ready.pkl").write_bytes(b"x")
    path = tmp_path / "p.yaml"
    path.write_text(f"OUTPUT_DIR: {tmp_path / 'r'}\nTRANSFER: {{TASKS: [voc07]}}\nENTRIES:\n"
                    f"  official: {{KIND: checkpoint, CHECKPOINT: {tmp_path / 'official.pth.tar'}, "
                    "CONVERT_FORMAT: simsiam}\n"
                    f"  ready: {{KIND: checkpoint, CHECKPOINT: {tmp_path / 'ready.pkl'}}}\n")
    steps = {s.key: s for s in build_steps(load_pipeline(path))}
    assert list(steps) == ["official/knn", "official/lincls", "official/convert", "official/transfer/voc07",
                           "ready/transfer/voc07"]
    assert steps["official/convert"].argv[1:] == [str(tmp_path / "official.pth.tar"),
                                                  str(tmp_path / "r/official/convert/model.pkl"),
                                                  "--format", "simsiam", "--verify"]
    assert steps["official/knn"].deps == () and steps["official/transfer/voc07"].deps == ("official/convert",)
    assert _opt(steps["ready/transfer/voc07"].argv, "--weights") == str(tmp_path / "ready.pkl")
    assert _opt(steps["ready/transfer/voc07"].argv, "--trials") == "5"  # the paper's VOC protocol by default


def test_changed_entry_options_are_refused_then_rerun_with_force(pipeline_file: Path, tmp_path: Path,
                                                                 capsys) -> None:
    """Regression: a rerun with other ENTRIES.simsiam.OPTS said "all steps done" and kept the old model."""
    from siambench.benchmarks.pipeline.pipeline_guard import PipelineChanged

    cfg = load_pipeline(pipeline_file)
    run_pipeline(cfg, FakeSteps(), log=lambda *_: None)
    changed = load_pipeline(pipeline_file, ["ENTRIES.simsiam.OPTS", "['SOLVER.EPOCHS', 30]"])
    before = (Path(cfg.OUTPUT_DIR) / "pipeline.yaml").read_text()
    with pytest.raises(PipelineChanged, match=r"simsiam/pretrain: done with other settings: SOLVER.EPOCHS 2 -> 30"):
        run_pipeline(changed, FakeSteps(), log=lambda *_: None)
    assert (Path(cfg.OUTPUT_DIR) / "pipeline.yaml").read_text() == before  # nothing written
    # the CLI: one error naming the step, the key and the fix; exit 2
    assert main([str(pipeline_file), "ENTRIES.simsiam.OPTS", "['SOLVER.EPOCHS', 30]"]) == 2
    err = capsys.readouterr().err
    assert "SOLVER.EPOCHS 2 -> 30" in err and "--force simsiam/pretrain" in err
    # --force: that step and what depends on it run again, nothing else
    fake = FakeSteps()
    lines: list[str] = []
    status = run_pipeline(changed, fake, log=lines.append, force=["simsiam/pretrain"])
    assert [s.key for s in fake.calls] == ["simsiam/pretrain", "simsiam/knn", "simsiam/lincls", "simsiam/convert",
                                           "simsiam/transfer/synth_voc07", "simsiam/transfer/synth_coco"]
    assert fake.calls[0].resumed_from is None  # a fresh run, not a resume of the old checkpoints
    assert status["sup/pretrain"] == "skipped" and any("--force: removing" in line for line in lines)
    assert run_pipeline(changed, FakeSteps(), log=lambda *_: None)["simsiam/pretrain"] == "skipped"


def test_edited_config_file_and_stale_downstream_are_refused(tmp_path: Path) -> None:
    from siambench.benchmarks.pipeline.pipeline_guard import PipelineChanged

    conf = tmp_path / "pre.yaml"
    conf.write_text("_BASE_: base.yaml\n")
    (tmp_path / "base.yaml").write_text("SOLVER:\n  EPOCHS: 2\n")
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"OUTPUT_DIR: {tmp_path / 'runs'}\nENTRIES: {{a: {{KIND: simsiam, CONFIG: {conf}}}}}\n"
                    "MODEL: {ARCH: resnet18}\nDATA: {IMAGE_SIZE: 32}\n"
                    "TRANSFER: {TASKS: []}\nEVAL: {LINCLS: {ENABLED: False}}\nREPORT: False\n")
    cfg = load_pipeline(pipe)
    run_pipeline(cfg, FakeSteps(), log=lambda *_: None)
    (tmp_path / "base.yaml").write_text("SOLVER:\n  EPOCHS: 3\n")  # the _BASE_ of the entry's config
    with pytest.raises(PipelineChanged, match=r"a/pretrain: done with other settings: .*base.yaml content changed"):
        run_pipeline(cfg, FakeSteps(), log=lambda *_: None)
    (tmp_path / "base.yaml").write_text("SOLVER:\n  EPOCHS: 2\n")
    import shutil

    shutil.rmtree(tmp_path / "runs" / "a" / "pretrain")  # the model is gone: its kNN result describes nothing
    with pytest.raises(PipelineChanged, match=r"a/knn: done, but its input a/pretrain will run again"):
        run_pipeline(cfg, FakeSteps(), log=lambda *_: None)
    with pytest.raises(ConfigError, match="--force nope: no such step or entry"):
        run_pipeline(cfg, FakeSteps(), log=lambda *_: None, force=["nope"])
    assert [s.key for s in _calls(cfg, force=["a"])] == ["a/pretrain", "a/knn"]


def _calls(cfg, **kw) -> list[Step]:
    fake = FakeSteps()
    run_pipeline(cfg, fake, log=lambda *_: None, **kw)
    return fake.calls


def test_random_init_and_per_entry_transfer(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"OUTPUT_DIR: {tmp_path / 'r'}\nTRANSFER: {{TASKS: ['voc07:5', coco], TRIALS: 2}}\nENTRIES:\n"
                    "  rnd: {KIND: random_init, CONFIG: configs/pretrain/synth_r18.yaml, TRANSFER_TRIALS: 1,"
                    " OPTS: [SEED, 3]}\n"
                    "  nsg: {KIND: simsiam, CONFIG: configs/pretrain/ablations/synth_no_stop_grad.yaml,"
                    " TRANSFER: False}\n"
                    "  sim: {KIND: simsiam, CONFIG: configs/pretrain/synth_r18.yaml, TRANSFER_TASKS: ['voc0712:3']}\n")
    cfg = load_pipeline(path)
    steps = {s.key: s for s in build_steps(cfg)}
    pre = steps["rnd/pretrain"].argv
    # the untrained encoder: the SimSiam config through `siambench pretrain` with 0 epochs, after the entry's OPTS
    assert pre[0] == "pretrain" and pre.index("SEED") < pre.index("SOLVER.EPOCHS")
    assert _opt(pre, "SOLVER.EPOCHS") == "0" and _opt(pre, "MONITOR.KNN_PERIOD") == "0"
    # a few seconds of 0-epoch "pretraining" must not make the ETA of SimSiam's pretraining
    assert steps["rnd/pretrain"].family == "pretrain:random_init" != steps["sim/pretrain"].family
    assert [_opt(steps[f"rnd/transfer/{t}"].argv, "--trials") for t in ("voc07", "coco")] == ["1", "1"]
    assert [k for k in steps if k.startswith("nsg/")] == ["nsg/pretrain", "nsg/knn", "nsg/lincls"]  # no convert
    assert [k for k in steps if k.startswith("sim/transfer")] == ["sim/transfer/voc0712"]
    assert _opt(steps["sim/transfer/voc0712"].argv, "--trials") == "3"
    state = PipelineState(tmp_path / "s.json", cfg, "")
    assert state.data["entries"]["rnd"]["kind"] == "random_init"
    path.write_text(path.read_text() + "  bad: {KIND: random_init}\n")
    with pytest.raises(ConfigError, match="ENTRIES.bad.CONFIG is empty"):
        load_pipeline(path)


def test_console_is_one_line_per_step(pipeline_file: Path) -> None:
    """Regression: ~3,000 console lines for the demo; now the plan, then a line per step."""
    cfg = load_pipeline(pipeline_file)
    lines: list[str] = []
    run_pipeline(cfg, FakeSteps(), log=lines.append)
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 15 + 1  # one per step, plus "running" for the first
    assert progress[1].startswith("[1/15] synth: done in") and "ETA" in progress[1]
    assert progress[1].endswith("| next: simsiam/pretrain") and "next:" not in progress[-1]
    assert not any("siambench pretrain" in line for line in lines)  # commands only with --verbose
    lines.clear()
    run_pipeline(cfg, FakeSteps(), log=lines.append, force=["scr"], verbose=True)
    assert any("siambench transfer --task synth_voc07 --weights scratch" in line for line in lines)


def test_deleted_synthetic_data_is_regenerated_without_refusing(pipeline_file: Path) -> None:
    import shutil

    cfg = load_pipeline(pipeline_file)
    run_pipeline(cfg, FakeSteps(), log=lambda *_: None)
    shutil.rmtree(Path(cfg.OUTPUT_DIR) / "synth")  # to save disk; the same arguments regenerate the same data
    assert [s.key for s in _calls(cfg)] == ["synth"]


def test_bad_entry_transfer_keys_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    for text, match in (("TRANSFER_TASKS: ['voc07:0']", r"ENTRIES.a.TRANSFER_TASKS: bad task 'voc07:0'"),
                        ("TRANSFER_TASKS: [voc07, voc07]", "ENTRIES.a.TRANSFER_TASKS lists a task twice"),
                        ("TRANSFER_TRIALS: -1", "ENTRIES.a.TRANSFER_TRIALS must be >= 0")):
        path.write_text(f"ENTRIES: {{a: {{KIND: scratch, {text}}}}}\n")
        with pytest.raises(ConfigError, match=match):
            load_pipeline(path)
