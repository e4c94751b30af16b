"""GNN baselines of the paper's tables, as plain ``nn.Module``s built from PyG layers.

Structures follow the official ``gnns.py`` (docs/protocols.md §3.1): MLP, GCN, GAT, SGC, APPNP,
GCN-JK / GAT-JK, MixHop and GPR-GNN. Every model takes ``forward(x, edge_index,
edge_weight=None)``; ``requires_graph`` tells whether it reads the edges at all.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import APPNP, GATConv, GCNConv, JumpingKnowledge, MixHopConv, SGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm


def check_depth_dropout(num_layers: int, dropout: float) -> None:
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")


class MLP(nn.Module):
    """Linear -> ReLU -> BatchNorm -> dropout stacks (1 layer = logistic regression)."""

    requires_graph = False

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        use_bn: bool = True,
    ):
        super().__init__()
        check_depth_dropout(num_layers, dropout)
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.bns = nn.ModuleList(
            nn.BatchNorm1d(hidden_channels) if use_bn else nn.Identity()
            for _ in range(num_layers - 1)
        )
        self.dropout = dropout

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, edge_weight: Tensor | None = None
    ) -> Tensor:
        for lin, bn in zip(self.lins[:-1], self.bns):
            x = F.dropout(bn(F.relu(lin(x))), p=self.dropout, training=self.training)
        return self.lins[-1](x)


class GCN(nn.Module):
    """GCNConv stack with optional BatchNorm, ReLU and dropout (Kipf & Welling 2017)."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        use_bn: bool = False,
    ):
        super().__init__()
        check_depth_dropout(num_layers, dropout)
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(GCNConv(a, b, cached=False) for a, b in zip(dims[:-1], dims[1:]))
        self.bns = nn.ModuleList(
            nn.BatchNorm1d(hidden_channels) if use_bn else nn.Identity()
            for _ in range(num_layers - 1)
        )
        self.dropout = dropout

    def forward(self, x, edge_index, edge_weight=None):
        for conv, bn in zip(self.convs[:-1], self.bns):
            x = F.relu(bn(conv(x, edge_index, edge_weight)))
            x = F.dropout(x, p=self.dropout, training=self.training)
        return self.convs[-1](x, edge_index, edge_weight)


class GAT(nn.Module):
    """GATConv stack: concatenated heads, ELU, input and attention dropout; the last layer
    averages ``out_heads`` heads (Velickovic et al. 2018)."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        heads: int = 8,
        out_heads: int = 1,
        dropout: float = 0.6,
    ):
        super().__init__()
        check_depth_dropout(num_layers, dropout)
        self.convs = nn.ModuleList()
        dim = in_channels
        for _ in range(num_layers - 1):
            self.convs.append(GATConv(dim, hidden_channels, heads=heads, dropout=dropout))
            dim = hidden_channels * heads
        self.convs.append(
            GATConv(dim, out_channels, heads=out_heads, concat=False, dropout=dropout)
        )
        self.dropout = dropout

    def forward(self, x, edge_index, edge_weight=None):
        for conv in self.convs[:-1]:
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = F.elu(conv(x, edge_index))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.convs[-1](x, edge_index)


class SGC(nn.Module):
    """Simplified graph convolution: K propagation steps then one linear layer (Wu et al. 2019)."""

    requires_graph = True

    def __init__(self, in_channels: int, out_channels: int, hops: int = 2):
        super().__init__()
        if hops < 1:
            raise ValueError(f"hops must be >= 1, got {hops}")
        # cached: the K-hop features are computed once (one graph per model, as officially)
        self.conv = SGConv(in_channels, out_channels, K=hops, cached=True)

    def forward(self, x, edge_index, edge_weight=None):
        return self.conv(x, edge_index, edge_weight)


class APPNPNet(nn.Module):
    """dropout-Linear-ReLU-dropout-Linear, then APPNP(K, alpha) propagation (Gasteiger 2019)."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        dropout: float = 0.5,
        K: int = 10,
        alpha: float = 0.1,
    ):
        super().__init__()
        check_depth_dropout(1, dropout)
        self.lin1 = nn.Linear(in_channels, hidden_channels)
        self.lin2 = nn.Linear(hidden_channels, out_channels)
        self.prop = APPNP(K=K, alpha=alpha)
        self.dropout = dropout

    def forward(self, x, edge_index, edge_weight=None):
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = F.relu(self.lin1(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.prop(self.lin2(x), edge_index, edge_weight)


class JKNet(nn.Module):
    """GCN-JK / GAT-JK: a GCN or GAT stack whose layer outputs are combined by jumping
    knowledge (``max``, ``cat`` or ``lstm``), then a linear layer (Xu et al. 2018)."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        conv: str = "gcn",
        jk_mode: str = "max",
        heads: int = 2,
    ):
        super().__init__()
        check_depth_dropout(num_layers, dropout)
        if conv not in ("gcn", "gat"):
            raise ValueError(f"conv={conv!r} is not allowed; use 'gcn' or 'gat'")
        if jk_mode not in ("max", "cat", "lstm"):
            raise ValueError(f"jk_mode={jk_mode!r} is not allowed; use max, cat or lstm")
        self.convs = nn.ModuleList()
        dim = in_channels
        for _ in range(num_layers):
            if conv == "gcn":
                self.convs.append(GCNConv(dim, hidden_channels))
            else:
                self.convs.append(GATConv(dim, hidden_channels // heads, heads=heads))
            dim = hidden_channels
        self.jump = JumpingKnowledge(jk_mode, channels=hidden_channels, num_layers=num_layers)
        out_dim = hidden_channels * num_layers if jk_mode == "cat" else hidden_channels
        self.lin = nn.Linear(out_dim, out_channels)
        self.dropout = dropout

    def forward(self, x, edge_index, edge_weight=None):
        outs = []
        for conv in self.convs:
            x = F.relu(conv(x, edge_index))
            x = F.dropout(x, p=self.dropout, training=self.training)
            outs.append(x)
        return self.lin(self.jump(outs))


class MixHop(nn.Module):
    """MixHopConv layers (powers 0..hops concatenated) with BatchNorm, then a linear
    projection (Abu-El-Haija et al. 2019)."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        hops: int = 2,
    ):
        super().__init__()
        check_depth_dropout(num_layers, dropout)
        powers = list(range(hops + 1))
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        dim = in_channels
        for _ in range(num_layers):
            self.convs.append(MixHopConv(dim, hidden_channels, powers=powers))
            dim = hidden_channels * len(powers)
            self.bns.append(nn.BatchNorm1d(dim))
        self.lin = nn.Linear(dim, out_channels)
        self.dropout = dropout

    def forward(self, x, edge_index, edge_weight=None):
        for conv, bn in zip(self.convs, self.bns):
            x = F.relu(bn(conv(x, edge_index, edge_weight)))
            x = F.dropout(x, p=self.dropout, training=self.training)
        return self.lin(x)


class GPRGNN(nn.Module):
    """GPR-GNN (Chien et al. 2021): an MLP, then sum_k gamma_k A^k H with learnable gamma
    initialised as personalised PageRank (alpha), dropout ``dprate`` before propagation."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        dropout: float = 0.5,
        K: int = 10,
        alpha: float = 0.1,
        dprate: float = 0.5,
    ):
        super().__init__()
        check_depth_dropout(1, dropout)
        self.lin1 = nn.Linear(in_channels, hidden_channels)
        self.lin2 = nn.Linear(hidden_channels, out_channels)
        gamma = alpha * (1 - alpha) ** torch.arange(K + 1, dtype=torch.float)
        gamma[-1] = (1 - alpha) ** K
        self.gamma = nn.Parameter(gamma)
        self.K, self.dropout, self.dprate = K, dropout, dprate

    def forward(self, x, edge_index, edge_weight=None):
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = F.relu(self.lin1(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = self.lin2(x)
        x = F.dropout(x, p=self.dprate, training=self.training)
        ei, w = gcn_norm(edge_index, edge_weight, x.shape[0])  # as the official GPR_prop
        adj = torch.sparse_coo_tensor(
            torch.stack([ei[1], ei[0]]), w, (x.shape[0], x.shape[0]), check_invariants=False
        ).coalesce()
        out = self.gamma[0] * x
        for k in range(1, self.K + 1):
            x = torch.sparse.mm(adj, x)
            out = out + self.gamma[k] * x
        return out
