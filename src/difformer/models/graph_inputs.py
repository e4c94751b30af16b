"""What graph-level models share: input encoders for node and edge features, positional
encodings and per-graph pooling (:mod:`.graph_level`, :mod:`.graph_transformers`,
:mod:`.deepsets` use them)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


class NodeEncoder(nn.Module):
    """Node features -> hidden: OGB's ``AtomEncoder`` (9 categorical features), one embedding
    table (a single categorical column, ``in_channels`` values) or a linear map (dense)."""

    def __init__(self, kind: str, in_channels: int, hidden: int):
        super().__init__()
        if kind not in ("ogb_atom", "categorical", "dense"):
            raise ValueError(
                f"node_input={kind!r} is not allowed; use ogb_atom, categorical or dense"
            )
        if kind == "ogb_atom":
            from ogb.graphproppred.mol_encoder import AtomEncoder

            self.encoder = AtomEncoder(hidden)
        elif kind == "categorical":
            self.encoder = nn.Embedding(in_channels, hidden)
        else:
            self.encoder = nn.Linear(in_channels, hidden)
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "categorical":
            return self.encoder(x.view(-1).long())
        if self.kind == "dense":
            return self.encoder(x.float())
        return self.encoder(x.long())


class EdgeEncoder(nn.Module):
    """Edge features -> hidden: OGB's ``BondEncoder``, one embedding table, a linear map, or
    (``kind=None``: the data has none) one learned vector shared by every edge."""

    def __init__(self, kind: str | None, in_channels: int, hidden: int):
        super().__init__()
        if kind not in (None, "ogb_bond", "categorical", "dense"):
            raise ValueError(
                f"edge_input={kind!r} is not allowed; use ogb_bond, categorical, dense or null"
            )
        if kind == "ogb_bond":
            from ogb.graphproppred.mol_encoder import BondEncoder

            self.encoder = BondEncoder(hidden)
        elif kind == "categorical":
            self.encoder = nn.Embedding(in_channels, hidden)
        elif kind == "dense":
            self.encoder = nn.Linear(in_channels, hidden)
        else:
            self.constant = nn.Parameter(torch.zeros(1, hidden))
        self.kind = kind

    def forward(self, edge_attr: Tensor | None, num_edges: int) -> Tensor:
        if self.kind is None:
            return self.constant.expand(num_edges, -1)
        if self.kind == "categorical":
            return self.encoder(edge_attr.view(-1).long())  # type: ignore[union-attr]
        if self.kind == "dense":
            return self.encoder(edge_attr.float())  # type: ignore[union-attr]
        return self.encoder(edge_attr.long())  # type: ignore[union-attr]


PE_KINDS = ("lap", "rwse")


def flip_signs(pe: Tensor, training: bool) -> Tensor:
    """Laplacian eigenvectors with one random sign per column (shared by every node of the
    batch) in training; unchanged in evaluation."""
    if not training or pe.shape[1] == 0:
        return pe
    sign = torch.randint(0, 2, (pe.shape[1],), device=pe.device).to(pe.dtype) * 2 - 1
    return pe * sign


def pe_kind(pe: str | None, pe_dim: int | None) -> str | None:
    """``pe``: ``lap`` (Laplacian eigenvectors), ``rwse`` (random-walk return probabilities)
    or null / ``none``; checked, None when there is none."""
    if pe not in (*PE_KINDS, None, "none"):
        raise ValueError(f"pe={pe!r} is not allowed; use lap, rwse or none")
    return None if pe in (None, "none") or pe_dim == 0 else pe


def pe_input(kind: str, training: bool, lap_pe: Tensor | None, rwse_pe: Tensor | None) -> Tensor:
    """The encoding a model declared, from the batch (a random sign per Laplacian column in
    training, as GraphGPS)."""
    pe = lap_pe if kind == "lap" else rwse_pe
    if pe is None:
        raise ValueError(f"pe={kind} needs {kind}_pe= (the data's positional encodings)")
    return flip_signs(pe.float(), training) if kind == "lap" else pe.float()


def mean_pool(h: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
    from torch_geometric.nn import global_mean_pool

    return global_mean_pool(h, batch, size=num_graphs)


def num_graphs_of(batch: Tensor | None) -> int:
    return 1 if batch is None else (int(batch.max()) + 1 if batch.numel() else 0)
