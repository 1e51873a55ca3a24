"""Two gloo ranks: MoCo's queue holds the whole global batch on every rank, shuffle BN
restores the key order, SimCLR gathers negatives (with gradient) across ranks, SwAV's
Sinkhorn normalises over the global batch -- each equal to one process on the whole batch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECKS = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    sys.path.insert(0, sys.argv[4])
    from test_methods import _nt_xent_direct, _sinkhorn_textbook
    from siambench.pretrain.methods.encoders import build_encoder
    from siambench.pretrain.methods.moco_v2 import MoCoV2
    from siambench.pretrain.methods.simclr import nt_xent
    from siambench.pretrain.methods.swav import sinkhorn

    rank, world, init_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
    N = 4  # per rank
    g = torch.Generator().manual_seed(0)  # the same global tensors on every rank
    mine = slice(rank * N, (rank + 1) * N)

    # MoCo: queue and pointer identical on every rank, holding every rank's keys in rank order
    torch.manual_seed(0)
    moco = MoCoV2(build_encoder("resnet18"), dim=4, queue_size=16, shuffle_bn=True)
    keys = F.normalize(torch.randn(world * N, 4, generator=g), dim=1)
    moco._dequeue_and_enqueue(keys[mine])
    assert torch.equal(moco.queue[:, :world * N], keys.T), "queue != all ranks' keys"
    assert int(moco.queue_ptr) == world * N
    box = [torch.empty_like(moco.queue) for _ in range(world)]
    dist.all_gather(box, moco.queue)
    assert all(torch.equal(b, box[0]) for b in box), "queues differ across ranks"

    # shuffle BN: with BN in eval mode the keys do not depend on the batch, so shuffling must be invisible
    moco.eval()
    x = torch.randn(world * N, 3, 32, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(moco._keys(x[mine]), F.normalize(moco.encoder_k(x[mine]), dim=1))

    # SimCLR: mean of the ranks' losses = the global NT-Xent; gradients = the global ones
    z1, z2 = torch.randn(world * N, 8, generator=g), torch.randn(world * N, 8, generator=g)
    a, b = z1[mine].clone().requires_grad_(), z2[mine].clone().requires_grad_()
    loss = nt_xent(a, b, 0.5)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    za, zb = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    expected = _nt_xent_direct(za, zb, 0.5)
    expected.backward()
    torch.testing.assert_close(total / world, expected.detach())
    torch.testing.assert_close(a.grad / world, za.grad[mine])  # DDP averages the ranks' gradients
    torch.testing.assert_close(b.grad / world, zb.grad[mine])

    # SwAV: Sinkhorn over the global batch
    scores = F.normalize(torch.randn(world * N, 6, generator=g), dim=1) @ F.normalize(torch.randn(5, 6, generator=g), dim=1).T
    torch.testing.assert_close(sinkhorn(scores[mine], 0.05, 3), _sinkhorn_textbook(scores, 0.05, 3)[mine],
                               rtol=1e-4, atol=1e-6)
    dist.destroy_process_group()
    print("ok", rank)
""")


@pytest.mark.dist
def test_methods_across_two_gloo_ranks(tmp_path):
    script = tmp_path / "checks.py"
    script.write_text(CHECKS)
    tests_dir = str(Path(__file__).resolve().parent)
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), "2", str(tmp_path / "init"), tests_dir],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    assert all(f"ok {r}" in log for r, log in enumerate(logs))
