"""More baselines of the paper's tables: label propagation, ManiReg, H2GCN and Dense GAT.

Each declares what it needs through attributes the trainers read (no model names in the loops):

* ``requires_graph`` -- it reads the edges;
* ``set_labels(y, train_idx)`` -- it uses the training labels as input (LP); the shared
  ``evaluate`` calls it before every forward;
* ``auxiliary_loss()`` -- a term the trainers add to the task loss after each training forward
  (ManiReg's Laplacian regulariser; NodeFormer's edge loss);
* no trainable parameter -- the trainers skip optimisation and evaluate once (LP).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import DenseGATConv
from torch_geometric.nn import LabelPropagation as PyGLabelPropagation
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import remove_self_loops

from .baselines import GAT, GCN, MLP, check_depth_dropout


class LabelPropagation(nn.Module):
    """Label propagation (Zhou et al. 2004) through PyG ``LabelPropagation``: the train labels
    (one-hot, or the 0/1 task matrix for multi-label data) diffused ``num_layers`` times with
    ``alpha``; not trainable. Returns class scores."""

    requires_graph = True

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int = 50, alpha: float = 0.9
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.prop = PyGLabelPropagation(num_layers, alpha)
        self.out_channels = out_channels
        self._labels: tuple[Tensor, Tensor] | None = None

    def set_labels(self, y: Tensor, train_idx: Tensor) -> None:
        mask = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
        mask[train_idx] = True
        seeds = torch.zeros(y.shape[0], self.out_channels, device=y.device)
        if y.dim() == 1:
            seeds[train_idx, y[train_idx]] = 1.0
        else:
            seeds[train_idx] = y[train_idx].float()
        self._labels = (seeds, mask)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        if self._labels is None:
            raise RuntimeError(
                "LabelPropagation needs set_labels(y, train_idx) before forward "
                "(the trainers' evaluate() calls it)"
            )
        seeds, mask = self._labels
        return self.prop(seeds, edge_index, mask=mask)


class ManiReg(nn.Module):
    """Manifold regularisation (Belkin et al. 2006): an MLP whose class probabilities are
    smoothed over the graph by ``reg_weight * mean_edges ||p_i - p_j||^2`` (the graph Laplacian
    quadratic form), added to the loss through :meth:`auxiliary_loss`."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        use_bn: bool = False,
        reg_weight: float = 1.0,
    ):
        super().__init__()
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
        self.mlp = MLP(in_channels, hidden_channels, out_channels, num_layers, dropout, use_bn)
        self.reg_weight = reg_weight
        self._reg: Tensor | None = None

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        out = self.mlp(x)
        if self.training:
            p = out.softmax(dim=-1)
            src, dst = edge_index
            self._reg = (p[src] - p[dst]).square().sum(dim=-1).mean()
        return out

    def auxiliary_loss(self) -> Tensor | None:
        if self._reg is None or not self.training:
            return None
        return self.reg_weight * self._reg


def h2gcn_adjacencies(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The official H2GCN ``init_adj``: A without self-loops, and A2 = [A^2 (diagonal
    removed) - A > 0]; both symmetrically normalised without self-loops. Sparse CSR."""
    ei, _ = remove_self_loops(edge_index)
    ones = torch.ones(ei.shape[1], device=ei.device)
    size = (num_nodes, num_nodes)
    a = torch.sparse_coo_tensor(ei, ones, size, check_invariants=False).coalesce()
    a2 = torch.sparse.mm(a, a).coalesce()
    keep = a2.indices()[0] != a2.indices()[1]
    a2 = torch.sparse_coo_tensor(
        a2.indices()[:, keep], a2.values()[keep], size, check_invariants=False
    )
    diff = (a2 - a).coalesce()
    pos = diff.values() > 0
    out = []
    for index in (a.indices(), diff.indices()[:, pos]):
        index, weight = gcn_norm(index, None, num_nodes, add_self_loops=False)
        # message from index[0] to index[1]: row = target
        adj = torch.sparse_coo_tensor(index.flip(0), weight, size, check_invariants=False)
        out.append(adj.coalesce().to_sparse_csr())
    return out[0], out[1]


class H2GCN(nn.Module):
    """H2GCN (Zhu et al. 2020) as the official NodeFormer-repo class: ego embedding, rounds of
    separate 1-hop / strict-2-hop aggregation concatenated, all rounds combined, Linear."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        num_mlp_layers: int = 1,
        use_bn: bool = True,
        conv_dropout: bool = True,
    ):
        super().__init__()
        check_depth_dropout(num_layers, dropout)
        self.feature_embed = MLP(
            in_channels, hidden_channels, hidden_channels, num_mlp_layers, dropout
        )
        self.bns = nn.ModuleList(
            nn.BatchNorm1d(hidden_channels * 2 ** (i + 1)) for i in range(num_layers - 1)
        )
        self.final_project = nn.Linear(hidden_channels * (2 ** (num_layers + 1) - 1), out_channels)
        self.num_layers, self.dropout = num_layers, dropout
        self.use_bn, self.conv_dropout = use_bn, conv_dropout
        self._adjs: tuple[Tensor, tuple[Tensor, Tensor]] | None = None

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        if self._adjs is None or self._adjs[0] is not edge_index:
            self._adjs = (edge_index, h2gcn_adjacencies(edge_index, x.shape[0]))
        adj, adj2 = self._adjs[1]
        x = F.relu(self.feature_embed(x))
        xs = [x]
        if self.conv_dropout:
            x = F.dropout(x, p=self.dropout, training=self.training)
        for i in range(self.num_layers):
            x = torch.cat([adj @ x, adj2 @ x], dim=1)
            if i < self.num_layers - 1 and self.use_bn:
                x = self.bns[i](x)
            xs.append(x)
            if self.conv_dropout:
                x = F.dropout(x, p=self.dropout, training=self.training)
        x = torch.cat(xs, dim=-1)
        if not self.conv_dropout:
            x = F.dropout(x, p=self.dropout, training=self.training)
        return self.final_project(x)


class DenseGAT(nn.Module):
    """GAT over all pairs of nodes (the input graph is ignored): PyG ``DenseGATConv`` on a
    complete adjacency, N^2 x heads memory -- small graphs only."""

    requires_graph = False

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        heads: int = 8,
        dropout: float = 0.6,
    ):
        super().__init__()
        check_depth_dropout(2, dropout)
        self.conv1 = DenseGATConv(in_channels, hidden_channels, heads=heads, dropout=dropout)
        self.conv2 = DenseGATConv(
            hidden_channels * heads, out_channels, heads=1, concat=False, dropout=dropout
        )
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        adj = torch.ones(1, x.shape[0], x.shape[0], device=x.device)
        x = F.dropout(x, p=self.dropout, training=self.training).unsqueeze(0)
        x = F.elu(self.conv1(x, adj))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.conv2(x, adj).squeeze(0)


def on_knn_graph(cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` run on the k-NN graph of the node features instead of the input graph
    (GCN-kNN, GAT-kNN): the model declares ``knn_k`` and the data side builds the graph
    (:func:`difformer.data.prepare_for_model`)."""

    class OnKNNGraph(cls):  # type: ignore[misc,valid-type]
        requires_graph = True

        def __init__(self, *args, knn_k: int = 5, **kwargs):
            super().__init__(*args, **kwargs)
            if knn_k < 1:
                raise ValueError(f"knn_k must be >= 1, got {knn_k}")
            self.knn_k = knn_k

    OnKNNGraph.__name__ = OnKNNGraph.__qualname__ = f"{cls.__name__}KNN"
    return OnKNNGraph


GCN_KNN = on_knn_graph(GCN)
GAT_KNN = on_knn_graph(GAT)
