"""Losses and metrics, looked up by the names a DatasetSpec carries."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of argmax predictions equal to the label (in [0, 1])."""
    if y.numel() == 0:
        return float("nan")
    return (logits.argmax(dim=-1) == y).float().mean().item()


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """NLL of log_softmax, as the official scripts (identical to cross-entropy)."""
    return F.nll_loss(F.log_softmax(logits, dim=-1), y)


METRICS = {"accuracy": accuracy}
HIGHER_IS_BETTER = {"accuracy": True}
LOSSES = {"cross_entropy": cross_entropy}


@torch.no_grad()
def evaluate(model, x, edge_index, y, split, metric: str, loss: str) -> dict:
    """One eval-mode full-graph forward; metric on train/valid/test and the valid loss."""
    model.eval()
    logits = model(x, edge_index)
    fn = METRICS[metric]
    return {"train": fn(logits[split.train], y[split.train]),
            "valid": fn(logits[split.valid], y[split.valid]),
            "test": fn(logits[split.test], y[split.test]),
            "valid_loss": LOSSES[loss](logits[split.valid], y[split.valid]).item()}
