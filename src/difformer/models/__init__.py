"""Model registry: a name in ``configs/model/*.yaml`` (``name:``) -> builder.

A builder takes ``in_channels``, ``out_channels`` and the model's own keyword arguments and
returns a plain ``nn.Module`` whose ``forward(x, edge_index, edge_weight=None)`` gives logits.
A model declares what it needs through attributes the trainers read: ``requires_graph``
(it reads the edges, so a dataset without a graph needs ``dataset.knn_k``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch.nn as nn

from .baselines import GAT, GCN, MLP, SGC, APPNPNet, GPRGNN, JKNet, MixHop
from .difformer import KERNELS, DIFFormer, DIFFormerConv

MODELS: dict[str, Callable[..., nn.Module]] = {
    "difformer": DIFFormer,
    "mlp": MLP,
    "gcn": GCN,
    "gat": GAT,
    "sgc": SGC,
    "appnp": APPNPNet,
    "gcn_jk": partial(JKNet, conv="gcn"),
    "gat_jk": partial(JKNet, conv="gat"),
    "mixhop": MixHop,
    "gprgnn": GPRGNN,
}


def build_model(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Instantiate model ``name`` with the given sizes and keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    return MODELS[name](in_channels=in_channels, out_channels=out_channels, **kwargs)


__all__ = ["DIFFormer", "DIFFormerConv", "KERNELS", "MODELS", "build_model", "MLP", "GCN",
           "GAT", "SGC", "APPNPNet", "JKNet", "MixHop", "GPRGNN"]
