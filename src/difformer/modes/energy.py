"""The energy view of a trained DIFFormer (paper §3): energy per layer and attention structure.

DIFFormer's layer k is read as one explicit step of a diffusion that lowers the energy

    E(Z, k; delta) = ||Z - Z^(k)||_F^2 + lambda * sum_{i,j} delta(||z~_i - z~_j||^2),

z~ = z / ||z|| (unit vectors, so x = ||z~_i - z~_j||^2 = 2 - 2 z~_i.z~_j lies in [0, 4]), with
delta concave and non-decreasing; Theorem 1: with the diffusivity
S_ij = f(x_ij) / sum_l f(x_il) and f = delta', each step satisfies
E(Z^(k+1), k) <= E(Z^(k), k - 1). The kernel fixes f, hence delta (delta(0) = 0):

* ``simple`` / ``simple_pernode``: f = 1 + z~_i.z~_j = 2 - x/2, so delta(x) = 2x - x^2/4, which is
  concave (delta'' = -1/2) and non-decreasing on [0, 4] (delta' = 2 - x/2 >= 0). As a polynomial
  in c = z~_i.z~_j: delta = 3 - 2c - c^2, so the pair sum is
  3 N^2 - 2 ||sum_i z~_i||^2 - ||Z~^T Z~||_F^2 -- O(N d^2), exact at any N.
* ``sigmoid``: f = sigmoid(z~_i.z~_j) = sigmoid(1 - x/2), so
  delta(x) = integral_0^x sigmoid(1 - t/2) dt = 2 log(1 + e) - 2 log(1 + e^(1 - x/2))
  (delta' = sigmoid(1 - x/2) > 0, delta'' = -sigmoid' / 2 < 0). Its pair sum needs every pair:
  exact in row chunks up to ``max_exact`` nodes, else over a seeded sample of rows, rescaled.

What is measured, and where the code departs from the theory: Z^(k) is the layer's input and
Z^(k+1) its output as the next layer sees it (after the alpha-residual, ``use_source`` and the
LayerNorm), in the hidden space z -- not in the space of the learned projections q = W_Q z,
k = W_K z where the attention is computed, and the official ``simple`` kernel divides Q and K by
one Frobenius norm over all nodes, not per node (docs/protocols.md §2.4), so its q.k term is far
smaller than the theory's z~_i.z~_j. :func:`simple_kernel_parts` measures how far: the size of
the q.k part against the constant part, with the checkpoint's global norm and with per-node norms
of the same q and k. The energy's two terms are reported apart (lambda only weighs them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.attention.kernels import normalise_qk

LOG1PE = math.log1p(math.e)


def delta(kernel: str, x: Tensor) -> Tensor:
    """The concave penalty of ``kernel`` at squared distances ``x`` (delta(0) = 0)."""
    if kernel in ("simple", "simple_pernode"):
        return 2 * x - x * x / 4
    if kernel == "sigmoid":
        return 2 * LOG1PE - 2 * F.softplus(1 - x / 2)
    raise ValueError(f"unknown kernel {kernel!r}; allowed: simple, sigmoid, simple_pernode")


def pair_penalty(
    z: Tensor, kernel: str, max_exact: int = 20_000, chunk: int = 2048, seed: int = 0
) -> float:
    """sum_{i,j} delta(||z~_i - z~_j||^2) over all ordered pairs (i = j included, delta = 0)."""
    zt = F.normalize(z.double(), dim=-1)
    n = zt.shape[0]
    if kernel in ("simple", "simple_pernode"):
        total = zt.sum(0)
        return float(3 * n * n - 2 * total.dot(total) - (zt.T @ zt).square().sum())
    rows = torch.arange(n)
    scale = 1.0
    if n > max_exact:  # a uniform sample of query rows, every key: unbiased for the sum
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_exact]
        scale = n / max_exact
    out = 0.0
    for block in rows.split(chunk):
        x = (2 - 2 * zt[block] @ zt.T).clamp(0, 4)
        out += float(delta(kernel, x).sum())
    return scale * out


def energies(states: list[dict], kernel: str, lam: float = 1.0, **penalty_kw) -> list[dict]:
    """Per layer k: the local term ||Z^(k+1) - Z^(k)||^2, the pair term of Z^(k+1), the energy
    E(Z^(k+1), k) = local + lambda * pair, and whether it is <= the previous layer's."""
    rows, previous = [], None
    for k, state in enumerate(states):
        z_in, z_out = state["z_in"], state["z_out"]
        local = float((z_out.double() - z_in.double()).square().sum())
        pair = pair_penalty(z_out, kernel, **penalty_kw)
        energy = local + lam * pair
        rows.append(
            {
                "layer": k,
                "local": local,
                "pair": pair,
                "pair_per_pair": pair / z_out.shape[0] ** 2,
                "energy": energy,
                "decreased": None if previous is None else energy <= previous,
            }
        )
        previous = energy
    return rows


def attention_rows(query: Tensor, key: Tensor, kernel: str, rows: Tensor) -> Tensor:
    """Rows ``rows`` of the layer's attention [R, N, H], each summing to one (the simple
    kernels' constant term included), with the denominators over all N keys."""
    q = query[rows]
    if kernel == "sigmoid":
        scores = torch.sigmoid(torch.einsum("rhm,nhm->rnh", q, key))
        return scores / scores.sum(dim=1, keepdim=True)
    if kernel == "simple":
        s = 1.0 / (torch.norm(query) * torch.norm(key))
        qs, ks = q * s, key
    else:
        qs, ks = normalise_qk(q, key, kernel)
    scores = 1 + torch.einsum("rhm,nhm->rnh", qs, ks)
    return scores / scores.sum(dim=1, keepdim=True)


def class_structure(attention: Tensor, y_rows: Tensor, y: Tensor, num_classes: int) -> dict:
    """Within-class share of each row's attention (mean over rows and heads), the share a
    uniform attention would give, and the class-by-class matrix M[c, c'] = mean over rows of
    class c of the attention they put on class c'."""
    a = attention.mean(dim=-1)  # [R, N]
    onehot = F.one_hot(y, num_classes).to(a.dtype)  # [N, C]
    to_class = a @ onehot  # [R, C]
    within = to_class.gather(1, y_rows.view(-1, 1)).squeeze(1)
    sizes = onehot.sum(0) / y.numel()
    matrix = torch.zeros(num_classes, num_classes, dtype=a.dtype)
    for c in range(num_classes):
        mine = y_rows == c
        if mine.any():
            matrix[c] = to_class[mine].mean(0)
    return {
        "within_class": float(within.mean()),
        "uniform": float(sizes[y_rows].mean()),
        "class_matrix": matrix.tolist(),
    }


def simple_kernel_parts(query: Tensor, key: Tensor, value: Tensor) -> dict:
    """How far a simple-kernel layer is from 'mean of V': for each node the q.k part of the
    denominator against its constant N, and of the numerator against sum_j v_j (mean over
    nodes), with the checkpoint's global Frobenius norm and with per-node norms."""
    n = query.shape[0]
    out = {}
    for name, (q, k) in {
        "global": (query / torch.norm(query), key / torch.norm(key)),
        "per_node": (F.normalize(query, dim=-1), F.normalize(key, dim=-1)),
    }.items():
        v = value.expand(-1, q.shape[1], -1)
        den = torch.einsum("nhm,hm->nh", q, k.sum(0)).abs() / n
        num = torch.einsum("nhm,hmd->nhd", q, torch.einsum("nhm,nhd->hmd", k, v)).norm(dim=-1)
        out[name] = {
            "denominator_ratio": float(den.mean()),
            "numerator_ratio": float((num / v.sum(0).norm(dim=-1)).mean()),
        }
    return out
