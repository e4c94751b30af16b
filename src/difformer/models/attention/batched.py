"""Global attention over a mini-batch of graphs, strictly within each graph.

A PyG mini-batch stacks the nodes of G graphs ([N, ...] with ``batch`` [N] naming each node's
graph, sorted). Attention must not cross graphs, and a graph's output must not depend on the
other graphs in its batch: every constant of a kernel -- the keys' sums, the number of keys,
DIFFormer-s's Frobenius norms -- is a per-graph quantity here.

* :func:`batched_linear_attention` (DIFFormer-s, SGFormer): each graph's own K^T V,
  sum_j k_j and sum_j v_j (segment sums). Consecutive graphs share one zero-padded block
  while the padding costs at most 2x their nodes (or a small floor), so memory is O(total
  nodes), the largest graph of a batch never sets everyone's width, and a large graph runs
  alone, unpadded. (Per-node outer products k_j v_j^T summed with ``index_add_`` are the
  padding-free alternative, with N*M*D memory and slower: `make bench` measures both.)
* :func:`batched_sigmoid_attention` (DIFFormer-a): the N_g x N_g scores of each graph, graphs
  grouped so that a group's padded score tensor stays under ``max_entries``, padded keys
  masked to zero weight; a graph too large for that runs alone, chunked by query rows.

Only torch. PyG's own SGFormer and Polynormer attentions, fixed for batches of graphs, are in
:mod:`.pyg_fixes`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .kernels import normalise_qk, sigmoid_attention


def graph_sizes(batch: Tensor, num_graphs: int) -> Tensor:
    """Nodes per graph [G]."""
    return torch.bincount(batch, minlength=num_graphs)


def segment_sum(src: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Sum of the rows of ``src`` [N, ...] per graph -> [G, ...]."""
    out = src.new_zeros((num_graphs, *src.shape[1:]))
    return out.index_add_(0, batch, src)


def check_sorted(batch: Tensor) -> None:
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted by graph (as PyG's Batch is)")


def per_graph_frobenius_scale(qs: Tensor, ks: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """DIFFormer-s's one Frobenius norm, taken per graph: 1 / (|Q_g|_F |K_g|_F), [G].

    Per graph, because the official node-level code divides by the norm over *all* nodes it
    is given: over a batch that would couple every graph to the others (and shrink each
    graph's q.k terms with the batch size); per graph, a graph in a batch gets exactly the
    norm it gets alone, which is the official computation applied to that graph."""
    q2 = segment_sum(qs.square().sum(dim=(1, 2)), batch, num_graphs)
    k2 = segment_sum(ks.square().sum(dim=(1, 2)), batch, num_graphs)
    return 1.0 / (q2.sqrt() * k2.sqrt())


class _Padding:
    """Scatter/gather between the stacked nodes of consecutive graphs and a zero-padded
    [G, W, ...] block (W = the widest of these graphs)."""

    def __init__(self, sizes: Tensor):
        device = sizes.device
        self.g, self.width = sizes.numel(), int(sizes.max())
        self.local = torch.arange(int(sizes.sum()), device=device) - torch.repeat_interleave(
            torch.cumsum(sizes, 0) - sizes, sizes
        )
        self.owner = torch.repeat_interleave(torch.arange(self.g, device=device), sizes)
        self.mask = torch.arange(self.width, device=device)[None, :] < sizes[:, None]

    def dense(self, t: Tensor) -> Tensor:
        """[n, H, C] -> [G, H, W, C], zeros in the padding."""
        out = t.new_zeros((self.g, self.width, *t.shape[1:]))
        out[self.owner, self.local] = t
        return out.transpose(1, 2)

    def stacked(self, t: Tensor) -> Tensor:
        """[G, H, W, C] -> [n, H, C] (the real rows only)."""
        return t.transpose(1, 2)[self.owner, self.local]


def _groups(
    sizes: list[int], cost: Callable[[int, int, int], int], budget: Callable[[int], int]
) -> list[tuple[int, int]]:
    """Consecutive graph ranges [a, b) whose padded block ``cost(count, widest, nodes)``
    stays within ``budget``; a graph over budget alone forms its own range."""
    groups, start, widest, nodes = [], 0, 0, 0
    for g, n in enumerate(sizes):
        if g > start and cost(g - start + 1, max(widest, n), nodes + n) > budget(nodes + n):
            groups.append((start, g))
            start, widest, nodes = g, 0, 0
        widest, nodes = max(widest, n), nodes + n
    if sizes:
        groups.append((start, len(sizes)))
    return groups


def _dense_linear(
    qs: Tensor, ks: Tensor, vs: Tensor, sizes: Tensor, scale: Tensor | None, self_value: bool
) -> Tensor:
    """The per-graph linear kernel for a few graphs at once, zero-padded (padded keys and
    values are zero, so they add nothing to any sum)."""
    pad = _Padding(sizes)
    q, k, v = pad.dense(qs), pad.dense(ks), pad.dense(vs.expand(-1, qs.shape[1], -1))
    kvs, k_sum = k.transpose(-1, -2) @ v, k.sum(dim=2)  # [G,H,M,D], [G,H,M]
    if scale is not None:
        kvs, k_sum = kvs * scale.view(-1, 1, 1, 1), k_sum * scale.view(-1, 1, 1)
    n = sizes.to(qs.dtype).view(-1, 1, 1, 1)
    numerator = q @ kvs + (n * v if self_value else v.sum(dim=2, keepdim=True))
    denominator = (q @ k_sum.unsqueeze(-1)) + n  # [G, H, W, 1]
    return pad.stacked(numerator / denominator)


def batched_linear_attention(
    qs: Tensor,
    ks: Tensor,
    vs: Tensor,
    batch: Tensor,
    num_graphs: int,
    scale: Tensor | None = None,
    self_value: bool = False,
    pad_budget: int = 8192,
) -> Tensor:
    """The (1 + s q.k) kernel per graph: qs, ks [N, H, M], vs [N, H|1, D] -> [N, H, D].

    Numerator ``sum_{j in g} v_j + s_g q_i K_g^T V_g`` (``self_value``: SGFormer's ``n_g v_i``
    instead of the sum), denominator ``s_g q_i . sum_{j in g} k_j + n_g``, with ``scale`` s_g
    [G] (None: 1, for already-normalised q and k).

    Graphs are taken in consecutive groups, each zero-padded to its widest graph only while
    the padded block holds at most ``max(pad_budget, 2 x its nodes)`` rows, so memory stays
    O(total nodes) and never follows the largest graph of the batch; a graph over that is
    computed alone, unpadded (its K^T V summary, O(n) memory)."""
    check_sorted(batch)
    sizes = graph_sizes(batch, num_graphs)
    ptr = [0, *torch.cumsum(sizes, 0).tolist()]
    parts = []
    groups = _groups(
        sizes.tolist(),
        lambda count, widest, nodes: count * widest,
        lambda nodes: max(pad_budget, 2 * nodes),
    )
    for a, b in groups:
        rows = slice(ptr[a], ptr[b])
        group_scale = None if scale is None else scale[a:b]
        parts.append(
            _dense_linear(qs[rows], ks[rows], vs[rows], sizes[a:b], group_scale, self_value)
        )
    return torch.cat(parts) if parts else qs.new_zeros((0, qs.shape[1], vs.shape[-1]))


def _dense_sigmoid(qs: Tensor, ks: Tensor, vs: Tensor, sizes: Tensor) -> Tensor:
    """Sigmoid attention within each of a few graphs, padded to the widest, keys masked."""
    pad = _Padding(sizes)
    # softmax of log sigmoid: the official weights without their 0/0 on a row whose scores
    # all underflow (kernels.stable_sigmoid_rows says when); padded keys get weight 0
    logits = F.logsigmoid(pad.dense(qs) @ pad.dense(ks).transpose(-1, -2))
    logits = logits.masked_fill(~pad.mask[:, None, None, :], float("-inf"))
    return pad.stacked(torch.softmax(logits, dim=-1) @ pad.dense(vs))


def batched_sigmoid_attention(
    qs: Tensor,
    ks: Tensor,
    vs: Tensor,
    batch: Tensor,
    num_graphs: int,
    chunk: int | None = None,
    max_entries: int = 1 << 22,
) -> Tensor:
    """DIFFormer-a within each graph: row-normalised sigmoid(q_i . k_j) over j in g(i).
    Graphs in consecutive groups whose padded scores (count x widest^2) fit ``max_entries``;
    a graph over that runs alone, its query rows chunked by ``chunk``."""
    check_sorted(batch)
    sizes = graph_sizes(batch, num_graphs)
    ptr = [0, *torch.cumsum(sizes, 0).tolist()]
    parts = []
    groups = _groups(
        sizes.tolist(),
        lambda count, widest, nodes: count * widest * widest,
        lambda nodes: max_entries,
    )
    for a, b in groups:
        rows = slice(ptr[a], ptr[b])
        if b - a == 1:  # one graph: its own N_g x N_g, chunked by query rows when large
            parts.append(sigmoid_attention(qs[rows], ks[rows], vs[rows], chunk, stable=True))
        else:
            parts.append(
                _dense_sigmoid(qs[rows], ks[rows], vs[rows].expand(-1, qs.shape[1], -1), sizes[a:b])
            )
    return torch.cat(parts) if parts else qs.new_zeros((0, qs.shape[1], vs.shape[-1]))


def graph_attention(
    qs: Tensor,
    ks: Tensor,
    vs: Tensor,
    kernel: str,
    chunk: int | None,
    batch: Tensor,
    num_graphs: int | None,
) -> Tensor:
    """The kernels of :mod:`.kernels` within each graph of a mini-batch (``batch``)."""
    num_graphs = int(batch.max()) + 1 if num_graphs is None else num_graphs
    if kernel == "sigmoid":
        return batched_sigmoid_attention(qs, ks, vs, batch, num_graphs, chunk)
    if kernel == "simple":
        scale = per_graph_frobenius_scale(qs, ks, batch, num_graphs)
        return batched_linear_attention(qs, ks, vs, batch, num_graphs, scale)
    qs, ks = normalise_qk(qs, ks, kernel)
    return batched_linear_attention(qs, ks, vs, batch, num_graphs)
