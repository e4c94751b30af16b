"""Large-graph datasets on genuine-format fixtures (proteins, pokec), tolokers on the real
files, the synthetic generator, streamed evaluation, and the authors' released checkpoints."""
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from conftest import DATA_DIR, needs_data, train_py
from difformer.data import DataRoot, DatasetUnavailable, load_dataset
from difformer.models import DIFFormer
from difformer.train.metrics import rocauc, rocauc_ogb
from large_fixtures import make_pokec, make_proteins


def load(name, data_dir, tmp_path, **opts):
    root = DataRoot(data_dir, tmp_path / "cache", offline=True)
    return load_dataset(OmegaConf.create({"name": name, **opts}), root)[0]


def data_paths(tmp_path):
    """train.py overrides: the fixture's data root and a cache of this test's own."""
    return [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'c'}"]


def test_ogbn_proteins_loader(tmp_path):
    fx = make_proteins(tmp_path / "data")
    ds = load("ogbn-proteins", tmp_path / "data", tmp_path)
    n = fx["num_nodes"]
    # node features: mean of incident edges' features (each edge counts in both directions)
    expected = np.zeros((n, 8))
    count = np.zeros(n)
    for (s, t), f in zip(fx["edges"], fx["edge_feat"]):
        for node in (s, t):
            expected[node] += f
            count[node] += 1
    expected /= np.maximum(count, 1)[:, None]
    assert np.allclose(ds.x.numpy(), expected, atol=1e-5)
    assert ds.num_classes == 112 and tuple(ds.y.shape) == (n, 112)
    assert torch.equal(ds.y, torch.as_tensor(fx["labels"]))
    # both directions of every edge (not symmetrised again) plus one self-loop per node
    assert ds.edge_index.shape[1] == 2 * len(fx["edges"]) + n
    split = ds.split(3, seed=99)  # the same in every run
    for k, part in zip(("train", "valid", "test"), (split.train, split.valid, split.test)):
        assert sorted(part.tolist()) == sorted(fx["split"][k].tolist())
    # the second load reads our npz cache (ogb's torch.save cache is refused by torch >= 2.6)
    again = load("ogbn-proteins", tmp_path / "data", tmp_path)
    assert torch.equal(again.x, ds.x) and torch.equal(again.edge_index, ds.edge_index)
    assert not (tmp_path / "cache/ogb/ogbn_proteins/processed/data_processed").exists()


def test_proteins_missing_offline_names_path(tmp_path):
    with pytest.raises(DatasetUnavailable, match="ogb/ogbn_proteins.*snap.stanford.edu"):
        load("ogbn-proteins", tmp_path / "empty", tmp_path)


def test_rocauc_ogb_matches_per_task_sklearn_mean():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (40, 112), generator=g)
    y[:, 5] = 1  # one class only: skipped
    logits = torch.randn(40, 112, generator=g)
    tasks = [t for t in range(112) if y[:, t].unique().numel() == 2]
    expected = np.mean([roc_auc_score(y[:, t], logits[:, t]) for t in tasks])
    assert rocauc_ogb(logits, y) == pytest.approx(expected, abs=1e-12)


def test_binary_rocauc_uses_the_positive_class():
    y = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.5], [0.0, 3.0]])
    scores = torch.softmax(logits, -1)[:, 1]
    assert rocauc(logits, y) == pytest.approx(roc_auc_score(y, scores))
    with pytest.raises(ValueError, match="rocauc needs 2 output classes"):
        rocauc(torch.zeros(4, 3), y)


def test_pokec_loader_random_and_fixed_splits(tmp_path):
    fx = make_pokec(tmp_path / "data")
    ds = load("pokec", tmp_path / "data", tmp_path, split="random")
    assert (ds.num_nodes, ds.num_features, ds.num_classes) == (90, 65, 2)
    assert int((ds.edge_index[0] == ds.edge_index[1]).sum()) == 90
    # symmetrised: every edge's reverse is present
    pairs = set(map(tuple, ds.edge_index.t().tolist()))
    assert all((t, s) in pairs for s, t in fx["edges"].T.tolist())
    a, b = ds.split(0, 123), ds.split(1, 123)
    labelled = set(np.flatnonzero(fx["label"] != -1).tolist())
    assert set(torch.cat([a.train, a.valid, a.test]).tolist()) == labelled
    assert (a.train.numel(), a.valid.numel()) == (len(labelled) // 2, len(labelled) // 4)
    assert not torch.equal(a.train, b.train)  # a new split per run
    fixed = load("pokec", tmp_path / "data", tmp_path, split="fixed",
                 split_dir="pokec/split_0.5_0.25").split(4, 0)
    assert fixed.test.tolist() == fx["split"]["test"].tolist()


def test_pokec_fixed_split_files_missing(tmp_path):
    make_pokec(tmp_path / "data", split_files=False)
    with pytest.raises(DatasetUnavailable, match="pokec/split_0.5_0.25.*1in2___ubLLCo4f9"):
        load("pokec", tmp_path / "data", tmp_path, split="fixed",
             split_dir="pokec/split_0.5_0.25")
    with pytest.raises(ValueError, match="dataset.split='kfold' is not allowed"):
        load("pokec", tmp_path / "data", tmp_path, split="kfold")


@needs_data("heterophilous/tolokers/raw/tolokers.npz")
def test_tolokers_real_files(tmp_path):
    ds = load("tolokers", DATA_DIR, tmp_path)
    assert (ds.num_nodes, ds.num_features, ds.num_classes) == (11758, 10, 2)
    assert ds.edge_index.shape[1] == 1_038_000 + 11758  # PyG's symmetric edges + self-loops
    split = ds.split(0, 0)
    assert split.train.numel() + split.valid.numel() + split.test.numel() == 11758


def test_synthetic_generator_is_seeded_and_sized(tmp_path):
    opts = dict(num_nodes=3000, num_edges=20000, num_features=65, num_classes=2,
                homophily=0.8, seed=5)
    a, b = load("synthetic", tmp_path, tmp_path, **opts), load("synthetic", tmp_path, tmp_path,
                                                                **opts)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x)
    assert (a.num_nodes, a.num_features, a.num_classes) == (3000, 65, 2)
    off_loop = a.edge_index[:, a.edge_index[0] != a.edge_index[1]]
    assert abs(off_loop.shape[1] - 20000) < 100  # a few random collisions merge
    same = (a.y[off_loop[0]] == a.y[off_loop[1]]).float().mean()
    assert 0.85 < float(same) < 0.95  # 0.8 within-class + half of the uniform rest
    with pytest.raises(ValueError, match="dataset.num_nodes must be positive"):
        load("synthetic", tmp_path, tmp_path, **{**opts, "num_nodes": 0})


@pytest.mark.parametrize("kernel", ["simple", "sigmoid", "simple_pernode"])
@pytest.mark.parametrize("use_weight,graph_weight,use_source", [(True, -1.0, False),
                                                                 (False, 0.7, True)])
def test_streamed_inference_equals_forward(kernel, use_weight, graph_weight, use_source):
    g = torch.Generator().manual_seed(0)
    n = 257
    x = torch.randn(n, 12, generator=g)
    edges = torch.randint(0, n, (2, 1200), generator=g)
    edge_index = torch.cat([edges, torch.arange(n).repeat(2, 1)], dim=1)
    torch.manual_seed(0)
    model = DIFFormer(12, 16, 5, num_layers=3, num_heads=2, kernel=kernel,
                      use_weight=use_weight, graph_weight=graph_weight,
                      use_source=use_source).eval()
    with torch.no_grad():
        full = model(x, edge_index)
    for chunk in (1000, 64, 1):
        assert torch.allclose(model.inference(x, edge_index, chunk_size=chunk), full,
                              atol=1e-5), chunk
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        model.inference(x, edge_index, chunk_size=0)


def _official_state_dict(path, in_channels, hidden, out_channels):
    torch.manual_seed(3)
    model = DIFFormer(in_channels, hidden, out_channels, num_layers=3, use_weight=True,
                      use_graph=True, use_bn=True, use_residual=True, alpha=0.5)
    torch.save(model.state_dict(), path)  # a bare state_dict, as the authors released
    return model.eval()


def test_official_proteins_checkpoint(tmp_path):
    make_proteins(tmp_path / "data")
    ckpt = tmp_path / "ogbn-proteins-difformer.pkl"
    model = _official_state_dict(ckpt, 8, 64, 112)
    out = tmp_path / "eval"
    train_py("mode=eval", "dataset=ogbn-proteins", "model=difformer_s", f"checkpoint={ckpt}",
             *data_paths(tmp_path), f"hydra.run.dir={out}")
    result = json.loads((out / "eval.json").read_text())
    assert result["format"] == "official" and result["device"] == "cpu"
    ds = load("ogbn-proteins", tmp_path / "data", tmp_path)
    with torch.no_grad():
        logits = model(ds.x, ds.edge_index)
    test = ds.split(0, 0).test
    y = ds.y[test]
    tasks = [t for t in range(112) if y[:, t].unique().numel() == 2]
    expected = np.mean([roc_auc_score(y[:, t], logits[test, t]) for t in tasks])
    assert result["test"] == pytest.approx(expected, abs=1e-6)


def test_official_pokec_checkpoint_uses_fixed_split_files(tmp_path):
    fx = make_pokec(tmp_path / "data")
    ckpt = tmp_path / "pokec-difformer.pkl"
    model = _official_state_dict(ckpt, 65, 128, 2)
    out = tmp_path / "eval"
    proc = train_py("mode=eval", "dataset=pokec", "model=difformer_s", f"checkpoint={ckpt}",
                    *data_paths(tmp_path), f"hydra.run.dir={out}")
    assert "fixed split files" in proc.stdout
    ds = load("pokec", tmp_path / "data", tmp_path, split="random")
    with torch.no_grad():
        pred = model(ds.x, ds.edge_index).argmax(-1)
    test = torch.as_tensor(fx["split"]["test"])
    expected = (pred[test] == ds.y[test]).float().mean().item()
    assert json.loads((out / "eval.json").read_text())["test"] == pytest.approx(expected)
    # the proteins-shaped file on pokec: refused, naming the shapes
    wrong = tmp_path / "wrong.pkl"
    _official_state_dict(wrong, 8, 64, 112)
    proc = train_py("mode=eval", "dataset=pokec", "model=difformer_s", f"checkpoint={wrong}",
                    *data_paths(tmp_path),
                    f"hydra.run.dir={tmp_path / 'e2'}",
                    check=False)
    assert proc.returncode == 2 and "fcs.0.weight: checkpoint (64, 8) model (128, 65)" in \
        proc.stderr


def test_unrecognised_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    proc = train_py("mode=eval", f"checkpoint={bad}", f"hydra.run.dir={tmp_path / 'e'}",
                    check=False)
    assert proc.returncode == 2
    assert "neither a difformer checkpoint" in proc.stderr and "convs.0.Wk.weight" in proc.stderr


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@pytest.mark.parametrize("dataset,fixture", [("ogbn-proteins", make_proteins),
                                             ("pokec", make_pokec)])
def test_paper_pair_trains_minibatch_on_fixture(tmp_path, dataset, fixture):
    """The paper pair (mini-batch, eval every 9 epochs, streamed eval) runs end to end."""
    fixture(tmp_path / "data")
    out = tmp_path / "run"
    train_py(f"dataset={dataset}", "model=difformer_s", "trainer.runs=1", "trainer.epochs=10",
             "trainer.batch_size=25", "trainer.eval_chunk=16",
             *data_paths(tmp_path), f"hydra.run.dir={out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["regime"] == "minibatch (B=25)"
    assert summary["metric"] == ("rocauc_ogb" if dataset == "ogbn-proteins" else "accuracy")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == [0, 9]  # eval_step 9 from the pair, and the last epoch
    assert 0.0 <= summary["test_mean"] <= 1.0


def test_proteins_ignores_a_processed_file_ogb_left(tmp_path):
    """Anyone who ran ogb or the official code has processed/data_processed (a torch pickle
    that torch >= 2.6 refuses): the loader rebuilds from the raw files, never unpickling it."""
    import os

    fx = make_proteins(tmp_path / "data")
    processed = tmp_path / "data/ogb/ogbn_proteins/processed"
    processed.mkdir(exist_ok=True)
    marker = tmp_path / "executed"

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save(Planted(), processed / "data_processed")
    ds = load("ogbn-proteins", tmp_path / "data", tmp_path)
    assert not marker.exists() and tuple(ds.y.shape) == (fx["num_nodes"], 112)
    assert (processed / "data_processed").exists()  # the read-only data root is untouched
