"""Graph and feature preprocessing shared by the loaders (docs/protocols.md §1.1)."""

from __future__ import annotations

import torch
from torch import Tensor


def prepare_edges(edge_index: Tensor, num_nodes: int, undirected: bool = True) -> Tensor:
    """As the official scripts: make undirected, drop existing self-loops, add one per node."""
    # start-up time: PyG (with torch._dynamo, ~3 s here) is imported by the datasets that
    # have a graph, not by every command (a bad input, or a dataset without edges)
    from torch_geometric.utils import add_self_loops, remove_self_loops, to_undirected

    edge_index = edge_index.long()
    if undirected:
        edge_index = to_undirected(edge_index, num_nodes=num_nodes)
    edge_index, _ = remove_self_loops(edge_index)
    edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
    return edge_index


def self_loops(num_nodes: int) -> Tensor:
    """The edge set of a dataset without a graph: one self-loop per instance."""
    idx = torch.arange(num_nodes)
    return torch.stack([idx, idx])


def row_normalize(x: Tensor) -> Tensor:
    """Each row divided by its sum (rows summing to 0 stay 0), as PyG NormalizeFeatures."""
    x = x.float()
    return x / x.sum(dim=-1, keepdim=True).clamp(min=1e-12)
