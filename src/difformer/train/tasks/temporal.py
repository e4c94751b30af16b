"""Spatial-temporal node regression over snapshots (official spatial-temporal/main.py)."""

from __future__ import annotations

import statistics
from typing import cast

import torch
from torch import Tensor

from ...data.temporal import chrono_split_fingerprint
from ..common import mean_std
from ..metrics import MSE, with_auxiliary_loss
from .base import EarlyStopping, Task


class SnapshotEpoch:
    """One epoch over the train snapshots: one step on their mean cost (``cumulative``) or one
    step per snapshot (``per_snapshot``), as the official spatial-temporal script."""

    def __init__(self, model, optimizer, snapshots, cost_fn, step: str):
        self.model, self.optimizer, self.snapshots = model, optimizer, snapshots
        self.cost_fn, self.step = cost_fn, step

    def train_epoch(self, epoch: int, progress=None) -> float:
        self.model.train()
        if self.step == "cumulative":
            self.optimizer.zero_grad()
            loss = cast(
                Tensor,
                sum(
                    with_auxiliary_loss(self.model, self.cost_fn(self.model(x, ei, ew), y))
                    for x, ei, ew, y in self.snapshots
                ),
            ) / len(self.snapshots)
            loss.backward()
            self.optimizer.step()
            return loss.item()
        total = 0.0
        for x, ei, ew, y in self.snapshots:
            self.optimizer.zero_grad()
            cost = self.cost_fn(self.model(x, ei, ew), y)
            with_auxiliary_loss(self.model, cost).backward()
            self.optimizer.step()
            total += cost.item()
        return total / len(self.snapshots)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@torch.no_grad()
def evaluate_temporal(model, snapshots) -> dict:
    """Mean over snapshots of each MSE convention, in eval mode."""
    model.eval()
    totals = {name: 0.0 for name in MSE}
    for x, ei, ew, y in snapshots:
        pred = model(x, ei, ew)
        for name, fn in MSE.items():
            totals[name] += fn(pred, y).item()
    return {name: total / max(len(snapshots), 1) for name, total in totals.items()}


class TemporalTask(Task):
    """Spatial-temporal node regression over snapshots: chronological split, early stopping,
    test MSE in both conventions from the best-valid weights (``paper``: the official [n,1]-[n]
    broadcast; ``standard``: elementwise)."""

    kind = "temporal"
    trainers = ("temporal",)
    auto_trainer = ("temporal", {"epochs": 200, "patience": 20})
    unused_trainer_keys = (
        "eval_step",
        "batch_size",
        "eval_device",
        "eval_chunk",
        "precision",
        "eval_last",
        "eval_train",
    )

    def __init__(self, dataset, spec, settings, device, eval_device=None, rank=0, world=1):
        super().__init__(dataset, spec, settings, device, eval_device, rank, world)
        self.mse = self.trainer.mse
        if self.mse not in MSE:
            raise ValueError(f"trainer.mse={self.mse} is not allowed; use {' or '.join(MSE)}")
        EarlyStopping(self.trainer.patience or 1, self.trainer.patience_mode)  # checks the mode
        if dataset.step not in ("cumulative", "per_snapshot"):
            raise ValueError(
                f"dataset.step={dataset.step} is not allowed; use cumulative or per_snapshot"
            )
        self._split = dataset.split()
        self.parts = {
            name: self._on([dataset.snapshots[i] for i in getattr(self._split, name)])
            for name in ("train", "valid", "test")
        }

    def _on(self, snapshots):
        dev = self.device
        return [
            (s.x.to(dev), s.edge_index.to(dev), s.edge_weight.to(dev), s.y.to(dev))
            for s in snapshots
        ]

    @classmethod
    def out_channels(cls, dataset) -> int:
        return 1

    def split(self, run: int):
        return self._split

    def split_fingerprint(self, split) -> str:
        return chrono_split_fingerprint(split)

    def epoch_runner(self, model, optimizer, split, run: int):
        return SnapshotEpoch(
            model, optimizer, self.parts["train"], MSE[self.mse], self.dataset.step
        )

    def evaluate(self, model, split) -> dict:
        scores = evaluate_temporal(model, self.parts["valid"])
        return {"valid": scores[self.mse], **{f"valid_mse_{k}": v for k, v in scores.items()}}

    def evaluate_test(self, model, split) -> dict:
        scores = evaluate_temporal(model, self.parts["test"])
        return {"test": scores[self.mse], **{f"test_mse_{k}": v for k, v in scores.items()}}

    def finish_run(self, model, best: dict, best_state: dict, split) -> dict:
        model.load_state_dict(best_state)
        return {"valid": best["valid"], **self.evaluate_test(model, split)}

    def checkpoint_metrics(self, record: dict) -> dict:
        return {
            "metric": "mse",
            "mse": self.mse,
            "best_epoch": record["best_epoch"],
            **{k: v for k, v in record.items() if k.startswith(("valid", "test"))},
        }

    def run_line(self, record: dict) -> str:
        stopped = f" (stopped after {record['epochs_run']})" if "epochs_run" in record else ""
        return (
            f"run {record['run']} | seed {record['seed']} | best epoch "
            f"{record['best_epoch']}{stopped} | valid "
            f"{record['valid']:.4f} | test MSE paper {record['test_mse_paper']:.4f} "
            f"standard {record['test_mse_standard']:.4f} | {record['seconds']:.1f}s"
        )

    def summary(self, records: list[dict]) -> dict:
        s = self._split
        out = {
            "metric": "mse",
            "mse_convention": self.mse,
            "higher_is_better": False,
            "split": f"train {len(s.train)} / valid {len(s.valid)} / test {len(s.test)} "
            "(chronological)",
            "report_note": f"MSE, {self.mse} convention",
        }
        for key in ("test", "valid", "test_mse_paper", "test_mse_standard"):
            values = [r[key] for r in records]
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std(values)
            # the official spatial-temporal script prints numpy's population std (ddof 0)
            out[f"{key}_std_population"] = statistics.pstdev(values)
        out["paper_std_ddof"] = 0  # reproduce.py compares with the paper in that convention
        return out

    def report(self, summary: dict) -> str:
        scores = " | ".join(
            f"test MSE ({c}) {self.fmt(summary[f'test_mse_{c}_mean'])} ± "
            f"{self.fmt(summary[f'test_mse_{c}_std'])}"
            for c in ("paper", "standard")
        )
        return (
            f"mse over {summary['n_runs']} run(s), selected by the "
            f"{summary['mse_convention']} convention: {scores}"
        )

    def fmt(self, value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{value:.4f}"
