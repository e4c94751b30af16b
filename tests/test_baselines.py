"""Baselines: every registered model trains on a small graph; sanity accuracy on Cora."""
import pytest
import torch

from conftest import needs_data
from difformer.invocation import run
from difformer.config.core import ConfigError
from difformer.models import MODELS, build_model

SMALL = {"difformer": {"hidden_channels": 8}, "mlp": {"hidden_channels": 8},
         "gcn": {"hidden_channels": 8}, "gat": {"hidden_channels": 4, "heads": 2},
         "sgc": {"hops": 2}, "appnp": {"hidden_channels": 8, "K": 3},
         "gcn_jk": {"hidden_channels": 8}, "gat_jk": {"hidden_channels": 8, "jk_mode": "cat"},
         "mixhop": {"hidden_channels": 4}, "gprgnn": {"hidden_channels": 8, "K": 3},
         "lp": {"num_layers": 3}, "manireg": {"hidden_channels": 8},
         "h2gcn": {"hidden_channels": 8}, "gcn_knn": {"hidden_channels": 8, "knn_k": 3},
         "gat_knn": {"hidden_channels": 4, "heads": 2, "knn_k": 3},
         "dense_gat": {"hidden_channels": 4, "heads": 2}, "dcrnn": {"hidden_channels": 8, "K": 3},
         "mpnn_lstm": {"hidden_channels": 8},
         "nodeformer": {"hidden_channels": 8, "num_heads": 2, "rb_order": 2},
         "sgformer": {"hidden_channels": 8}, "sgformer_pyg": {"hidden_channels": 8},
         "polynormer": {"hidden_channels": 8, "local_layers": 2, "local_epochs": 0},
         # graph-level: one prediction for the whole graph (tests/test_graph_models.py)
         "difformer_graph": {"hidden_channels": 8}, "mol_gnn": {"hidden_channels": 8},
         "deepsets": {"hidden_channels": 8},
         "gated_gt": {"hidden_channels": 8, "lap_pe": 0},
         "gps": {"hidden_channels": 8, "heads": 2, "pe": "none"}}

# PyG's Polynormer keeps layers its global mode does not use (lin_in, the local head).
UNUSED = {"polynormer": ("model.lin_in.", "model.pred_local.")}


def test_every_registered_model_has_a_small_config():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name):
    torch.manual_seed(0)
    n, d, c = 30, 7, 4
    x = torch.randn(n, d)
    src, dst = torch.randint(0, n, (80,)), torch.randint(0, n, (80,))
    loops = torch.arange(n)
    edge_index = torch.stack([torch.cat([src, dst, loops]), torch.cat([dst, src, loops])])
    model = build_model(name, d, c, **SMALL[name])
    if hasattr(model, "set_labels"):
        model.set_labels(torch.randint(0, c, (n,)), torch.arange(10))
    out = model(x, edge_index)
    assert out.shape == (1 if getattr(model, "level", "node") == "graph" else n, c)
    loss = out.logsumexp(dim=1).sum()
    if hasattr(model, "auxiliary_loss") and model.auxiliary_loss() is not None:
        loss = loss + model.auxiliary_loss()
    if any(p.requires_grad for p in model.parameters()):
        loss.backward()
    missing = [k for k, p in model.named_parameters()
               if p.grad is None and not k.startswith(UNUSED.get(name, ("-",)))]
    assert not missing, missing
    assert isinstance(getattr(model, "requires_graph"), bool)


def test_a_graph_model_on_data_without_a_graph_is_refused(compose, tmp_path):
    with pytest.raises(ConfigError, match="model gcn uses the input graph, but dataset digits "
                                          "has none: set dataset.knn_k=5"):
        run(compose("model=gcn", "trainer.epochs=1", "trainer.runs=1"), tmp_path)
    summary = run(compose("model=gcn", "dataset.knn_k=5", "trainer.epochs=1",
                          "trainer.runs=1"), tmp_path / "knn")
    assert summary["n_runs"] == 1


SLOW = pytest.mark.slow  # real-data training: make test-slow


@SLOW
@needs_data("Planetoid/Cora/raw/ind.cora.x")
@pytest.mark.parametrize("model,threshold", [
    ("gcn", 0.79), ("gat", 0.80), ("appnp", 0.81), ("mlp", 0.55),
    # measured (1-2 runs): LP 70.5, ManiReg 64.2, H2GCN 79.7, GCN-kNN 70.0 (paper: 68.2, 60.4,
    # -, 72.2); thresholds a few points below
    ("lp", 0.65), ("manireg", 0.58), ("h2gcn", 0.75), ("gcn_knn", 0.65),
    # measured: GAT-kNN 67.9, SGFormer 77.7, SGFormer-PyG 71.8, Polynormer 75.8 (1 run)
    pytest.param("gat_knn", 0.62, marks=SLOW), pytest.param("sgformer", 0.72, marks=SLOW),
    pytest.param("sgformer_pyg", 0.65, marks=SLOW), pytest.param("polynormer", 0.70, marks=SLOW),
    pytest.param("nodeformer", 0.75, marks=SLOW)])
def test_cora_sanity_accuracy(compose, tmp_path, model, threshold):
    """The model's default settings (~recipe: not the baseline search's recipes), the
    20/500/1000 split, test mean over 2 runs."""
    summary = run(compose("dataset=cora", f"model={model}", "~recipe", "trainer.runs=2",
                          "trainer.progress=false"), tmp_path)
    assert summary["test_mean"] >= threshold, summary["test_mean"]


def test_untrainable_model_is_evaluated_once_not_optimised(compose, tmp_path):
    summary = run(compose("model=lp", "dataset.knn_k=5", "trainer.runs=2", "trainer.epochs=50"),
                  tmp_path)
    records = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2 and summary["n_runs"] == 2  # one evaluation per run
    assert summary["runs"][0]["best_epoch"] == 0


def test_knn_model_runs_on_the_feature_knn_graph():
    from difformer.data import NodeDataset, prepare_for_model
    from difformer.data.instances import knn_edges
    from difformer.data.splits import FixedIndexSplit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    idx = torch.arange(40)
    ds = NodeDataset("toy", x, idx % 3, torch.stack([idx, idx]), 3,
                     FixedIndexSplit(idx[:10], idx[10:20], idx[20:]))
    out = prepare_for_model(ds, build_model("gcn_knn", 5, 3, hidden_channels=4, knn_k=4))
    assert torch.equal(out.edge_index, knn_edges(x, 4))
    assert prepare_for_model(ds, build_model("gcn", 5, 3, hidden_channels=4)) is ds


def test_auxiliary_loss_is_part_of_every_training_step():
    """One mini-batch chunk holding all nodes = one full step of task loss + ManiReg term."""
    from difformer.train.metrics import cross_entropy
    from difformer.train.minibatch import RandomPartitionStep

    torch.manual_seed(0)
    n = 30
    x, y = torch.randn(n, 6), torch.randint(0, 3, (n,))
    idx = torch.arange(n)
    edge_index = torch.cat([torch.randint(0, n, (2, 60)), torch.stack([idx, idx])], dim=1)
    train = torch.arange(0, n, 2)
    a = build_model("manireg", 6, 3, hidden_channels=8, dropout=0.0, reg_weight=5.0)
    b = build_model("manireg", 6, 3, hidden_channels=8, dropout=0.0, reg_weight=5.0)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.5) for m in (a, b))
    a.train()
    out = a(x, edge_index)
    p = out.softmax(-1)
    reg = (p[edge_index[0]] - p[edge_index[1]]).square().sum(-1).mean()
    (cross_entropy(out[train], y[train]) + 5.0 * reg).backward()
    opt_a.step()
    RandomPartitionStep(x, y, edge_index, train, 64, cross_entropy, torch.device("cpu"))(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_polynormer_switches_to_global_attention_and_remembers_it():
    model = build_model("polynormer", 5, 3, hidden_channels=8, local_layers=1, local_epochs=3)
    model.on_epoch_start(2)
    assert not bool(model.global_on)
    model.on_epoch_start(3)
    assert bool(model.global_on) and bool(model.state_dict()["global_on"])


@needs_data("pytorch_geometric_temporal/dataset/chickenpox.json")
@pytest.mark.parametrize("model", ["dcrnn", "mpnn_lstm"])
def test_temporal_baselines_train_on_chickenpox(compose, tmp_path, model):
    summary = run(compose("dataset=chickenpox", f"model={model}", "trainer.runs=1",
                          "trainer.epochs=3", "trainer.progress=false"), tmp_path)
    assert summary["n_runs"] == 1 and summary["test_mse_standard_mean"] < 2.0


@pytest.mark.parametrize("model,extra", [("lp", ["dataset.knn_k=5"]), ("gcn_knn", []),
                                         ("nodeformer", ["dataset.knn_k=5"]),
                                         ("polynormer", ["dataset.knn_k=5",
                                                         "model.local_epochs=2"])])
def test_train_checkpoint_eval_round_trip(compose, tmp_path, model, extra):
    """What a model declares (labels, k-NN graph, schedule buffer) survives the checkpoint:
    mode=eval gives exactly the recorded test score."""
    summary = run(compose(f"model={model}", *extra, "trainer.runs=1", "trainer.epochs=4",
                          "trainer.progress=false"), tmp_path / "train")
    cfg = compose("mode=eval", f"checkpoint={summary['runs'][0]['checkpoint']}")
    result = run(cfg, tmp_path / "eval")
    assert result["mismatches"] == [] and result["test"] == summary["runs"][0]["test"]


@needs_data("pytorch_geometric_temporal/dataset/chickenpox.json")
def test_temporal_loop_adds_auxiliary_losses(compose, tmp_path, monkeypatch):
    """A model whose auxiliary loss is a strong weight penalty ends with far smaller weights
    than the same model without it: the temporal loop adds the term too."""
    import torch.nn as nn

    from difformer import models

    class Penalised(nn.Module):
        requires_graph = False

        def __init__(self, in_channels, out_channels, hidden_channels=4, penalty=0.0, **_):
            super().__init__()
            self.lin = nn.Linear(in_channels, out_channels)
            self.penalty = penalty

        def forward(self, x, edge_index=None, edge_weight=None):
            return self.lin(x)

        def auxiliary_loss(self):
            return self.penalty * self.lin.weight.square().sum() if self.training else None

    monkeypatch.setitem(models.MODELS, "mlp", Penalised)
    norms = []
    for penalty in (0.0, 100.0):
        summary = run(compose("dataset=chickenpox", "model=mlp", f"+model.penalty={penalty}",
                              "trainer.runs=1", "trainer.epochs=30", "trainer.patience=100",
                              "trainer.progress=false"), tmp_path / str(penalty))
        state = torch.load(summary["runs"][0]["checkpoint"], weights_only=True)["state_dict"]
        norms.append(state["lin.weight"].norm().item())
    assert norms[1] < 0.2 * norms[0], norms


@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_dense_gat_gives_every_cora_node_nearly_the_same_first_layer_output(compose, tmp_path):
    """Why cora_dense_gat stays at chance (README, Table 1): GAT's score LeakyReLU(a.Wx_j +
    b.Wx_i) depends on the receiving node i only through the slope of the LeakyReLU, so over a
    complete graph every node's softmax is nearly the same; on Cora's row-normalised features
    the first layer's output barely differs between nodes, at initialisation already."""
    from conftest import DATA_DIR
    from difformer.data import DataRoot, load_dataset

    data = load_dataset(compose("dataset=cora").dataset,
                        DataRoot(DATA_DIR, tmp_path, offline=True))[0]
    torch.manual_seed(0)
    model = build_model("dense_gat", in_channels=data.x.shape[1], out_channels=7,
                        hidden_channels=8, heads=8).eval()
    x = data.x.to_dense() if data.x.is_sparse else data.x
    with torch.no_grad():
        out = model.conv1(x.unsqueeze(0), torch.ones(1, x.shape[0], x.shape[0]))[0]
        projected = model.conv1.lin(x)
    spread = (out.std(0).mean() / projected.std(0).mean()).item()
    assert spread < 0.01, spread  # 5.8e-4 measured (seed 0)
