"""Spatial-temporal baselines of Table 4: DCRNN and MPNN-LSTM, written out from the PyG
Temporal layers the official ``spatial-temporal/gnns.py`` wraps (that package cannot be
imported here: it needs the compiled ``torch_sparse``). ``forward(x, edge_index, edge_weight)``
on one snapshot returns [N, out]; as in the official code the recurrent state starts at zero
for every snapshot (window 1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GCNConv


def _random_walk(edge_index: Tensor, weight: Tensor, num_nodes: int, reverse: bool) -> Tensor:
    """Sparse D_out^-1 A (forward walk) or D_in^-1 A^T (backward walk), as [N, N] CSR."""
    src, dst = edge_index
    if reverse:
        src, dst = dst, src
    deg = torch.zeros(num_nodes, device=weight.device).scatter_add_(0, src, weight)
    value = torch.nan_to_num(weight / deg[src], posinf=0.0)
    # (T x)[s] = sum over edges s -> d of w / deg(s) * x[d]  (messages flow d -> s, as DConv)
    adj = torch.sparse_coo_tensor(
        torch.stack([src, dst]), value, (num_nodes, num_nodes), check_invariants=False
    )
    return adj.coalesce().to_sparse_csr()


def random_walks(edge_index: Tensor, weight: Tensor, num_nodes: int) -> list[Tensor]:
    """[D_out^-1 A, D_in^-1 A^T]: the two diffusion directions of :class:`DConv`."""
    return [_random_walk(edge_index, weight, num_nodes, reverse) for reverse in (False, True)]


class DConv(nn.Module):
    """Diffusion convolution (Li et al. 2018, PyG Temporal ``DConv``): 2 x K weight matrices,
    forward and backward random walks with the Chebyshev-style recursion T_k = 2 T T_{k-1} -
    T_{k-2}; xavier-initialised. With K = 1 (the official default) it uses no edges."""

    def __init__(self, in_channels: int, out_channels: int, K: int):
        super().__init__()
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        self.weight = nn.Parameter(torch.empty(2, K, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor, walks: list[Tensor] | None) -> Tensor:
        """``walks``: the forward and backward random-walk matrices (:func:`random_walks`),
        built once per snapshot by the caller; unused (None is fine) when K = 1."""
        h = x @ self.weight[0, 0] + x @ self.weight[1, 0]
        if self.weight.shape[1] > 1:
            for d, walk in enumerate(walks):  # type: ignore[arg-type]
                t0, t1 = x, walk @ x
                h = h + t1 @ self.weight[d, 1]
                for k in range(2, self.weight.shape[1]):
                    t0, t1 = t1, 2.0 * (walk @ t1) - t0
                    h = h + t1 @ self.weight[d, k]
        return h + self.bias


class DCRNN(nn.Module):
    """One DCRNN (GRU with diffusion convolutions) step from a zero state, ReLU, dropout,
    Linear."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int = 1,
        K: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        cat = in_channels + hidden_channels
        self.conv_z, self.conv_r, self.conv_h = (DConv(cat, hidden_channels, K) for _ in range(3))
        self.lin = nn.Linear(hidden_channels, out_channels)
        self.hidden_channels, self.dropout, self.K = hidden_channels, dropout, K

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.shape[1], device=x.device)
        # The three gates share one pair of random-walk matrices (only K > 1 uses them).
        walks = random_walks(edge_index, edge_weight, x.shape[0]) if self.K > 1 else None
        h = x.new_zeros(x.shape[0], self.hidden_channels)
        xh = torch.cat([x, h], dim=1)
        z = torch.sigmoid(self.conv_z(xh, walks))
        r = torch.sigmoid(self.conv_r(xh, walks))
        h_tilde = torch.tanh(self.conv_h(torch.cat([x, h * r], dim=1), walks))
        h = z * h + (1 - z) * h_tilde
        h = F.dropout(F.relu(h), p=self.dropout, training=self.training)
        return self.lin(h)


class MPNNLSTM(nn.Module):
    """MPNN-LSTM (Panagopoulos et al. 2021, PyG Temporal ``MPNNLSTM``, window 1): two
    GCNConv + BatchNorm blocks, two LSTMs over the (length-1) sequence, the two LSTM states and
    the input concatenated, ReLU, dropout, Linear."""

    requires_graph = True

    def __init__(
        self, in_channels: int, hidden_channels: int, out_channels: int = 1, dropout: float = 0.5
    ):
        super().__init__()
        self.conv1 = GCNConv(in_channels, hidden_channels)
        self.conv2 = GCNConv(hidden_channels, hidden_channels)
        self.bn1 = nn.BatchNorm1d(hidden_channels)
        self.bn2 = nn.BatchNorm1d(hidden_channels)
        self.rnn1 = nn.LSTM(2 * hidden_channels, hidden_channels, 1)
        self.rnn2 = nn.LSTM(hidden_channels, hidden_channels, 1)
        self.lin = nn.Linear(2 * hidden_channels + in_channels, out_channels)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        h1 = F.dropout(
            self.bn1(F.relu(self.conv1(x, edge_index, edge_weight))),
            p=self.dropout,
            training=self.training,
        )
        h2 = F.dropout(
            self.bn2(F.relu(self.conv2(h1, edge_index, edge_weight))),
            p=self.dropout,
            training=self.training,
        )
        seq = torch.cat([h1, h2], dim=1).unsqueeze(0)  # [window = 1, N, 2h]
        seq, (state1, _) = self.rnn1(seq)
        _, (state2, _) = self.rnn2(seq)
        h = torch.cat([state1[0], state2[0], x], dim=1)
        return self.lin(F.dropout(F.relu(h), p=self.dropout, training=self.training))
