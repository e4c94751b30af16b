"""Dataset loaders. Each returns a :class:`NodeDataset`; metadata lives in ``registry.py``."""

from __future__ import annotations

import numpy as np
import torch

from .base import NodeDataset
from .preprocess import prepare_edges, row_normalize
from .sources import DataRoot
from .splits import FixedMaskSplits, RandomClassSplit

PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
HETEROPHILY_URL = (
    "https://github.com/yandex-research/heterophilous-graphs/raw/"
    "a431395582e929d88271309716bea4fe24ce6318/data"
)


def load_planetoid(name: str, opts, root: DataRoot) -> NodeDataset:
    """Cora / CiteSeer / PubMed: row-normalised features, the 20-per-class/500/1000 split
    drawn once and shared by all runs (official ``--rand_split_class --protocol semi``)."""
    from torch_geometric.datasets import Planetoid
    from torch_geometric.transforms import NormalizeFeatures

    pyg_name = PLANETOID_NAMES[name]
    rel = "Planetoid"
    lower = pyg_name.lower()
    required = [
        f"{pyg_name}/raw/ind.{lower}.{s}"
        for s in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
    ]
    data = root.load(
        name,
        f"{rel}/{pyg_name}",
        f"{Planetoid.url} (ind.{lower}.*)",
        [r.split("/", 1)[1] for r in required],
        lambda: Planetoid(str(root.writable(rel)), pyg_name, transform=NormalizeFeatures())[0],
    )
    y = data.y.view(-1)
    return NodeDataset(
        name=name,
        x=data.x,
        y=y,
        edge_index=prepare_edges(data.edge_index, data.num_nodes),
        num_classes=int(y.max()) + 1,
        splits=RandomClassSplit(
            y,
            opts.labels_per_class,
            opts.valid_num,
            opts.test_num,
            shared=opts.get("shared_split", True),
        ),
    )


def load_film(name: str, opts, root: DataRoot) -> NodeDataset:
    """Actor (film) from the Geom-GCN files: row-normalised features, 10 fixed splits."""
    from torch_geometric.datasets import Actor

    required = ["raw/out1_node_feature_label.txt", "raw/out1_graph_edges.txt"] + [
        f"raw/film_split_0.6_0.2_{i}.npz" for i in range(10)
    ]
    data = root.load(
        name,
        "Actor",
        f"{Actor.url} (new_data/film, splits/film_*)",
        required,
        lambda: Actor(str(root.writable("Actor")))[0],
    )
    y = data.y.view(-1)
    return NodeDataset(
        name=name,
        x=row_normalize(data.x),
        y=y,
        edge_index=prepare_edges(data.edge_index, data.num_nodes),
        num_classes=int(y.max()) + 1,
        splits=FixedMaskSplits(
            data.train_mask.t(),
            data.val_mask.t(),
            data.test_mask.t(),
            source="Geom-GCN 60/20/20 splits",
        ),
    )


def load_heterophily_npz(name: str, opts, root: DataRoot) -> NodeDataset:
    """chameleon / squirrel, the filtered versions DIFFormer uses (Platonov et al.):
    row-normalised features, symmetrised edges, 10 fixed splits."""
    fname = f"{name}_filtered.npz"
    rel = f"heterophilous_graph/{fname}"
    url = f"{HETEROPHILY_URL}/{fname}"
    path = root.find(rel)
    if path is None:
        if root.offline:
            raise root.unavailable(name, rel, url)
        from torch_geometric.data import download_url

        try:
            download_url(url, str(root.cache_dir / "heterophilous_graph"))
        except OSError as err:
            raise root.unavailable(name, rel, url) from err
        path = root.cache_dir / rel
    raw = np.load(path)
    x = torch.as_tensor(raw["node_features"], dtype=torch.float)
    y = torch.as_tensor(raw["node_labels"], dtype=torch.long)
    edges = torch.as_tensor(raw["edges"], dtype=torch.long).t()
    masks = [
        torch.as_tensor(raw[k], dtype=torch.bool)
        for k in ("train_masks", "val_masks", "test_masks")
    ]
    return NodeDataset(
        name=name,
        x=row_normalize(x),
        y=y,
        edge_index=prepare_edges(edges, x.shape[0]),
        num_classes=int(y.max()) + 1,
        splits=FixedMaskSplits(
            *masks,  # type: ignore[misc,arg-type]
            source="filtered splits (Platonov et al.)",
        ),
    )
