"""Steps stopped and requeued by SLURM resume where they were, and multi-node pretraining (real SLURM).

A requeued job is held by SLURM for about 2 minutes before it may start again: the tests release
it (``scontrol update StartTime=now``) once they have seen it requeued.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from siambench.benchmarks.launchers import JobState, Resources, SlurmLauncher
from siambench.benchmarks.pipeline.pipeline import main as run_main
from siambench.pretrain.checkpoint import load_checkpoint

TIMEOUT_S = 300
# Released at once, a requeued job may be killed as "non-startable: job credential revoked" (the node
# still ends its last run); SLURM's own hold is 2 minutes, a few seconds suffice on this cluster.
RELEASE_DELAY_S = 3
HEAD = sys.modules["siambench_tests_slurm_cluster"].PIPELINE_HEAD  # loaded by tests/conftest.py
# 3 epochs of 12 steps of 8 in-memory synthetic images, periodic checkpoints every 10 epochs (none):
# a requeued job's checkpoint is the one its stop signal writes at the end of the epoch it was in.
PRETRAIN = HEAD + """TRANSFER: {{TASKS: []}}
ENTRIES:
  simsiam:
    KIND: simsiam
    CONFIG: configs/pretrain/synth_r18.yaml
    OPTS: [DATA.DATASET, synthetic, DATA.SYNTHETIC.TRAIN_SIZE, 96, DATA.SYNTHETIC.VAL_SIZE, 16,
           DATA.SYNTHETIC.IMAGE_SIZE, 32, DATA.CACHE_IN_MEMORY, False, SOLVER.EPOCHS, 3, SOLVER.BATCH_SIZE, 8,
           TRAIN.CHECKPOINT_PERIOD, 10, TRAIN.PRINT_FREQ, 1, MONITOR.KNN_PERIOD, 0, MODEL.DIM, 64,
           MODEL.PRED_DIM, 16, MONITOR.TENSORBOARD, False]
"""
# Scratch Faster R-CNN, 12 iterations, a detectron2 checkpoint every 3.
TRANSFER = HEAD + """TRANSFER:
  TASKS: [synth_voc07]
  TRIALS: 1
  OPTS: [SOLVER.MAX_ITER, 12, SOLVER.STEPS, "(10,)", SOLVER.WARMUP_ITERS, 1, SOLVER.CHECKPOINT_PERIOD, 3,
         SOLVER.IMS_PER_BATCH, 2, TEST.PRECISE_BN.NUM_ITER, 1, MODEL.RPN.POST_NMS_TOPK_TEST, 20,
         INPUT.MIN_SIZE_TEST, 96, MODEL.RESNETS.DEPTH, 50, MODEL.RESNETS.STEM_OUT_CHANNELS, 8,
         MODEL.RESNETS.RES2_OUT_CHANNELS, 32, MODEL.RESNETS.WIDTH_PER_GROUP, 8]
ENTRIES:
  scr: {{KIND: scratch}}
"""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Jobs inherit the submitting environment: one torch thread, in the jobs and the references."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")


def write(tmp_path: Path, root: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.format(out=tmp_path / name, root=root))
    return path


class Requeuer(threading.Thread):
    """Once ``ready()``, ``scontrol requeue`` the job of step ``key`` (read from pipeline_state.json),
    then release it from SLURM's requeue hold; ``error`` says what went wrong, if anything."""

    def __init__(self, cluster, out: Path, key: str, ready) -> None:
        super().__init__(daemon=True)
        self.cluster, self.out, self.key, self.ready = cluster, out, key, ready
        self.error, self.job_id = "", ""

    def run(self) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and not self.ready():
            time.sleep(0.1)
        try:
            state = json.loads((self.out / "pipeline_state.json").read_text())
            self.job_id = state["steps"][self.key]["job"]["job_id"]
        except (OSError, ValueError, KeyError) as e:
            self.error = f"no job for {self.key}: {e!r}"
            return
        self.cluster.run("scontrol", "requeue", self.job_id)
        while time.monotonic() < deadline:
            info = self.cluster.job_info(self.job_id)
            if info.get("Restarts") == "1" and info.get("JobState") == "PENDING":
                time.sleep(RELEASE_DELAY_S)
                self.cluster.run("scontrol", "update", f"JobId={self.job_id}", "StartTime=now")
                return
            time.sleep(0.2)
        self.error = f"job {self.job_id} never requeued: {self.cluster.job_info(self.job_id)}"


def epoch_steps(metrics: Path, epoch: int) -> int:
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for ln in lines if ln.endswith("}") and json.loads(ln).get("type") == "step"
               and json.loads(ln).get("epoch") == epoch)


def run_requeued_once(cluster, synth_root: Path, tmp_path: Path, name: str, text: str, step: str,
                      when: Callable[[], bool]) -> None:
    """Run pipeline ``text`` in ``tmp_path/name`` through SLURM, requeueing ``step`` once when ``when()``;
    the step must end done after exactly that one requeue."""
    out = tmp_path / name
    requeuer = Requeuer(cluster, out, step, when)
    requeuer.start()
    assert run_main([str(write(tmp_path, synth_root, name, text))]) == 0
    requeuer.join(5)
    assert not requeuer.error, requeuer.error
    state = json.loads((out / "pipeline_state.json").read_text())["steps"][step]
    assert state["status"] == "done" and state["requeues"] == 1


@pytest.mark.slow
def test_pretraining_requeued_mid_epoch_ends_bit_identical(slurm_cluster, synth_root, tmp_path):
    assert run_main([str(write(tmp_path, synth_root, "ref", PRETRAIN)), "--launcher", "local"]) == 0
    out = tmp_path / "rq"
    metrics = out / "simsiam" / "pretrain" / "metrics.jsonl"
    run_requeued_once(slurm_cluster, synth_root, tmp_path, "rq", PRETRAIN, "simsiam/pretrain",
                      lambda: epoch_steps(metrics, 1) >= 2)
    log = (out / "logs" / "simsiam.pretrain.log").read_text()
    # signalled mid epoch 2, the job ended that epoch with a checkpoint; the second run resumed from it
    assert "stopped by SIGTERM after epoch 2" in log and "(epoch 2 done)" in log
    ref = load_checkpoint(tmp_path / "ref" / "simsiam" / "pretrain" / "model_final.pth")
    got = load_checkpoint(out / "simsiam" / "pretrain" / "model_final.pth")
    assert ref["epoch"] == got["epoch"] == 3
    for k, v in ref["state_dict"].items():
        assert torch.equal(v, got["state_dict"][k]), k
    losses = [json.loads(ln)["loss"] for ln in metrics.read_text().splitlines()]
    assert losses == [json.loads(ln)["loss"] for ln in
                      (tmp_path / "ref" / "simsiam" / "pretrain" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_transfer_trial_requeued_mid_run_completes_once(slurm_cluster, synth_root, tmp_path):
    out = tmp_path / "tr"
    trial = out / "scr" / "transfer" / "synth_voc07" / "trial0"
    run_requeued_once(slurm_cluster, synth_root, tmp_path, "tr", TRANSFER, "scr/transfer/synth_voc07/trial0",
                      lambda: (trial / "model_0000002.pth").is_file())
    result = json.loads((trial / "results.json").read_text())
    assert result["status"] == "complete" and result.get("resumed") is True
    assert sorted(p.name for p in trial.parent.glob("trial*")) == ["trial0"]
    log = (out / "logs" / "scr.transfer.synth_voc07.trial0.log").read_text()
    assert log.count("resuming from the last checkpoint") == 1 and log.count(": complete in") == 0
    stopped_at = int(log.split("stopped by SIGTERM after iteration ")[1].split()[0])  # its own checkpoint
    assert stopped_at >= 3 and f"Starting training from iteration {stopped_at}" in log


TINY = ["MODEL.ARCH", "resnet18", "MODEL.WIDTH", "8", "MODEL.DEVICE", "cpu", "MODEL.DIM", "64", "MODEL.PRED_DIM", "16",
        "DATA.DATASET", "synthetic", "DATA.SYNTHETIC.TRAIN_SIZE", "32", "DATA.SYNTHETIC.VAL_SIZE", "16",
        "DATA.SYNTHETIC.IMAGE_SIZE", "32", "DATA.IMAGE_SIZE", "32", "DATA.NUM_WORKERS", "0", "SOLVER.BATCH_SIZE", "16",
        "SOLVER.EPOCHS", "1", "TRAIN.PRINT_FREQ", "100", "MONITOR.TENSORBOARD", "False", "MONITOR.KNN_PERIOD", "0"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_pretraining_equals_two_process_torchrun(slurm_cluster, tmp_path):
    """pretrain/utils/dist.py's SLURM path on the two slurmd (one task each, gloo) against torchrun."""
    cli = [sys.executable, "-m", "siambench.benchmarks.cli", "pretrain"]
    launcher = SlurmLauncher()
    handle = launcher.submit("two-node", [*cli, "OUTPUT_DIR", str(tmp_path / "slurm"), *TINY], log=tmp_path / "two.log",
                             cwd=Path.cwd(), env={"MASTER_PORT": str(free_port())}, resources=Resources(nodes=2))
    ref = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *cli[1:], "OUTPUT_DIR", str(tmp_path / "torchrun"), *TINY],
                         capture_output=True, text=True, timeout=TIMEOUT_S, env=os.environ.copy())
    assert ref.returncode == 0, ref.stderr[-3000:]
    deadline = time.monotonic() + TIMEOUT_S
    while not launcher.poll(handle).state.finished and time.monotonic() < deadline:
        time.sleep(0.5)
    status = launcher.poll(handle)
    assert status.state == JobState.DONE, (status, Path(handle.log).read_text()[-3000:])
    assert slurm_cluster.job_info(handle.job_id)["NumNodes"] == "2"
    ref_ckpt = load_checkpoint(tmp_path / "torchrun" / "model_final.pth")
    got = load_checkpoint(tmp_path / "slurm" / "model_final.pth")
    assert got["config"] is not None and ref_ckpt["epoch"] == got["epoch"] == 1
    for k, v in ref_ckpt["state_dict"].items():
        assert torch.equal(v, got["state_dict"][k]), k


@pytest.mark.slow
def test_two_node_transfer_job_derives_machines_rank_and_rendezvous(slurm_cluster, tmp_path):
    """`siambench transfer --dist-url slurm` on a 2-node, 1-task-per-node job: what each node passes to
    detectron2's launch. (launch itself needs CUDA in its workers, detectron2/engine/launch.py:
    ``assert torch.cuda.is_available()``, NCCL: no launch on this CPU cluster.)"""
    code = ("import json, os; from siambench.transfer.main import slurm_machines; "
            "print('MACHINES', os.environ['SLURMD_NODENAME'], json.dumps(slurm_machines(os.environ)), flush=True)")
    launcher, log = SlurmLauncher(), tmp_path / "machines.log"
    handle = launcher.submit("machines", [sys.executable, "-c", code], log=log, cwd=Path.cwd(),
                             env={"MASTER_PORT": "29517"}, resources=Resources(nodes=2, tasks_per_node=1))
    deadline = time.monotonic() + TIMEOUT_S
    while not launcher.poll(handle).state.finished and time.monotonic() < deadline:
        time.sleep(0.5)
    assert launcher.poll(handle).state == JobState.DONE, log.read_text()[-3000:]
    lines = [ln.split(" ", 2)[1:] for ln in log.read_text().splitlines() if ln.startswith("MACHINES ")]
    got = {node: json.loads(machines) for node, machines in lines}
    assert len(got) == 2  # one task on each node
    assert sorted(m[1] for m in got.values()) == [0, 1] and {m[0] for m in got.values()} == {2}
    urls = {m[2] for m in got.values()}
    first = next(node for node, m in got.items() if m[1] == 0)  # rank 0 is the first node: the rendezvous host
    assert urls == {f"tcp://{first}:29517"}
