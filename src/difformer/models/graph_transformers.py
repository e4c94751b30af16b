"""Graph transformers for graph-level prediction: the Gated Graph Transformer and GraphGPS.

* :class:`GatedGCNLayer`: residual gated graph convolution with node and edge streams
  (Bresson & Laurent 2017, as in benchmarking-gnns): ``e'_ij = D h_i + E h_j + C e_ij``,
  ``h'_i = A h_i + sum_j sigmoid(e'_ij) * B h_j / (sum_j sigmoid(e'_ij) + eps)``.
* :class:`GatedGT`: OGB atom/bond encoders, Laplacian eigenvector PE (k = 10) added to the
  atom embedding, with one random sign per eigenvector and batch in training only (the
  eigenvectors' signs are arbitrary; benchmarking-gnns' flip); pre-norm blocks -- BatchNorm ->
  GatedGCN (both streams) -> residual, BatchNorm -> feed-forward of 4x width -> residual --;
  a final BatchNorm; the mean of the nodes and the mean of the edges of each graph,
  concatenated, into an MLP head.
* :class:`GPS`: GraphGPS layers through PyG's ``GPSConv`` (local GINE or GatedGCN plus global
  multi-head attention over each graph's nodes, BatchNorm), LapPE or RWSE added to the node
  embedding, mean pooling, an MLP head. ``GPSConv`` pads each graph with ``to_dense_batch``
  and masks the padding as attention keys, so a graph's output does not depend on its batch
  (tested).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .graph_inputs import (
    EdgeEncoder,
    NodeEncoder,
    flip_signs,
    mean_pool,
    num_graphs_of,
    pe_input,
    pe_kind,
)


class GatedGCNLayer(nn.Module):
    """One GatedGCN step: (h [N, d], e [E, d]) -> (h', e'), messages from ``edge_index[0]``
    (j) to ``edge_index[1]`` (i)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.A, self.B, self.C, self.D, self.E = (nn.Linear(channels, channels) for _ in range(5))
        self.eps = eps

    def reset_parameters(self) -> None:
        for lin in (self.A, self.B, self.C, self.D, self.E):
            lin.reset_parameters()

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        from torch_geometric.utils import scatter

        src, dst = edge_index
        e_new = self.D(h)[dst] + self.E(h)[src] + self.C(e)
        gate = torch.sigmoid(e_new)
        n = h.shape[0]
        numerator = scatter(gate * self.B(h)[src], dst, dim=0, dim_size=n, reduce="sum")
        denominator = scatter(gate, dst, dim=0, dim_size=n, reduce="sum")
        return self.A(h) + numerator / (denominator + self.eps), e_new


class GatedGCNNodeConv(GatedGCNLayer):
    """GatedGCN as a node-only local convolution for ``GPSConv`` (which keeps one stream)."""

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:  # type: ignore[override]  # noqa: D102
        return super().forward(h, edge_index, edge_attr)[0]


class GatedGTBlock(nn.Module):
    def __init__(self, channels: int, dropout: float, ffn_ratio: int):
        super().__init__()
        self.norm_h, self.norm_e, self.norm_ffn = (nn.BatchNorm1d(channels) for _ in range(3))
        self.conv = GatedGCNLayer(channels)
        self.ffn = nn.Sequential(
            nn.Linear(channels, ffn_ratio * channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_ratio * channels, channels),
        )
        self.dropout = dropout

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        dh, de = self.conv(self.norm_h(h), edge_index, self.norm_e(e))
        h = h + F.dropout(F.relu(dh), self.dropout, self.training)
        e = e + F.dropout(F.relu(de), self.dropout, self.training)
        h = h + F.dropout(self.ffn(self.norm_ffn(h)), self.dropout, self.training)
        return h, e


class GatedGT(nn.Module):
    """The Gated Graph Transformer (pre-norm GatedGCN blocks with LapPE)."""

    level = "graph"
    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 4,
        dropout: float = 0.0,
        lap_pe: int = 10,
        ffn_ratio: int = 4,
        node_input: str = "dense",
        edge_input: str | None = None,
        edge_channels: int = 0,
    ):
        super().__init__()
        if lap_pe < 0:
            raise ValueError(f"lap_pe must be >= 0, got {lap_pe}")
        self.node_encoder = NodeEncoder(node_input, in_channels, hidden_channels)
        self.edge_encoder = EdgeEncoder(edge_input, edge_channels, hidden_channels)
        self.pe_encoder = nn.Linear(lap_pe, hidden_channels) if lap_pe else None
        self.blocks = nn.ModuleList(
            GatedGTBlock(hidden_channels, dropout, ffn_ratio) for _ in range(num_layers)
        )
        self.norm_h, self.norm_e = nn.BatchNorm1d(hidden_channels), nn.BatchNorm1d(hidden_channels)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden_channels, hidden_channels),
            nn.ReLU(),
            nn.Linear(hidden_channels, out_channels),
        )
        self.positional_encodings = {"lap": lap_pe} if lap_pe else {}

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor | None = None,
        edge_attr: Tensor | None = None,
        lap_pe: Tensor | None = None,
    ) -> Tensor:
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        num_graphs = num_graphs_of(batch)
        h = self.node_encoder(x)
        if self.pe_encoder is not None:
            if lap_pe is None:
                raise ValueError("GatedGT with lap_pe > 0 needs lap_pe= (Laplacian eigenvectors)")
            h = h + self.pe_encoder(flip_signs(lap_pe.float(), self.training))
        e = self.edge_encoder(edge_attr, edge_index.shape[1])
        for block in self.blocks:
            h, e = block(h, edge_index, e)
        h, e = self.norm_h(h), self.norm_e(e)
        pooled = torch.cat(
            [mean_pool(h, batch, num_graphs), mean_pool(e, batch[edge_index[0]], num_graphs)],
            dim=-1,
        )
        return self.head(pooled)


class GPS(nn.Module):
    """GraphGPS (Rampasek et al., NeurIPS 2022) with PyG's ``GPSConv``."""

    level = "graph"
    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 5,
        heads: int = 4,
        dropout: float = 0.0,
        attn_dropout: float = 0.5,
        local: str = "gine",
        pe: str = "rwse",
        pe_dim: int = 16,
        node_input: str = "dense",
        edge_input: str | None = None,
        edge_channels: int = 0,
    ):
        super().__init__()
        from torch_geometric.nn import GINEConv, GPSConv

        if local not in ("gine", "gatedgcn"):
            raise ValueError(f"local={local!r} is not allowed; use gine or gatedgcn")
        if hidden_channels % heads:
            raise ValueError(
                f"hidden_channels={hidden_channels} must be divisible by heads={heads}"
            )
        self.pe = pe_kind(pe, pe_dim)
        self.node_encoder = NodeEncoder(node_input, in_channels, hidden_channels)
        self.edge_encoder = EdgeEncoder(edge_input, edge_channels, hidden_channels)
        self.pe_encoder = nn.Linear(pe_dim, hidden_channels) if self.pe else None

        def local_conv():
            if local == "gatedgcn":
                return GatedGCNNodeConv(hidden_channels)
            return GINEConv(
                nn.Sequential(
                    nn.Linear(hidden_channels, hidden_channels),
                    nn.ReLU(),
                    nn.Linear(hidden_channels, hidden_channels),
                )
            )

        self.layers = nn.ModuleList(
            GPSConv(
                hidden_channels,
                local_conv(),
                heads=heads,
                dropout=dropout,
                attn_type="multihead",
                attn_kwargs={"dropout": attn_dropout},
            )
            for _ in range(num_layers)
        )
        self.head = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels),
            nn.ReLU(),
            nn.Linear(hidden_channels, out_channels),
        )
        self.positional_encodings = {self.pe: pe_dim} if self.pe else {}

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor | None = None,
        edge_attr: Tensor | None = None,
        lap_pe: Tensor | None = None,
        rwse_pe: Tensor | None = None,
    ) -> Tensor:
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = self.node_encoder(x)
        if self.pe is not None:
            h = h + self.pe_encoder(pe_input(self.pe, self.training, lap_pe, rwse_pe))  # type: ignore[misc]
        e = self.edge_encoder(edge_attr, edge_index.shape[1])
        for layer in self.layers:
            h = layer(h, edge_index, batch, edge_attr=e)
        return self.head(mean_pool(h, batch, num_graphs_of(batch)))
