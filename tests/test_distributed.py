"""torch.distributed: 2 gloo processes give the parameters of one process that averages the
same chunks' gradients; torchrun end to end; bf16 autocast."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from conftest import REPO, needs_data
from difformer.models import DIFFormer
from difformer.train.metrics import cross_entropy
from difformer.train.minibatch import RandomPartitionStep, partition_subgraphs, shard_steps

N, BATCH, SEED = 130, 20, 7  # 7 chunks: the last step of 2 ranks wraps around


def problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 6, generator=g), torch.randint(0, 3, (N,), generator=g)
    edges = torch.randint(0, N, (2, 400), generator=g)
    loops = torch.arange(N)
    edge_index = torch.cat([edges, edges.flip(0), torch.stack([loops, loops])], dim=1)
    return x, y, edge_index, torch.arange(0, N, 3)


def fresh_model():
    torch.manual_seed(1)
    return DIFFormer(6, 8, 3, num_layers=2, dropout=0.0, use_weight=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world, init_method, out):
    import torch.distributed as dist

    from difformer.train import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    x, y, edge_index, train_idx = problem()
    model = fresh_model()
    if rank == 1:  # DDP must broadcast rank 0's parameters: start rank 1 elsewhere
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    wrapped = distributed.wrap(model, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    step = RandomPartitionStep(x, y, edge_index, train_idx, BATCH, cross_entropy,
                               torch.device("cpu"), seed=SEED, rank=rank, world_size=world)
    step(wrapped, optimizer)
    if rank == 0:
        torch.save(model.state_dict(), out)
    # Free DDP's reducer while the group still exists (its destructor after the group's
    # destruction can hang), and leave together.
    del wrapped
    dist.barrier()
    dist.destroy_process_group()


def test_shard_steps_cover_every_chunk_and_wrap():
    assert shard_steps(7, 2, 0) == [0, 2, 4, 6]
    assert shard_steps(7, 2, 1) == [1, 3, 5, 0]
    assert shard_steps(4, 1, 0) == [0, 1, 2, 3]


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_two_gloo_processes_equal_one_process_on_the_same_chunks(tmp_path):
    out = tmp_path / "rank0.pt"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only: no network lookups
    mp.spawn(_worker, args=(2, f"tcp://127.0.0.1:{_free_port()}", str(out)), nprocs=2,
             join=True)
    ddp_state = torch.load(out)

    # Reference, written out here: same partition (same generator), step s averages the
    # gradients of chunks 2s and 2s+1 (mod the chunk count), one Adam step.
    x, y, edge_index, train_idx = problem()
    is_train = torch.zeros(N, dtype=torch.bool)
    is_train[train_idx] = True
    model = fresh_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(SEED))
    chunks = [c for c in partition_subgraphs(edge_index, perm, BATCH) if is_train[c[0]].any()]
    assert len(chunks) == 7
    for s in range(4):
        optimizer.zero_grad()
        for r in range(2):
            nodes, edges = chunks[(2 * s + r) % len(chunks)]
            mask = is_train[nodes]
            (cross_entropy(model(x[nodes], edges)[mask], y[nodes][mask]) / 2).backward()
        optimizer.step()
    for name, value in model.state_dict().items():
        assert torch.allclose(ddp_state[name], value, atol=1e-6), name
    # and it is not trivially equal to the start
    assert not torch.allclose(ddp_state["fcs.0.weight"], fresh_model().state_dict()["fcs.0.weight"])


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_torchrun_two_ranks_end_to_end(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "train.py"), "dataset=cora", "trainer=minibatch", "trainer.batch_size=700",
         "trainer.runs=1", "trainer.epochs=3", "model.num_layers=2",
         f"hydra.run.dir={tmp_path}/run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["n_runs"] == 1
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    assert proc.stdout.count("run directory:") == 1  # rank 1 writes and prints nothing


def test_bf16_autocast_step_trains():
    x, y, edge_index, train_idx = problem()
    model = fresh_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    step = RandomPartitionStep(x, y, edge_index, train_idx, 200, cross_entropy,
                               torch.device("cpu"), autocast_dtype=torch.bfloat16)
    losses = [step(model, optimizer) for _ in range(30)]
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_fullgraph_under_torchrun_is_refused(compose, tmp_path, monkeypatch):
    from difformer.invocation import run
    from difformer.config.core import ConfigError
    from difformer.train import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="torchrun is supported for node classification with "
                                          "trainer=minibatch, not for the node task with "
                                          "trainer=fullgraph"):
        run(compose("trainer.runs=1", "trainer.epochs=1"), tmp_path)
