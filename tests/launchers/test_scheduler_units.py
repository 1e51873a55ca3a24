"""The job scheduler of `siambench run` without a cluster: an in-memory launcher, the resource and
time-limit rules, and the refusals that keep a submitted step from running twice."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from siambench.benchmarks.launchers import JobHandle, JobState, JobStatus, Launcher
from siambench.benchmarks.pipeline import scheduler
from siambench.benchmarks.pipeline.pipeline import main, run_pipeline
from siambench.benchmarks.pipeline.pipeline_config import load_pipeline
from siambench.benchmarks.pipeline.pipeline_guard import PipelineChanged
from siambench.benchmarks.pipeline.steps import build_steps

_spec = importlib.util.spec_from_file_location("_test_pipeline",
                                               Path(__file__).parents[1] / "benchmarks" / "test_pipeline.py")
_tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tp)  # type: ignore[union-attr]
PIPELINE, FakeSteps = _tp.PIPELINE, _tp.FakeSteps


class FakeLauncher(Launcher):
    """Jobs in memory: pending at the first poll, running at the second, then the fake step runs."""

    name = "slurm"

    def __init__(self, cfg, max_jobs: int = 0, fail_at: str | None = None) -> None:
        self.max_jobs = max_jobs
        self.steps = {s.key: s for s in build_steps(cfg, split_trials=True)}
        self.fake = FakeSteps(fail_at=fail_at)
        self.submitted: list[str] = []
        self.extra: dict[str, tuple[str, ...]] = {}
        self.env: dict[str, dict[str, str]] = {}
        self.polls: dict[str, int] = {}
        self.result: dict[str, JobStatus] = {}
        self.most = 0

    def submit(self, name, argv, *, log, cwd=None, env=None, resources=None):
        self.submitted.append(name)
        self.extra[name] = resources.extra
        self.env[name] = dict(env or {})
        return JobHandle(launcher="slurm", job_id=str(len(self.submitted)), name=name, log=str(log))

    def poll_many(self, handles):
        handles = list(handles)
        self.most = max(self.most, len(handles))
        out = {}
        for h in handles:
            n = self.polls[h.job_id] = self.polls.get(h.job_id, 0) + 1
            if n >= 3 and h.job_id not in self.result:
                rc = self.fake(self.steps[h.name], Path(h.log), self.env.get(h.name, {}))
                self.result[h.job_id] = JobStatus(JobState.DONE if rc == 0 else JobState.FAILED,
                                                  "" if rc == 0 else f"exit code {rc}", node="n1", elapsed_s=1.0)
            out[h.job_id] = self.result.get(h.job_id, JobStatus(JobState.PENDING if n < 2 else JobState.RUNNING))
        return out

    def cancel(self, handle):
        self.result[handle.job_id] = JobStatus(JobState.FAILED, "cancelled")


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(scheduler, "POLL_MIN_S", 0.0)
    monkeypatch.setattr(scheduler, "POLL_MAX_S", 0.0)


def pipeline(tmp_path: Path, *opts: str):
    path = tmp_path / "pipe.yaml"
    path.write_text(PIPELINE.format(out=tmp_path / "runs"))
    return load_pipeline(path, list(opts))


def test_every_step_one_job_at_most_max_jobs_in_flight(tmp_path):
    cfg = pipeline(tmp_path)
    launcher = FakeLauncher(cfg, max_jobs=2)
    status = run_pipeline(cfg, None, log=lambda *_: None, launcher=launcher)
    assert set(status.values()) == {"done"} and sorted(launcher.submitted) == sorted(status)
    assert launcher.most == 2
    state = json.loads((tmp_path / "runs" / "pipeline_state.json").read_text())["steps"]
    assert {s["job_state"] for s in state.values()} == {"done"} and {s["node"] for s in state.values()} == {"n1"}
    assert len({s["job"]["job_id"] for s in state.values()}) == len(state)


def test_transfer_trials_are_jobs_of_their_own_that_run_at_once(tmp_path):
    cfg = pipeline(tmp_path)
    task = "simsiam/transfer/synth_voc07"  # 2 trials
    local = {s.key: s for s in build_steps(cfg)}
    assert task in local and "--trial" not in local[task].flags  # local runs: one step per task, as before
    launcher = FakeLauncher(cfg)
    flights: list[set[str]] = []
    poll = launcher.poll_many

    def poll_many(handles):
        handles = list(handles)
        flights.append({h.name for h in handles})
        return poll(handles)

    launcher.poll_many = poll_many
    status = run_pipeline(cfg, None, log=lambda *_: None, launcher=launcher)
    trials = [f"{task}/trial0", f"{task}/trial1"]
    assert set(status.values()) == {"done"} and set(trials) <= set(launcher.submitted) and task not in status
    assert any(set(trials) <= f for f in flights)  # both trials' jobs in flight together
    steps = {s.key: s for s in build_steps(cfg, split_trials=True)}
    assert [steps[t].argv[steps[t].argv.index("--trial") + 1] for t in trials] == ["0", "1"]
    assert steps[trials[1]].deps == local[task].deps and steps[trials[1]].out_dir == local[task].out_dir / "trial1"
    task_dir = tmp_path / "runs" / "simsiam" / "transfer" / "synth_voc07"
    assert sorted(p.parent.name for p in task_dir.glob("trial*/results.json")) == ["trial0", "trial1"]
    voc = pipeline(tmp_path, "TRANSFER.TASKS", "['voc07:2']", "SYNTH.ENABLED", "False")  # GPU-hours per trial
    task_step, trial_step = build_steps(voc)[-1], build_steps(voc, split_trials=True)[-1]
    assert trial_step.key == "scr/transfer/voc07/trial1"
    assert scheduler.estimate(trial_step, voc)[0] == pytest.approx(scheduler.estimate(task_step, voc)[0] / 2)


def test_failure_blocks_dependents_others_finish(tmp_path):
    cfg = pipeline(tmp_path)
    launcher = FakeLauncher(cfg, fail_at="simsiam/pretrain")
    status = run_pipeline(cfg, None, log=lambda *_: None, launcher=launcher)
    assert status["simsiam/pretrain"] == "failed"
    assert {status[k] for k in status if k.startswith("simsiam/") and k != "simsiam/pretrain"} == {"blocked"}
    assert {status[k] for k in status if k.startswith(("sup/", "scr/"))} == {"done"}
    assert not any(k.startswith("simsiam/") and k != "simsiam/pretrain" for k in launcher.submitted)


def test_detach_submits_all_with_dependencies_then_a_second_run_reattaches(tmp_path):
    cfg = pipeline(tmp_path)
    first = FakeLauncher(cfg)
    status = run_pipeline(cfg, None, log=lambda *_: None, launcher=first, detach=True)
    assert set(status.values()) == {"submitted"} and len(first.submitted) == len(status)
    ids = {name: str(i + 1) for i, name in enumerate(first.submitted)}
    assert first.extra["synth"] == ()
    assert f"--dependency=afterok:{ids['simsiam/pretrain']}:{ids['synth']}" in first.extra["simsiam/knn"]
    again = FakeLauncher(cfg)  # the same jobs, seen by a new runner
    again.polls, again.result = first.polls, first.result
    again.submitted, again.env = list(first.submitted), first.env
    status = run_pipeline(cfg, None, log=lambda *_: None, launcher=again)
    assert set(status.values()) == {"done"} and again.submitted == first.submitted  # nothing submitted twice


def test_a_job_that_failed_unwatched_is_submitted_again(tmp_path):
    cfg = pipeline(tmp_path)
    first = FakeLauncher(cfg)
    run_pipeline(cfg, None, log=lambda *_: None, launcher=first, detach=True)
    again = FakeLauncher(cfg)
    again.submitted, again.env = list(first.submitted), first.env
    again.result = {str(i + 1): JobStatus(JobState.FAILED, "NODE_FAIL") for i in range(len(first.submitted))}
    lines: list[str] = []
    status = run_pipeline(cfg, None, log=lines.append, launcher=again)
    assert status["synth"] == "done" and len(again.submitted) == 2 * len(first.submitted)
    assert any("failed while no runner watched (NODE_FAIL); submitting again" in line for line in lines)


def _in_flight(tmp_path, **changes):
    """A state whose simsiam/pretrain is a submitted SLURM job (as a killed runner leaves it)."""
    cfg = pipeline(tmp_path)
    run_pipeline(cfg, None, log=lambda *_: None, launcher=FakeLauncher(cfg), detach=True)
    return pipeline(tmp_path, *[x for kv in changes.items() for x in kv])


def test_in_flight_step_with_other_settings_or_forced_is_refused(tmp_path):
    cfg = _in_flight(tmp_path)
    with pytest.raises(PipelineChanged, match="simsiam/pretrain: submitted as slurm job 2 and forced"):
        run_pipeline(cfg, None, log=lambda *_: None, launcher=FakeLauncher(cfg), force=["simsiam"])
    with pytest.raises(PipelineChanged, match="run with --launcher slurm to follow it"):
        run_pipeline(cfg, FakeSteps(), log=lambda *_: None)  # local steps would run it a second time
    changed = pipeline(tmp_path, "MODEL.ARCH", "resnet34")
    with pytest.raises(PipelineChanged, match="with other settings: MODEL.ARCH resnet18 -> resnet34"):
        run_pipeline(changed, None, log=lambda *_: None, launcher=FakeLauncher(changed))


def test_resources_and_time_limits(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("OUTPUT_DIR: runs/x\nNUM_GPUS: 16\nENTRIES:\n  s: {KIND: simsiam, CONFIG: "
                    "configs/pretrain/simsiam_r50_100ep.yaml, TRANSFER: False}\n"
                    "LAUNCHER: {NAME: slurm, SLURM: {TIME_LIMIT_MIN: 4320}}\n")
    cfg = load_pipeline(path)
    steps = {s.key: s for s in build_steps(cfg)}
    pre = scheduler.step_resources(cfg, steps["s/pretrain"])
    assert (pre.nodes, pre.tasks_per_node, pre.gpus_per_node) == (2, 8, 8)
    # 100 epochs x 3.18 GPU-h = 318 GPU-h over 16 GPUs = 19.9 h, x 1.5 = 1789 min, + 10 min; under the 3-day cap
    assert pre.time_min == scheduler.time_limit_min(cfg, steps["s/pretrain"]) == 1799
    knn = scheduler.step_resources(cfg, steps["s/knn"])
    assert (knn.nodes, knn.tasks_per_node, knn.gpus_per_node, knn.time_min) == (1, 1, 1, 37)
    table = scheduler.format_jobs(cfg, list(steps.values())).splitlines()
    assert next(r for r in table if r.startswith("s/pretrain")).split() == ["s/pretrain", "2", "8", "8", "1799", "min"]
    with pytest.raises(Exception, match="not a multiple of LAUNCHER.SLURM.GPUS_PER_NODE 8"):
        scheduler.check_slurm_plan(load_pipeline(path, ["NUM_GPUS", "12"]), "p.yaml")


def test_detach_needs_slurm_and_bad_launcher_is_one_line(tmp_path, capsys):
    path = tmp_path / "pipe.yaml"
    path.write_text(PIPELINE.format(out=tmp_path / "runs"))
    assert main([str(path), "--detach"]) == 2
    assert "--detach needs the slurm launcher" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main([str(path), "LAUNCHER.NAME", "pbs"]) == 2
    assert "LAUNCHER.NAME 'pbs' is not one of local, slurm" in capsys.readouterr().err


def test_a_local_rerun_of_an_ended_job_is_not_taken_for_a_job_in_flight(tmp_path):
    cfg = _in_flight(tmp_path)
    state_path = tmp_path / "runs" / "pipeline_state.json"
    state = json.loads(state_path.read_text())
    for rec in state["steps"].values():  # the jobs were cancelled; a local run then started the steps again
        rec.update(job_state="failed", status="running")
    state_path.write_text(json.dumps(state))
    status = run_pipeline(cfg, FakeSteps(), log=lambda *_: None)
    assert set(status.values()) == {"done"}


def test_a_controller_that_does_not_answer_for_a_while_is_polled_again(tmp_path):
    from siambench.benchmarks.launchers import LauncherError

    cfg = pipeline(tmp_path)
    launcher = FakeLauncher(cfg)
    real, fails = launcher.poll_many, iter([True, True, False] * 100)

    def flaky(handles):
        if next(fails):
            raise LauncherError("scontrol show job 1 did not answer in 60 s")
        return real(handles)

    launcher.poll_many = flaky
    lines: list[str] = []
    status = run_pipeline(cfg, None, log=lines.append, launcher=launcher)
    assert set(status.values()) == {"done"}
    assert any("polling the jobs failed (2/20), trying again" in line for line in lines)


def test_out_of_requeues_fails_the_step_with_the_reason(tmp_path):
    cfg = pipeline(tmp_path)
    launcher = FakeLauncher(cfg)
    why = "time limit reached after 3 requeues (LAUNCHER.SLURM.MAX_REQUEUES=3)"
    real_submit = launcher.submit

    def submit(name, argv, **kw):
        handle = real_submit(name, argv, **kw)
        if name == "sup/pretrain":
            launcher.result[handle.job_id] = JobStatus(JobState.FAILED, why, requeues=3, node="n2")
        return handle

    launcher.submit = submit
    status = run_pipeline(cfg, None, log=lambda *_: None, launcher=launcher)
    assert status["sup/pretrain"] == "failed" and status["sup/knn"] == "blocked"
    rec = json.loads((tmp_path / "runs" / "pipeline_state.json").read_text())["steps"]["sup/pretrain"]
    assert rec["reason"].startswith(why + " (job ") and rec["requeues"] == 3 and rec["job_state"] == "failed"


def test_transfer_beyond_one_node_is_one_task_per_node_with_detectron2_launch_across_them(tmp_path, monkeypatch):
    path = tmp_path / "p.yaml"
    path.write_text("OUTPUT_DIR: runs/x\nNUM_GPUS: 16\nENTRIES:\n  scr: {KIND: scratch}\n"
                    "TRANSFER: {TASKS: ['voc07:2']}\nLAUNCHER: {NAME: slurm}\n")
    cfg = load_pipeline(path)
    scheduler.check_slurm_plan(cfg, "p.yaml")  # 16 GPUs on 8-GPU nodes: no longer refused for transfer
    local = build_steps(cfg)[-1]
    assert local.flags["--num-gpus"] == "16" and "--dist-url" not in local.flags  # local runs: as before
    trial = build_steps(cfg, split_trials=True)[-1]
    assert trial.flags["--num-gpus"] == "8" and trial.flags["--dist-url"] == "slurm"
    res = scheduler.step_resources(cfg, trial)
    assert (res.nodes, res.tasks_per_node, res.gpus_per_node, res.num_tasks) == (2, 1, 8, 2)  # srun, MASTER_PORT

    from siambench.transfer import main as transfer

    env = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "MASTER_PORT": "29517"}
    monkeypatch.setattr(transfer, "slurm_master_addr", lambda: "node-a")  # scontrol show hostnames' first
    assert transfer.slurm_machines(env) == (2, 1, "tcp://node-a:29517")
    assert transfer.slurm_machines({**env, "MASTER_ADDR": "10.0.0.1"}) == (2, 1, "tcp://10.0.0.1:29517")
    with pytest.raises(Exception, match="--dist-url slurm: SLURM_NODEID, MASTER_PORT unset"):
        transfer.slurm_machines({"SLURM_NNODES": "2"})
    argv = [*trial.argv[1:], "--num-machines", "2", "--machine-rank", "1", "--dist-url", "tcp://node-a:29517"]
    plan = transfer.make_plan(transfer.build_parser().parse_intermixed_args(argv), cuda_available=True)
    assert (plan.num_gpus, plan.num_machines, plan.world_size) == (8, 2, 16)
