"""Your own data, checked where it enters: one line naming the file, the array or column, the
row, and what is allowed -- never a traceback, never a silent reading.

Every own-data format (``npz``, ``pyg``, ``csv``) goes through :func:`node_arrays` before a
:class:`~difformer.data.base.NodeDataset` is built, and what a ``dataset._target_`` loader of
your own returns goes through :func:`check_node_dataset`. What is refused and why:

* features: numbers (not strings or objects), 2-D, finite (NaN or inf stop training silently
  as a NaN loss much later);
* labels: classification labels are integer-valued classes 0..C-1 with no class skipped (one
  stray label 1000 would make 1,001 classes) and at least 2 classes; -1 marks an unlabelled
  node; a NaN label is refused unless ``dataset.missing_label=unlabelled`` says it marks an
  unlabelled node -- a NaN never turns a classification file into a regression task
  (``dataset.task=regression`` says that, or float targets that are not whole numbers);
* edges: integral node ids in [0, N);
* splits from the file: masks of N booleans or indices in [0, N), each part non-empty, the
  three parts disjoint.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .sources import DataError

TASKS = ("classification", "regression")
MISSING_LABEL = ("error", "unlabelled")
NUMERIC = "biuf"  # numpy kinds: bool, signed, unsigned, float


def _array(where: str, name: str, value) -> np.ndarray:
    array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.dtype.kind not in NUMERIC:
        raise DataError(
            f"{where}: {name} holds {array.dtype} values; it must hold numbers"
            + (" (map class names to 0..C-1)" if name == "y" else "")
        )
    return array


def _first(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def features(where: str, value) -> Tensor:
    x = _array(where, "x", value)
    if x.ndim != 2:
        raise DataError(
            f"{where}: x must be [N, F] (a row of features per node), got shape {x.shape}"
        )
    bad = ~np.isfinite(x.astype(np.float64, copy=False))
    if bad.any():
        r, c = _first(bad)
        raise DataError(
            f"{where}: x[{r}, {c}] is {x[r, c]}; features must be finite numbers (fill or drop "
            f"missing values first; {int(bad.sum())} value(s) are not finite)"
        )
    return torch.as_tensor(x).float()


def labels(where: str, value, n: int, task: str | None, missing: str):
    """(y, task, labelled node indices, number of classes or 1 for regression)."""
    y = _array(where, "y", value).reshape(-1) if np.ndim(value) else np.zeros(0)
    if y.shape[0] != n:
        raise DataError(f"{where}: y has {y.shape[0]} labels for {n} nodes (x has {n} rows)")
    if task is not None and task not in TASKS:
        raise DataError(f"dataset.task={task} is not allowed; use {' or '.join(TASKS)}")
    if missing not in MISSING_LABEL:
        raise DataError(
            f"dataset.missing_label={missing} is not allowed; use {' or '.join(MISSING_LABEL)}"
        )
    yf = y.astype(np.float64)
    nan = np.isnan(yf)
    known = yf[~nan]
    if task is None:
        is_whole = known == np.round(known)
        task = "classification" if is_whole.all() else "regression"
        if task == "regression" and is_whole.mean() >= 0.9:  # class ids with a stray value?
            i = int(np.flatnonzero(~nan)[np.flatnonzero(~is_whole)[0]])
            raise DataError(
                f"{where}: y holds whole numbers except y[{i}] = {yf[i]} ({int((~is_whole).sum())}"
                " value(s)): set dataset.task=classification or dataset.task=regression"
            )
    if np.isinf(yf).any():
        raise DataError(
            f"{where}: y[{_first(np.isinf(yf))[0]}] is {yf[np.isinf(yf)][0]}; labels must be finite"
        )
    if task == "regression":
        labelled = np.flatnonzero(~nan)  # NaN: unlabelled (documented for regression)
        if labelled.size < 3:
            raise DataError(
                f"{where}: {labelled.size} labelled node(s); a regression needs at least 3"
            )
        return torch.as_tensor(yf).float(), task, torch.as_tensor(labelled), 1
    if nan.any() and missing != "unlabelled":
        raise DataError(
            f"{where}: y[{_first(nan)[0]}] is NaN ({int(nan.sum())} NaN label(s)); a class label "
            "is an integer 0..C-1 or -1 (unlabelled): set dataset.missing_label=unlabelled if "
            "NaN marks unlabelled nodes, or dataset.task=regression for a numeric target"
        )
    fraction = ~nan & (yf != np.round(yf))
    if fraction.any():
        i = _first(fraction)[0]
        raise DataError(
            f"{where}: y[{i}] is {yf[i]}; classification labels are whole numbers 0..C-1 "
            "(dataset.task=regression for a numeric target)"
        )
    negative = ~nan & (yf < 0) & (yf != -1)
    if negative.any():
        i = _first(negative)[0]
        raise DataError(
            f"{where}: y[{i}] is {yf[i]:g}; a class label is 0..C-1, or -1 for an unlabelled node"
        )
    y_long = np.where(nan, -1, yf).astype(np.int64)
    labelled = np.flatnonzero(y_long >= 0)
    classes = np.unique(y_long[labelled])
    if classes.size < 2:
        raise DataError(
            f"{where}: the labels hold {classes.size} class(es) "
            f"({', '.join(map(str, classes)) or 'none'}); classification needs at least 2"
        )
    count = int(classes[-1]) + 1
    absent = sorted(set(range(count)) - set(classes.tolist()))
    if absent:
        raise DataError(
            f"{where}: the labels run to {count - 1} but class(es) "
            f"{', '.join(map(str, absent[:5]))}{' ...' if len(absent) > 5 else ''} never occur "
            f"({len(absent)} of {count}); renumber the classes 0..{classes.size - 1}"
        )
    return torch.as_tensor(y_long), task, torch.as_tensor(labelled), count


def edges(where: str, value, n: int) -> Tensor:
    e = _array(where, "edge_index", value)
    if e.ndim != 2 or 2 not in e.shape:
        raise DataError(f"{where}: edge_index must be [2, E] (or [E, 2]), got shape {e.shape}")
    if e.shape[0] != 2:
        e = e.T
    if e.dtype.kind == "f":
        off = ~np.isfinite(e) | (e != np.round(e))
        if off.any():
            r, c = _first(off)
            raise DataError(f"{where}: edge_index[{r}, {c}] is {e[r, c]}; node ids are integers")
    e = e.astype(np.int64)
    out = (e < 0) | (e >= n)
    if out.any():
        r, c = _first(out)
        raise DataError(
            f"{where}: edge_index[{r}, {c}] is {e[r, c]}; node ids must be in [0, {n}) "
            f"({int(out.sum())} id(s) outside)"
        )
    return torch.as_tensor(e)


def split_parts(where: str, parts: dict, n: int, kind: str) -> list[Tensor]:
    """``parts``: train/valid/test masks ([N] or [K, N]) or index arrays, checked."""
    out = []
    for part, value in parts.items():
        a = _array(where, f"{part}_{kind}", value)
        if kind == "mask":
            if a.shape[-1] != n or a.ndim not in (1, 2):
                raise DataError(
                    f"{where}: {part}_mask has shape {a.shape}; a mask is [N] or [K, N] with N={n}"
                )
            a = a.astype(bool)
            a = a[None] if a.ndim == 1 else a
            empty = [k for k in range(a.shape[0]) if not a[k].any()]
        else:
            if a.dtype.kind == "f" and (a != np.round(a)).any():
                raise DataError(f"{where}: {part}_idx holds non-integer indices")
            a = a.reshape(-1).astype(np.int64)
            bad = (a < 0) | (a >= n)
            if bad.any():
                raise DataError(
                    f"{where}: {part}_idx holds {a[bad][0]}; indices must be in [0, {n})"
                )
            if np.unique(a).size != a.size:
                raise DataError(f"{where}: {part}_idx lists a node twice")
            empty = [0] if a.size == 0 else []
        if empty:
            many = kind == "mask" and a.shape[0] > 1
            raise DataError(
                f"{where}: the {part} part is empty" + (f" in split {empty[0]}" if many else "")
            )
        out.append(torch.as_tensor(a))
    _disjoint(where, out, kind, n)
    return out


def _disjoint(where: str, parts: list[Tensor], kind: str, n: int) -> None:
    names = ("train", "valid", "test")
    if kind == "mask":
        sizes = {p.shape[0] for p in parts} - {1}
        if len(sizes) > 1:
            raise DataError(f"{where}: the masks hold different numbers of splits {sorted(sizes)}")
        as_masks = parts
    else:
        as_masks = []
        for p in parts:
            m = torch.zeros(1, n, dtype=torch.bool)
            m[0, p] = True
            as_masks.append(m)
    for i in range(3):
        for j in range(i + 1, 3):
            both = as_masks[i] & as_masks[j]
            if both.any():
                split, node = (int(v) for v in both.nonzero()[0])
                many = max(m.shape[0] for m in as_masks) > 1
                raise DataError(
                    f"{where}: node {node} is in both {names[i]} and {names[j]}"
                    + (f" (split {split})" if many else "")
                    + f" ({int(both.sum())} node(s)); the three parts must be disjoint"
                )


def check_node_dataset(where: str, dataset) -> None:
    """What a loader of your own returned: finite features, labels and edges in range, and
    run 0's split disjoint and non-empty."""
    n = int(dataset.x.shape[0])
    features(where, dataset.x)
    if dataset.y.shape[0] != n:
        raise DataError(f"{where}: y has {dataset.y.shape[0]} labels for {n} nodes")
    edges(where, dataset.edge_index, n)
    split = dataset.split(0, 0)
    split_parts(where, {"train": split.train, "valid": split.valid, "test": split.test}, n, "idx")
