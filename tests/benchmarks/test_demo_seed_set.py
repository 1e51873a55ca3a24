"""`configs/benchmarks/demo_seed3.yaml` is the demo on another seed set: the same steps, recipe
and budget, with every seed (data, pretraining, evaluation, transfer) changed and nothing else."""
from pathlib import Path

from siambench.benchmarks.pipeline.pipeline_config import load_pipeline
from siambench.benchmarks.pipeline.steps import build_steps

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "benchmarks"
SEED_KEYS = ("SEED", "--seed")


def _steps(name, out):
    cfg = load_pipeline(CONFIGS / name, ["OUTPUT_DIR", str(out)])
    return cfg, {s.key: s for s in build_steps(cfg)}


def _without_seeds(step, out):
    strip = lambda d: {k: str(v).replace(str(out), "OUT") for k, v in d.items() if k not in SEED_KEYS}  # noqa: E731
    return ([str(c).replace(str(out), "OUT") for c in step.command], step.config_file, strip(step.flags),
            strip(step.opts))


def test_the_seed_set_runs_the_demos_steps_with_every_seed_changed(tmp_path):
    demo_cfg, demo = _steps("demo.yaml", tmp_path / "a")
    seed_cfg, other = _steps("demo_seed3.yaml", tmp_path / "b")
    assert list(other) == list(demo)  # the same steps, in the same order
    for key in demo:
        assert _without_seeds(other[key], tmp_path / "b") == _without_seeds(demo[key], tmp_path / "a"), key
    assert (seed_cfg.BUDGET.MINUTES, seed_cfg.BUDGET.DISK_GB) == (demo_cfg.BUDGET.MINUTES, demo_cfg.BUDGET.DISK_GB)
    assert demo["synth"].flags.get("--seed", "0") == "0" and other["synth"].flags["--seed"] == "3"
    seeded = [k for k in demo if k != "synth" and not k.endswith("/convert")]
    assert seeded and all(other[k].opts["SEED"] != demo[k].opts.get("SEED", "0") for k in seeded)
    # a SimSiam run and its random init share the seed: random init stays that run's own untrained encoder
    assert other["simsiam/pretrain"].opts["SEED"] == other["random_init/pretrain"].opts["SEED"]
