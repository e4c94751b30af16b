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


def mse_paper(pred: Tensor, y: Tensor) -> Tensor:
    """The official spatial-temporal cost: ``mean((pred - y) ** 2)`` with pred [n, 1] and
    y [n], which broadcasts to an n x n matrix, i.e. mean_i mean_j (pred_i - y_j)^2. It
    rewards predicting each snapshot's mean target; the paper's Table 4 uses it."""
    return torch.mean((pred.reshape(-1, 1) - y.reshape(-1)) ** 2)


def mse_standard(pred: Tensor, y: Tensor) -> Tensor:
    """Elementwise mean squared error, mean_i (pred_i - y_i)^2."""
    return torch.mean((pred.reshape(-1) - y.reshape(-1)) ** 2)


METRICS = {"accuracy": accuracy}
HIGHER_IS_BETTER = {"accuracy": True, "mse": False}
LOSSES = {"cross_entropy": cross_entropy}
MSE = {"paper": mse_paper, "standard": mse_standard}


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
