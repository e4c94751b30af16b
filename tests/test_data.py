"""Loaders on the real offline files, split protocols, and the missing-data error."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import DATA_DIR, needs_data
from difformer.data import DataRoot, DatasetUnavailable, load_dataset
from difformer.data.preprocess import prepare_edges
from difformer.data.splits import RandomClassSplit, class_balanced_split

PLANETOID = dict(labels_per_class=20, valid_num=500, test_num=1000, shared_split=True)


@pytest.fixture
def root(tmp_path):
    return DataRoot(DATA_DIR, tmp_path / "cache", offline=True)


def load(name, root, **opts):
    return load_dataset(OmegaConf.create({"name": name, **opts}), root)[0]


def assert_disjoint(split, n):
    parts = [split.train, split.valid, split.test]
    allidx = torch.cat(parts)
    assert allidx.unique().numel() == allidx.numel(), "train/valid/test overlap"
    assert int(allidx.max()) < n


@needs_data("Planetoid/Cora/raw/ind.cora.x", "Planetoid/CiteSeer/raw/ind.citeseer.x")
@pytest.mark.parametrize("name,n,d,c,edges", [("cora", 2708, 1433, 7, 10556),
                                              ("citeseer", 3327, 3703, 6, 9104)])
def test_planetoid(root, name, n, d, c, edges):
    ds = load(name, root, **PLANETOID)
    assert (ds.num_nodes, ds.num_features, ds.num_classes) == (n, d, c)
    # undirected PyG edges + exactly one self-loop per node
    ei = ds.edge_index
    assert ei.shape[1] == edges + n
    assert int((ei[0] == ei[1]).sum()) == n
    nonzero = ds.x.sum(1) > 0
    assert torch.allclose(ds.x.sum(1)[nonzero], torch.ones(int(nonzero.sum())))  # row-normalised
    s0, s1 = ds.split(0, 123), ds.split(4, 123)
    assert_disjoint(s0, n)
    assert torch.bincount(ds.y[s0.train], minlength=c).tolist() == [20] * c
    assert (len(s0.valid), len(s0.test)) == (500, 1000)
    # the official protocol: one split, shared by every run
    assert all(torch.equal(a, b) for a, b in zip((s0.train, s0.valid, s0.test),
                                                 (s1.train, s1.valid, s1.test)))
    assert not torch.equal(ds.split(0, 7).train, s0.train)  # ... but it depends on the seed


def test_planetoid_cache_leaves_data_root_untouched(root):
    if not (DATA_DIR / "Planetoid/Cora/raw").exists():
        pytest.skip("no offline Cora")
    before = sorted(p.name for p in (DATA_DIR / "Planetoid/Cora").iterdir())
    load("cora", root, **PLANETOID)
    assert sorted(p.name for p in (DATA_DIR / "Planetoid/Cora").iterdir()) == before
    assert (root.cache_dir / "Planetoid/Cora/processed").is_dir()


@needs_data("Actor/raw/out1_graph_edges.txt")
def test_film_fixed_splits(root):
    ds = load("film", root)
    assert (ds.num_nodes, ds.num_features, ds.num_classes) == (7600, 932, 5)
    for run in (0, 3, 9):
        masks = np.load(DATA_DIR / f"Actor/raw/film_split_0.6_0.2_{run}.npz")
        split = ds.split(run, seed=0)
        assert split.train.tolist() == np.flatnonzero(masks["train_mask"]).tolist()
        assert split.test.tolist() == np.flatnonzero(masks["test_mask"]).tolist()
    assert torch.equal(ds.split(10, 0).train, ds.split(0, 0).train)  # wraps around


@needs_data("heterophilous_graph/chameleon_filtered.npz", "heterophilous_graph/squirrel_filtered.npz")
@pytest.mark.parametrize("name,n,undirected_edges", [("chameleon", 890, 8854),
                                                     ("squirrel", 2223, 46998)])
def test_filtered_heterophily(root, name, n, undirected_edges):
    ds = load(name, root)
    raw = np.load(DATA_DIR / f"heterophilous_graph/{name}_filtered.npz")
    assert ds.num_nodes == n and ds.num_classes == 5
    assert ds.edge_index.shape[1] == 2 * undirected_edges + n
    split = ds.split(2, seed=42)
    assert split.valid.tolist() == np.flatnonzero(raw["val_masks"][2]).tolist()
    assert_disjoint(split, n)


def test_digits_new_split_per_run(root):
    ds = load("digits", root, labels_per_class=10, valid_num=500, test_num=None,
              shared_split=False)
    assert (ds.num_nodes, ds.num_features, ds.num_classes, ds.has_graph) == (1797, 64, 10, False)
    a, b = ds.split(0, 123), ds.split(1, 123)
    for s in (a, b):
        assert_disjoint(s, 1797)
        assert torch.bincount(ds.y[s.train]).tolist() == [10] * 10
        assert len(s.train) + len(s.valid) + len(s.test) == 1797  # test = the rest
    assert not torch.equal(a.train, b.train)
    assert torch.equal(ds.split(1, 123).train, b.train)  # run 1 reproduces alone


def test_class_balanced_split_matches_official_algorithm():
    """Re-derive the official class_rand_splits draw order by hand."""
    y = torch.tensor([0, 1, 2] * 10)
    g1 = torch.Generator().manual_seed(5)
    split = class_balanced_split(y, 2, 5, 7, g1)
    g2 = torch.Generator().manual_seed(5)
    idx = torch.arange(30)
    train, rest = [], []
    for c in (0, 1, 2):
        members = idx[y == c]
        perm = members[torch.randperm(10, generator=g2)]
        train += perm[:2].tolist()
        rest += perm[2:].tolist()
    rest = torch.tensor(rest)[torch.randperm(24, generator=g2)]
    assert split.train.tolist() == train
    assert split.valid.tolist() == rest[:5].tolist() and split.test.tolist() == rest[5:12].tolist()


def test_split_sizes_checked():
    y = torch.tensor([0] * 5 + [1] * 30)
    with pytest.raises(ValueError, match="labels_per_class=5 must be >= 1 and below the smallest class size 5"):
        RandomClassSplit(y, 5, 3, 3, shared=True)
    with pytest.raises(ValueError, match="valid_num=30 and test_num=10 need 40 unlabelled nodes, but only 31 remain"):
        RandomClassSplit(y, 2, 30, 10, shared=True)


def test_prepare_edges_symmetrises_and_adds_one_self_loop():
    ei = torch.tensor([[0, 1, 1, 2], [1, 2, 1, 2]])  # 0->1, 1->2, and two self-loops
    out = prepare_edges(ei, 4)
    pairs = set(map(tuple, out.t().tolist()))
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (0, 0), (1, 1), (2, 2), (3, 3)}
    assert out.shape[1] == len(pairs)


def test_missing_files_offline_name_path_and_source(tmp_path):
    root = DataRoot(tmp_path / "empty", tmp_path / "cache", offline=True)
    with pytest.raises(DatasetUnavailable) as err:
        load("cora", root, **PLANETOID)
    msg = str(err.value)
    assert str(tmp_path / "empty" / "Planetoid" / "Cora") in msg
    assert "kimiyoung/planetoid" in msg and "DIFFORMER_DATA" in msg
    with pytest.raises(DatasetUnavailable, match="chameleon_filtered.npz"):
        load("chameleon", root)


def test_failed_download_becomes_the_same_clear_error(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    root = DataRoot(tmp_path / "empty", tmp_path / "cache", offline=False)
    with pytest.raises(DatasetUnavailable, match="film"):
        load("film", root)
    with pytest.raises(DatasetUnavailable, match="squirrel_filtered.npz"):
        load("squirrel", root)


def test_unknown_dataset_lists_choices(root):
    with pytest.raises(ValueError, match="unknown dataset .corra.; allowed: 20news, chameleon, chickenpox, cifar10, citeseer"):
        load("corra", root)
