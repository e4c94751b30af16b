"""A structure-agnostic graph baseline: Deep Sets (Zaheer et al., NeurIPS 2017).

An MLP on each node's features, summed over each graph, and an MLP on the sum. It never reads
the edges, so on a graph benchmark it is the floor a graph model must clear to show that the
structure helps: Errica et al. (ICLR 2020, "A fair comparison of graph neural networks for
graph classification") use it for exactly that. A plain ``nn.Module``; no framework imports.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .graph_inputs import NodeEncoder, num_graphs_of


class DeepSets(nn.Module):
    level = "graph"
    requires_graph = False
    positional_encodings: dict = {}

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        node_input: str = "dense",
        edge_input: str | None = None,
        edge_channels: int = 0,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.node_encoder = NodeEncoder(node_input, in_channels, hidden_channels)
        self.phi = nn.ModuleList(
            nn.Linear(hidden_channels, hidden_channels) for _ in range(num_layers)
        )
        self.rho = nn.Linear(hidden_channels, hidden_channels)
        self.head = nn.Linear(hidden_channels, out_channels)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        batch: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> Tensor:
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = self.node_encoder(x)
        for layer in self.phi:
            h = F.dropout(F.relu(layer(h)), self.dropout, self.training)
        pooled = h.new_zeros(num_graphs_of(batch), h.shape[1]).index_add_(0, batch, h)
        pooled = F.dropout(F.relu(self.rho(pooled)), self.dropout, self.training)
        return self.head(pooled)
