"""Dataset registry: name -> loader plus the metadata the trainer needs.

The training loop never looks at a dataset's name: task, loss, metric and split protocol
come from the :class:`DatasetSpec` here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import loaders
from .base import NodeDataset
from .sources import DataRoot


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[..., NodeDataset]
    task: str          # "multiclass"
    loss: str          # key of difformer.train.metrics.LOSSES
    metric: str        # key of difformer.train.metrics.METRICS
    protocol: str      # split protocol in words, for the README and logs
    source: str


_PLANETOID = "20 per class / 500 valid / 1000 test, one split (seed) shared by all runs"
_FIXED10 = "10 fixed splits, run i uses split i"

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("cora", loaders.load_planetoid, "multiclass",
                "cross_entropy", "accuracy", _PLANETOID, "Planetoid (Yang et al. 2016)"),
    DatasetSpec("citeseer", loaders.load_planetoid, "multiclass",
                "cross_entropy", "accuracy", _PLANETOID, "Planetoid (Yang et al. 2016)"),
    DatasetSpec("pubmed", loaders.load_planetoid, "multiclass",
                "cross_entropy", "accuracy", _PLANETOID, "Planetoid (Yang et al. 2016)"),
    DatasetSpec("film", loaders.load_film, "multiclass", "cross_entropy", "accuracy",
                _FIXED10 + " (Geom-GCN 60/20/20)", "Geom-GCN (Pei et al. 2020)"),
    DatasetSpec("chameleon", loaders.load_heterophily_npz, "multiclass", "cross_entropy",
                "accuracy", _FIXED10 + " (filtered)", "Platonov et al. 2023"),
    DatasetSpec("squirrel", loaders.load_heterophily_npz, "multiclass", "cross_entropy",
                "accuracy", _FIXED10 + " (filtered)", "Platonov et al. 2023"),
    DatasetSpec("digits", loaders.load_digits, "multiclass", "cross_entropy", "accuracy",
                "L per class / valid / rest, a new split per run", "scikit-learn load_digits"),
]}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(opts, root: DataRoot) -> tuple[NodeDataset, DatasetSpec]:
    """Load the dataset described by the ``dataset`` config node ``opts``."""
    spec = get_spec(opts.name)
    return spec.loader(opts.name, opts, root), spec
