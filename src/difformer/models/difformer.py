"""DIFFormer (Wu et al., ICLR 2023), numerically identical to the official code.

The official class lives in ``node classification/difformer.py`` of qitianwu/DIFFormer.
This module keeps its constructor keywords, its state_dict layout (``convs.{i}.Wk|Wq|Wv``,
``fcs.0|1``, ``bns.0..L``) and its arithmetic, so released checkpoints load with
``strict=True`` and give the same outputs. See ``docs/protocols.md`` §2.

Kernels:

* ``simple`` -- DIFFormer-s as coded by the authors: Q and K are divided by the Frobenius
  norm of the *whole* [N, H, h] tensor (one scalar), numerator ``sum_j v_j + q_i (K^T V)``,
  denominator ``q_i . sum_j k_j + N``. Because of the global norm the q.k terms shrink like
  1/N, so a layer is close to "mean of V" (+ the GCN branch); this is what the paper's
  numbers and checkpoints were produced with.
* ``sigmoid`` -- DIFFormer-a: ``A_ij = sigmoid(q_i . k_j) / sum_l sigmoid(q_i . k_l)``,
  materialising the N x N x H tensor.
* ``simple_pernode`` -- the textbook DIFFormer-s formula with per-node L2 normalisation of
  q_i and k_j. Not what the official code does; never the default.

No framework imports: this file only needs torch.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .attention.batched import graph_attention
from .attention.gram import gram_applies, gram_simple_attention
from .attention.kernels import (
    answer_queries,
    attention_matrix,
    check_kernel,
    key_summary,
    linear_attention,
    normalise_qk,
    sigmoid_attention,
    sigmoid_rows,
)
from .sparse_ops import OperandCache, SparseOperand, sparse_linear, to_operand, wants_sparse

# CSR sparse-dense matmul is stable for what we use (spmm with autograd on the dense side).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def _propagate(adj: Tensor | SparseOperand, value: Tensor) -> Tensor:
    """GCN branch: sparse ``adj`` [R, N] (CSR, or a :class:`SparseOperand` with its prebuilt
    transpose) times value [N, H, D] -> [R, H, D], in float32 even under bf16 autocast (the CSR
    kernels lack bf16 on CPU)."""
    with torch.autocast(value.device.type, enabled=False):
        out = adj @ value.reshape(value.shape[0], -1).to(adj.dtype)
    return out.reshape(-1, *value.shape[1:])


def attention_conv(
    qs: Tensor,
    ks: Tensor,
    vs: Tensor,
    kernel: str,
    chunk: int | None = None,
    batch: Tensor | None = None,
    num_graphs: int | None = None,
) -> Tensor:
    """All-pair diffusion of values ``vs`` [L, H|1, D] under ``kernel``; returns [N, H, D].

    With ``batch`` (a mini-batch of graphs) the pairs are those within each graph and every
    constant is per graph (:mod:`.attention.batched`); without it, the official computation."""
    check_kernel(kernel)
    if batch is not None:
        return graph_attention(qs, ks, vs, kernel, chunk, batch, num_graphs)
    if kernel == "sigmoid":
        return sigmoid_attention(qs, ks, vs, chunk)
    if kernel == "simple":
        return linear_attention(qs, ks, vs, 1.0 / (torch.norm(qs, p=2) * torch.norm(ks, p=2)))
    return linear_attention(*normalise_qk(qs, ks, kernel), vs)


def fast_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout like ``F.dropout`` (keep with probability 1 - p, scale by 1/(1-p)),
    its mask drawn with ``torch.rand`` instead of CPU ``bernoulli_``."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return x * (torch.rand_like(x) >= p) * (1.0 / (1.0 - p))


def gcn_normalized_adjacency(
    edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None
) -> Tensor:
    """Sparse CSR matrix A[t, s] = w_st / sqrt(d_t d_s) with d the unweighted in-degree.

    Matches the official ``gcn_conv``: the degree counts edges by target (including
    self-loops already present), ignores edge weights, and inf/nan entries become 0.
    """
    row, col = edge_index[0], edge_index[1]
    deg = torch.zeros(num_nodes, dtype=torch.float, device=edge_index.device)
    deg.scatter_add_(0, col, torch.ones_like(col, dtype=torch.float))
    value = (1.0 / deg[col]).sqrt() * (1.0 / deg[row]).sqrt()
    if edge_weight is not None:
        value = edge_weight.to(value.dtype) * value
    value = torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
    adj = torch.sparse_coo_tensor(
        torch.stack([col, row]), value, (num_nodes, num_nodes), check_invariants=False
    )
    return adj.coalesce().to_sparse_csr()


def _csr_rows(adj: Tensor | SparseOperand, rows: slice) -> Tensor:
    """Rows ``rows`` of a CSR matrix, as a CSR matrix (no copy of the other rows)."""
    adj = adj.matrix if isinstance(adj, SparseOperand) else adj
    crow = adj.crow_indices()
    lo, hi = int(crow[rows.start]), int(crow[rows.stop])
    return torch.sparse_csr_tensor(
        crow[rows.start : rows.stop + 1] - lo,
        adj.col_indices()[lo:hi],
        adj.values()[lo:hi],
        (rows.stop - rows.start, adj.shape[1]),
        check_invariants=False,
    )


class DIFFormerConv(nn.Module):
    """One DIFFormer layer: all-pair attention (+ optional GCN branch on V), head mean."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_heads: int = 1,
        kernel: str = "simple",
        use_graph: bool = True,
        use_weight: bool = True,
        graph_weight: float = -1.0,
        attention_chunk: int | None = None,
        gram_attention: bool = True,
    ):
        super().__init__()
        check_kernel(kernel)
        # Registration order Wk, Wq, Wv matches the official state_dict.
        self.Wk = nn.Linear(in_channels, out_channels * num_heads)
        self.Wq = nn.Linear(in_channels, out_channels * num_heads)
        if use_weight:
            self.Wv = nn.Linear(in_channels, out_channels * num_heads)
        self.out_channels = out_channels
        self.num_heads = num_heads
        self.kernel = kernel
        self.use_graph = use_graph
        self.use_weight = use_weight
        self.graph_weight = graph_weight
        self.attention_chunk = attention_chunk
        self.gram_attention = gram_attention

    def reset_parameters(self) -> None:
        self.Wk.reset_parameters()
        self.Wq.reset_parameters()
        if self.use_weight:
            self.Wv.reset_parameters()

    def values(self, x: Tensor) -> Tensor:
        if self.use_weight:
            return self.Wv(x).reshape(-1, self.num_heads, self.out_channels)
        # Without Wv the values are the input itself, one "head" broadcast over all heads.
        return x.reshape(-1, 1, self.out_channels)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        query = self.Wq(x).reshape(-1, self.num_heads, self.out_channels)
        key = self.Wk(x).reshape(-1, self.num_heads, self.out_channels)
        return query, key, self.values(x)

    def forward(
        self,
        x: Tensor,
        adj: Tensor | None = None,
        batch: Tensor | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        """x [N, h]; adj the normalised adjacency from :func:`gcn_normalized_adjacency`;
        ``batch`` [N] the graph of each node in a mini-batch of graphs (attention within each)."""
        if self.gram_attention and batch is None and gram_applies(self.kernel, x):
            out = gram_simple_attention(
                x, self.Wq, self.Wk, self.Wv if self.use_weight else None, self.num_heads
            )
            value = self.values(x) if self.use_graph else None  # V itself: GCN branch only
        else:
            query, key, value = self.qkv(x)
            out = attention_conv(
                query, key, value, self.kernel, self.attention_chunk, batch, num_graphs
            )
        if self.use_graph:
            if adj is None:
                raise ValueError("use_graph=True needs an edge_index")
            out = self.add_graph(out, _propagate(adj, value))  # type: ignore[arg-type]
        # the mean of one head is that head, exactly; squeeze saves a reduction and its backward
        return out.squeeze(1) if self.num_heads == 1 else out.mean(dim=1)

    def add_graph(self, attention: Tensor, gcn: Tensor) -> Tensor:
        """``(1-gw)*attention + gw*gcn`` when graph_weight > 0, else their sum."""
        if self.graph_weight > 0:
            return (1 - self.graph_weight) * attention + self.graph_weight * gcn
        return attention + gcn


class DIFFormer(nn.Module):
    """DIFFormer encoder + linear head; keyword names as the official class.

    Args:
        in_channels, hidden_channels, out_channels: input, hidden and output sizes.
        num_layers: number of DIFFormer layers (L).
        num_heads: attention heads, averaged after each layer.
        kernel: ``'simple'`` (DIFFormer-s), ``'sigmoid'`` (DIFFormer-a) or
            ``'simple_pernode'`` (textbook per-node normalisation, not the official one).
        alpha: residual weight on the new layer output, ``z = a*z + (1-a)*z_prev``.
        dropout: feature dropout after the input block and after every layer.
        use_bn: LayerNorm after the input block and after each layer (post-norm).
        use_residual: the alpha-residual with the previous layer's output.
        use_weight: create the value projection Wv (otherwise V is the layer input).
        use_graph: add the GCN branch on V using ``edge_index``.
        graph_weight: > 0 mixes ``(1-gw)*attention + gw*gcn``; otherwise they are summed.
        use_source: add the input block's output after each layer's diffusion.
        attention_chunk: sigmoid kernel only: process this many query rows at a time and
            recompute them in backward, O(N * chunk) memory instead of O(N^2). Not a weight:
            checkpoints do not depend on it.
        sparse_input: read the input features as CSR in the input layer (None: when at most
            10 % of a large matrix is non-zero, as bag-of-words features; outputs equal the
            dense product's within float rounding). Not a weight either.
        dropout_mask: None (the official ``F.dropout``, whose Bernoulli draws are a fifth of a
            Cora epoch on a CPU) or ``'fast'``: masks from ``torch.rand`` (2.7x faster to
            draw), the same distribution but another random stream, so runs differ from the
            official ones (:func:`fast_dropout`).
        cache_adjacency: build the normalised adjacency and its transpose once per
            ``edge_index`` tensor instead of in every forward and every layer's backward
            (:mod:`.sparse_ops`); the numbers are the same. False: the official computation.
        gram_attention: ``simple`` kernel: compute each layer's attention from the (d+1)^2 Gram
            matrix of its input instead of projecting Q and K for every node (5 instead of 12
            N-sized products per layer, forward and backward; :mod:`.gram_attention`). The
            numbers agree within float rounding. False: the official order of products.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        num_heads: int = 1,
        kernel: str = "simple",
        alpha: float = 0.5,
        dropout: float = 0.5,
        use_bn: bool = True,
        use_residual: bool = True,
        use_weight: bool = True,
        use_graph: bool = True,
        graph_weight: float = -1.0,
        use_source: bool = False,
        attention_chunk: int | None = None,
        sparse_input: bool | None = None,
        cache_adjacency: bool = True,
        dropout_mask: str | None = None,
        gram_attention: bool = True,
    ):
        super().__init__()
        check_kernel(kernel)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if dropout_mask not in (None, "official", "fast"):
            raise ValueError(
                f"dropout_mask must be null, 'official' or 'fast', got {dropout_mask!r}"
            )
        if attention_chunk is not None and attention_chunk < 1:
            raise ValueError(f"attention_chunk must be >= 1 or None, got {attention_chunk}")
        # Registration order convs, fcs, bns matches the official state_dict.
        self.convs = nn.ModuleList(
            DIFFormerConv(
                hidden_channels,
                hidden_channels,
                num_heads=num_heads,
                kernel=kernel,
                use_graph=use_graph,
                use_weight=use_weight,
                graph_weight=graph_weight,
                attention_chunk=attention_chunk,
                gram_attention=gram_attention,
            )
            for _ in range(num_layers)
        )
        self.fcs = nn.ModuleList(
            [nn.Linear(in_channels, hidden_channels), nn.Linear(hidden_channels, out_channels)]
        )
        # L + 1 LayerNorms always exist (also with use_bn off) so checkpoints keep one layout.
        self.bns = nn.ModuleList(nn.LayerNorm(hidden_channels) for _ in range(num_layers + 1))
        self.kernel = kernel
        self.dropout = dropout
        self.use_bn = use_bn
        self.residual = use_residual
        self.alpha = alpha
        self.use_graph = use_graph
        self.use_source = use_source
        self.sparse_input = sparse_input
        self.dropout_mask = dropout_mask
        self.cache_adjacency = cache_adjacency
        self._adjacency_cache = OperandCache()
        self._input_cache = OperandCache()

    @property
    def requires_graph(self) -> bool:
        """Only the GCN branch reads the edges."""
        return self.use_graph

    def reset_parameters(self) -> None:
        for module in (*self.convs, *self.bns, *self.fcs):
            module.reset_parameters()

    def _input_block(self, x: Tensor, allow_sparse: bool = True) -> Tensor:
        operand = None
        if (
            allow_sparse
            and not x.requires_grad
            and (self.sparse_input is not False or x.is_sparse_csr)
        ):
            operand = self._input_cache.get(
                (x, self.sparse_input),
                lambda: to_operand(x) if wants_sparse(x, self.sparse_input) else None,
            )
        x = self.fcs[0](x) if operand is None else sparse_linear(operand, self.fcs[0])  # type: ignore[arg-type]
        if self.use_bn:
            x = self.bns[0](x)
        return F.relu(x)

    def _adjacency(
        self, num_nodes: int, edge_index: Tensor | None, edge_weight: Tensor | None
    ) -> Tensor | SparseOperand | None:
        if not self.use_graph:
            return None
        if edge_index is None:
            raise ValueError("this DIFFormer was built with use_graph=True: pass edge_index")
        if not self.cache_adjacency or (edge_weight is not None and edge_weight.requires_grad):
            return gcn_normalized_adjacency(edge_index, num_nodes, edge_weight)
        return self._adjacency_cache.get(
            (edge_index, edge_weight, num_nodes),
            lambda: SparseOperand(gcn_normalized_adjacency(edge_index, num_nodes, edge_weight)),
        )

    def _dropout(self, z: Tensor) -> Tensor:
        if self.dropout_mask == "fast":
            return fast_dropout(z, self.dropout, self.training)
        return F.dropout(z, p=self.dropout, training=self.training)

    def _after_conv(self, i: int, z: Tensor, z_prev: Tensor, z0: Tensor) -> Tensor:
        if self.use_source:
            z = z + z0
        if self.residual:
            z = self.alpha * z + (1 - self.alpha) * z_prev
        if self.use_bn:
            z = self.bns[i + 1](z)
        return z

    def _encode(self, x: Tensor, adj: Tensor | None, batch: Tensor | None = None) -> Tensor:
        z = self._dropout(self._input_block(x))
        z0 = z
        num_graphs = None if batch is None else int(batch.max()) + 1 if batch.numel() else 0
        for i, conv in enumerate(self.convs):
            z_prev = z
            z = self._after_conv(i, conv(z, adj, batch, num_graphs), z_prev, z0)
            z = self._dropout(z)
        return z

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        return_embeddings: bool = False,
        batch: Tensor | None = None,
    ) -> Tensor:
        """x [N, in_channels], edge_index [2, E] (self-loops already added) -> logits [N, out],
        or with ``return_embeddings`` the node embeddings [N, hidden] before the output layer.

        ``batch`` [N] (sorted, as PyG's ``Batch.batch``): the nodes are a mini-batch of graphs
        and attention stays within each graph, with per-graph constants (see
        :mod:`.attention.batched`); each graph's output equals its output alone. Without it,
        the official one-graph computation, unchanged."""
        z = self._encode(x, self._adjacency(x.shape[0], edge_index, edge_weight), batch)  # type: ignore[arg-type]
        return z if return_embeddings else self.fcs[-1](z)

    def encode(
        self, x: Tensor, edge_index: Tensor | None = None, edge_weight: Tensor | None = None
    ) -> Tensor:
        """Node embeddings [N, hidden_channels] before the output layer: DIFFormer as an encoder.

        The GCN branch (``use_graph``) expects one self-loop per node, as the official
        preprocessing adds (our datasets have them); nodes without one get a warning here --
        add them with ``torch_geometric.utils.add_self_loops`` (or build with use_graph=False).
        """
        if self.use_graph and edge_index is not None:
            looped = torch.zeros(x.shape[0], dtype=torch.bool, device=edge_index.device)
            looped[edge_index[0][edge_index[0] == edge_index[1]]] = True
            missing = int((~looped).sum())
            if missing:
                warnings.warn(
                    f"{missing} of {x.shape[0]} nodes have no self-loop; DIFFormer's "
                    "GCN branch expects one per node (torch_geometric.utils."
                    "add_self_loops adds them)",
                    stacklevel=2,
                )
        return self.forward(x, edge_index, edge_weight, return_embeddings=True)

    @torch.no_grad()
    def inference(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        chunk_size: int = 65536,
    ) -> Tensor:
        """Eval-mode forward streamed over ``chunk_size`` rows at a time; equals ``forward``
        in eval mode up to float rounding.

        Per layer it holds the layer input, K and V for all nodes and one chunk of everything
        else: the global sums of the simple kernel (Frobenius norms, K^T V, sum K, sum V) are
        accumulated chunk by chunk, then each chunk of queries is answered. ``forward`` holds
        Q, K, V, numerator, GCN term and output of a layer at once.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        n = x.shape[0]
        adj = self._adjacency(n, edge_index, edge_weight)
        z = torch.cat(
            [self._input_block(block, allow_sparse=False) for block in x.split(chunk_size)]
        )
        z0 = z
        for i, conv in enumerate(self.convs):
            shape = (n, conv.num_heads, conv.out_channels)
            keys = torch.cat([conv.Wk(b) for b in z.split(chunk_size)]).reshape(shape)  # type: ignore[arg-type,operator]
            if conv.use_weight:
                values = torch.cat([conv.Wv(b) for b in z.split(chunk_size)]).reshape(shape)  # type: ignore[arg-type,operator]
            else:
                values = z.reshape(n, 1, conv.out_channels)  # type: ignore[call-overload]
            if self.kernel == "simple":
                q_norm = sum(conv.Wq(b).square().sum() for b in z.split(chunk_size)).sqrt()  # type: ignore[attr-defined,operator]
                summary = key_summary(keys, values, 1.0 / (q_norm * torch.norm(keys, p=2)))
            elif self.kernel == "simple_pernode":
                summary = key_summary(F.normalize(keys, p=2, dim=-1), values)
            out = torch.empty_like(z)
            for start in range(0, n, chunk_size):
                rows = slice(start, min(start + chunk_size, n))
                query = conv.Wq(z[rows]).reshape(-1, conv.num_heads, conv.out_channels)  # type: ignore[operator]
                if self.kernel == "sigmoid":
                    att = sigmoid_rows(query, keys, values)
                else:
                    if self.kernel == "simple_pernode":
                        query = F.normalize(query, p=2, dim=-1)
                    att = answer_queries(query, summary, n)
                if conv.use_graph:
                    att = conv.add_graph(att, _propagate(_csr_rows(adj, rows), values))  # type: ignore[arg-type,operator]
                out[rows] = self._after_conv(i, att.mean(dim=1), z[rows], z0[rows])
            z = out
        return torch.cat([self.fcs[-1](b) for b in z.split(chunk_size)])

    @torch.no_grad()
    def diffusion_states(
        self, x: Tensor, edge_index: Tensor | None = None, edge_weight: Tensor | None = None
    ) -> list[dict]:
        """Per layer, as an eval-mode forward sees it (no dropout): the input ``z_in`` [N, h],
        the output ``z_out`` the next layer reads (after the residual and LayerNorm), and the
        layer's ``query``, ``key`` [N, H, h] and ``value`` [N, H|1, h] -- the diffusion's
        states, for :mod:`difformer.modes.energy`."""
        adj = self._adjacency(x.shape[0], edge_index, edge_weight)
        z = self._input_block(x)
        z0, states = z, []
        for i, conv in enumerate(self.convs):
            query, key, value = conv.qkv(z)  # type: ignore[operator]
            out = self._after_conv(i, conv(z, adj), z, z0)
            states.append({"z_in": z, "z_out": out, "query": query, "key": key, "value": value})
            z = out
        return states

    @torch.no_grad()
    def get_attentions(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        full_kernel: bool = False,
    ) -> Tensor:
        """Attention matrices of every layer, [L, N, N, H]; materialises N^2, small N only.

        Like the official ``get_attentions`` it applies no dropout. The official one only works
        without the graph branch; here a model with ``use_graph`` needs ``edge_index`` so the
        layer inputs are the real ones. See :func:`attention_matrix` for ``full_kernel``.
        """
        adj = self._adjacency(x.shape[0], edge_index, edge_weight)
        z = self._input_block(x)
        z0, attentions = z, []
        for i, conv in enumerate(self.convs):
            query, key, _ = conv.qkv(z)  # type: ignore[operator]
            attentions.append(attention_matrix(query, key, self.kernel, full_kernel))
            z = self._after_conv(i, conv(z, adj), z, z0)
        return torch.stack(attentions, dim=0)
