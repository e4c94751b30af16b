"""Model registry: a name in ``configs/model/*.yaml`` (``name:``) -> builder.

A builder takes ``in_channels``, ``out_channels`` and the model's own keyword arguments and
returns a plain ``nn.Module`` whose ``forward(x, edge_index, edge_weight=None)`` gives logits.
A model declares what it needs through attributes the trainers read: ``requires_graph``
(it reads the edges, so a dataset without a graph needs ``dataset.knn_k``), ``knn_k`` (it runs
on the k-NN graph of the features), ``set_labels`` (it reads the train labels),
``auxiliary_loss()`` (a loss term added after each training forward), ``on_epoch_start(epoch)``
(a schedule), and no trainable parameters (evaluated once, never optimised). Graph-level models
(``level = "graph"``) return one prediction per graph from ``forward(x, edge_index, batch,
edge_attr, ...)`` and name the positional encodings they read (``positional_encodings``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial

import torch.nn as nn

# name -> "module:attribute" (and keyword arguments bound to it). Modules are imported when a
# model is built or named, so ``from difformer.models import DIFFormer`` does not import PyG and
# every baseline (under a second beyond torch; see make bench).
_REGISTRY: dict[str, tuple[str, dict]] = {
    "difformer": ("difformer:DIFFormer", {}),
    "mlp": ("baselines:MLP", {}),
    "gcn": ("baselines:GCN", {}),
    "gat": ("baselines:GAT", {}),
    "sgc": ("baselines:SGC", {}),
    "appnp": ("baselines:APPNPNet", {}),
    "gcn_jk": ("baselines:JKNet", {"conv": "gcn"}),
    "gat_jk": ("baselines:JKNet", {"conv": "gat"}),
    "mixhop": ("baselines:MixHop", {}),
    "gprgnn": ("baselines:GPRGNN", {}),
    "lp": ("graph_baselines:LabelPropagation", {}),
    "manireg": ("graph_baselines:ManiReg", {}),
    "h2gcn": ("graph_baselines:H2GCN", {}),
    "gcn_knn": ("graph_baselines:GCN_KNN", {}),
    "gat_knn": ("graph_baselines:GAT_KNN", {}),
    "dense_gat": ("graph_baselines:DenseGAT", {}),
    "dcrnn": ("temporal_baselines:DCRNN", {}),
    "mpnn_lstm": ("temporal_baselines:MPNNLSTM", {}),
    "nodeformer": ("nodeformer:NodeFormer", {}),
    "sgformer": ("sgformer:SGFormer", {}),
    "sgformer_pyg": ("sgformer:SGFormerPyG", {}),
    "polynormer": ("sgformer:Polynormer", {}),
    # graph-level (one prediction per graph; level = "graph")
    "difformer_graph": ("graph_level:GraphDIFFormer", {}),
    "mol_gnn": ("graph_level:MolGNN", {}),
    "deepsets": ("deepsets:DeepSets", {}),
    "gated_gt": ("graph_transformers:GatedGT", {}),
    "gps": ("graph_transformers:GPS", {}),
}
# Public classes importable from here, and the module each lives in.
_EXPORTS = {
    "DIFFormer": "difformer",
    "DIFFormerConv": "difformer",
    "KERNELS": "difformer",
    "MLP": "baselines",
    "GCN": "baselines",
    "GAT": "baselines",
    "SGC": "baselines",
    "APPNPNet": "baselines",
    "JKNet": "baselines",
    "MixHop": "baselines",
    "GPRGNN": "baselines",
    "LabelPropagation": "graph_baselines",
    "ManiReg": "graph_baselines",
    "H2GCN": "graph_baselines",
    "DenseGAT": "graph_baselines",
    "DCRNN": "temporal_baselines",
    "MPNNLSTM": "temporal_baselines",
    "NodeFormer": "nodeformer",
    "SGFormer": "sgformer",
    "SGFormerPyG": "sgformer",
    "Polynormer": "sgformer",
    "GraphDIFFormer": "graph_level",
    "MolGNN": "graph_level",
    "GatedGT": "graph_transformers",
    "GPS": "graph_transformers",
}


def _import_path(path: str):
    """``my_pkg.module.MyModel`` -> the class (Hydra's own resolution of ``_target_``)."""
    from hydra.utils import get_class

    try:
        return get_class(path)
    except Exception as err:  # noqa: BLE001 - report any import failure the same way
        raise ValueError(f"model._target_={path}: cannot import it ({err})") from err


def _resolve(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


class _Models(dict):
    """``MODELS[name]`` -> builder. Registered names hold None until first use, when their
    module is imported; ``MODELS[name] = cls`` registers a class of your own."""

    def __getitem__(self, name):
        if name not in self and "." in name:  # your own class: model._target_=my_pkg.MyModel
            return _import_path(name)
        if name not in self:
            raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(self))}")
        builder = dict.__getitem__(self, name)
        if builder is None:
            target, bound = _REGISTRY[name]
            cls = _resolve(target)
            builder = partial(cls, **bound) if bound else cls
        return builder

    def get(self, name, default=None):
        return self[name] if name in self else default  # noqa: SIM401 - this is get()

    def items(self):
        return [(n, self[n]) for n in self]

    def values(self):
        return [self[n] for n in self]


MODELS = _Models.fromkeys(_REGISTRY)


def model_class(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` (importing its module now)."""
    return MODELS[name]  # type: ignore[return-value]


def build_model(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Instantiate model ``name`` with the given sizes and keyword arguments."""
    return model_class(name)(in_channels=in_channels, out_channels=out_channels, **kwargs)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", "build_model", "model_class", *_EXPORTS]
