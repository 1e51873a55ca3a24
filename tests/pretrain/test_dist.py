"""Two gloo processes with SyncBN + DDP make the same update as one process on the whole batch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

BATCH = 8  # global
REPO = Path(__file__).resolve().parents[2]

# One SGD step through the real code path (build_model_and_optimizer: SyncBN + DDP when
# world_size > 1; engine.train_one_epoch) on a fixed batch, sharded over the ranks.
STEP = textwrap.dedent(f"""
    import sys
    import torch
    import torch.distributed as dist
    from siambench.pretrain.config import get_cfg
    from siambench.pretrain.engine import TrainContext, train_one_epoch
    from siambench.pretrain.main import build_model_and_optimizer
    from siambench.pretrain.utils.dist import DistInfo

    rank, world, init_file, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
    cfg = get_cfg()
    cfg.merge_from_list(sys.argv[5:] + ["SOLVER.BATCH_SIZE", "{BATCH}"])
    g = torch.Generator().manual_seed(0)
    views = [torch.randn({BATCH}, 3, 32, 32, generator=g) for _ in range(2)]
    shard = slice(rank * {BATCH} // world, (rank + 1) * {BATCH} // world)
    info = DistInfo(rank=rank, world_size=world)
    model, bare, optimizer, _ = build_model_and_optimizer(cfg, info)
    init = bare.encoder.conv1.weight.detach().clone()
    ctx = TrainContext(device=info.device, init_lr=0.1, epochs=1, print_freq=100)
    train_one_epoch(model, optimizer, [([v[shard] for v in views], torch.arange({BATCH})[shard])], 0, ctx, bare)
    assert not torch.equal(init, bare.encoder.conv1.weight), "the step did not move the weights"
    if rank == 0:
        torch.save(bare.state_dict(), out_file)
    if world > 1:
        dist.destroy_process_group()
""")


def _launch(tmp_path: Path, world: int, tiny_opts: list[str]) -> dict[str, torch.Tensor]:
    script = tmp_path / "step.py"
    script.write_text(STEP)
    out = tmp_path / f"world{world}.pt"
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world), str(tmp_path / "init"), str(out),
                               *tiny_opts], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(world)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    return torch.load(out, weights_only=True)


@pytest.mark.dist
def test_two_process_syncbn_equals_single_process(tmp_path, tiny_opts):
    two = _launch(tmp_path, 2, tiny_opts)
    one = _launch(tmp_path, 1, tiny_opts)
    assert set(one) == set(two) and any("running_var" in k for k in one)
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, atol=2e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
