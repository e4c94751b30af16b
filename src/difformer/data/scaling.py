"""Input scaling fitted on the training part of a split: data, not model.

Continuous node attributes of very different scales (TU ENZYMES: 18 attributes) leave a model
without its own input normalisation half-blind. A dataset names how many of its leading feature
columns are continuous (``GraphDataset.continuous``) and how to scale them
(``dataset.scale``: ``standard`` | ``none``); the task fits a :class:`Standardiser` on the
train items of each split only -- no valid or test item is seen -- and records its statistics
in the run's checkpoints, so ``mode=eval`` applies the same numbers.

The statistics are scikit-learn's ``StandardScaler``'s (mean, population std, a zero std
taken as 1; the tests compare against it); they are computed here in two lines rather than
through scikit-learn because importing it costs about 2 s of start-up on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SCALES = ("standard", "none")


def check_scale(value, where: str = "dataset.scale") -> str:
    from .sources import DataError

    value = "none" if value is None else str(value)
    if value not in SCALES:
        raise DataError(f"{where}={value} is not allowed; use {' or '.join(SCALES)}")
    return value


@dataclass(frozen=True)
class Standardiser:
    """``(x[:, :columns] - mean) / std``; the other columns (one-hot labels) pass unchanged."""

    mean: Tensor
    std: Tensor

    @property
    def columns(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, x: Tensor, columns: int) -> Standardiser:
        """Statistics of the first ``columns`` columns of the rows ``x`` (train items only)."""
        part = x[:, :columns].double()
        mean = part.mean(0)
        std = part.std(0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(mean.float(), std.float())

    def apply(self, x: Tensor) -> Tensor:
        k = self.columns
        scaled = (x[:, :k].float() - self.mean) / self.std
        return torch.cat([scaled, x[:, k:].float()], dim=1) if x.shape[1] > k else scaled

    def to_dict(self) -> dict:
        return {"kind": "standard", "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> Standardiser:
        return cls(
            torch.tensor(state["mean"], dtype=torch.float32),
            torch.tensor(state["std"], dtype=torch.float32),
        )


def scaled_graphs(graphs: list, scaler: Standardiser | None) -> list:
    """Copies of ``graphs`` with scaled ``x`` (the originals are untouched)."""
    if scaler is None:
        return graphs
    out = []
    for g in graphs:
        g = g.clone()
        g.x = scaler.apply(g.x)
        out.append(g)
    return out
