"""Small ogbn-proteins and Pokec fixtures in the genuine file formats (the real files are not
available offline): OGB's gzipped csv layout with RELEASE_v1.txt, and LINKX's pokec.mat plus
the authors' split files (np.savetxt's default float format)."""
import gzip
from pathlib import Path

import numpy as np


def _csv_gz(path: Path, array, fmt) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        np.savetxt(f, np.asarray(array), fmt=fmt, delimiter=",")


def make_proteins(root: Path, num_nodes=60, num_edges=150, tasks=112, seed=0) -> dict:
    """``root/ogb/ogbn_proteins``: each undirected edge once (OGB adds the inverse), 8-d edge
    features, a 0/1 label matrix [N, tasks], species, and the species split."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "ogb" / "ogbn_proteins"
    src = rng.integers(0, num_nodes, num_edges)
    dst = (src + rng.integers(1, num_nodes, num_edges)) % num_nodes  # no self-loops
    edges = np.stack([src, dst], axis=1)
    edge_feat = rng.random((num_edges, 8)).round(3)
    labels = rng.integers(0, 2, (num_nodes, tasks))
    perm = rng.permutation(num_nodes)
    split = {"train": perm[:30], "valid": perm[30:42], "test": perm[42:]}
    for folder in ("raw", "processed"):  # OGB's zips ship an empty processed/
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "RELEASE_v1.txt").write_text("# Release note for ogbn-proteins\n")
    _csv_gz(base / "raw/edge.csv.gz", edges, "%d")
    _csv_gz(base / "raw/edge-feat.csv.gz", edge_feat, "%.3f")
    _csv_gz(base / "raw/node-label.csv.gz", labels, "%d")
    _csv_gz(base / "raw/node_species.csv.gz", rng.integers(0, 3, (num_nodes, 1)), "%d")
    _csv_gz(base / "raw/num-node-list.csv.gz", [num_nodes], "%d")
    _csv_gz(base / "raw/num-edge-list.csv.gz", [num_edges], "%d")
    for name, idx in split.items():
        _csv_gz(base / f"split/species/{name}.csv.gz", idx, "%d")
    return {"edges": edges, "edge_feat": edge_feat, "labels": labels, "split": split,
            "num_nodes": num_nodes}


def make_pokec(root: Path, num_nodes=90, num_edges=300, seed=0, split_files=True) -> dict:
    """``root/pokec.mat`` as LINKX ships it (edge_index [2, E] one direction per pair,
    node_feat [N, 65], label [1, N] with -1 unknown, num_nodes) and, optionally, the split
    files ``root/pokec/split_0.5_0.25/pokec_{train,valid,test}.txt``."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_nodes, num_edges)
    dst = (src + rng.integers(1, num_nodes, num_edges)) % num_nodes
    label = rng.integers(0, 2, num_nodes)
    label[rng.choice(num_nodes, 10, replace=False)] = -1
    feat = rng.random((num_nodes, 65)).astype(np.float32)
    Path(root).mkdir(parents=True, exist_ok=True)
    savemat(Path(root) / "pokec.mat", {"edge_index": np.stack([src, dst]).astype(np.int64),
                                       "node_feat": feat, "label": label[None, :],
                                       "num_nodes": np.array([[num_nodes]])})
    out = {"edges": np.stack([src, dst]), "feat": feat, "label": label}
    if split_files:
        labelled = rng.permutation(np.flatnonzero(label != -1))
        n_train, n_valid = len(labelled) // 2, len(labelled) // 4
        parts = {"train": labelled[:n_train], "valid": labelled[n_train:n_train + n_valid],
                 "test": labelled[n_train + n_valid:]}
        split_dir = Path(root) / "pokec" / "split_0.5_0.25"
        split_dir.mkdir(parents=True, exist_ok=True)
        for name, idx in parts.items():
            np.savetxt(split_dir / f"pokec_{name}.txt", idx)  # default '%.18e', as official
        out["split"] = parts
    return out
