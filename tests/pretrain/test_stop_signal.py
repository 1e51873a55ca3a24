"""A SLURM stop signal (SIGTERM, SIGUSR1) ends pretraining / supervised / lincls at the end of the
current epoch with a checkpoint of it, exit 128 + signal; the resumed run equals an uninterrupted one."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from siambench.pretrain.checkpoint import load_checkpoint
from siambench.pretrain.main import Pretraining, main
from siambench.pretrain.utils.stop import StopRequested, stop_on_signal
from tests.pretrain.test_lincls import make_colour_folder

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_signals_become_a_request_inside_slurm_only(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signal() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat keeps the first signal
        assert stop.agreed() == signal.SIGUSR1
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.delenv("SLURM_JOB_ID")
    with stop_on_signal() as stop:
        assert signal.getsignal(signal.SIGTERM) is before and not stop.enabled
    e = StopRequested(signal.SIGTERM, "epoch 2")
    assert e.code == 143 and "SIGTERM after epoch 2" in str(e)


def _signal_during(monkeypatch, cls, method, at):
    """Send SIGTERM to this process while ``cls.method``'s call number ``at`` (0-based) runs."""
    calls, original = [], getattr(cls, method)

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == at + 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapped)


def test_pretraining_signalled_mid_epoch_saves_that_epoch_and_resumes_bit_exact(tiny_opts, tmp_path, monkeypatch):
    def run(out, *extra):
        return main([*extra, "OUTPUT_DIR", str(out), *tiny_opts, "SOLVER.EPOCHS", "3",
                     "TRAIN.CHECKPOINT_PERIOD", "10"])

    assert run(tmp_path / "full") == 0
    full = load_checkpoint(tmp_path / "full" / "model_final.pth")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with monkeypatch.context() as m:
        _signal_during(m, Pretraining, "run_epoch", at=1)  # in the 2nd epoch, periodic checkpoints every 10
        with pytest.raises(StopRequested) as stopped:
            run(tmp_path / "half")
    assert stopped.value.code == 128 + signal.SIGTERM
    half = tmp_path / "half"
    assert sorted(p.name for p in half.glob("*.pth")) == ["checkpoint_0002.pth"]  # the epoch it was in
    assert (half / "last_checkpoint").read_text().strip() == "checkpoint_0002.pth"
    assert run(half, "--resume", "auto") == 0
    resumed = load_checkpoint(half / "model_final.pth")
    assert resumed["epoch"] == 3
    for k, v in full["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    losses = [[json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (tmp_path / "full", half)]
    assert losses[0] == losses[1]


def test_signal_in_the_last_epoch_just_finishes(tiny_opts, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    _signal_during(monkeypatch, Pretraining, "run_epoch", at=1)
    assert main(["OUTPUT_DIR", str(tmp_path), *tiny_opts, "SOLVER.EPOCHS", "2"]) == 0
    assert (tmp_path / "model_final.pth").is_file()


def _signal_in_call(monkeypatch, module, name, at):
    """Send SIGTERM to this process during the call number ``at`` (0-based) of ``module.name``."""
    calls, original = [], getattr(module, name)

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == at + 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_supervised_and_lincls_signalled_save_the_epoch_and_resume(tmp_path, monkeypatch):
    from siambench.pretrain import lincls, supervised

    data = make_colour_folder(tmp_path / "data", {"train": 12, "val": 6})
    common = ["DATA.ROOT", str(data), "DATA.IMAGE_SIZE", "32", "SOLVER.BATCH_SIZE", "12", "MODEL.WIDTH", "8",
              "SOLVER.EPOCHS", "3"]
    sup = ["--config-file", str(CONFIGS / "supervised/synth_r18.yaml"), *common, "TEST.EVAL_PERIOD", "0",
           "TRAIN.CHECKPOINT_PERIOD", "10"]
    assert supervised.main([*sup, "OUTPUT_DIR", str(tmp_path / "straight")]) == 0
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with monkeypatch.context() as m:
        _signal_in_call(m, supervised, "train_one_epoch", at=0)
        with pytest.raises(StopRequested):
            supervised.main([*sup, "OUTPUT_DIR", str(tmp_path / "sup")])
    assert sorted(p.name for p in (tmp_path / "sup").glob("*.pth")) == ["checkpoint_0001.pth"]
    assert supervised.main(["--resume", "auto", *sup, "OUTPUT_DIR", str(tmp_path / "sup")]) == 0
    straight, resumed = (load_checkpoint(d / "model_final.pth") for d in (tmp_path / "straight", tmp_path / "sup"))
    assert all(torch.equal(v, resumed["state_dict"][k]) for k, v in straight["state_dict"].items())

    lin = ["--config-file", str(CONFIGS / "lincls/synth_r18.yaml"), *common,
           "MODEL.WEIGHTS", str(tmp_path / "straight" / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "lin")]
    with monkeypatch.context() as m:
        _signal_in_call(m, lincls, "train_one_epoch", at=1)
        with pytest.raises(StopRequested):
            lincls.main(lin)
    assert torch.load(tmp_path / "lin" / lincls.CHECKPOINT, weights_only=True)["epoch"] == 2
    assert not (tmp_path / "lin" / "lincls_results.json").exists()
    assert lincls.main(["--resume", "auto", *lin]) == 0
    state = torch.load(tmp_path / "lin" / lincls.CHECKPOINT, weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert json.loads((tmp_path / "lin" / "lincls_results.json").read_text())["epochs"] == 3
