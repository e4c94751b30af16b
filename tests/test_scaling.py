"""Input scaling as data (issue #27): statistics fitted on each split's train graphs only,
equal to scikit-learn's StandardScaler, recorded in the checkpoint; self-loops for the
graph-level DIFFormer's GCN branch."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import DATA_DIR, needs_data
from difformer.data import DataRoot, load_dataset
from difformer.data.scaling import Standardiser
from difformer.data.sources import DataError
from difformer.train.tasks.graph import GraphTask

ENZYMES = needs_data("TUDataset/ENZYMES/raw/ENZYMES_A.txt")


def task_of(dataset, spec):
    trainer = SimpleNamespace(batch_size=32, precision="32", eval_train=False)
    return GraphTask(dataset, spec, SimpleNamespace(trainer=trainer, seed=0, split_seed=123),
                     torch.device("cpu"))


def enzymes(tmp_path, **opts):
    cfg = OmegaConf.create({"loader": "tu", "name": "ENZYMES", **opts})
    return load_dataset(cfg, DataRoot(DATA_DIR, tmp_path / "cache", offline=True))


@ENZYMES
def test_statistics_are_sklearns_on_the_train_graphs_of_each_fold(tmp_path):
    from sklearn.preprocessing import StandardScaler

    ds, spec = enzymes(tmp_path)
    assert ds.continuous == 18 and ds.scale == "standard" and ds.num_features == 21
    task = task_of(ds, spec)
    for run in (0, 3):
        split = ds.split(run, 123)
        train_x = torch.cat([ds.graphs[i].x for i in split.train.tolist()]).numpy()
        reference = StandardScaler().fit(train_x[:, :18].astype(np.float64))
        state = task.input_transform(split)
        np.testing.assert_allclose(state["mean"], reference.mean_, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(state["std"], reference.scale_, rtol=1e-6)
        # what the model sees: scaled attributes, the one-hot labels unchanged
        g = ds.split(run, 123).test[0].item()
        seen = task._graphs(split, "test")[0].x
        expected = reference.transform(ds.graphs[g].x[:, :18].double().numpy())
        np.testing.assert_allclose(seen[:, :18].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(seen[:, 18:], ds.graphs[g].x[:, 18:])
    # the loaded graphs themselves are never modified
    assert ds.graphs[0].x[0, 0].item() == pytest.approx(11.0)


@ENZYMES
def test_no_statistic_sees_a_valid_or_test_graph(tmp_path):
    ds, spec = enzymes(tmp_path)
    split = ds.split(0, 123)
    before = task_of(ds, spec).input_transform(split)
    for i in torch.cat([split.valid, split.test]).tolist():
        ds.graphs[i].x = ds.graphs[i].x * 1000 + 7  # held-out graphs changed beyond recognition
    assert task_of(ds, spec).input_transform(split) == before
    ds.graphs[split.train[0].item()].x = ds.graphs[split.train[0].item()].x + 1
    assert task_of(ds, spec).input_transform(split) != before


@ENZYMES
def test_scale_none_leaves_the_inputs_as_loaded_and_bad_values_are_one_line(tmp_path):
    ds, spec = enzymes(tmp_path, scale="none")
    task = task_of(ds, spec)
    split = ds.split(0, 123)
    assert task.input_transform(split) is None
    assert task._graphs(split, "train")[0] is ds.graphs[split.train[0].item()]
    with pytest.raises(DataError, match="^dataset.scale=minmax is not allowed; use standard or "
                                        "none$"):
        enzymes(tmp_path, scale="minmax")


def test_a_recorded_transform_is_applied_as_recorded():
    x = torch.tensor([[1.0, 10.0, 1.0], [3.0, 30.0, 0.0]])
    s = Standardiser.fit(x, 2)
    assert s.to_dict() == {"kind": "standard", "mean": [2.0, 20.0], "std": [1.0, 10.0]}
    again = Standardiser.from_dict(s.to_dict())
    assert torch.equal(again.apply(x), torch.tensor([[-1.0, -1.0, 1.0], [1.0, 1.0, 0.0]]))
    constant = Standardiser.fit(torch.ones(4, 1), 1)  # a zero std is taken as 1 (as sklearn)
    assert constant.std.tolist() == [1.0]


def test_graph_difformer_gives_every_node_one_self_loop():
    """With self_loops the GCN branch sees A + I (each node's own term, nodes without in-edges
    included) whatever loops the input had; without, the graph as given."""
    from difformer.models.graph_level import GraphDIFFormer

    torch.manual_seed(0)
    kwargs = dict(in_channels=3, hidden_channels=8, out_channels=2, num_layers=1,
                  use_graph=True, use_bn=False, dropout=0.0)
    model = GraphDIFFormer(**kwargs).eval()
    plain = GraphDIFFormer(**kwargs, self_loops=False).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 3)
    edges = torch.tensor([[0, 1, 2], [1, 0, 1]])  # node 3 has no edge, node 2 no in-edge
    looped = torch.cat([edges, torch.arange(4).repeat(2, 1)], dim=1)
    with_loop_on_0 = torch.cat([edges, torch.tensor([[0], [0]])], dim=1)
    assert torch.allclose(model(x, edges), plain(x, looped), atol=1e-6)
    assert torch.allclose(model(x, with_loop_on_0), plain(x, looped), atol=1e-6)
    assert not torch.allclose(plain(x, edges), plain(x, looped), atol=1e-4)


def test_own_node_data_is_scaled_on_each_splits_train_nodes_and_eval_reuses_it(compose, tmp_path):
    """dataset.scale=standard on an npz file: the statistics in the checkpoint are numpy's of
    the train nodes (no valid or test node seen), mode=eval reproduces the recorded score with
    them, and the settings hash of a file without the key is unchanged; a bad value is one
    line."""
    from difformer.config.core import config_hash
    from difformer.invocation import run

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    scales = np.array([1.0, 10.0, 1e3, 1e5])
    x = (rng.normal(size=(120, 4)) + y[:, None]) * scales + 7 * scales
    idx = rng.permutation(120)
    parts = {"train_idx": idx[:60], "valid_idx": idx[60:90], "test_idx": idx[90:]}
    np.savez(tmp_path / "g.npz", x=x, y=y, **parts)
    data = ["dataset=npz", f"dataset.path={tmp_path / 'g.npz'}"]
    fast = ["model=mlp", "trainer.runs=1", "trainer.epochs=30", "trainer.progress=false"]
    summary = run(compose(*data, "dataset.scale=standard", *fast), tmp_path / "run")
    ckpt = torch.load(tmp_path / "run/checkpoints/run0.pt", weights_only=False)
    state = ckpt["dataset"]["input_transform"]
    train = x[parts["train_idx"]]
    np.testing.assert_allclose(state["mean"], train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(state["std"], train.std(0), rtol=1e-5)
    evaluated = run(compose(*data, "dataset.scale=standard", "mode=eval",
                            f"checkpoint={tmp_path / 'run/checkpoints/run0.pt'}",
                            "eval_trust_checkpoint=true"),  # compose has no command line
                    tmp_path / "eval")
    assert evaluated["test"] == summary["runs"][0]["test"]
    assert config_hash(compose(*data, *fast)) == config_hash(compose(*data, "dataset.scale=null",
                                                                     *fast))
    with pytest.raises(DataError, match=r"^dataset.scale=minmax is not allowed; use standard "
                                        r"or none$"):
        run(compose(*data, "dataset.scale=minmax", *fast), tmp_path / "bad")
