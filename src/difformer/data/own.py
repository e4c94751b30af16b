"""Your own graph, from a file: ``dataset=npz``, ``dataset=pyg`` or ``dataset=csv``.

All three give the same :class:`NodeDataset`:

* ``x`` [N, F] features; ``y`` [N] integer labels (classification) or floats (regression;
  ``dataset.task`` overrides the guess); label -1 (or NaN for regression) = unlabelled;
* an optional graph (``edge_index`` [2, E], optional ``edge_weight`` is ignored by the models
  that do not read it), made undirected when ``dataset.undirected`` and given one self-loop per
  node, as the official preprocessing; without one, each node has only its self-loop;
* a split: train/valid/test masks ([N] booleans, or [K, N] for K fixed splits, run i using
  split i) or index arrays (``train_idx``, ``valid_idx``, ``test_idx``) when the file has them;
  otherwise ``dataset.labels_per_class`` per class / ``valid_num`` / rest, or a random
  ``train_ratio`` / ``valid_ratio`` / rest of the labelled nodes, a new split per run.

The file's content is fingerprinted into every checkpoint, so ``mode=eval`` refuses a changed
file. Files are read without running code: npz with ``allow_pickle=False``, PyG files with
``weights_only=True`` (only PyG's data classes admitted).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .base import NodeDataset
from .preprocess import prepare_edges, self_loops
from .sources import DataError
from .splits import FixedIndexSplit, FixedMaskSplits, RandomClassSplit, RandomFractionSplit

TASKS = ("classification", "regression")


def _file(opts, key: str = "path") -> Path:
    value = opts.get(key)
    if value in (None, "", "???"):
        raise DataError(f"dataset={opts.name} needs dataset.{key}=FILE")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise DataError(f"dataset.{key}={value}: no such file")
    return path


def _tensor(array, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(array))
    return t if dtype is None else t.to(dtype)


def build(name: str, arrays: dict, opts) -> NodeDataset:
    """A NodeDataset from arrays named as the module docstring says."""
    if "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"dataset={name}: the file needs arrays 'x' and 'y' (has "
            f"{', '.join(sorted(arrays)) or 'none'})"
        )
    x = _tensor(arrays["x"], torch.float)
    y_raw = _tensor(arrays["y"]).reshape(-1)
    if x.dim() != 2 or y_raw.shape[0] != x.shape[0]:
        raise DataError(
            f"dataset={name}: x must be [N, F] and y [N]; got x "
            f"{tuple(x.shape)}, y {tuple(y_raw.shape)}"
        )
    task = opts.get("task") or (
        "regression"
        if y_raw.is_floating_point() and not torch.equal(y_raw, y_raw.round())
        else "classification"
    )
    if task not in TASKS:
        raise DataError(f"dataset.task={task} is not allowed; use {' or '.join(TASKS)}")
    n = x.shape[0]
    if task == "classification":
        y = y_raw.long()
        labelled = (y >= 0).nonzero().view(-1)
        num_classes = int(y.max()) + 1
    else:
        y = y_raw.float()
        labelled = (~torch.isnan(y)).nonzero().view(-1)
        num_classes = 1
    has_graph = arrays.get("edge_index") is not None
    if has_graph:
        edge_index = _tensor(arrays["edge_index"], torch.long)
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            edge_index = edge_index.t()
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
            raise DataError(f"dataset={name}: edge_index holds node ids outside [0, {n})")
        edge_index = prepare_edges(edge_index, n, undirected=opts.get("undirected", True))
    else:
        edge_index = self_loops(n)
    dataset = NodeDataset(
        name=name,
        x=x,
        y=y,
        edge_index=edge_index,
        num_classes=num_classes,
        splits=_splits(arrays, opts, y, labelled, task),
        has_graph=has_graph,
    )
    if task == "regression":
        dataset = dataclasses.replace(dataset, loss="mse", metric="mse")
    return dataset


def _splits(arrays: dict, opts, y, labelled, task):
    if all(arrays.get(f"{k}_mask") is not None for k in ("train", "valid", "test")):
        masks = [_tensor(arrays[f"{k}_mask"], torch.bool) for k in ("train", "valid", "test")]
        masks = [m if m.dim() == 2 else m.unsqueeze(0) for m in masks]
        return FixedMaskSplits(*masks, source="splits from the file")  # type: ignore[misc,arg-type]
    if all(arrays.get(f"{k}_idx") is not None for k in ("train", "valid", "test")):
        idx = [
            _tensor(arrays[f"{k}_idx"], torch.long).reshape(-1) for k in ("train", "valid", "test")
        ]
        return FixedIndexSplit(*idx, source="split from the file")  # type: ignore[misc,arg-type]
    if opts.get("labels_per_class") is not None:
        if task != "classification":
            raise DataError("dataset.labels_per_class needs classification labels")
        return RandomClassSplit(
            y,
            int(opts.labels_per_class),
            int(opts.get("valid_num", 500)),
            opts.get("test_num"),
            shared=False,
        )
    return RandomFractionSplit(
        labelled, float(opts.get("train_ratio", 0.5)), float(opts.get("valid_ratio", 0.25))
    )


def load_npz(name: str, opts, root) -> NodeDataset:
    with np.load(_file(opts), allow_pickle=False) as raw:
        arrays = {k: raw[k] for k in raw.files}
    return build(name, arrays, opts)


def load_pyg(name: str, opts, root) -> NodeDataset:
    """A saved ``torch_geometric.data.Data`` (``torch.save(data, path)``) or its ``to_dict()``."""
    from torch_geometric.data import Data
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    path = _file(opts)
    # PyG's data containers, admitted for good as PyG itself does for Data (the scoped
    # torch.serialization.safe_globals would remove Data from PyG's list on exit)
    torch.serialization.add_safe_globals([Data, DataEdgeAttr, DataTensorAttr, GlobalStorage])
    obj = torch.load(path, map_location="cpu", weights_only=True)
    arrays = obj.to_dict() if isinstance(obj, Data) else obj
    if not isinstance(arrays, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a PyG Data or a dict")
    arrays = {("valid_mask" if k == "val_mask" else k): v for k, v in arrays.items()}
    return build(name, arrays, opts)


def load_csv(name: str, opts, root) -> NodeDataset:
    """``dataset.nodes``: one row per node (``id_col``, ``label_col``, the other columns are
    features); ``dataset.edges`` (optional): ``source``, ``target`` columns of node ids."""
    import pandas as pd

    nodes = pd.read_csv(_file(opts, "nodes"))
    id_col, label_col = opts.get("id_col", "id"), opts.get("label_col", "label")
    for col in (id_col, label_col):
        if col not in nodes.columns:
            raise DataError(
                f"dataset.nodes has no column {col!r} (columns: "
                f"{', '.join(map(str, nodes.columns))})"
            )
    position = {node: i for i, node in enumerate(nodes[id_col])}
    features = nodes.drop(columns=[id_col, label_col])
    arrays = {"x": features.to_numpy(dtype=np.float32), "y": nodes[label_col].to_numpy()}
    if opts.get("edges"):
        edges = pd.read_csv(_file(opts, "edges"))
        src, dst = opts.get("source_col", "source"), opts.get("target_col", "target")
        unknown = sorted(set(edges[src]).union(edges[dst]) - set(position))[:5]
        if unknown:
            raise DataError(f"dataset.edges names nodes not in dataset.nodes: {unknown}")
        arrays["edge_index"] = np.stack(
            [edges[src].map(position).to_numpy(), edges[dst].map(position).to_numpy()]
        )
    return build(name, arrays, opts)
