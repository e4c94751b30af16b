"""DIFFormer-s attention from the layer input's Gram matrix: the same numbers, half the work.

The official simple kernel projects every node, Q = Z Wq^T + bq and K = Z Wk^T + bk (N x h
each), then takes |Q|_F, |K|_F, K^T V and Q (K^T V): four products of N x h x h per layer
(with ``use_weight=False``, V = Z). All of these are linear in Z. With a column of ones
appended, Z~ = [Z, 1], and the biases as a last weight column, W~ = [W, b], each is a small
expression in the (d+1) x (d+1) Gram matrix G~ = Z~^T Z~ (G = Z^T Z, the column sums, N):

    |Q|_F^2 = sum(W~q G~ * W~q),   [K^T V | sum_j k_j] = W~k G~ [W~v^T | e]   (V = Z: W~k G~)
    q_i . (K^T V) + sum_j v_j = z~_i M,   q_i . sum_j k_j + N = z~_i m,   M, m from W~q^T ...

so a layer needs two N-sized products: G itself and one Z @ [M | m] (an addmm: the ones
column is the bias row) that gives every node's numerator and denominator at once. Forward
and backward together run 5 instead of 12 of them (a Cora epoch of the DIFFormer-s paper
cell: 74 -> 49 ms on one core, ``make bench``). Only the summation order changes: outputs and
gradients agree with the projected form within float rounding (tested: within 1e-6 on the
Cora cell's 8 layers in float32, to rounding in float64, and against the dense official
formulas within 1e-5).

Used for the ``simple`` kernel on one graph outside autocast (``DIFFormer(gram_attention=
True)``, the default); per-node normalisation (``simple_pernode``), the sigmoid kernel,
mini-batches of graphs and bf16/fp16 autocast (where a Gram matrix in half precision would
lose the norms' accuracy) keep the projected form. No framework imports.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _Gram(torch.autograd.Function):
    """``x^T x`` whose backward is one product, ``x (g + g^T)``, instead of autograd's two."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return x.t() @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return x @ (grad + grad.t())


def gram_applies(kernel: str, x: Tensor) -> bool:
    """Whether :func:`gram_simple_attention` computes this layer: the global-norm simple
    kernel, outside a half-precision autocast."""
    return kernel == "simple" and not torch.is_autocast_enabled(x.device.type)


def _augmented(linear: torch.nn.Linear, num_heads: int) -> Tensor:
    """[W | b] per head: [H, h, d + 1]."""
    weight = torch.cat([linear.weight, linear.bias.unsqueeze(1)], dim=1)
    return weight.view(num_heads, -1, weight.shape[1])


def gram_simple_attention(
    x: Tensor, wq: torch.nn.Linear, wk: torch.nn.Linear, wv: torch.nn.Linear | None, num_heads: int
) -> Tensor:
    """The official simple kernel's attention output [N, H, D] for layer input ``x`` [N, d],
    with projections ``wq``, ``wk`` (d -> H*h) and ``wv`` (d -> H*h, or None: V = x, D = d)."""
    n, d = x.shape
    gram = _Gram.apply(x)
    total = x.sum(dim=0)
    ones = total.new_full((1,), n)
    g = torch.cat(
        [torch.cat([gram, total.unsqueeze(1)], dim=1), torch.cat([total, ones]).unsqueeze(0)]
    )  # G~ = [x, 1]^T [x, 1]
    q, k = _augmented(wq, num_heads), _augmented(wk, num_heads)  # [H, h, d + 1]
    key_gram = k @ g  # K^T [x, 1]
    scale = torch.rsqrt((q @ g * q).sum() * (key_gram * k).sum())  # 1 / (|Q|_F |K|_F)
    if wv is None:
        kv = key_gram * scale  # [K^T V | sum_j k_j], V = x: [H, h, d+1]
        value_sum = total.expand(num_heads, d)
    else:
        v = _augmented(wv, num_heads)
        kv = torch.cat([key_gram @ v.transpose(1, 2), key_gram[..., d:]], dim=2) * scale
        value_sum = (v @ g[:, d:]).squeeze(-1)  # [H, D]
    # [H, d + 1, D + 1]: z~_i m = [q_i K^T V | q_i . sum_j k_j], both already scaled
    m = q.transpose(1, 2) @ kv
    width = m.shape[-1]
    weight = m[:, :d].permute(1, 0, 2).reshape(d, num_heads * width)
    bias = m[:, d] + torch.cat([value_sum, ones.expand(num_heads, 1)], dim=1)
    out = torch.addmm(bias.reshape(-1), x, weight).view(n, num_heads, width)
    return out[..., :-1] / out[..., -1:]
