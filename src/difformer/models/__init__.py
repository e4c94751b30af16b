"""Model registry: a name in ``configs/model/*.yaml`` (``name:``) -> builder.

A builder takes ``in_channels``, ``out_channels`` and the model's own keyword arguments and
returns a plain ``nn.Module`` whose ``forward(x, edge_index, edge_weight=None)`` gives logits.
A model declares what it needs through attributes the trainers read: ``requires_graph``
(it reads the edges, so a dataset without a graph needs ``dataset.knn_k``), ``knn_k`` (it runs
on the k-NN graph of the features), ``set_labels`` (it reads the train labels),
``auxiliary_loss()`` (a loss term added after each training forward), ``on_epoch_start(epoch)``
(a schedule), and no trainable parameters (evaluated once, never optimised).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch.nn as nn

from .baselines import GAT, GCN, MLP, SGC, APPNPNet, GPRGNN, JKNet, MixHop
from .difformer import KERNELS, DIFFormer, DIFFormerConv
from .graph_baselines import H2GCN, DenseGAT, LabelPropagation, ManiReg, on_knn_graph
from .nodeformer import NodeFormer
from .sgformer import SGFormer, SGFormerPyG, Polynormer
from .temporal_baselines import DCRNN, MPNNLSTM

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
    "lp": LabelPropagation,
    "manireg": ManiReg,
    "h2gcn": H2GCN,
    "gcn_knn": on_knn_graph(GCN),
    "gat_knn": on_knn_graph(GAT),
    "dense_gat": DenseGAT,
    "dcrnn": DCRNN,
    "mpnn_lstm": MPNNLSTM,
    "nodeformer": NodeFormer,
    "sgformer": SGFormer,
    "sgformer_pyg": SGFormerPyG,
    "polynormer": Polynormer,
}


def build_model(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Instantiate model ``name`` with the given sizes and keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    return MODELS[name](in_channels=in_channels, out_channels=out_channels, **kwargs)


__all__ = ["DIFFormer", "DIFFormerConv", "KERNELS", "MODELS", "build_model", "MLP", "GCN",
           "GAT", "SGC", "APPNPNet", "JKNet", "MixHop", "GPRGNN", "LabelPropagation", "ManiReg",
           "H2GCN", "DenseGAT", "DCRNN", "MPNNLSTM", "NodeFormer", "SGFormer", "SGFormerPyG",
           "Polynormer"]
