"""Graph-level data: molecules from SMILES, the scaffold split, OGB's raw layout, TU and ZINC
loaders on genuine-format files, positional encodings against direct computations."""
import csv
import gzip
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import DATA_DIR, needs_data
from difformer.data import DataRoot, load_dataset

HIV = "moleculenet/HIV.csv"
pytest.importorskip("rdkit")


def root(tmp_path, data_dir=DATA_DIR):
    return DataRoot(data_dir, tmp_path / "cache", offline=True)


@pytest.fixture(scope="module")
def hiv_subset(tmp_path_factory):
    """The first 1,500 molecules of MoleculeNet's HIV.csv, in its own layout (CRLF, a blank
    line after every row), plus row 137 (rdkit cannot sanitise it)."""
    if not (DATA_DIR / HIV).exists():
        pytest.skip(f"no offline data at {DATA_DIR / HIV}")
    lines = [line for line in (DATA_DIR / HIV).read_bytes().split(b"\r\n") if line.strip()]
    rows = lines[1:1501] + [lines[1 + 137]]
    path = tmp_path_factory.mktemp("hiv") / "hiv_subset.csv"
    path.write_bytes(b"\r\n\r\n".join([lines[0], *rows]) + b"\r\n\r\n")
    return path


def load_own(tmp_path, path, **opts):
    cfg = OmegaConf.create({"loader": "smiles_csv", "name": "smiles_csv", "path": str(path),
                            "smiles_col": "smiles", "target_cols": ["HIV_active"], **opts})
    return load_dataset(cfg, root(tmp_path))


def test_smiles_become_ogb_graphs_and_unsanitisable_ones_are_kept(hiv_subset):
    from ogb.utils import smiles2graph

    from difformer.data.molecules import mol_to_graph, read_csv_rows

    _, rows = read_csv_rows(hiv_subset)
    assert len(rows) == 1501
    g = mol_to_graph(rows[0]["smiles"])
    ref = smiles2graph(rows[0]["smiles"])
    assert np.array_equal(g["x"], ref["node_feat"]) and np.array_equal(g["edge_index"],
                                                                      ref["edge_index"])
    assert np.array_equal(g["edge_attr"], ref["edge_feat"])
    bad = rows[-1]["smiles"]  # row 137 of HIV.csv: a valence error in today's rdkit
    with pytest.raises(Exception):
        smiles2graph(bad)
    kept = mol_to_graph(bad)
    assert kept["x"].shape[1] == 9 and kept["edge_index"].shape[1] == 2 * kept["edge_attr"].shape[0] // 2


def test_scaffold_split_is_deterministic_and_never_splits_a_scaffold(hiv_subset, tmp_path):
    from difformer.data.molecules import read_csv_rows, scaffold_of, scaffold_split

    _, rows = read_csv_rows(hiv_subset)
    smiles = [r["smiles"] for r in rows]
    parts = scaffold_split(smiles)
    again = scaffold_split(list(smiles))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(smiles)))
    owner = {}
    for name, idx in zip(("train", "valid", "test"), parts):
        for i in idx:
            assert owner.setdefault(scaffold_of(smiles[i]), name) == name
    n = len(smiles)
    assert len(parts[0]) <= 0.8 * n and len(parts[0]) + len(parts[1]) <= 0.9 * n
    assert len(parts[0]) > 0.7 * n
    ds, spec = load_own(tmp_path, hiv_subset)
    split = ds.split(0, 0)
    assert [len(s) for s in (split.train, split.valid, split.test)] == [len(p) for p in parts]
    assert spec.kind == "graph" and ds.loss == "bce_masked" and ds.metric == "rocauc_multitask"


def test_featurised_molecules_are_cached_as_plain_arrays(hiv_subset, tmp_path):
    ds, _ = load_own(tmp_path, hiv_subset)
    cached = list((tmp_path / "cache" / "molecules").glob("*.npz"))
    assert len(cached) == 1
    with np.load(cached[0], allow_pickle=False) as f:  # no pickle inside
        assert set(f.files) >= {"x", "edge_index", "edge_attr", "y", "node_ptr", "split_train"}
    again, _ = load_own(tmp_path, hiv_subset)
    assert again.fingerprint() == ds.fingerprint()
    g = ds.graphs[0]
    assert g.x.dtype == torch.long and g.x.shape[1] == 9 and g.y.shape == (1, 1)


def test_own_molecules_random_split_regression_and_bad_columns(tmp_path):
    from difformer.data import DataError

    path = tmp_path / "mols.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["smiles", "logp", "tox"])
        for i, s in enumerate(["CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCC", "OCCO", "CCl",
                               "C1CC1", "CCOC", "CN"]):
            w.writerow([s, 0.1 * i, "" if i == 3 else i % 2])
    ds, _ = load_own(tmp_path, path, target_cols=["logp"], split="random")
    assert ds.loss == "l1" and ds.metric == "mae" and ds.num_classes == 1
    assert len(ds.split(0, 0).train) == 8 and not torch.equal(ds.split(0, 0).train,
                                                                ds.split(1, 0).train)
    two, _ = load_own(tmp_path, path, target_cols=["tox", "logp"], task="regression")
    assert torch.isnan(two.graphs[3].y[0, 0]) and two.num_classes == 2
    with pytest.raises(DataError, match="no column"):
        load_own(tmp_path, path, target_cols=["missing"])
    with pytest.raises(DataError, match="dataset.task=classification needs 0/1 targets"):
        load_own(tmp_path, path, target_cols=["logp"], task="classification")


def write_ogb_raw(folder, graphs, labels, split):
    """OGB's graph-property raw layout, as its zips hold it (one direction per bond)."""
    raw = folder / "raw"
    raw.mkdir(parents=True)

    def gz(name, rows):
        with gzip.open(raw / name, "wt") as f:
            f.writelines(",".join(str(v) for v in row) + "\n" for row in rows)

    gz("edge.csv.gz", [e for g in graphs for e in g["edges"]])
    gz("edge-feat.csv.gz", [e for g in graphs for e in g["edge_feat"]])
    gz("node-feat.csv.gz", [x for g in graphs for x in g["x"]])
    gz("num-node-list.csv.gz", [[len(g["x"])] for g in graphs])
    gz("num-edge-list.csv.gz", [[len(g["edges"])] for g in graphs])
    gz("graph-label.csv.gz", [["" if np.isnan(v) else int(v) for v in row] for row in labels])
    for part, idx in split.items():
        (folder / "split" / "scaffold").mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / "split" / "scaffold" / f"{part}.csv.gz", "wt") as f:
            f.writelines(f"{i}\n" for i in idx)
    (folder / "RELEASE_v1.txt").write_text("fixture\n")


@pytest.mark.parametrize("name,labels", [
    ("ogbg-molhiv", [[0], [1], [0], [1], [0]]),
    ("ogbg-molpcba", [[0, 1], [1, np.nan], [np.nan, np.nan], [1, 0], [0, 0]])])
def test_ogbg_datasets_load_ogbs_raw_layout(tmp_path, name, labels):
    rng = np.random.default_rng(0)
    graphs = []
    for n in (3, 5, 2, 4, 6):
        edges = [[i, i + 1] for i in range(n - 1)]
        graphs.append({"x": rng.integers(0, 3, (n, 9)).tolist(), "edges": edges,
                       "edge_feat": rng.integers(0, 2, (len(edges), 3)).tolist()})
    split = {"train": [0, 1, 2], "valid": [3], "test": [4]}
    folder = name.replace("-", "_")
    write_ogb_raw(tmp_path / "data" / "ogb" / folder, graphs, labels, split)
    ds, spec = load_dataset(OmegaConf.create({"name": name}), root(tmp_path, tmp_path / "data"))
    assert ds.num_graphs == 5 and ds.num_classes == len(labels[0])
    assert ds.metric == {"ogbg-molhiv": "rocauc_molhiv", "ogbg-molpcba": "ap_molpcba"}[name]
    g = ds.graphs[1]
    assert g.num_nodes == 5 and g.edge_index.shape[1] == 8  # OGB adds the inverse edges
    assert g.x.tolist() == graphs[1]["x"] and g.edge_attr.shape == (8, 3)
    assert sorted(map(tuple, g.edge_index.t().tolist())) == sorted(
        [tuple(e) for e in graphs[1]["edges"]] + [tuple(e[::-1]) for e in graphs[1]["edges"]])
    y = torch.cat([g.y for g in ds.graphs])
    assert torch.equal(torch.isnan(y), torch.isnan(torch.tensor(labels, dtype=torch.float)))
    assert ds.graphs[1].y[0, 0].item() == 1
    s = ds.split(3, 0)
    assert (s.train.tolist(), s.valid.tolist(), s.test.tolist()) == ([0, 1, 2], [3], [4])
    assert "OGB scaffold split" in ds.splits.description
    (tmp_path / "cache" / "ogb" / folder / "raw").rename(tmp_path / "moved")
    again, _ = load_dataset(OmegaConf.create({"name": name}),
                            root(tmp_path, tmp_path / "data"))  # the npz cache, no ogb pickle
    assert again.fingerprint() == ds.fingerprint()


def test_an_absent_ogb_dataset_offline_names_where_to_put_it(tmp_path):
    from difformer.data import DatasetUnavailable

    with pytest.raises(DatasetUnavailable, match="ogb/ogbg_molpcba"):
        load_dataset(OmegaConf.create({"name": "ogbg-molpcba"}), root(tmp_path, tmp_path))


@needs_data("TUDataset/ENZYMES/raw/ENZYMES_A.txt")
def test_enzymes_and_its_stratified_folds(tmp_path):
    ds, spec = load_dataset(OmegaConf.create({"loader": "tu", "name": "ENZYMES"}),
                            root(tmp_path))
    assert (ds.num_graphs, ds.num_features, ds.num_classes) == (600, 21, 6)
    assert ds.graphs[0].num_nodes == 37 and ds.graphs[0].edge_index.shape[1] == 168
    y = torch.cat([g.y for g in ds.graphs])
    tests = []
    for run in range(10):
        s = ds.split(run, 123)
        assert not set(s.train.tolist()) & set(s.valid.tolist()) | set(s.test.tolist()) & \
            set(s.train.tolist())
        assert len(s.train) + len(s.valid) + len(s.test) == 600
        assert torch.bincount(y[s.test], minlength=6).tolist() == [10] * 6  # stratified
        tests += s.test.tolist()
    assert sorted(tests) == list(range(600))   # the ten test folds partition the graphs
    assert torch.equal(ds.split(2, 123).test, ds.split(2, 123).test)
    assert not torch.equal(ds.split(2, 123).test, ds.split(2, 7).test)
    from difformer.data import DataError

    with pytest.raises(DataError, match="dataset.split=kfold is not allowed; use cv10 or random"):
        load_dataset(OmegaConf.create({"loader": "tu", "name": "ENZYMES", "split": "kfold"}),
                     root(tmp_path))


def write_zinc(raw, parts, payload=None):
    raw.mkdir(parents=True)
    for part, mols in parts.items():
        with open(raw / f"{part}.pickle", "wb") as f:
            pickle.dump(payload if payload is not None else mols, f)
        (raw / f"{part}.index").write_text(",".join(str(i) for i in range(len(mols) - 1)) + "\n")


def zinc_mol(n, seed):
    g = torch.Generator().manual_seed(seed)
    adj = torch.zeros(n, n, dtype=torch.long)
    for i in range(n - 1):
        adj[i, i + 1] = adj[i + 1, i] = 1 + i % 3
    return {"atom_type": torch.randint(0, 28, (n,), generator=g), "bond_type": adj,
            "logP_SA_cycle_normalized": torch.tensor([0.1 * seed])}


def test_zinc_reads_the_raw_pickles_without_running_them(tmp_path):
    from difformer.data.safe_pickle import UnsafeDataFile

    parts = {p: [zinc_mol(4 + i, i) for i in range(3)] for p in ("train", "val", "test")}
    write_zinc(tmp_path / "data" / "ZINC" / "raw", parts)
    ds, spec = load_dataset(OmegaConf.create({"name": "zinc", "subset": True}),
                            root(tmp_path, tmp_path / "data"))
    assert ds.num_graphs == 6 and spec.metric == "mae" and ds.loss == "l1"  # 2 per part
    g = ds.graphs[1]
    assert g.x.tolist() == parts["train"][1]["atom_type"].view(-1, 1).tolist()
    assert g.edge_index.shape[1] == 2 * 4 and g.edge_attr.view(-1).tolist()[:2] == [1, 1]
    assert g.y.item() == pytest.approx(0.1)
    s = ds.split(0, 0)
    assert (s.train.tolist(), s.valid.tolist(), s.test.tolist()) == ([0, 1], [2, 3], [4, 5])

    class Planted:
        def __reduce__(self):
            return (print, ("this ran",))

    write_zinc(tmp_path / "planted" / "ZINC" / "raw", parts, payload=[Planted()])
    with pytest.raises(UnsafeDataFile, match="not a plain data pickle"):
        load_dataset(OmegaConf.create({"name": "zinc"}),
                     root(tmp_path / "p", tmp_path / "planted"))


def test_laplacian_and_random_walk_encodings_against_direct_computations(tmp_path):
    import networkx as nx

    from difformer.data.graphs import laplacian_pe, random_walk_pe

    graph = nx.cycle_graph(6)
    graph.add_edge(0, 3)
    edges = np.array(list(graph.edges)).T
    edges = np.concatenate([edges, edges[::-1]], axis=1)
    lap = nx.normalized_laplacian_matrix(graph, nodelist=range(6)).toarray()
    values = np.linalg.eigvalsh(lap)
    pe = laplacian_pe(edges, 6, 3)
    for c in range(3):   # each column is a unit eigenvector of the 2nd..4th eigenvalue
        np.testing.assert_allclose(lap @ pe[:, c], values[c + 1] * pe[:, c], atol=1e-5)
        assert abs(np.linalg.norm(pe[:, c]) - 1) < 1e-5
    path3 = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])
    assert np.abs(laplacian_pe(path3, 3, 5)[:, 2:]).sum() == 0  # fewer nodes than k: zeros
    walk = nx.to_numpy_array(graph, nodelist=range(6))
    walk = walk / walk.sum(1, keepdims=True)
    rw = random_walk_pe(edges, 6, 4)
    for t in range(4):
        np.testing.assert_allclose(rw[:, t], np.diag(np.linalg.matrix_power(walk, t + 1)),
                                   atol=1e-6)


def test_positional_encodings_are_computed_once_and_cached(tmp_path):
    from torch_geometric.data import Data

    from difformer.data.graphs import GraphDataset, with_positional_encodings
    from difformer.data.splits import RandomFractionSplit

    def dataset():
        graphs = [Data(x=torch.ones(n, 1), edge_index=torch.tensor([[0, 1], [1, 0]]),
                       y=torch.tensor([0]), num_nodes=n) for n in (2, 3, 4)]
        return GraphDataset("toy", graphs, 2, RandomFractionSplit.of_graphs(3), "dense", 1)

    first = with_positional_encodings(dataset(), {"lap": 2, "rwse": 3}, tmp_path)
    files = sorted(p.name for p in (tmp_path / "pe").iterdir())
    assert len(files) == 2 and first.graphs[2].lap_pe.shape == (4, 2)
    assert first.graphs[1].rwse_pe.shape == (3, 3)
    mtime = (tmp_path / "pe" / files[0]).stat().st_mtime_ns
    second = with_positional_encodings(dataset(), {"lap": 2, "rwse": 3}, tmp_path)
    assert (tmp_path / "pe" / files[0]).stat().st_mtime_ns == mtime
    assert torch.equal(second.graphs[2].lap_pe, first.graphs[2].lap_pe)
    with pytest.raises(ValueError, match="unknown positional encoding 'spd'"):
        with_positional_encodings(dataset(), {"spd": 2}, tmp_path)
