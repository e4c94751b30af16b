"""SGFormer (Wu et al., NeurIPS 2023) and Polynormer (Deng et al., ICLR 2024).

* :class:`SGFormer` follows the official large-graph ``ours.py``: a one-layer "simple global
  attention" branch whose Q and K are divided by the Frobenius norm of the *whole* [N, H, h]
  tensor (as DIFFormer-s) with numerator ``N v_i + q_i (K^T V)`` and denominator
  ``q_i . sum_j k_j + N``, plus a GCN branch (BatchNorm, ReLU, residual to the input embedding),
  mixed ``gw * gnn + (1 - gw) * attention`` (or concatenated), then a Linear.
* :class:`SGFormerPyG` is PyG's port (``torch_geometric.nn.models.SGFormer``), which normalises
  q and k **per row**; it is a different model numerically and is named apart.
* Every model here takes ``batch`` (a mini-batch of graphs) with attention strictly within each
  graph; PyG's attentions, which mask only V, are fixed in place (:mod:`.attention.pyg_fixes`).
* :class:`Polynormer` wraps PyG's ``Polynormer`` for one full graph: the local (GNN) stack is
  trained alone for ``local_epochs`` epochs, then global attention is switched on, as in the
  official training script (the trainers call :meth:`Polynormer.on_epoch_start`).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .attention import batched as ga
from .difformer import gcn_normalized_adjacency
from .sparse_ops import OperandCache, SparseOperand


def sgformer_attention(qs: Tensor, ks: Tensor, vs: Tensor) -> Tensor:
    """Official ``full_attention_conv``: qs, ks [N, H, M], vs [N, H|1, D] -> [N, H, D]."""
    qs, ks = qs / torch.norm(qs, p=2), ks / torch.norm(ks, p=2)
    n = qs.shape[0]
    numerator = torch.einsum("nhm,hmd->nhd", qs, torch.einsum("lhm,lhd->hmd", ks, vs)) + n * vs
    denominator = torch.einsum("nhm,hm->nh", qs, ks.sum(dim=0)).unsqueeze(-1) + n
    return numerator / denominator


class TransConvLayer(nn.Module):
    def __init__(self, channels: int, num_heads: int, use_weight: bool = True):
        super().__init__()
        self.Wk = nn.Linear(channels, channels * num_heads)
        self.Wq = nn.Linear(channels, channels * num_heads)
        if use_weight:
            self.Wv = nn.Linear(channels, channels * num_heads)
        self.channels, self.num_heads, self.use_weight = channels, num_heads, use_weight

    def forward(
        self, x: Tensor, batch: Tensor | None = None, num_graphs: int | None = None
    ) -> Tensor:
        shape = (-1, self.num_heads, self.channels)
        value = self.Wv(x).reshape(shape) if self.use_weight else x.reshape(-1, 1, self.channels)
        query, key = self.Wq(x).reshape(shape), self.Wk(x).reshape(shape)
        if batch is None:
            return sgformer_attention(query, key, value).mean(dim=1)
        # a mini-batch of graphs: the same formula within each graph (per-graph norms, sums
        # and node counts), so a graph's output does not depend on its batch
        num_graphs = int(batch.max()) + 1 if num_graphs is None else num_graphs
        scale = ga.per_graph_frobenius_scale(query, key, batch, num_graphs)
        return ga.batched_linear_attention(
            query,
            key,
            value,
            batch,
            num_graphs,
            scale,
            self_value=True,
        ).mean(dim=1)


class TransConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        hidden: int,
        num_layers: int,
        num_heads: int,
        dropout: float,
        use_bn: bool,
        use_residual: bool,
        use_weight: bool,
        use_act: bool,
    ):
        super().__init__()
        self.fcs = nn.ModuleList([nn.Linear(in_channels, hidden)])
        self.convs = nn.ModuleList(
            TransConvLayer(hidden, num_heads, use_weight) for _ in range(num_layers)
        )
        self.bns = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(num_layers + 1))
        self.dropout, self.use_bn, self.residual, self.use_act = (
            dropout,
            use_bn,
            use_residual,
            use_act,
        )

    def forward(self, x: Tensor, batch: Tensor | None = None) -> Tensor:
        num_graphs = None if batch is None else int(batch.max()) + 1
        x = self.fcs[0](x)
        if self.use_bn:
            x = self.bns[0](x)
        x = F.dropout(F.relu(x), p=self.dropout, training=self.training)
        previous = x
        for i, conv in enumerate(self.convs):
            x = conv(x, batch, num_graphs)
            if self.residual:
                x = (x + previous) / 2.0  # fixed 1/2, not alpha (official)
            if self.use_bn:
                x = self.bns[i + 1](x)
            if self.use_act:
                x = F.relu(x)
            x = F.dropout(x, p=self.dropout, training=self.training)
            previous = x
        return x


class GraphConvLayer(nn.Module):
    """One GNN layer's weight, named ``W`` as in the official class, so official checkpoints
    load by name (``graph_conv.convs.{i}.W.weight``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.W = nn.Linear(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.W(x)


class GraphConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        hidden: int,
        num_layers: int,
        dropout: float,
        use_bn: bool,
        use_residual: bool,
        use_weight: bool,
        use_init: bool,
        use_act: bool,
    ):
        super().__init__()
        self.fcs = nn.ModuleList([nn.Linear(in_channels, hidden)])
        self.convs = nn.ModuleList(
            GraphConvLayer(2 * hidden if use_init else hidden, hidden) for _ in range(num_layers)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers + 1))
        self.dropout, self.use_bn, self.residual = dropout, use_bn, use_residual
        self.use_weight, self.use_init, self.use_act = use_weight, use_init, use_act
        self._adjacency_cache = OperandCache()  # built once per edge_index (sparse_ops)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        n = x.shape[0]
        adj = self._adjacency_cache.get(
            (edge_index, n), lambda: SparseOperand(gcn_normalized_adjacency(edge_index, n))
        )
        x = self.fcs[0](x)
        if self.use_bn:
            x = self.bns[0](x)
        x = F.dropout(F.relu(x), p=self.dropout, training=self.training)
        x0 = x
        for i, lin in enumerate(self.convs):
            x = adj @ x
            if self.use_init:
                x = lin(torch.cat([x, x0], dim=1))
            elif self.use_weight:
                x = lin(x)
            if self.use_bn:
                x = self.bns[i + 1](x)
            if self.use_act:
                x = F.relu(x)
            x = F.dropout(x, p=self.dropout, training=self.training)
            if self.residual:
                x = x + x0  # official: the list of previous outputs is never appended to
        return x


class SGFormer(nn.Module):
    """Official SGFormer (large-graph version) with its keywords."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        trans_num_layers: int = 1,
        trans_num_heads: int = 1,
        trans_dropout: float = 0.0,
        trans_use_bn: bool = True,
        trans_use_residual: bool = True,
        trans_use_weight: bool = True,
        trans_use_act: bool = False,
        gnn_num_layers: int = 2,
        gnn_dropout: float = 0.0,
        gnn_use_bn: bool = True,
        gnn_use_residual: bool = True,
        gnn_use_weight: bool = True,
        gnn_use_init: bool = False,
        gnn_use_act: bool = True,
        use_graph: bool = True,
        graph_weight: float = 0.5,
        aggregate: str = "add",
    ):
        super().__init__()
        if aggregate not in ("add", "cat"):
            raise ValueError(f"aggregate={aggregate!r} is not allowed; use add or cat")
        self.trans_conv = TransConv(
            in_channels,
            hidden_channels,
            trans_num_layers,
            trans_num_heads,
            trans_dropout,
            trans_use_bn,
            trans_use_residual,
            trans_use_weight,
            trans_use_act,
        )
        # built even without use_graph, as the official class (its weights are in every
        # official checkpoint; unused, they get no gradient)
        self.graph_conv = GraphConv(
            in_channels,
            hidden_channels,
            gnn_num_layers,
            gnn_dropout,
            gnn_use_bn,
            gnn_use_residual,
            gnn_use_weight,
            gnn_use_init,
            gnn_use_act,
        )
        cat = use_graph and aggregate == "cat"
        self.fc = nn.Linear(2 * hidden_channels if cat else hidden_channels, out_channels)
        self.use_graph, self.graph_weight, self.aggregate = use_graph, graph_weight, aggregate

    @property
    def requires_graph(self) -> bool:
        return self.use_graph

    def upgrade_state_dict(self, state_dict: dict) -> dict:
        """Our checkpoints before the official names: ``graph_conv.convs.{i}.weight`` becomes
        ``graph_conv.convs.{i}.W.weight``, and a model without use_graph, which had no
        ``graph_conv`` then, takes this model's (unused) GNN weights."""
        out = {}
        for key, value in state_dict.items():
            old = re.fullmatch(r"graph_conv\.convs\.(\d+)\.(weight|bias)", key)
            out[f"graph_conv.convs.{old[1]}.W.{old[2]}" if old else key] = value
        if not self.use_graph and not any(k.startswith("graph_conv.") for k in out):
            out.update(
                {k: v for k, v in super().state_dict().items() if k.startswith("graph_conv.")}
            )
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return super().load_state_dict(self.upgrade_state_dict(state_dict), strict, assign)

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, batch: Tensor | None = None
    ) -> Tensor:
        """``batch``: a mini-batch of graphs, attention within each graph."""
        z = self.trans_conv(x, batch)
        if self.use_graph:
            g = self.graph_conv(x, edge_index)
            z = (
                self.graph_weight * g + (1 - self.graph_weight) * z
                if self.aggregate == "add"
                else torch.cat([z, g], dim=1)
            )
        return self.fc(z)


class SGFormerPyG(nn.Module):
    """PyG's SGFormer port (per-row q/k normalisation); one graph, ``forward(x, edge_index)``."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        trans_num_layers: int = 1,
        trans_num_heads: int = 1,
        trans_dropout: float = 0.5,
        gnn_num_layers: int = 2,
        gnn_dropout: float = 0.5,
        graph_weight: float = 0.5,
        aggregate: str = "add",
    ):
        super().__init__()
        # optional extra of PyG (its models): imported only when one of these is built
        from torch_geometric.nn.models import SGFormer as PyGSGFormer

        from .attention.pyg_fixes import fix_pyg_attention

        self.model = PyGSGFormer(
            in_channels,
            hidden_channels,
            out_channels,
            trans_num_layers,
            trans_num_heads,
            trans_dropout,
            gnn_num_layers,
            gnn_dropout,
            graph_weight,
            aggregate,
        )
        fix_pyg_attention(self.model)  # PyG masks only V in a batch of graphs (same on one)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> Tensor:
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.model(x, edge_index, batch)


class Polynormer(nn.Module):
    """PyG's Polynormer on one graph, local-only for ``local_epochs`` epochs, then global."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        local_layers: int = 7,
        global_layers: int = 2,
        in_dropout: float = 0.15,
        dropout: float = 0.5,
        global_dropout: float = 0.5,
        heads: int = 1,
        beta: float = 0.9,
        local_epochs: int = 100,
    ):
        super().__init__()
        from torch_geometric.nn.models import Polynormer as PyGPolynormer

        if local_epochs < 0:
            raise ValueError(f"local_epochs must be >= 0, got {local_epochs}")
        from .attention.pyg_fixes import fix_pyg_attention  # start-up: PyG's models, lazily

        self.model = PyGPolynormer(
            in_channels,
            hidden_channels,
            out_channels,
            local_layers,
            global_layers,
            in_dropout,
            dropout,
            global_dropout,
            heads,
            beta,
        )
        fix_pyg_attention(self.model)  # PyG masks only V in a batch of graphs (same on one)
        self.local_epochs = local_epochs
        # A buffer, so a checkpoint remembers whether its weights were trained with attention.
        self.register_buffer("global_on", torch.tensor(local_epochs == 0))

    def on_epoch_start(self, epoch: int) -> None:
        self.global_on.fill_(epoch >= self.local_epochs)  # type: ignore[operator]

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> Tensor:
        self.model._global = bool(self.global_on)
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.model(x, edge_index, batch)
