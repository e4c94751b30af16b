"""Datasets: loaders, split protocols and the registry."""

from .base import NodeDataset, split_fingerprint
from .graphs import GraphDataset
from .registry import (
    DATASETS,
    DatasetSpec,
    get_spec,
    load_dataset,
    prepare_for_model,
    registry_name,
)
from .sources import DataError, DataRoot, DatasetUnavailable
from .splits import Split

__all__ = [
    "DATASETS",
    "DataError",
    "DataRoot",
    "DatasetSpec",
    "DatasetUnavailable",
    "GraphDataset",
    "NodeDataset",
    "Split",
    "get_spec",
    "load_dataset",
    "prepare_for_model",
    "registry_name",
    "split_fingerprint",
]
