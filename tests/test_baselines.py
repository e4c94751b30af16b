"""Baselines: every registered model trains on a small graph; sanity accuracy on Cora."""
import pytest
import torch

from conftest import needs_data
from difformer.cli import ConfigError, run
from difformer.models import MODELS, build_model

SMALL = {"difformer": {"hidden_channels": 8}, "mlp": {"hidden_channels": 8}, "gcn": {"hidden_channels": 8},
         "gat": {"hidden_channels": 4, "heads": 2}, "sgc": {"hops": 2},
         "appnp": {"hidden_channels": 8, "K": 3}, "gcn_jk": {"hidden_channels": 8},
         "gat_jk": {"hidden_channels": 8, "jk_mode": "cat"}, "mixhop": {"hidden_channels": 4},
         "gprgnn": {"hidden_channels": 8, "K": 3}}


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
    out = model(x, edge_index)
    assert out.shape == (n, c)
    out.logsumexp(dim=1).sum().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert isinstance(getattr(model, "requires_graph"), bool)


def test_a_graph_model_on_data_without_a_graph_is_refused(compose, tmp_path):
    with pytest.raises(ConfigError, match="model gcn uses the input graph, but dataset digits "
                                          "has none: set dataset.knn_k=5"):
        run(compose("model=gcn", "trainer.epochs=1", "trainer.runs=1"), tmp_path)
    summary = run(compose("model=gcn", "dataset.knn_k=5", "trainer.epochs=1",
                          "trainer.runs=1"), tmp_path / "knn")
    assert summary["n_runs"] == 1


@needs_data("Planetoid/Cora/raw/ind.cora.x")
@pytest.mark.parametrize("model,threshold", [("gcn", 0.79), ("gat", 0.80), ("appnp", 0.81),
                                             ("mlp", 0.55)])
def test_cora_sanity_accuracy(compose, tmp_path, model, threshold):
    """Default settings, the 20/500/1000 split, test mean over 2 runs."""
    summary = run(compose("dataset=cora", f"model={model}", "trainer.runs=2",
                          "trainer.progress=false"), tmp_path)
    assert summary["test_mean"] >= threshold, summary["test_mean"]
