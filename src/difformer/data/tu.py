"""Graph classification and regression benchmarks: TU datasets by name, and ZINC.

* ``dataset=tu dataset.name=ENZYMES``: PyG ``TUDataset`` (node labels one-hot plus node
  attributes as dense features); ``dataset.split=cv10`` (default) is stratified 10-fold
  cross-validation, run i testing on fold i (``trainer.runs=10`` covers every fold), or
  ``random`` (80/10/10, a new split per run).
* ``dataset=zinc``: the 12k-graph ZINC subset of Dwivedi et al. (10,000 / 1,000 / 1,000,
  regression of constrained solubility, MAE), atom and bond types as categorical features.
  PyG's ``ZINC`` class reads its raw pickles with ``pickle.load``, which runs whatever code a
  planted file holds; we read the same raw files (``ZINC/raw/{train,val,test}.pickle`` and
  ``*.index``, downloaded by PyG's URLs) with an unpickler that admits only tensors.
"""

from __future__ import annotations

import torch

from .graphs import GraphDataset
from .safe_pickle import safe_load_tensors
from .scaling import check_scale
from .sources import DataError, DataRoot
from .splits import FixedIndexSplit, RandomFractionSplit, StratifiedFolds

TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets"
ZINC_URL = "https://www.dropbox.com/s/feo9qle74kg48gy/molecules.zip?dl=1"
ZINC_SPLIT_URL = (
    "https://raw.githubusercontent.com/graphdeeplearning/benchmarking-gnns/"
    "master/data/molecules/{}.index"
)
ZINC_ATOM_TYPES, ZINC_BOND_TYPES = 28, 4
SPLITS = ("cv10", "random")


def load_tu(name: str, opts, root: DataRoot) -> GraphDataset:
    from torch_geometric.data import Data
    from torch_geometric.datasets import TUDataset

    split = str(opts.get("split", "cv10"))
    if split not in SPLITS:
        raise DataError(f"dataset.split={split} is not allowed; use {' or '.join(SPLITS)}")
    scale = check_scale(opts.get("scale", "standard"))
    rel = f"TUDataset/{name}"

    def read():
        copy = root.writable(rel)
        return TUDataset(root=str(copy.parent), name=name, use_node_attr=True)

    ds = root.load(name, rel, f"{TU_URL}/{name}.zip", [f"raw/{name}_A.txt"], read)
    graphs = []
    for g in ds:
        x = g.x if g.x is not None else torch.ones((g.num_nodes, 1))
        data = Data(
            x=x.float(), edge_index=g.edge_index, y=g.y.view(-1).long(), num_nodes=g.num_nodes
        )
        if g.edge_attr is not None:
            data.edge_attr = g.edge_attr.float()
        graphs.append(data)
    y = torch.cat([g.y for g in graphs])
    splits = (
        StratifiedFolds(y, int(opts.get("folds", 10)))
        if split == "cv10"
        else RandomFractionSplit.of_graphs(len(graphs))
    )
    edge_dim = graphs[0].edge_attr.shape[1] if graphs and "edge_attr" in graphs[0] else 0
    return GraphDataset(
        name=name,
        graphs=graphs,
        num_classes=int(y.max()) + 1,
        splits=splits,
        node_input="dense",
        num_features=int(graphs[0].x.shape[1]),
        edge_input="dense" if edge_dim else None,
        edge_channels=edge_dim,
        loss="cross_entropy",
        metric="accuracy",
        continuous=int(ds.num_node_attributes),  # PyG puts the attributes first, then labels
        scale=scale,
    )


def _zinc_part(raw, part: str, subset: bool) -> list:
    from torch_geometric.data import Data

    mols = safe_load_tensors(raw / f"{part}.pickle")
    indices: list[int] | range = range(len(mols))
    if subset:
        text = (raw / f"{part}.index").read_text().strip().strip(",")
        indices = [int(i) for i in text.split(",")]
    graphs = []
    for i in indices:
        mol = mols[i]
        adj = torch.as_tensor(mol["bond_type"])
        edge_index = adj.nonzero(as_tuple=False).t().contiguous()
        graphs.append(
            Data(
                x=torch.as_tensor(mol["atom_type"]).long().view(-1, 1),
                edge_index=edge_index,
                edge_attr=adj[edge_index[0], edge_index[1]].long().view(-1, 1),
                y=torch.as_tensor(mol["logP_SA_cycle_normalized"]).float().view(1, 1),
                num_nodes=int(adj.shape[0]),
            )
        )
    return graphs


def load_zinc(name: str, opts, root: DataRoot) -> GraphDataset:
    subset = bool(opts.get("subset", True))
    rel = "ZINC"
    required = [f"raw/{p}.pickle" for p in ("train", "val", "test")]
    if subset:
        required += [f"raw/{p}.index" for p in ("train", "val", "test")]

    def read():
        copy = root.writable(rel)
        if not all((copy / r).exists() for r in required):
            _download_zinc(copy)
        return [_zinc_part(copy / "raw", p, subset) for p in ("train", "val", "test")]

    parts = root.load(name, rel, ZINC_URL, required, read)
    graphs = [g for part in parts for g in part]
    bounds = torch.cumsum(torch.tensor([0, *map(len, parts)]), 0)
    idx = torch.arange(len(graphs))
    splits = FixedIndexSplit(
        idx[: bounds[1]],
        idx[bounds[1] : bounds[2]],
        idx[bounds[2] :],
        source="ZINC subset split" if subset else "ZINC split",
    )
    return GraphDataset(
        name=name,
        graphs=graphs,
        num_classes=1,
        splits=splits,
        node_input="categorical",
        num_features=ZINC_ATOM_TYPES,
        edge_input="categorical",
        edge_channels=ZINC_BOND_TYPES,
        loss="l1",
        metric="mae",
    )


def _download_zinc(target) -> None:
    import shutil

    from torch_geometric.data import download_url, extract_zip

    target.mkdir(parents=True, exist_ok=True)
    path = download_url(ZINC_URL, str(target))
    extract_zip(path, str(target))
    (target / "raw").mkdir(exist_ok=True)
    for f in (target / "molecules").iterdir():
        shutil.move(str(f), str(target / "raw" / f.name))
    for part in ("train", "val", "test"):
        download_url(ZINC_SPLIT_URL.format(part), str(target / "raw"))
