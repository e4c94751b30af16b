"""Datasets: loaders, split protocols and the registry."""
from .base import NodeDataset, split_fingerprint
from .registry import DATASETS, DatasetSpec, get_spec, load_dataset, prepare_for_model
from .sources import DataError, DataRoot, DatasetUnavailable
from .splits import Split

__all__ = ["DATASETS", "DataError", "DataRoot", "DatasetSpec", "DatasetUnavailable", "NodeDataset",
           "Split", "get_spec", "load_dataset", "prepare_for_model", "split_fingerprint"]
