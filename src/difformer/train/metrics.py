"""Losses and metrics, looked up by the names a DatasetSpec carries."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of argmax predictions equal to the label (in [0, 1])."""
    if y.numel() == 0:
        return float("nan")
    return (logits.argmax(dim=-1) == y).float().mean().item()


def rocauc(logits: Tensor, y: Tensor) -> float:
    """Binary ROC-AUC of the positive class's softmax probability (official ``eval_rocauc``
    for one label column); sklearn ``roc_auc_score``."""
    from sklearn.metrics import roc_auc_score

    if y.numel() == 0 or y.unique().numel() < 2:
        return float("nan")
    if logits.shape[-1] != 2:
        raise ValueError(
            f"rocauc needs 2 output classes, got logits of shape {tuple(logits.shape)}"
        )
    score = torch.softmax(logits.float(), dim=-1)[:, 1]
    return float(roc_auc_score(y.cpu().numpy(), score.cpu().numpy()))


@functools.cache
def _ogb_evaluator(name: str):
    """Built once: the Evaluator reads ogb's master.csv with pandas on construction."""
    from ogb.nodeproppred import Evaluator

    return Evaluator(name)


def rocauc_ogb(logits: Tensor, y: Tensor) -> float:
    """ogbn-proteins: ROC-AUC averaged over the 112 tasks by the ogb Evaluator (tasks with
    one class only in the evaluated nodes are skipped, as in the official code)."""
    if y.numel() == 0:
        return float("nan")
    return float(
        _ogb_evaluator("ogbn-proteins").eval({"y_true": y.cpu(), "y_pred": logits.float().cpu()})[
            "rocauc"
        ]
    )


def bce(logits: Tensor, y: Tensor) -> Tensor:
    """Multi-label loss: BCEWithLogits over all tasks (labels cast to float)."""
    return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))


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


def node_mse(pred: Tensor, y: Tensor) -> float:
    """Node regression (own data): elementwise mean squared error of the single output."""
    if y.numel() == 0:
        return float("nan")
    return mse_standard(pred.float(), y.float()).item()


@functools.cache
def _ogbg_evaluator(name: str):
    from ogb.graphproppred import Evaluator

    return Evaluator(name)


def ogbg_metric(name: str, key: str):
    """The ogb graph-property Evaluator of ``name`` (NaN labels are skipped by ogb)."""

    def fn(pred: Tensor, y: Tensor) -> float:
        if y.numel() == 0:
            return float("nan")
        return float(
            _ogbg_evaluator(name).eval(
                {"y_true": y.float().cpu().numpy(), "y_pred": pred.float().cpu().numpy()}
            )[key]
        )

    fn.__name__ = f"{key}_{name}"
    return fn


def rocauc_multitask(pred: Tensor, y: Tensor) -> float:
    """Mean ROC-AUC over the tasks (columns) that have both classes among the labelled
    (non-NaN) graphs: the procedure of ogb's ``eval_rocauc``, for any number of tasks."""
    from sklearn.metrics import roc_auc_score

    y, pred = y.float().cpu().reshape(len(y), -1), pred.float().cpu().reshape(len(y), -1)
    scores = []
    for t in range(y.shape[1]):
        known = ~torch.isnan(y[:, t])
        if known.any() and y[known, t].unique().numel() == 2:
            scores.append(roc_auc_score(y[known, t].numpy(), pred[known, t].numpy()))
    return float(sum(scores) / len(scores)) if scores else float("nan")


def mae(pred: Tensor, y: Tensor) -> float:
    """Mean absolute error of a regression output (ZINC)."""
    if y.numel() == 0:
        return float("nan")
    return (pred.float().reshape(-1) - y.float().reshape(-1)).abs().mean().item()


def bce_masked(logits: Tensor, y: Tensor) -> Tensor:
    """Multi-task binary cross-entropy over the known labels only (NaN = missing), as the
    OGB molecule examples."""
    y = y.reshape(logits.shape).to(logits.dtype)
    known = ~torch.isnan(y)
    return F.binary_cross_entropy_with_logits(logits[known], y[known])


def l1(pred: Tensor, y: Tensor) -> Tensor:
    return F.l1_loss(pred.reshape(-1), y.reshape(-1).to(pred.dtype))


METRICS = {
    "accuracy": accuracy,
    "rocauc": rocauc,
    "rocauc_ogb": rocauc_ogb,
    "mse": node_mse,
    "rocauc_molhiv": ogbg_metric("ogbg-molhiv", "rocauc"),
    "ap_molpcba": ogbg_metric("ogbg-molpcba", "ap"),
    "rocauc_multitask": rocauc_multitask,
    "mae": mae,
}
HIGHER_IS_BETTER = {
    "accuracy": True,
    "rocauc": True,
    "rocauc_ogb": True,
    "mse": False,
    "rocauc_molhiv": True,
    "ap_molpcba": True,
    "rocauc_multitask": True,
    "mae": False,
}
ERROR_METRICS = tuple(m for m, higher in HIGHER_IS_BETTER.items() if not higher)
LOSSES = {
    "cross_entropy": cross_entropy,
    "bce": bce,
    "mse": mse_standard,
    "bce_masked": bce_masked,
    "l1": l1,
}
MSE = {"paper": mse_paper, "standard": mse_standard}


def with_auxiliary_loss(model, loss: Tensor) -> Tensor:
    """``loss`` plus the model's own term from its last forward (``auxiliary_loss()``, e.g.
    NodeFormer's edge loss or ManiReg's regulariser), unwrapping DistributedDataParallel."""
    module = getattr(model, "module", model)
    aux = module.auxiliary_loss() if hasattr(module, "auxiliary_loss") else None
    return loss if aux is None else loss + aux


@torch.no_grad()
def evaluate(
    model, x, edge_index, y, split, metric: str, loss: str, chunk_size: int | None = None
) -> dict:
    """One eval-mode full-graph forward (streamed in ``chunk_size`` rows by the model's
    ``inference`` when given); metric on train/valid/test and the valid loss."""
    model.eval()
    if hasattr(model, "set_labels"):  # models that read the train labels (label propagation)
        model.set_labels(y, split.train)
    logits = (
        model(x, edge_index)
        if chunk_size is None
        else model.inference(x, edge_index, chunk_size=chunk_size)
    )
    fn = METRICS[metric]
    return {
        "train": fn(logits[split.train], y[split.train]),
        "valid": fn(logits[split.valid], y[split.valid]),
        "test": fn(logits[split.test], y[split.test]),
        "valid_loss": LOSSES[loss](logits[split.valid], y[split.valid]).item(),
    }
