"""Graph-level datasets: many small graphs with one label (vector) each.

Every graph-level loader returns a :class:`GraphDataset`: a list of PyG ``Data`` objects (``x``,
``edge_index``, optional ``edge_attr``, ``y`` [1, T] or [1]) plus what the task and the models
need to know -- how node and edge features are encoded (OGB's categorical atom / bond
features, a single categorical column, or dense floats), the number of outputs, and the split
protocol over graph indices.

Graphs are stored on disk as one ``.npz`` of concatenated arrays with offsets (:func:`pack`,
:func:`unpack`): plain numbers, never a pickle. Positional encodings (Laplacian eigenvectors,
random-walk return probabilities) are computed once per dataset and cached the same way,
keyed by the dataset's content digest (:func:`with_positional_encodings`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .splits import Split, SplitProtocol


@dataclass
class GraphDataset:
    """Graphs with graph-level targets.

    ``node_input`` / ``edge_input``: ``ogb_atom`` / ``ogb_bond`` (OGB's 9 atom and 3 bond
    categorical features, for ogb's encoders), ``categorical`` (one integer column with
    ``num_features`` / ``edge_channels`` values), ``dense`` (floats), or ``edge_input=None``
    (no edge features). ``num_classes`` is the number of outputs: classes (multiclass),
    tasks (binary multi-task, NaN = missing label) or 1 (regression).
    """

    name: str
    graphs: list
    num_classes: int
    splits: SplitProtocol
    node_input: str
    num_features: int
    edge_input: str | None = None
    edge_channels: int = 0
    loss: str | None = None
    metric: str | None = None
    source_digest: str = ""
    pe: dict = field(default_factory=dict)  # name -> [total nodes, k] tensor, see below
    continuous: int = 0  # leading columns of x that are continuous attributes (data.scaling)
    scale: str = "none"  # how the task scales them, fitted per split: standard | none

    has_graph = True

    @property
    def num_graphs(self) -> int:
        return len(self.graphs)

    def split(self, run: int, seed: int) -> Split:
        return self.splits.split(run, seed)

    def model_inputs(self) -> dict:
        """Keywords the graph-level models are built with (recorded in checkpoints)."""
        return {
            "node_input": self.node_input,
            "edge_input": self.edge_input,
            "edge_channels": self.edge_channels,
        }

    def fingerprint(self) -> dict:
        nodes = sum(int(g.num_nodes) for g in self.graphs)
        edges = sum(int(g.edge_index.shape[1]) for g in self.graphs)
        return {
            "name": self.name,
            "num_graphs": self.num_graphs,
            "num_nodes": nodes,
            "num_edges": edges,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "content": self.digest(),
        }

    def digest(self) -> str:
        if not self.source_digest:
            self.source_digest = arrays_digest(pack(self.graphs))
        return self.source_digest

    def summary(self) -> str:
        nodes = sum(int(g.num_nodes) for g in self.graphs)
        return (
            f"dataset {self.name} | graphs {self.num_graphs} | nodes {nodes} (mean "
            f"{nodes / max(self.num_graphs, 1):.1f}) | node features {self.node_input} "
            f"{self.num_features}{self._scaling()} | edge features "
            f"{self.edge_input or 'none'} | outputs {self.num_classes} | split "
            f"{self.splits.description}"
        )

    def _scaling(self) -> str:
        if self.scale == "none" or not self.continuous:
            return ""
        return f" ({self.continuous} continuous, {self.scale}-scaled on each train part)"


def arrays_digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- storage


def pack(graphs: list) -> dict:
    """Concatenate a list of graphs (PyG ``Data`` or dicts with the same keys) into arrays."""

    def get(g, key):
        return g[key] if isinstance(g, dict) else getattr(g, key, None)

    def arr(t):
        return t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)

    nodes = [int(get(g, "num_nodes")) for g in graphs]
    edges = [arr(get(g, "edge_index")).shape[1] for g in graphs]
    out = {
        "node_ptr": np.cumsum([0, *nodes]),
        "edge_ptr": np.cumsum([0, *edges]),
        "x": np.concatenate([arr(get(g, "x")) for g in graphs]),
        "edge_index": np.concatenate([arr(get(g, "edge_index")) for g in graphs], axis=1)
        if graphs
        else np.zeros((2, 0), np.int64),
        "y": np.concatenate([arr(get(g, "y")).reshape(1, -1) for g in graphs]),
    }
    if graphs and get(graphs[0], "edge_attr") is not None:
        out["edge_attr"] = np.concatenate([arr(get(g, "edge_attr")) for g in graphs])
    return out


def unpack(arrays: dict, y_dtype=None) -> list:
    """The graphs of :func:`pack` as PyG ``Data`` objects (``y`` [1, T], or [1] for a single
    integer class)."""
    from torch_geometric.data import Data

    node_ptr, edge_ptr = arrays["node_ptr"], arrays["edge_ptr"]
    x = torch.from_numpy(np.ascontiguousarray(arrays["x"]))
    edge_index = torch.from_numpy(np.ascontiguousarray(arrays["edge_index"])).long()
    edge_attr = (
        torch.from_numpy(np.ascontiguousarray(arrays["edge_attr"]))
        if "edge_attr" in arrays
        else None
    )
    y = torch.from_numpy(np.ascontiguousarray(arrays["y"]))
    if y_dtype is not None:
        y = y.to(y_dtype)
    single_class = y.dtype == torch.long and y.shape[1] == 1
    graphs = []
    for g in range(len(node_ptr) - 1):
        a, b, c, d = int(node_ptr[g]), int(node_ptr[g + 1]), int(edge_ptr[g]), int(edge_ptr[g + 1])
        data = Data(
            x=x[a:b],
            edge_index=edge_index[:, c:d],
            y=y[g].view(-1) if single_class else y[g : g + 1],
            num_nodes=b - a,
        )
        if edge_attr is not None:
            data.edge_attr = edge_attr[c:d]
        graphs.append(data)
    return graphs


def save_npz(path: Path, arrays: dict) -> None:
    """Atomic ``np.savez`` (a kill leaves the previous file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ---------------------------------------------------------------- positional encodings


def laplacian_pe(edge_index: np.ndarray, num_nodes: int, k: int) -> np.ndarray:
    """Eigenvectors 2..k+1 of the symmetric normalised Laplacian I - D^-1/2 A D^-1/2 (smallest
    eigenvalues first, the trivial one dropped), zero-padded to k columns for graphs with
    fewer than k + 1 nodes. Signs are arbitrary: the models flip them at random in training."""
    pe = np.zeros((num_nodes, k), np.float32)
    if num_nodes < 2:
        return pe
    adj = np.zeros((num_nodes, num_nodes))
    adj[edge_index[0], edge_index[1]] = 1.0
    np.fill_diagonal(adj, 0.0)
    adj = np.maximum(adj, adj.T)
    deg = adj.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    lap = np.eye(num_nodes) - inv[:, None] * adj * inv[None, :]
    _, vecs = np.linalg.eigh(lap)
    take = vecs[:, 1 : k + 1]
    pe[:, : take.shape[1]] = take
    return pe


def random_walk_pe(edge_index: np.ndarray, num_nodes: int, k: int) -> np.ndarray:
    """RWSE: the return probabilities diag(P^t), t = 1..k, of the random walk P = D^-1 A."""
    adj = np.zeros((num_nodes, num_nodes))
    adj[edge_index[0], edge_index[1]] = 1.0
    deg = adj.sum(1, keepdims=True)
    walk = np.divide(adj, deg, out=np.zeros_like(adj), where=deg > 0)
    out, power = np.zeros((num_nodes, k), np.float32), np.eye(num_nodes)
    for t in range(k):
        power = power @ walk
        out[:, t] = np.diag(power)
    return out


PE_FUNCTIONS = {"lap": laplacian_pe, "rwse": random_walk_pe}


def with_positional_encodings(dataset: GraphDataset, needs: dict, cache_dir: Path) -> GraphDataset:
    """Attach each encoding in ``needs`` ({"lap": 10, "rwse": 16}) to every graph as
    ``data.<name>_pe``, computed once and cached under ``cache_dir/pe/``."""
    for name, k in sorted(needs.items()):
        if name not in PE_FUNCTIONS:
            raise ValueError(
                f"unknown positional encoding {name!r}; allowed: {', '.join(PE_FUNCTIONS)}"
            )
        k = int(k)
        path = Path(cache_dir) / "pe" / f"{dataset.name}-{dataset.digest()}-{name}{k}.npz"
        if path.exists():
            pe = load_npz(path)["pe"]
        else:
            fn = PE_FUNCTIONS[name]
            pe = (
                np.concatenate(
                    [fn(g.edge_index.numpy(), int(g.num_nodes), k) for g in dataset.graphs]
                )
                if dataset.graphs
                else np.zeros((0, k), np.float32)
            )
            save_npz(path, {"pe": pe})
        pe = torch.from_numpy(pe)
        start = 0
        for g in dataset.graphs:
            n = int(g.num_nodes)
            setattr(g, f"{name}_pe", pe[start : start + n])
            start += n
        dataset.pe[name] = k
    return dataset
