"""DIFFormer's all-pair attention on one graph, as the official code computes it.

* ``simple`` -- DIFFormer-s: Q and K divided by the Frobenius norm of the whole [N, H, h]
  tensor; numerator ``sum_j v_j + q_i (K^T V)``, denominator ``q_i . sum_j k_j + N``.
* ``sigmoid`` -- DIFFormer-a: ``A_ij = sigmoid(q_i . k_j) / sum_l sigmoid(q_i . k_l)``.
* ``simple_pernode`` -- the textbook DIFFormer-s with per-node L2 normalisation of q_i, k_j.

The same kernels within each graph of a mini-batch are in :mod:`.batched`; the Gram-matrix
form of ``simple`` in :mod:`.gram`. Only torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

KERNELS = ("simple", "sigmoid", "simple_pernode")


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; allowed: {', '.join(KERNELS)}")


def normalise_qk(qs: Tensor, ks: Tensor, kernel: str) -> tuple[Tensor, Tensor]:
    """``simple``: one Frobenius norm over the whole [N, H, h] tensor, as coded officially;
    ``simple_pernode``: per-node L2."""
    if kernel == "simple":
        return qs / torch.norm(qs, p=2), ks / torch.norm(ks, p=2)
    return F.normalize(qs, p=2, dim=-1), F.normalize(ks, p=2, dim=-1)


def key_summary(
    ks: Tensor, vs: Tensor, scale: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The keys' side of the (1 + s q.k) kernel: K^T V [H, M, D] and sum_j k_j [H, M], both
    times ``scale`` (1 / (|Q|_F |K|_F) for the raw q, k of the official global normalisation;
    None for already-normalised ones), and sum_j v_j [1, H, D]. Scaling these small sums
    instead of dividing the [N, H, M] Q and K gives the same numbers up to rounding and saves
    two N-sized divisions forward and backward."""
    kvs = torch.einsum("lhm,lhd->hmd", ks, vs)
    k_sum = ks.sum(dim=0)
    if scale is not None:
        kvs, k_sum = kvs * scale, k_sum * scale
    return kvs, k_sum, vs.sum(dim=0).unsqueeze(0)


def answer_queries(qs: Tensor, summary: tuple[Tensor, Tensor, Tensor], n: int) -> Tensor:
    """(sum_j v_j + q_i K^T V) / (q_i . sum_j k_j + n) for queries qs [R, H, M] -> [R, H, D].
    The ``+ n`` is the kernel's constant 1 summed over the keys; as in the official code n is
    the number of nodes."""
    kvs, k_sum, v_sum = summary
    numerator = torch.einsum("nhm,hmd->nhd", qs, kvs) + v_sum
    return numerator / (torch.einsum("nhm,hm->nh", qs, k_sum).unsqueeze(-1) + n)


def linear_attention(qs: Tensor, ks: Tensor, vs: Tensor, scale: Tensor | None = None) -> Tensor:
    """The simple kernels' all-pair attention: qs [N, H, M], ks [L, H, M], vs [L, H or 1, D]."""
    return answer_queries(qs, key_summary(ks, vs, scale), qs.shape[0])


def sigmoid_rows(qs: Tensor, ks: Tensor, vs: Tensor) -> Tensor:
    # (S V) / rowsum(S) equals (S / rowsum(S)) V but normalises N x D numbers instead of
    # N x N, and batched matmuls over heads avoid einsum's permuted copies (~1.5x faster).
    scores = torch.sigmoid(qs.transpose(0, 1) @ ks.permute(1, 2, 0))  # [H, N, L]
    out = (scores @ vs.transpose(0, 1)) / scores.sum(dim=-1, keepdim=True)
    return out.transpose(0, 1)


def stable_sigmoid_rows(qs: Tensor, ks: Tensor, vs: Tensor) -> Tensor:
    """The weights of :func:`sigmoid_rows`, ``sigmoid(s_ij) / sum_l sigmoid(s_il)``, computed as
    ``softmax_j(log sigmoid(s_ij))``: equal in exact arithmetic, but where every score of a
    row is below about -88 each sigmoid underflows to 0 in float32 and the official quotient
    is 0/0 (NaN). That happens on small graphs, whose rows have few keys: DIFFormer-a at
    width 128 on ENZYMES reached a NaN loss at epoch 15 that way. Used for mini-batches of
    graphs (:mod:`.batched`); the node-level model keeps the official form (its rows have
    thousands of keys)."""
    logits = F.logsigmoid(qs.transpose(0, 1) @ ks.permute(1, 2, 0))  # [H, N, L]
    return (torch.softmax(logits, dim=-1) @ vs.transpose(0, 1)).transpose(0, 1)


def sigmoid_attention(
    qs: Tensor, ks: Tensor, vs: Tensor, chunk: int | None = None, stable: bool = False
) -> Tensor:
    """DIFFormer-a. With ``chunk``, query rows are processed ``chunk`` at a time and each block
    is recomputed in the backward pass (activation checkpointing), so memory is O(N * chunk)
    instead of O(N^2); the result is the same up to float rounding. ``stable``: see
    :func:`stable_sigmoid_rows`."""
    rows = stable_sigmoid_rows if stable else sigmoid_rows
    if chunk is None or qs.shape[0] <= chunk:
        return rows(qs, ks, vs)
    if not torch.is_grad_enabled():
        return torch.cat([rows(block, ks, vs) for block in qs.split(chunk)])
    return torch.cat(
        [checkpoint(rows, block, ks, vs, use_reentrant=False) for block in qs.split(chunk)]
    )


def attention_matrix(qs: Tensor, ks: Tensor, kernel: str, full_kernel: bool = False) -> Tensor:
    """Attention weights [N, L, H] for visualisation (small N only).

    For ``simple`` kernels the official ``get_attentions`` returns ``q.k / denominator``,
    leaving out the constant ``1 / denominator`` part of the kernel; ``full_kernel=True``
    adds it, giving rows that sum to one and reproduce the layer's attention output.
    """
    check_kernel(kernel)
    if kernel == "sigmoid":
        scores = torch.sigmoid(torch.einsum("nhm,lhm->nlh", qs, ks))
        return scores / scores.sum(dim=1, keepdim=True)
    qs, ks = normalise_qk(qs, ks, kernel)
    n = qs.shape[0]
    denominator = torch.einsum("nhm,hm->nh", qs, ks.sum(dim=0)).unsqueeze(1) + n  # [N, 1, H]
    scores = torch.einsum("nhm,lhm->nlh", qs, ks)
    if full_kernel:
        scores = scores + 1.0
    return scores / denominator
