"""PyG's SGFormer and Polynormer attentions, fixed for mini-batches of graphs.

They mask only V, so padded keys enter their denominators and the padded size replaces each
graph's own; :func:`fix_pyg_attention` swaps in corrected forwards with the same parameters
(tests/test_graph_models.py shows both).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor


def _masked(mask: Tensor | None, t: Tensor) -> tuple[Tensor, Tensor]:
    """The padding mask [B, N, 1, 1] and the per-graph node counts [B, 1, 1, 1]."""
    if mask is None:
        mask = torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)
    m = mask[:, :, None, None]
    return m, m.sum(dim=1, keepdim=True).to(t.dtype)


def sgformer_attention_masked(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """PyG ``SGFormerAttention.forward`` with padded keys masked and each graph's own node
    count in place of the padded size (PyG masks only V)."""
    b, n, *_ = x.shape
    shape = (b, n, self.heads, self.head_channels)
    qs, ks, vs = (lin(x).reshape(shape) for lin in (self.q, self.k, self.v))
    m, count = _masked(mask, x)
    eps = 1e-6
    qs = torch.where(qs == 0, torch.full_like(qs, eps), qs)
    ks = torch.where(ks == 0, torch.full_like(ks, eps), ks)
    qs = qs / torch.linalg.norm(qs, ord=2, dim=-1, keepdim=True)
    ks = (ks / torch.linalg.norm(ks, ord=2, dim=-1, keepdim=True)) * m
    vs = vs * m
    numerator = torch.einsum("bnhm,bhmd->bnhd", qs, torch.einsum("blhm,blhd->bhmd", ks, vs))
    numerator = numerator + count * vs
    denominator = torch.einsum("bnhm,bhm->bnh", qs, ks.sum(dim=1)).unsqueeze(-1) + count
    return (numerator / denominator).mean(dim=2)


def polynormer_attention_masked(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """PyG ``PolynormerAttention.forward`` with padded keys masked as well as values."""
    b, n, *_ = x.shape
    h = self.h_lins(x)
    m, _ = _masked(mask, x)
    k = self.k(x).sigmoid().view(b, n, self.head_channels, self.heads) * m
    q = k if self.qk_shared else torch.sigmoid(self.q(x)).view(b, n, self.head_channels, self.heads)
    v = self.v(x).view(b, n, self.head_channels, self.heads) * m
    num = torch.einsum("bndh, bnmh -> bdmh", k, v)
    num = torch.einsum("bndh, bdmh -> bnmh", q, num)
    den = torch.einsum("bndh, bdh -> bnh", q, k.sum(dim=1)).unsqueeze(2)
    out = (num / (den + 1e-6)).reshape(b, n, -1)
    out = self.lns(out) * (h + self.beta)
    return self.dropout(F.relu(self.lin_out(out)))


def fix_pyg_attention(model) -> int:
    """Swap the forwards of PyG's SGFormer / Polynormer attention modules inside ``model`` for
    the masked ones above (same parameters, same state_dict); returns how many were fixed."""
    from torch_geometric.nn.attention import PolynormerAttention, SGFormerAttention

    fixed = 0
    for module in model.modules():
        if isinstance(module, SGFormerAttention):
            module.forward = types.MethodType(sgformer_attention_masked, module)
            fixed += 1
        elif isinstance(module, PolynormerAttention):
            module.forward = types.MethodType(polynormer_attention_masked, module)
            fixed += 1
    return fixed
