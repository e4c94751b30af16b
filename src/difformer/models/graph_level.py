"""Graph-level models: DIFFormer over mini-batches of graphs and OGB's GNN baselines.

Every graph-level model takes ``forward(x, edge_index, batch=None, edge_attr=None, ...)`` and
returns one prediction per graph [G, out_channels] (``batch`` None: one graph). It is built
with the dataset's feature description (``node_input``, ``edge_input``, ``edge_channels``;
see :class:`~difformer.data.graphs.GraphDataset`) and declares ``level = "graph"`` and the
positional encodings it reads (``positional_encodings``: {"lap": k} or {"rwse": k}).

* :class:`GraphDIFFormer`: the node-level :class:`~.difformer.DIFFormer` with ``batch`` --
  attention strictly within each graph, per-graph constants -- then the mean of each graph's
  node outputs (equal to the output layer applied to the mean embedding).
* :class:`MolGNN`: OGB's ``GNN`` / ``GNN_node(_Virtualnode)`` baselines (Hu et al. 2020):
  GIN with edge features (PyG ``GINEConv``, the same update as OGB's ``GINConv``) or OGB's
  GCN with edge features, 5 layers of 300, BatchNorm, dropout 0.5, last-layer
  representation, mean pooling, optional virtual node.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .difformer import DIFFormer
from .graph_inputs import EdgeEncoder, NodeEncoder, mean_pool, num_graphs_of, pe_input, pe_kind


class GraphDIFFormer(nn.Module):
    """DIFFormer-s/-a for graph-level prediction; the DIFFormer keywords as the node model's
    (the official names), plus the feature description. Dense features enter DIFFormer's
    own input layer; categorical ones (atoms) go through their encoder first.

    ``self_loops``: give every node exactly one self-loop before the GCN branch, as the
    node-level datasets' preprocessing does (the official code's ``gcn_conv`` expects them:
    without, a node drops its own term and a node with no in-edge receives nothing); graph
    datasets are stored without them because GIN and GPS add their own root terms.

    ``pe`` (``lap`` | ``rwse`` | null), ``pe_dim``: positional encodings appended to each node's
    input, so DIFFormer's own input layer learns how to use them.

    ``edge_features`` (where the data has them, ``edge_input`` not null: bonds of molecules):
    each edge's features are encoded (:class:`EdgeEncoder`, width ``hidden_channels``) and
    every node's input gets the mean of its incoming edges' encodings appended (zeros for a
    node without in-edges), so both the attention and the GCN branch see them from the first
    layer on. DIFFormer's layers themselves stay the official ones; the GIN/GCN baselines
    instead add edge encodings to each message. False: edge features are ignored (the
    class default, which old checkpoints of molecule models need; the model configs set it true).
    """

    level = "graph"
    positional_encodings: dict = {}

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        node_input: str = "dense",
        edge_input: str | None = None,
        edge_channels: int = 0,
        self_loops: bool = True,
        pe: str | None = None,
        pe_dim: int | None = None,
        edge_features: bool = False,
        **difformer_kwargs,
    ):
        super().__init__()
        self.self_loops = self_loops
        self.edge_encoder = (
            EdgeEncoder(edge_input, edge_channels, hidden_channels)
            if edge_features and edge_input is not None
            else None
        )
        edge_width = 0 if self.edge_encoder is None else hidden_channels
        pe_dim = 16 if pe_dim is None else pe_dim
        self.pe = pe_kind(pe, pe_dim)
        self.positional_encodings = {self.pe: pe_dim} if self.pe else {}
        self.encoder = (
            None if node_input == "dense" else NodeEncoder(node_input, in_channels, hidden_channels)
        )
        self.difformer = DIFFormer(
            (in_channels if self.encoder is None else hidden_channels)
            + (pe_dim if self.pe else 0)
            + edge_width,
            hidden_channels,
            out_channels,
            **difformer_kwargs,
        )

    @property
    def requires_graph(self) -> bool:
        return self.difformer.use_graph

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        batch: Tensor | None = None,
        edge_attr: Tensor | None = None,
        lap_pe: Tensor | None = None,
        rwse_pe: Tensor | None = None,
    ) -> Tensor:
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = x.float() if self.encoder is None else self.encoder(x)
        if self.pe is not None:
            h = torch.cat([h, pe_input(self.pe, self.training, lap_pe, rwse_pe)], dim=1)
        if self.edge_encoder is not None:
            h = torch.cat([h, self.incoming_edges(edge_index, edge_attr, x.shape[0])], dim=1)
        if self.self_loops and edge_index is not None and self.difformer.use_graph:
            from torch_geometric.utils import add_self_loops, remove_self_loops

            edge_index = add_self_loops(remove_self_loops(edge_index)[0], num_nodes=x.shape[0])[0]
        out = self.difformer(h, edge_index, batch=batch)
        return mean_pool(out, batch, num_graphs_of(batch))

    def incoming_edges(
        self, edge_index: Tensor | None, edge_attr: Tensor | None, num_nodes: int
    ) -> Tensor:
        """The mean encoding of each node's incoming edges [N, hidden] (zeros without any)."""
        from torch_geometric.utils import scatter

        assert self.edge_encoder is not None
        if edge_index is None or edge_attr is None:
            raise ValueError(
                f"this model reads edge features (edge_input={self.edge_encoder.kind}): pass "
                "edge_index and edge_attr, or build it with edge_features=False"
            )
        encoded = self.edge_encoder(edge_attr, edge_index.shape[1])
        return scatter(encoded, edge_index[1], dim=0, dim_size=num_nodes, reduce="mean")


class MolGCNConv(nn.Module):
    """OGB's ``GCNConv`` with edge features: a linear map, messages
    ``norm_ij * relu(h_j + e_ij)`` with ``norm = 1/sqrt((d_i+1)(d_j+1))``, plus
    ``relu(h_i + root) / (d_i + 1)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, channels)
        self.root = nn.Embedding(1, channels)

    def forward(self, h: Tensor, edge_index: Tensor, edge_emb: Tensor) -> Tensor:
        from torch_geometric.utils import scatter

        h = self.linear(h)
        src, dst = edge_index
        deg = (
            torch.zeros(h.shape[0], device=h.device).index_add_(
                0, src, torch.ones_like(src, dtype=h.dtype)
            )
            + 1
        )
        norm = (deg[src] * deg[dst]).rsqrt().unsqueeze(-1)
        messages = norm * F.relu(h[src] + edge_emb)
        out = scatter(messages, dst, dim=0, dim_size=h.shape[0], reduce="sum")
        return out + F.relu(h + self.root.weight) / deg.unsqueeze(-1)


def _mlp(channels: int, out: int | None = None) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(channels, 2 * channels),
        nn.BatchNorm1d(2 * channels),
        nn.ReLU(),
        nn.Linear(2 * channels, out or channels),
    )


class MolGNN(nn.Module):
    """OGB's graph-property GNN baselines: ``conv='gin'`` or ``'gcn'``, ``virtual_node``."""

    level = "graph"
    requires_graph = True
    positional_encodings: dict = {}

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 5,
        dropout: float = 0.5,
        conv: str = "gin",
        virtual_node: bool = False,
        node_input: str = "dense",
        edge_input: str | None = None,
        edge_channels: int = 0,
        pe: str | None = None,
        pe_dim: int | None = None,
    ):
        super().__init__()
        from torch_geometric.nn import GINEConv

        pe_dim = 16 if pe_dim is None else pe_dim
        self.pe = pe_kind(pe, pe_dim)  # added to the node embedding, as GraphGPS does
        self.positional_encodings = {self.pe: pe_dim} if self.pe else {}
        self.pe_encoder = nn.Linear(pe_dim, hidden_channels) if self.pe else None

        if conv not in ("gin", "gcn"):
            raise ValueError(f"conv={conv!r} is not allowed; use gin or gcn")
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2, got {num_layers}")
        self.node_encoder = NodeEncoder(node_input, in_channels, hidden_channels)
        # one edge encoder per layer, as OGB's convolutions each own a BondEncoder
        self.edge_encoders = nn.ModuleList(
            EdgeEncoder(edge_input, edge_channels, hidden_channels) for _ in range(num_layers)
        )
        self.convs = nn.ModuleList(
            GINEConv(_mlp(hidden_channels), train_eps=True)
            if conv == "gin"
            else MolGCNConv(hidden_channels)
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden_channels) for _ in range(num_layers))
        self.virtual_node = virtual_node
        if virtual_node:
            self.vn_embedding = nn.Embedding(1, hidden_channels)
            nn.init.constant_(self.vn_embedding.weight, 0.0)
            self.vn_mlps = nn.ModuleList(
                nn.Sequential(_mlp(hidden_channels), nn.BatchNorm1d(hidden_channels), nn.ReLU())
                for _ in range(num_layers - 1)
            )
        self.head = nn.Linear(hidden_channels, out_channels)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor | None = None,
        edge_attr: Tensor | None = None,
        lap_pe: Tensor | None = None,
        rwse_pe: Tensor | None = None,
    ) -> Tensor:
        from torch_geometric.nn import global_add_pool

        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        num_graphs = num_graphs_of(batch)
        h = self.node_encoder(x)
        if self.pe is not None:
            h = h + self.pe_encoder(pe_input(self.pe, self.training, lap_pe, rwse_pe))  # type: ignore[misc]
        vn = self.vn_embedding.weight.expand(num_graphs, -1) if self.virtual_node else None
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            if vn is not None:
                h = h + vn[batch]
            edge_emb = self.edge_encoders[i](edge_attr, edge_index.shape[1])
            out = self.norms[i](conv(h, edge_index, edge_emb))
            out = F.dropout(out if i == last else F.relu(out), self.dropout, self.training)
            if vn is not None and i < last:
                pooled = global_add_pool(h, batch, size=num_graphs) + vn
                vn = F.dropout(self.vn_mlps[i](pooled), self.dropout, self.training)
            h = out
        return self.head(mean_pool(h, batch, num_graphs))
