"""Task kinds: what one epoch trains, what an evaluation measures, how results read.

The run loop (:mod:`.loop`) knows nothing of node or temporal data; it asks its task:

* ``channels()``: the model's input and output sizes;
* ``split(run)`` and ``split_fingerprint(split)``;
* ``epoch_runner(model, optimizer, split, run)``: an object whose ``train_epoch(epoch)``
  returns the mean training loss and whose ``state_dict()`` is whatever it must carry across
  a resume (the partition generator of mini-batches);
* ``evaluates_at(epoch, epochs)`` and ``evaluate(model, split)`` -> scores with ``valid`` (the
  selection score, ``higher_is_better`` says which way) and what is logged;
* ``early_stopping()`` (or None), ``finish_run(...)`` -> the run's record, ``summary(records)``
  and ``report(summary)``.

A dataset's :class:`~difformer.data.DatasetSpec` names its kind; ``task_kinds.TASKS`` maps it
to a class (graph-level prediction: :mod:`.graph_task`).
"""
from __future__ import annotations

import statistics

import torch

from ..data.temporal import chrono_split_fingerprint
from ..data import split_fingerprint
from .common import mean_std
from .metrics import (ERROR_METRICS, HIGHER_IS_BETTER, LOSSES, MSE, evaluate,
                      with_auxiliary_loss)
from .minibatch import RandomPartitionStep

PATIENCE_MODES = ("reset", "total")


class EarlyStopping:
    """Counts non-improving epochs; ``reset`` restarts the count after an improvement,
    ``total`` (the official spatial-temporal code) never does."""

    def __init__(self, patience: int, mode: str):
        if mode not in PATIENCE_MODES:
            raise ValueError(f"trainer.patience_mode={mode} is not allowed; use "
                             f"{' or '.join(PATIENCE_MODES)}")
        self.patience, self.mode, self.bad = patience, mode, 0

    def step(self, improved: bool) -> bool:
        """Record one epoch; True when training should stop."""
        if improved:
            if self.mode == "reset":
                self.bad = 0
        else:
            self.bad += 1
        return self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.bad = int(state["bad"])


class FullGraphEpoch:
    """One optimizer step on the whole graph, the loss on the train nodes (official main.py)."""

    def __init__(self, model, optimizer, x, edge_index, y, train_idx, loss_fn, device,
                 autocast_dtype):
        self.model, self.optimizer = model, optimizer
        self.x, self.edge_index, self.y, self.train_idx = x, edge_index, y, train_idx
        self.loss_fn, self.device, self.autocast = loss_fn, device, autocast_dtype

    def train_epoch(self, epoch: int, progress=None) -> float:
        self.model.train()
        self.optimizer.zero_grad()
        with torch.autocast(self.device.type, dtype=self.autocast,
                            enabled=self.autocast is not None):
            out = self.model(self.x, self.edge_index)
            loss = self.loss_fn(out[self.train_idx].float(), self.y[self.train_idx])
        with_auxiliary_loss(self.model, loss).backward()
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NodeTask:
    """Node classification on one graph, full-graph or random-partition mini-batches."""
    kind = "node"
    trainers = ("fullgraph", "minibatch")

    def __init__(self, dataset, spec, settings, device, eval_device=None, rank=0, world=1):
        self.dataset, self.spec, self.settings = dataset, spec, settings
        self.trainer = settings.trainer
        self.device, self.eval_device = device, eval_device or device
        self.rank, self.world = rank, world
        self.metric = spec.metric
        self.higher_is_better = HIGHER_IS_BETTER[spec.metric]
        self.loss_fn = LOSSES[spec.loss]
        self.batch_size = self.trainer.batch_size
        self.autocast = {"32": None, "bf16": torch.bfloat16}[self.trainer.precision]
        # Mini-batches move chunks to the device and leave the graph where it is (CPU for
        # large graphs); the whole graph goes to a device only to train or evaluate there.
        self.train_data = None if self.batch_size else self._on(device)
        self.eval_data = self.train_data if self.train_data is not None and \
            self.eval_device == device else self._on(self.eval_device)

    def _on(self, dev):
        d = self.dataset
        return tuple(t.to(dev) for t in (d.x, d.edge_index, d.y))

    def channels(self) -> tuple[int, int]:
        return self.dataset.num_features, self.dataset.num_classes

    def split(self, run: int):
        return self.dataset.split(run, self.settings.split_seed)

    def split_fingerprint(self, split) -> str:
        return split_fingerprint(split)

    def epoch_runner(self, model, optimizer, split, run: int):
        if self.batch_size is not None:
            d = self.dataset
            return RandomPartitionStep(d.x, d.y, d.edge_index, split.train, self.batch_size,
                                       self.loss_fn, self.device,
                                       seed=self.settings.seed + run, rank=self.rank,
                                       world_size=self.world, autocast_dtype=self.autocast,
                                       model=model, optimizer=optimizer)
        x, edge_index, y = self.train_data
        return FullGraphEpoch(model, optimizer, x, edge_index, y, split.train.to(self.device),
                              self.loss_fn, self.device, self.autocast)

    def evaluates_at(self, epoch: int, epochs: int) -> bool:
        """Every eval_step-th epoch from 0, as the official scripts (Pokec, 500 epochs every
        9: 0, 9, ..., 495); ``trainer.eval_last`` adds the last epoch as a candidate."""
        return epoch % self.trainer.eval_step == 0 or (
            bool(self.trainer.eval_last) and epoch == epochs - 1)

    def evaluate(self, model, split) -> dict:
        # Module.to walks every submodule even when nothing moves: 2 ms of a 50 ms Cora epoch
        moves = self.eval_device != self.device
        if moves:
            model.to(self.eval_device)
        scores = evaluate(model, *self.eval_data, split, self.metric, self.spec.loss,
                          self.trainer.eval_chunk)
        if moves:
            model.to(self.device)
        return scores

    def evaluate_test(self, model, split) -> dict:
        """Eval mode on a checkpoint: the same evaluation on the task's devices."""
        return self.evaluate(model, split)

    def early_stopping(self):
        return None

    def finish_run(self, model, best: dict, best_state: dict, split) -> dict:
        return {k: best[k] for k in ("train", "valid", "test")}

    def checkpoint_metrics(self, record: dict) -> dict:
        return {"metric": self.metric, "best_epoch": record["best_epoch"],
                **{k: record[k] for k in ("train", "valid", "test")}}

    def run_line(self, record: dict) -> str:
        return (f"run {record['run']:02d} | seed {record['seed']} | best epoch "
                f"{record['best_epoch']} | train {self.fmt(record['train'])} | valid "
                f"{self.fmt(record['valid'])} | test {self.fmt(record['test'])} | "
                f"{record['seconds']:.1f}s")

    def summary(self, records: list[dict]) -> dict:
        test_mean, test_std = mean_std([r["test"] for r in records])
        valid_mean, valid_std = mean_std([r["valid"] for r in records])
        regime = "fullgraph" if self.batch_size is None else f"minibatch (B={self.batch_size})"
        return {"metric": self.metric, "regime": regime,
                "higher_is_better": self.higher_is_better,
                "split": self.dataset.splits.description, "test_mean": test_mean,
                "test_std": test_std, "valid_mean": valid_mean, "valid_std": valid_std,
                "eval_device": str(self.eval_device), "precision": self.trainer.precision}

    def report(self, summary: dict) -> str:
        return (f"{summary['metric']} over {summary['n_runs']} run(s): test "
                f"{self.fmt(summary['test_mean'])} ± {self.fmt(summary['test_std'])} | valid "
                f"{self.fmt(summary['valid_mean'])}")

    def fmt(self, value: float) -> str:
        """Percent for the scores in [0, 1]; 4 decimals for an error (MSE, MAE)."""
        return f"{value:.4f}" if self.metric in ERROR_METRICS else f"{100 * value:.2f}"


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
            loss = sum(with_auxiliary_loss(self.model, self.cost_fn(self.model(x, ei, ew), y))
                       for x, ei, ew, y in self.snapshots) / len(self.snapshots)
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


class TemporalTask:
    """Spatial-temporal node regression over snapshots (official spatial-temporal/main.py):
    chronological split, early stopping, test MSE in both conventions from the best-valid
    weights (``paper``: the official [n,1]-[n] broadcast; ``standard``: elementwise)."""
    kind = "temporal"
    trainers = ("temporal",)
    metric = "mse"
    higher_is_better = False

    def __init__(self, dataset, spec, settings, device, eval_device=None, rank=0, world=1):
        self.dataset, self.spec, self.settings = dataset, spec, settings
        self.trainer, self.device = settings.trainer, device
        self.mse = self.trainer.mse
        if self.mse not in MSE:
            raise ValueError(f"trainer.mse={self.mse} is not allowed; use {' or '.join(MSE)}")
        EarlyStopping(self.trainer.patience or 1, self.trainer.patience_mode)  # checks the mode
        if dataset.step not in ("cumulative", "per_snapshot"):
            raise ValueError(f"dataset.step={dataset.step} is not allowed; use cumulative or "
                             "per_snapshot")
        self._split = dataset.split()
        self.parts = {name: self._on([dataset.snapshots[i] for i in getattr(self._split, name)])
                      for name in ("train", "valid", "test")}

    def _on(self, snapshots):
        dev = self.device
        return [(s.x.to(dev), s.edge_index.to(dev), s.edge_weight.to(dev), s.y.to(dev))
                for s in snapshots]

    def channels(self) -> tuple[int, int]:
        return self.dataset.num_features, 1

    def split(self, run: int):
        return self._split

    def split_fingerprint(self, split) -> str:
        return chrono_split_fingerprint(split)

    def epoch_runner(self, model, optimizer, split, run: int):
        return SnapshotEpoch(model, optimizer, self.parts["train"], MSE[self.mse],
                             self.dataset.step)

    def evaluates_at(self, epoch: int, epochs: int) -> bool:
        return True

    def evaluate(self, model, split) -> dict:
        scores = evaluate_temporal(model, self.parts["valid"])
        return {"valid": scores[self.mse], **{f"valid_mse_{k}": v for k, v in scores.items()}}

    def evaluate_test(self, model, split) -> dict:
        scores = evaluate_temporal(model, self.parts["test"])
        return {"test": scores[self.mse], **{f"test_mse_{k}": v for k, v in scores.items()}}

    def early_stopping(self):
        if self.trainer.patience is None:
            return None
        return EarlyStopping(self.trainer.patience, self.trainer.patience_mode)

    def finish_run(self, model, best: dict, best_state: dict, split) -> dict:
        model.load_state_dict(best_state)
        return {"valid": best["valid"], **self.evaluate_test(model, split)}

    def checkpoint_metrics(self, record: dict) -> dict:
        return {"metric": "mse", "mse": self.mse, "best_epoch": record["best_epoch"],
                **{k: v for k, v in record.items() if k.startswith(("valid", "test"))}}

    def run_line(self, record: dict) -> str:
        stopped = f" (stopped after {record['epochs_run']})" if "epochs_run" in record else ""
        return (f"run {record['run']:02d} | seed {record['seed']} | best epoch "
                f"{record['best_epoch']}{stopped} | valid "
                f"{record['valid']:.4f} | test MSE paper {record['test_mse_paper']:.4f} "
                f"standard {record['test_mse_standard']:.4f} | {record['seconds']:.1f}s")

    def summary(self, records: list[dict]) -> dict:
        s = self._split
        out = {"metric": "mse", "mse_convention": self.mse, "higher_is_better": False,
               "split": f"train {len(s.train)} / valid {len(s.valid)} / test {len(s.test)} "
                        "(chronological)",
               "report_note": f"MSE, {self.mse} convention"}
        for key in ("test", "valid", "test_mse_paper", "test_mse_standard"):
            values = [r[key] for r in records]
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std(values)
            # the official spatial-temporal script prints numpy's population std (ddof 0)
            out[f"{key}_std_population"] = statistics.pstdev(values)
        out["paper_std_ddof"] = 0  # reproduce.py compares with the paper in that convention
        return out

    @staticmethod
    def report(summary: dict) -> str:
        scores = " | ".join(f"test MSE ({c}) {summary[f'test_mse_{c}_mean']:.4f} ± "
                            f"{summary[f'test_mse_{c}_std']:.4f}" for c in ("paper", "standard"))
        return (f"mse over {summary['n_runs']} run(s), selected by the "
                f"{summary['mse_convention']} convention: {scores}")

    @staticmethod
    def fmt(value: float) -> str:
        return f"{value:.4f}"

