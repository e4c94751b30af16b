"""Molecules: OGB's ``ogbg-mol*`` datasets, MoleculeNet HIV from its CSV, and your own SMILES.

* ``ogbg-molhiv`` / ``ogbg-molpcba``: OGB's raw files (``raw/*.csv.gz``,
  ``split/scaffold/*.csv.gz``), downloaded with ogb's own ``download_url``/``extract_zip`` from
  the URL in ogb's ``master.csv`` and parsed with ogb's ``read_csv_graph_raw``; OGB's scaffold
  split. We do not use ``PygGraphPropPredDataset``: it caches with ``torch.save`` of Python
  objects, which torch >= 2.6 refuses to load (and which would be a pickle); we cache the
  parsed graphs as a plain ``.npz`` instead.
* ``hiv``: MoleculeNet's ``HIV.csv`` (the 41,127 molecules behind ogbg-molhiv), featurised by
  ``ogb.utils.smiles2graph`` (rdkit; ``pip install 'difformer[molecules]'``) and split by
  :func:`scaffold_split`, OGB's procedure.
* ``smiles_csv``: your own CSV of SMILES and target columns, classification (0/1, empty =
  missing) or regression, scaffold or random split.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from .graphs import GraphDataset, load_npz, pack, save_npz, unpack
from .sources import DataError, DataRoot
from .splits import FixedIndexSplit, RandomFractionSplit, SplitProtocol


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:
        raise DataError(
            "molecules from SMILES need rdkit: pip install 'difformer[molecules]' "
            "(or pip install rdkit)"
        ) from err
    RDLogger.DisableLog("rdApp.*")  # invalid SMILES are reported by us, once
    return Chem


def parse_smiles(smiles: str):
    """An rdkit molecule. SMILES that fail rdkit's sanitisation (7 of HIV's, valence errors
    that older rdkit accepted) are read unsanitised with the property cache updated
    leniently, so every molecule keeps its graph, as OGB's file does; None if unparsable."""
    chem = _rdkit()
    mol = chem.MolFromSmiles(smiles)
    if mol is not None:
        return mol
    mol = chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return None
    mol.UpdatePropertyCache(strict=False)
    chem.FastFindRings(mol)
    return mol


def mol_to_graph(smiles: str) -> dict | None:
    """``ogb.utils.smiles2graph`` (9 atom, 3 bond categorical features, both edge directions);
    for a molecule rdkit cannot sanitise, the same features of :func:`parse_smiles`'s
    molecule."""
    from ogb.utils import smiles2graph
    from ogb.utils.features import atom_to_feature_vector, bond_to_feature_vector

    chem = _rdkit()
    if chem.MolFromSmiles(smiles) is not None:
        g = smiles2graph(smiles)
        return {
            "x": g["node_feat"],
            "edge_index": g["edge_index"],
            "edge_attr": g["edge_feat"],
            "num_nodes": g["num_nodes"],
        }
    mol = parse_smiles(smiles)
    if mol is None:
        return None
    x = np.array([atom_to_feature_vector(a) for a in mol.GetAtoms()], dtype=np.int64)
    pairs, feats = [], []
    for bond in mol.GetBonds():
        i, j, f = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond_to_feature_vector(bond)
        pairs += [(i, j), (j, i)]
        feats += [f, f]
    edge_index = np.array(pairs, dtype=np.int64).T if pairs else np.zeros((2, 0), np.int64)
    edge_attr = np.array(feats, dtype=np.int64) if feats else np.zeros((0, 3), np.int64)
    return {"x": x, "edge_index": edge_index, "edge_attr": edge_attr, "num_nodes": len(x)}


def scaffold_of(smiles: str) -> str:
    """The Bemis-Murcko scaffold SMILES (with chirality, as OGB / MoleculeNet)."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = parse_smiles(smiles)
    if mol is None:
        return ""
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=True)
    except Exception:  # noqa: BLE001 - an unsanitisable molecule: its own scaffold group
        return f"unscaffoldable:{smiles}"


def scaffold_split(
    smiles: list[str], frac_train: float = 0.8, frac_valid: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OGB's deterministic scaffold split (Hu et al. 2020, from the pretrain-gnns code): group
    molecules by scaffold, order the groups largest first (ties: the group whose first
    molecule comes last first, as their ``sorted(..., reverse=True)``), then fill train to
    ``frac_train`` of all molecules, valid to ``frac_train + frac_valid``, test with the rest;
    a group never straddles two parts."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        groups.setdefault(scaffold_of(s), []).append(i)
    ordered = sorted(groups.values(), key=lambda ids: (len(ids), ids[0]), reverse=True)
    n = len(smiles)
    train_cut, valid_cut = frac_train * n, (frac_train + frac_valid) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for ids in ordered:
        if len(train) + len(ids) > train_cut:
            (test if len(train) + len(valid) + len(ids) > valid_cut else valid).extend(ids)
        else:
            train.extend(ids)
    a, b, c = (np.sort(np.asarray(p, dtype=np.int64)) for p in (train, valid, test))
    return a, b, c


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    """A CSV's header and its non-blank rows (MoleculeNet's HIV.csv has CRLF line ends and a
    blank line after every row)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(line for line in f if line.strip())
        return list(reader.fieldnames or []), list(reader)


def featurise(path: Path, smiles_col: str, target_cols: list[str], cache: Path, split: str) -> dict:
    """Graphs, targets [G, T] (NaN = missing) and the scaffold split of a SMILES CSV, built
    once and cached as a plain npz keyed by the file's content and the columns."""
    key = hashlib.sha256(f"{file_digest(path)}|{smiles_col}|{target_cols}|{split}".encode())
    cached = cache / f"{path.stem}-{key.hexdigest()[:16]}.npz"
    if cached.exists():
        return load_npz(cached)
    header, rows = read_csv_rows(path)
    missing = [c for c in [smiles_col, *target_cols] if c not in header]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(missing)}; columns: {', '.join(header)}")
    graphs, smiles, bad = [], [], []
    for i, row in enumerate(rows):
        g = mol_to_graph(row[smiles_col])
        if g is None:
            bad.append(i)
            continue
        g["y"] = np.array([_target(path, i, c, row[c]) for c in target_cols], dtype=np.float32)
        graphs.append(g)
        smiles.append(row[smiles_col])
    if bad:
        print(f"{path}: skipped {len(bad)} unparsable SMILES (rows {bad[:10]}...)", flush=True)
    if not graphs:
        raise DataError(f"{path}: no parsable SMILES in column {smiles_col}")
    arrays = pack(graphs)
    if split == "scaffold":
        for part, idx in zip(("train", "valid", "test"), scaffold_split(smiles)):
            arrays[f"split_{part}"] = idx
    save_npz(cached, arrays)
    return arrays


def _target(path: Path, row: int, column: str, text: str) -> float:
    """One target cell: a number, or empty for a missing label (NaN)."""
    if text.strip() == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(
            f"{path}: row {row + 2}, column {column!r} holds {text!r}; a target is a finite "
            "number, or empty for a missing label"
        )
    return value


def _check_targets(name: str, y: np.ndarray, task: str, splits, targets) -> None:
    """Each classification target has both classes; no split part is empty."""
    if task == "classification":
        for t in range(y.shape[1]):
            known = np.unique(y[~np.isnan(y[:, t]), t])
            if known.size < 2:
                raise DataError(
                    f"{name}: target {targets[t]!r} holds only class "
                    f"{', '.join(f'{v:g}' for v in known) or 'none'} among its labels; "
                    "ROC-AUC needs both 0 and 1"
                )
    split = splits.split(0, 0)
    for part in ("train", "valid", "test"):
        if len(getattr(split, part)) == 0:
            raise DataError(
                f"{name}: the {splits.description} of {y.shape[0]} molecule(s) leaves "
                f"the {part} part empty; use more molecules (or dataset.split=random)"
            )


def _task_of(y: np.ndarray, declared: str | None) -> str:
    values = y[~np.isnan(y)]
    binary = values.size > 0 and np.isin(values, (0.0, 1.0)).all()
    task = declared or ("classification" if binary else "regression")
    if task not in ("classification", "regression"):
        raise DataError(f"dataset.task={task} is not allowed; use classification or regression")
    if task == "classification" and not binary:
        raise DataError("dataset.task=classification needs 0/1 targets (empty = missing)")
    return task


def molecule_dataset(
    name: str,
    arrays: dict,
    split_kind: str,
    opts,
    metric: str | None = None,
    split_source: str = "scaffold split 80/10/10",
) -> GraphDataset:
    task = _task_of(arrays["y"], opts.get("task"))
    graphs = unpack(arrays)
    splits: SplitProtocol
    if split_kind == "scaffold":
        splits = FixedIndexSplit(
            *(
                torch.as_tensor(arrays[f"split_{p}"])  # type: ignore[misc,arg-type]
                for p in ("train", "valid", "test")
            ),
            source=split_source,
        )
    else:
        splits = RandomFractionSplit.of_graphs(
            len(graphs), float(opts.get("train_ratio", 0.8)), float(opts.get("valid_ratio", 0.1))
        )
    classify = task == "classification"
    return GraphDataset(
        name=name,
        graphs=graphs,
        num_classes=arrays["y"].shape[1],
        splits=splits,
        node_input="ogb_atom",
        num_features=9,
        edge_input="ogb_bond",
        edge_channels=3,
        loss="bce_masked" if classify else "l1",
        metric=metric or ("rocauc_multitask" if classify else "mae"),
    )


def load_hiv(name: str, opts, root: DataRoot) -> GraphDataset:
    """MoleculeNet HIV (``<data_dir>/moleculenet/HIV.csv``): label ``HIV_active``, OGB's
    features, our scaffold split (OGB's procedure), ogb's ogbg-molhiv ROC-AUC evaluator."""
    rel = "moleculenet/HIV.csv"
    path = root.find(rel)
    if path is None:
        raise root.unavailable(name, rel, "MoleculeNet (deepchem's HIV.csv)")
    arrays = featurise(path, "smiles", ["HIV_active"], root.cache_dir / "molecules", "scaffold")
    return molecule_dataset(name, arrays, "scaffold", opts, metric="rocauc_molhiv")


def load_smiles_csv(name: str, opts, root: DataRoot) -> GraphDataset:
    """Your own molecules: ``dataset.path`` (a CSV), ``dataset.smiles_col``,
    ``dataset.target_cols`` (a list), ``dataset.split=scaffold|random``."""
    path = Path(str(opts.path)).expanduser()
    if not path.is_file():
        raise DataError(f"dataset.path={opts.path}: no such file")
    targets = list(opts.get("target_cols") or [])
    if not targets:
        raise DataError(
            "dataset.target_cols must list at least one column, e.g. dataset.target_cols=[label]"
        )
    split = str(opts.get("split", "scaffold"))
    if split not in ("scaffold", "random"):
        raise DataError(f"dataset.split={split} is not allowed; use scaffold or random")
    arrays = featurise(path, str(opts.smiles_col), targets, root.cache_dir / "molecules", split)
    dataset = molecule_dataset(str(opts.get("label") or path.stem), arrays, split, opts)
    task = "classification" if dataset.loss == "bce_masked" else "regression"
    _check_targets(str(path), arrays["y"], task, dataset.splits, targets)
    return dataset


OGB_METRICS = {"rocauc": "rocauc_molhiv", "ap": "ap_molpcba"}


def _ogb_master(name: str) -> dict:
    import os

    import ogb.graphproppred
    import pandas as pd

    master = pd.read_csv(
        os.path.join(os.path.dirname(ogb.graphproppred.__file__), "master.csv"),
        index_col=0,
        keep_default_na=False,
    )
    if name not in master:
        raise DataError(f"{name} is not an OGB graph-property dataset")
    return master[name].to_dict()


def load_ogbg(name: str, opts, root: DataRoot) -> GraphDataset:
    """``ogbg-molhiv`` / ``ogbg-molpcba`` from OGB's raw layout under
    ``<data_dir>/ogb/ogbg_<name>/`` (downloaded when absent), OGB's scaffold split."""
    import pandas as pd

    meta = _ogb_master(name)
    rel = f"ogb/{name.replace('-', '_')}"
    required = [
        f"raw/{f}.csv.gz"
        for f in ("edge", "node-feat", "edge-feat", "graph-label", "num-node-list", "num-edge-list")
    ] + [f"split/{meta['split']}/{p}.csv.gz" for p in ("train", "valid", "test")]

    cached = root.cache_dir / rel / "processed" / "difformer_graphs.npz"

    def read():
        copy = root.writable(rel)
        if not all((copy / r).exists() for r in required):
            _download(meta, copy)
        from ogb.io.read_graph_raw import read_csv_graph_raw

        raw = read_csv_graph_raw(
            str(copy / "raw"), add_inverse_edge=str(meta["add_inverse_edge"]) == "True"
        )
        labels = pd.read_csv(
            copy / "raw" / "graph-label.csv.gz", compression="gzip", header=None
        ).values.astype(np.float32)
        graphs = [
            {
                "x": g["node_feat"],
                "edge_index": g["edge_index"],
                "edge_attr": g["edge_feat"],
                "num_nodes": g["num_nodes"],
                "y": labels[i],
            }
            for i, g in enumerate(raw)
        ]
        arrays = pack(graphs)
        for p in ("train", "valid", "test"):
            arrays[f"split_{p}"] = (
                pd.read_csv(
                    copy / "split" / meta["split"] / f"{p}.csv.gz", compression="gzip", header=None
                )
                .values.T[0]
                .astype(np.int64)
            )
        save_npz(cached, arrays)
        return arrays

    # once parsed, the plain-array cache is all we read (the raw files may go)
    arrays = (
        load_npz(cached) if cached.exists() else root.load(name, rel, meta["url"], required, read)
    )
    return molecule_dataset(
        name,
        arrays,
        "scaffold",
        {"task": "classification"},
        metric=OGB_METRICS[meta["eval metric"]],
        split_source=f"OGB {meta['split']} split",
    )


def _download(meta: dict, target: Path) -> None:
    """OGB's zip into ``target`` (the zip holds one folder, ``<download_name>/``)."""
    import shutil

    from ogb.utils.url import download_url, extract_zip

    target.parent.mkdir(parents=True, exist_ok=True)
    zip_path = download_url(meta["url"], str(target.parent))
    extract_zip(zip_path, str(target.parent))
    Path(zip_path).unlink(missing_ok=True)
    extracted = target.parent / meta["download_name"]
    if target.exists():
        shutil.rmtree(target)
    extracted.rename(target)
