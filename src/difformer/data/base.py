"""The in-memory node dataset every loader returns, and its fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from .splits import Split, SplitProtocol


def tensor_digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class NodeDataset:
    """One graph (or a set of instances with a trivial graph) with node labels.

    ``edge_index`` is final: preprocessed as the official code does (undirected where the
    protocol says so, self-loops removed then added once).
    """

    name: str
    x: Tensor
    y: Tensor
    edge_index: Tensor
    num_classes: int
    splits: SplitProtocol
    has_graph: bool = True
    loss: str | None = None  # set by a loader whose file decides it (own data: regression)
    metric: str | None = None
    # own csv/npz data (dataset.scale=standard): every feature column standardised with the
    # statistics of each split's train nodes (data.scaling; fitted by the node task)
    scale: str = "none"

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    def split(self, run: int, seed: int) -> Split:
        return self.splits.split(run, seed)

    def fingerprint(self) -> dict:
        return {
            "name": self.name,
            "num_nodes": self.num_nodes,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "num_edges": int(self.edge_index.shape[1]),
            "x": tensor_digest(self.x),
            "y": tensor_digest(self.y),
            "edge_index": tensor_digest(self.edge_index),
        }

    def summary(self) -> str:
        return (
            f"dataset {self.name} | nodes {self.num_nodes} | edges "
            f"{self.edge_index.shape[1]} | features {self.num_features}"
            f"{'' if self.scale == 'none' else f' ({self.scale}-scaled on each train part)'}"
            f" | classes "
            f"{self.num_classes} | split {self.splits.description}"
        )


def split_fingerprint(split: Split) -> str:
    return tensor_digest(split.train, split.valid, split.test)
