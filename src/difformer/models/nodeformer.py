"""NodeFormer (Wu et al., NeurIPS 2022), following the official ``nodeformer.py``.

Kernelised softmax attention with Performer positive random features (M of them), a
Gumbel-softmax variant with K samples during training, an optional relational bias from the
input adjacency (and its powers up to ``rb_order``), and an edge-level regularisation loss
(``lambda * mean over layers of -mean(d_in^-1 log a_e)``) exposed through
:meth:`NodeFormer.auxiliary_loss`, which the trainers add to the task loss.

Where we differ, and why (outputs are unchanged):

* the random projection is drawn from a local ``torch.Generator`` seeded exactly as the official
  code seeds the global RNG (``ceil(|sum(Q)| * 1e8)`` cast to int32, then +1 per block), so the
  matrices are the same, but the caller's RNG stream is left alone;
* ``torch.linalg.qr`` replaces the removed ``torch.qr`` (same factorisation);
* the sparse products use ``torch.sparse`` instead of ``torch_sparse``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def create_projection_matrix(m: int, d: int, seed: int = 0, scaling: int = 0) -> Tensor:
    """Official ``create_projection_matrix`` (unstructured): stacked orthogonal blocks, rows
    rescaled by the norms of Gaussian vectors (``scaling=0``) or by sqrt(d) (``scaling=1``)."""
    blocks, current = [], int(seed)
    for _ in range(m // d):
        g = torch.Generator().manual_seed(current)
        q, _ = torch.linalg.qr(torch.randn((d, d), generator=g))
        blocks.append(q.t())
        current += 1
    remaining = m - (m // d) * d
    if remaining > 0:
        g = torch.Generator().manual_seed(current)
        q, _ = torch.linalg.qr(torch.randn((d, d), generator=g))
        blocks.append(q.t()[:remaining])
    final = torch.vstack(blocks)
    current += 1
    g = torch.Generator().manual_seed(current)
    if scaling == 0:
        multiplier = torch.norm(torch.randn((m, d), generator=g), dim=1)
    elif scaling == 1:
        multiplier = math.sqrt(d) * torch.ones(m)
    else:
        raise ValueError(f"scaling must be 0 or 1, got {scaling}")
    return torch.diag(multiplier) @ final


def softmax_kernel(
    data: Tensor, is_query: bool, projection: Tensor, stabilizer: float = 1e-6
) -> Tensor:
    """Positive random features of exp(q.k / sqrt(d)); data [B, N, H, D] -> [B, N, H, M].
    Query features subtract their own row max, key features the global max (both cancel in
    the attention's normalisation)."""
    data = data / math.sqrt(math.sqrt(data.shape[-1]))
    ratio = 1.0 / math.sqrt(projection.shape[0])
    dash = torch.einsum("bnhd,md->bnhm", data, projection)
    diag = (data.square().sum(dim=-1) / 2.0).unsqueeze(-1)
    if is_query:
        shift = dash.max(dim=-1, keepdim=True)[0]
    else:
        shift = dash.max(dim=-1, keepdim=True)[0].max(dim=1, keepdim=True)[0]
    return ratio * (torch.exp(dash - diag - shift) + stabilizer)


def _edge_weights(q_prime: Tensor, k_prime: Tensor, edge_index: Tensor) -> Tensor:
    """Attention probability of every input edge (source -> target), [B, E, H]; O(E)."""
    start, end = edge_index
    num = torch.einsum("nbhm,nbhm->nbh", q_prime[end], k_prime[start])
    den = torch.einsum("nbhm,bhm->nbh", q_prime, k_prime.sum(dim=0))[end]
    return (num / den).permute(1, 0, 2)


def _node_major_features(
    query: Tensor, key: Tensor, value: Tensor, projection: Tensor, tau: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Random features of q / sqrt(tau) and k / sqrt(tau), and v, all as [N, B, H, .]."""
    q = softmax_kernel(query / math.sqrt(tau), True, projection).permute(1, 0, 2, 3)
    k = softmax_kernel(key / math.sqrt(tau), False, projection).permute(1, 0, 2, 3)
    return q, k, value.permute(1, 0, 2, 3)


def kernelized_softmax(
    query: Tensor, key: Tensor, value: Tensor, projection: Tensor, edge_index: Tensor, tau: float
) -> tuple[Tensor, Tensor]:
    """All-pair attention in O(N): [B, N, H, D] in, ([B, N, H, D], edge weights [B, E, H])."""
    q, k, v = _node_major_features(query, key, value, projection, tau)
    num = torch.einsum("nbhm,bhmd->nbhd", q, torch.einsum("nbhm,nbhd->bhmd", k, v))
    den = torch.einsum("nbhm,bhm->nbh", q, k.sum(dim=0)).unsqueeze(-1)
    return (num / den).permute(1, 0, 2, 3), _edge_weights(q, k, edge_index)


def reseed_like_official(seed: int, m: int, d: int) -> None:
    """Leave the *global* RNG where the official ``create_projection_matrix`` leaves it: it
    seeds the global generator (last with ``seed + m // d + 1``) and draws the [m, d] scaling
    Gaussians from it. The dropout and Gumbel noise that follow are then a function of the
    queries' sum; on Cora that sum saturates the int32 seed, so the noise is the same at every
    step and the runs after the first restart from the same state (``official_rng=True``
    replays this; the default keeps the caller's RNG stream independent)."""
    torch.manual_seed(seed + m // d + 1)
    torch.randn((m, d))


def kernelized_gumbel_softmax(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    projection: Tensor,
    edge_index: Tensor,
    num_samples: int,
    tau: float,
) -> tuple[Tensor, Tensor]:
    """Training-time variant: each key is reweighted by exp(Gumbel / tau), K samples averaged."""
    q, k, v = _node_major_features(query, key, value, projection, tau)
    gumbels = -torch.empty(k.shape[:-1] + (num_samples,), device=k.device).exponential_().log()
    k_gumbel = k.unsqueeze(3) * (gumbels / tau).exp().unsqueeze(4)  # [N, B, H, K, M]
    num = torch.einsum("nbhm,bhkmd->nbhkd", q, torch.einsum("nbhkm,nbhd->bhkmd", k_gumbel, v))
    den = torch.einsum("nbhm,bhkm->nbhk", q, k_gumbel.sum(dim=0)).unsqueeze(-1)
    out = (num / den).permute(1, 0, 2, 3, 4).mean(dim=3)
    return out, _edge_weights(q, k, edge_index)


def normalized_adjacency(
    edge_index: Tensor, num_nodes: int, weight: Tensor | None = None
) -> Tensor:
    """Sparse [N, N] with A[t, s] = w / sqrt(d_in(t) d_out(s)) (official relational bias)."""
    row, col = edge_index
    ones = torch.ones_like(row, dtype=torch.float)
    d_in = torch.zeros(num_nodes, device=row.device).scatter_add_(0, col, ones)
    d_out = torch.zeros(num_nodes, device=row.device).scatter_add_(0, row, ones)
    value = (1.0 / d_in[col]).sqrt() * (1.0 / d_out[row]).sqrt()
    if weight is not None:
        value = value * weight
    return torch.sparse_coo_tensor(
        torch.stack([col, row]), value, (num_nodes, num_nodes), check_invariants=False
    )


def adjacency_powers(edge_index: Tensor, num_nodes: int, order: int) -> list[Tensor]:
    """``order`` adjacencies as edge_index, each the structure of the previous one squared
    (A, A^2, A^4, ...), as the official loop ``adj = adj_mul(adj, adj, n)``."""
    adjs = [edge_index]
    for _ in range(order - 1):
        a = torch.sparse_coo_tensor(
            adjs[-1],
            torch.ones(adjs[-1].shape[1], device=edge_index.device),
            (num_nodes, num_nodes),
            check_invariants=False,
        )
        adjs.append(torch.sparse.mm(a, a).coalesce().indices())
    return adjs


class NodeFormerConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_heads: int,
        nb_random_features: int = 10,
        use_gumbel: bool = True,
        nb_gumbel_sample: int = 10,
        rb_order: int = 0,
        rb_trans: str = "sigmoid",
        use_edge_loss: bool = True,
        official_rng: bool = False,
    ):
        super().__init__()
        if rb_trans not in ("sigmoid", "identity"):
            raise ValueError(f"rb_trans={rb_trans!r} is not allowed; use sigmoid or identity")
        self.Wk = nn.Linear(in_channels, out_channels * num_heads)
        self.Wq = nn.Linear(in_channels, out_channels * num_heads)
        self.Wv = nn.Linear(in_channels, out_channels * num_heads)
        self.Wo = nn.Linear(out_channels * num_heads, out_channels)
        if rb_order >= 1:
            self.b = nn.Parameter(torch.empty(rb_order, num_heads))
        self.out_channels, self.num_heads = out_channels, num_heads
        self.nb_random_features, self.use_gumbel = nb_random_features, use_gumbel
        self.nb_gumbel_sample, self.rb_order, self.rb_trans = nb_gumbel_sample, rb_order, rb_trans
        self.use_edge_loss, self.official_rng = use_edge_loss, official_rng
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.Wk, self.Wq, self.Wv, self.Wo):
            lin.reset_parameters()
        if self.rb_order >= 1:
            nn.init.constant_(self.b, 0.1 if self.rb_trans == "sigmoid" else 1.0)

    def forward(
        self, z: Tensor, adjs: list[Tensor], tau: float, rb_mats: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """z [B, N, h]; adjs: edge_index of A, A^2, A^4, ...; rb_mats: their normalised sparse
        matrices (:func:`normalized_adjacency`), needed when ``rb_order`` >= 1."""
        b, n = z.shape[0], z.shape[1]
        shape = (b, n, self.num_heads, self.out_channels)
        query, key, value = (
            self.Wq(z).reshape(shape),
            self.Wk(z).reshape(shape),
            self.Wv(z).reshape(shape),
        )
        seed = int(torch.ceil(torch.abs(query.sum() * 1e8)).to(torch.int32))
        projection = create_projection_matrix(
            self.nb_random_features, self.out_channels, seed=seed
        ).to(query.device)
        if self.official_rng:
            reseed_like_official(seed, self.nb_random_features, self.out_channels)
        if self.use_gumbel and self.training:
            z_next, weight = kernelized_gumbel_softmax(
                query, key, value, projection, adjs[0], self.nb_gumbel_sample, tau
            )
        else:
            z_next, weight = kernelized_softmax(query, key, value, projection, adjs[0], tau)
        for i in range(self.rb_order):
            # Official: per head, (b_h D_in^-1/2 A_i D_out^-1/2) V_h. The scalar b_h is pulled out
            # of the sparse product, so one product serves every head (same numbers).
            b_i = torch.sigmoid(self.b[i]) if self.rb_trans == "sigmoid" else self.b[i]
            flat = value.permute(1, 0, 2, 3).reshape(n, -1)  # [N, B * H * D]
            prop = (rb_mats[i] @ flat).reshape(n, b, self.num_heads, self.out_channels)  # type: ignore[index]
            z_next = z_next + prop.permute(1, 0, 2, 3) * b_i.view(1, 1, -1, 1)
        z_next = self.Wo(z_next.flatten(-2, -1))
        if not self.use_edge_loss:
            return z_next, None
        col = adjs[0][1]
        d_in = torch.zeros(n, device=col.device).scatter_add_(
            0, col, torch.ones_like(col, dtype=torch.float)
        )
        d_norm = (1.0 / d_in[col]).reshape(1, -1, 1)
        return z_next, torch.mean(weight.log() * d_norm)


class NodeFormer(nn.Module):
    """NodeFormer with the official keywords; ``forward(x, edge_index)`` returns logits and
    keeps the layers' link losses for :meth:`auxiliary_loss` (weight ``lamda``)."""

    requires_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.0,
        nb_random_features: int = 30,
        use_bn: bool = True,
        use_gumbel: bool = True,
        use_residual: bool = True,
        use_act: bool = False,
        use_jk: bool = False,
        nb_gumbel_sample: int = 10,
        rb_order: int = 0,
        rb_trans: str = "sigmoid",
        use_edge_loss: bool = True,
        tau: float = 0.25,
        lamda: float = 0.1,
        official_rng: bool = False,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.convs = nn.ModuleList(
            NodeFormerConv(
                hidden_channels,
                hidden_channels,
                num_heads,
                nb_random_features,
                use_gumbel,
                nb_gumbel_sample,
                rb_order,
                rb_trans,
                use_edge_loss,
                official_rng,
            )
            for _ in range(num_layers)
        )
        self.fcs = nn.ModuleList(
            [
                nn.Linear(in_channels, hidden_channels),
                nn.Linear(
                    hidden_channels * (num_layers + 1) if use_jk else hidden_channels, out_channels
                ),
            ]
        )
        self.bns = nn.ModuleList(nn.LayerNorm(hidden_channels) for _ in range(num_layers + 1))
        self.dropout, self.use_bn, self.use_residual = dropout, use_bn, use_residual
        self.use_act, self.use_jk, self.use_edge_loss = use_act, use_jk, use_edge_loss
        self.rb_order, self.tau, self.lamda = rb_order, tau, lamda
        self._link_losses: list[Tensor] = []
        self._graph: tuple[Tensor, list[Tensor], list[Tensor]] | None = None

    def _adjacencies(self, edge_index: Tensor, num_nodes: int) -> tuple[list[Tensor], list[Tensor]]:
        # A, A^2, A^4, ... and their normalised matrices, recomputed only when the graph
        # changes (mini-batch chunks do).
        if self._graph is None or self._graph[0] is not edge_index:
            adjs = adjacency_powers(edge_index, num_nodes, max(self.rb_order, 1))
            mats = [
                normalized_adjacency(a, num_nodes).coalesce().to_sparse_csr()
                for a in adjs[: self.rb_order]
            ]
            self._graph = (edge_index, adjs, mats)
        return self._graph[1], self._graph[2]

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        adjs, rb_mats = self._adjacencies(edge_index, x.shape[0])
        z = self.fcs[0](x.unsqueeze(0))
        if self.use_bn:
            z = self.bns[0](z)
        z = F.dropout(F.elu(z), p=self.dropout, training=self.training)
        layers, self._link_losses = [z], []
        for i, conv in enumerate(self.convs):
            z, link_loss = conv(z, adjs, self.tau, rb_mats)
            if link_loss is not None:
                self._link_losses.append(link_loss)
            if self.use_residual:
                z = z + layers[i]
            if self.use_bn:
                z = self.bns[i + 1](z)
            if self.use_act:
                z = F.elu(z)
            z = F.dropout(z, p=self.dropout, training=self.training)
            layers.append(z)
        if self.use_jk:
            z = torch.cat(layers, dim=-1)
        return self.fcs[-1](z).squeeze(0)

    def auxiliary_loss(self) -> Tensor | None:
        """Official ``loss -= lamda * mean(link_loss)`` over the last forward's layers."""
        if not self._link_losses or not self.training:
            return None
        return -self.lamda * sum(self._link_losses) / len(self._link_losses)  # type: ignore[return-value]
