"""Your own graph, from a file: ``dataset=npz``, ``dataset=pyg`` or ``dataset=csv``.

All three give the same :class:`NodeDataset`:

* ``x`` [N, F] features; ``y`` [N] integer labels (classification) or floats that are not
  whole numbers (regression; ``dataset.task`` overrides the guess); label -1 (or NaN for
  regression, or for classification with ``dataset.missing_label=unlabelled``) = unlabelled;
  every array is checked first (:mod:`difformer.data.validation`);
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

from . import validation
from .base import NodeDataset
from .preprocess import prepare_edges, self_loops
from .scaling import check_scale
from .sources import DataError
from .splits import FixedIndexSplit, FixedMaskSplits, RandomClassSplit, RandomFractionSplit


def _file(opts, key: str = "path") -> Path:
    value = opts.get(key)
    if value in (None, "", "???"):
        raise DataError(f"dataset={opts.name} needs dataset.{key}=FILE")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise DataError(f"dataset.{key}={value}: no such file")
    return path


def build(name: str, arrays: dict, opts, where: str | None = None) -> NodeDataset:
    """A NodeDataset from arrays named as the module docstring says, each checked
    (:mod:`difformer.data.validation`); ``where`` names the file in messages."""
    where = where or f"dataset={name}"
    scale = check_scale(opts.get("scale"))  # standard | none (null): one line for any other
    if "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"{where}: the file needs arrays 'x' and 'y' (has "
            f"{', '.join(sorted(arrays)) or 'none'})"
        )
    x = validation.features(where, arrays["x"])
    n = x.shape[0]
    y, task, labelled, num_classes = validation.labels(
        where,
        arrays["y"],
        n,
        opts.get("task"),
        str(opts.get("missing_label") or "error"),
    )
    has_graph = arrays.get("edge_index") is not None
    if has_graph:
        edge_index = validation.edges(where, arrays["edge_index"], n)
        edge_index = prepare_edges(edge_index, n, undirected=opts.get("undirected", True))
    else:
        edge_index = self_loops(n)
    dataset = NodeDataset(
        name=name,
        x=x,
        y=y,
        edge_index=edge_index,
        num_classes=num_classes,
        splits=_splits(where, arrays, opts, y, labelled, task),
        has_graph=has_graph,
        scale=scale,
    )
    if task == "regression":
        dataset = dataclasses.replace(dataset, loss="mse", metric="mse")
    return dataset


def _splits(where: str, arrays: dict, opts, y, labelled, task):
    n = y.shape[0]
    for kind in ("mask", "idx"):
        parts = {k: arrays.get(f"{k}_{kind}") for k in ("train", "valid", "test")}
        if all(v is not None for v in parts.values()):
            train, valid, test = validation.split_parts(where, parts, n, kind)
            if kind == "mask":
                return FixedMaskSplits(train, valid, test, source="splits from the file")
            return FixedIndexSplit(train, valid, test, source="split from the file")
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
    path = _file(opts)
    try:
        with np.load(path, allow_pickle=False) as raw:
            arrays = {}
            for key in raw.files:
                try:
                    arrays[key] = raw[key]
                except ValueError as err:  # an object array: reading it would unpickle
                    raise DataError(
                        f"{path}: array {key!r} holds Python objects ({err}); save arrays of "
                        "numbers (np.savez(path, x=..., y=...))"
                    ) from err
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise DataError(
            f"{path} is not a readable .npz file ({type(err).__name__}: {err})"
        ) from err
    return build(name, arrays, opts, where=str(path))


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
    return build(name, arrays, opts, where=str(path))


def read_csv(path: Path, what: str):
    """A pandas frame of ``path`` with at least one row, or one line saying what is wrong."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except pd.errors.EmptyDataError as err:
        raise DataError(
            f"{what}={path} is empty; it needs a header row and one row per item"
        ) from err
    except UnicodeDecodeError as err:
        raise DataError(
            f"{what}={path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}); save it as UTF-8"
        ) from err
    except (pd.errors.ParserError, ValueError) as err:
        reason = str(err).strip().splitlines()[0]
        raise DataError(f"{what}={path} is not a readable CSV file: {reason}") from err
    if frame.empty:
        raise DataError(f"{what}={path} has a header but no rows")
    return frame


def _require_columns(frame, where: str, columns, keys: str) -> None:
    for col in columns:
        if col not in frame.columns:
            raise DataError(
                f"{where} has no column {col!r} (columns: {', '.join(map(str, frame.columns))});"
                f" dataset.{keys.replace(' / ', ' / dataset.')} name them"
            )


def _csv_labels(path: Path, column):
    """Numbers as they are; class names (strings) become 0..C-1 in sorted order, an empty cell
    stays NaN (unlabelled only with dataset.missing_label=unlabelled)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    names = sorted({str(v) for v in column.dropna()})
    index = {v: i for i, v in enumerate(names)}
    return column.map(lambda v: np.nan if pd.isna(v) else index[str(v)]).to_numpy(dtype=float)


def load_csv(name: str, opts, root) -> NodeDataset:
    """``dataset.nodes``: one row per node (``id_col``, ``label_col``, the other columns are
    numeric features); ``dataset.edges`` (optional): ``source``, ``target`` columns of node
    ids. Class names in the label column become 0..C-1 in sorted order."""
    import pandas as pd

    path = _file(opts, "nodes")
    nodes = read_csv(path, "dataset.nodes")
    id_col, label_col = opts.get("id_col", "id"), opts.get("label_col", "label")
    _require_columns(nodes, f"dataset.nodes={path}", (id_col, label_col), "id_col / label_col")
    duplicated = nodes[id_col].duplicated(keep=False)
    if duplicated.any():
        rows = [int(i) + 2 for i in nodes.index[duplicated][:2]]  # +2: 1-based, after the header
        raise DataError(
            f"dataset.nodes={path}: id {nodes[id_col][duplicated].iloc[0]!r} appears more than "
            f"once (lines {rows[0]} and {rows[1]}); ids must be unique"
        )
    position = {node: i for i, node in enumerate(nodes[id_col])}
    features = nodes.drop(columns=[id_col, label_col])
    for col in features.columns:
        if not pd.api.types.is_numeric_dtype(features[col]):
            bad = features[col][pd.to_numeric(features[col], errors="coerce").isna()].iloc[0]
            raise DataError(
                f"dataset.nodes={path}: column {col!r} holds {bad!r}, not a number; every column "
                "other than the id and the label is a numeric feature"
            )
    arrays = {
        "x": features.to_numpy(dtype=np.float32),
        "y": _csv_labels(path, nodes[label_col]),
    }
    if opts.get("edges"):
        epath = _file(opts, "edges")
        edges = read_csv(epath, "dataset.edges")
        src, dst = opts.get("source_col", "source"), opts.get("target_col", "target")
        _require_columns(edges, f"dataset.edges={epath}", (src, dst), "source_col / target_col")
        unknown = sorted(map(str, set(edges[src]).union(edges[dst]) - set(position)))[:5]
        if unknown:
            raise DataError(
                f"dataset.edges={epath} names nodes not in dataset.nodes: {', '.join(unknown)}"
            )
        arrays["edge_index"] = np.stack(
            [edges[src].map(position).to_numpy(), edges[dst].map(position).to_numpy()]
        )
    return build(name, arrays, opts, where=f"dataset.nodes={path}")
