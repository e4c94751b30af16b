"""Random-partition mini-batches: induced subgraphs, feature alignment, one-chunk equivalence."""
import json

import pytest
import torch
from torch_geometric.utils import subgraph

from conftest import needs_data, train_py
from difformer.models import DIFFormer
from difformer.train.metrics import cross_entropy
from difformer.train.minibatch import RandomPartitionStep, partition_subgraphs


def random_graph(n, e, seed):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    loops = torch.arange(n)
    return torch.cat([ei, ei.flip(0), torch.stack([loops, loops])], dim=1)


@pytest.mark.parametrize("n,batch", [(103, 10), (100, 25), (50, 50), (40, 64)])
def test_chunks_are_the_induced_subgraphs(n, batch):
    edge_index = random_graph(n, 4 * n, seed=n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    chunks = partition_subgraphs(edge_index, perm, batch)
    assert len(chunks) == -(-n // batch)  # ceil: never an empty chunk
    assert torch.equal(torch.cat([nodes for nodes, _ in chunks]), perm)
    total = 0
    for nodes, local in chunks:
        expected, _ = subgraph(nodes, edge_index, relabel_nodes=True, num_nodes=n)
        assert sorted(map(tuple, local.t().tolist())) == sorted(map(tuple, expected.t().tolist()))
        total += local.shape[1]
    inside = (perm.argsort()[edge_index] // batch)
    assert total == int((inside[0] == inside[1]).sum())  # every intra-chunk edge, once


def test_features_match_edges_by_construction_unlike_pyg_2_1_to_2_3():
    """PyG 2.1-2.3 relabelled a subset in sorted order while the official script gathered
    features in permutation order; reproduce that and show our chunks are immune."""
    n = 60
    edge_index = random_graph(n, 200, seed=0)
    x = torch.arange(n).float().unsqueeze(1)  # a node's feature is its own id
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    nodes, local = partition_subgraphs(edge_index, perm, 20)[0]
    feats = x[nodes]
    member = torch.zeros(n, dtype=torch.bool)
    member[nodes] = True
    keep = member[edge_index[0]] & member[edge_index[1]]
    global_edges = edge_index[:, keep]
    # ours: edges keep their order, and each local endpoint's feature row is that endpoint's
    assert torch.equal(feats[local].squeeze(-1), global_edges.float())
    # the old sorted-order relabelling: edges point at the wrong feature rows
    old_map = torch.full((n,), -1)
    old_map[nodes.sort().values] = torch.arange(nodes.numel())
    old_local = old_map[global_edges]
    wrong = (feats[old_local[0]].squeeze(-1) != global_edges[0].float()).sum()
    assert wrong > 0


def test_one_chunk_equals_a_full_graph_step():
    """B >= N: one chunk holding every node (permuted); DIFFormer is permutation-equivariant,
    so one mini-batch epoch gives the parameters of one full-graph step."""
    torch.manual_seed(0)
    n = 40
    x, y = torch.randn(n, 6), torch.randint(0, 3, (n,))
    edge_index = random_graph(n, 80, seed=3)
    train_idx = torch.arange(0, n, 2)
    a = DIFFormer(6, 8, 3, num_layers=2, dropout=0.0, use_graph=True)
    b = DIFFormer(6, 8, 3, num_layers=2, dropout=0.0, use_graph=True)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.Adam(a.parameters(), lr=0.01)
    opt_b = torch.optim.Adam(b.parameters(), lr=0.01)
    opt_a.zero_grad()
    cross_entropy(a(x, edge_index)[train_idx], y[train_idx]).backward()
    opt_a.step()
    RandomPartitionStep(x, y, edge_index, train_idx, 64, cross_entropy, torch.device("cpu"))(b, opt_b)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), name


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        partition_subgraphs(torch.zeros(2, 0, dtype=torch.long), torch.arange(3), 0)


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_minibatch_training_on_cora(tmp_path):
    train_py("dataset=cora", "model=difformer_s", "trainer=minibatch", "trainer.batch_size=1000",
             "trainer.runs=1", "trainer.epochs=60", "model.num_layers=2", "optim.lr=0.01",
             f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["regime"] == "minibatch (B=1000)"
    assert summary["test_mean"] >= 0.6, summary["test_mean"]


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_bench_script_runs_quick(tmp_path):
    """The benchmark stays runnable (its figures live in the README, not in tests)."""
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "scripts/bench.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())
    assert results["batching"]["chunks"] == 10
    assert results["sigmoid_memory"]["dense"]["delta_rss_mib"] > 0
