"""Spatial-temporal datasets in the torch-geometric-temporal JSON format (docs/protocols.md §1.3).

We read the JSON ourselves: ``import torch_geometric_temporal`` needs the compiled
``torch_sparse``, which has no wheel for our torch. The arithmetic is the library's own
loaders' (0.56.2): features are the previous ``lags`` values of the target, Covid and WikiMath
targets are standardised per node, Chickenpox is used raw with unit edge weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .base import tensor_digest
from .sources import DataRoot

PGT_URL = (
    "https://raw.githubusercontent.com/benedekrozemberczki/pytorch_geometric_temporal/"
    "master/dataset"
)


@dataclass
class Snapshot:
    x: Tensor  # [n, lags]
    edge_index: Tensor  # [2, E]
    edge_weight: Tensor  # [E]
    y: Tensor  # [n]


@dataclass(frozen=True)
class ChronoSplit:
    """Snapshot index ranges, in time order."""

    train: range
    valid: range
    test: range


@dataclass
class TemporalDataset:
    name: str
    snapshots: list[Snapshot]
    lags: int
    step: str  # "cumulative": one step per epoch; "per_snapshot"
    train_ratio: float = 0.2
    valid_ratio: float = 0.2

    @property
    def num_features(self) -> int:
        return self.lags

    num_classes = 1  # one regression output per node

    def split(self, run: int = 0, seed: int = 0) -> ChronoSplit:
        """PGT's temporal_signal_split twice, as the official script: the first 20 % train;
        of the rest, valid_ratio / (1 - train_ratio) valid; the remainder test. The same split
        in every run."""
        n = len(self.snapshots)
        n_train = int(self.train_ratio * n)
        n_valid = int(self.valid_ratio / (1 - self.train_ratio) * (n - n_train))
        return ChronoSplit(
            range(0, n_train), range(n_train, n_train + n_valid), range(n_train + n_valid, n)
        )

    def fingerprint(self) -> dict:
        first = self.snapshots[0]
        return {
            "name": self.name,
            "num_snapshots": len(self.snapshots),
            "lags": self.lags,
            "num_nodes": int(first.x.shape[0]),
            "x": tensor_digest(*(s.x for s in self.snapshots)),
            "y": tensor_digest(*(s.y for s in self.snapshots)),
            "edges": tensor_digest(first.edge_index, first.edge_weight),
        }

    def summary(self) -> str:
        s = self.split()
        return (
            f"dataset {self.name} | snapshots {len(self.snapshots)} | nodes "
            f"{self.snapshots[0].x.shape[0]} | lags {self.lags} | split train "
            f"{len(s.train)} / valid {len(s.valid)} / test {len(s.test)} (chronological)"
        )


def chrono_split_fingerprint(split: ChronoSplit) -> str:
    return f"{split.train.start}:{split.valid.start}:{split.test.start}:{split.test.stop}"


def _windows(series: np.ndarray, lags: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """series [T, n] -> features [n, lags] and targets [n] for t = 0 .. T - lags - 1."""
    count = series.shape[0] - lags
    return (
        [series[i : i + lags, :].T for i in range(count)],
        [series[i + lags, :].T for i in range(count)],
    )


def _standardise(series: np.ndarray, eps: float) -> np.ndarray:
    return (series - series.mean(axis=0)) / (series.std(axis=0) + eps)


def _static(edges, weights, features, targets) -> list[Snapshot]:
    ei = torch.as_tensor(np.asarray(edges).T, dtype=torch.long)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float)
    return [
        Snapshot(
            torch.as_tensor(f, dtype=torch.float), ei, w, torch.as_tensor(t, dtype=torch.float)
        )
        for f, t in zip(features, targets)
    ]


def parse_chickenpox(raw: dict, lags: int) -> list[Snapshot]:
    features, targets = _windows(np.array(raw["FX"]), lags)
    return _static(raw["edges"], np.ones(len(raw["edges"])), features, targets)


def parse_wikimath(raw: dict, lags: int) -> list[Snapshot]:
    series = np.stack([np.array(raw[str(t)]["y"]) for t in range(raw["time_periods"])])
    features, targets = _windows(_standardise(series, 0.0), lags)
    return _static(raw["edges"], raw["weights"], features, targets)


def parse_england_covid(raw: dict, lags: int) -> list[Snapshot]:
    features, targets = _windows(_standardise(np.array(raw["y"]), 1e-10), lags)
    mapping = raw["edge_mapping"]
    return [
        Snapshot(
            torch.as_tensor(f, dtype=torch.float),
            torch.as_tensor(np.array(mapping["edge_index"][str(t)]).T, dtype=torch.long),
            torch.as_tensor(np.array(mapping["edge_weight"][str(t)]), dtype=torch.float),
            torch.as_tensor(y, dtype=torch.float),
        )
        for t, (f, y) in enumerate(zip(features, targets))
    ]


FILES = {
    "chickenpox": ("chickenpox.json", parse_chickenpox),
    "covid": ("england_covid.json", parse_england_covid),
    "wikimath": ("wikivital_mathematics.json", parse_wikimath),
}


def load_temporal(name: str, opts, root: DataRoot) -> TemporalDataset:
    fname, parse = FILES[name]
    rel = f"pytorch_geometric_temporal/dataset/{fname}"
    path = root.find(rel)
    if path is None:
        if root.offline:
            raise root.unavailable(name, rel, f"{PGT_URL}/{fname}")
        from torch_geometric.data import download_url

        try:
            download_url(f"{PGT_URL}/{fname}", str((root.cache_dir / rel).parent))
        except OSError as err:
            raise root.unavailable(name, rel, f"{PGT_URL}/{fname}") from err
        path = root.cache_dir / rel
    with open(path) as f:
        raw = json.load(f)
    lags = int(opts.lags)
    if lags < 1:
        raise ValueError(f"dataset.lags must be >= 1, got {lags}")
    return TemporalDataset(
        name=name,
        snapshots=parse(raw, lags),
        lags=lags,
        step=opts.step,
        train_ratio=opts.get("train_ratio", 0.2),
        valid_ratio=opts.get("valid_ratio", 0.2),
    )
