"""What every task kind shares, and what each must define.

The run loop (:mod:`difformer.train.loop`) knows nothing of node, temporal or graph data; it
asks its task. A kind is one subclass of :class:`Task` (one file in this folder) and one line
in :data:`difformer.train.tasks.TASKS`; a dataset's :class:`~difformer.data.DatasetSpec` names
its kind. The class owns, besides its epochs and evaluations:

* ``trainers``: the ``trainer=`` presets it trains with, ``auto_trainer``: what
  ``trainer=auto`` becomes (the preset and the defaults of its null keys), and
  ``unused_trainer_keys``: the trainer keys it never reads (dropped by ``trainer=auto``);
* ``level``: what the model must predict (``node`` or ``graph``);
* ``out_channels(dataset)``, ``model_inputs()``: the model's sizes and extra inputs;
* ``early_stopping()``: from ``trainer.patience`` and ``trainer.patience_mode``;
* ``summary(records)``, ``report(summary)``, ``run_line(record)``: how results read.

The defaults here are those of the scored kinds (node and graph: a metric per split, selection
on valid); the temporal kind overrides what differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ...data import split_fingerprint
from ..common import mean_std
from ..metrics import ERROR_METRICS, HIGHER_IS_BETTER, LOSSES

PATIENCE_MODES = ("reset", "total")
AUTOCAST = {"32": None, "bf16": torch.bfloat16}


class EarlyStopping:
    """Counts non-improving epochs; ``reset`` restarts the count after an improvement,
    ``total`` (the official spatial-temporal code) never does."""

    def __init__(self, patience: int, mode: str):
        if mode not in PATIENCE_MODES:
            raise ValueError(
                f"trainer.patience_mode={mode} is not allowed; use {' or '.join(PATIENCE_MODES)}"
            )
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


class Task(ABC):
    """One task kind over one dataset, on one device (``rank`` of ``world`` under torchrun)."""

    kind: str  # the name a DatasetSpec gives (spec.kind)
    level = "node"  # what the model predicts: node | graph
    trainers: tuple[str, ...]  # the trainer= presets this kind trains with
    auto_trainer: tuple[str, dict]  # trainer=auto: (preset, defaults of null keys)
    unused_trainer_keys: tuple[str, ...] = ()
    metric: str
    higher_is_better: bool

    def __init__(self, dataset, spec, settings, device, eval_device=None, rank=0, world=1):
        self.dataset, self.spec, self.settings = dataset, spec, settings
        self.trainer = settings.trainer
        self.device, self.eval_device = device, eval_device or device
        self.rank, self.world = rank, world
        self.metric = spec.metric
        self.higher_is_better = HIGHER_IS_BETTER[spec.metric]
        self.loss_fn = LOSSES[spec.loss]
        self.autocast = AUTOCAST.get(self.trainer.precision)

    # ------------------------------------------------------------------ what the model sees
    @classmethod
    def out_channels(cls, dataset) -> int:
        return dataset.num_classes

    def channels(self) -> tuple[int, int]:
        return self.dataset.num_features, self.out_channels(self.dataset)

    def model_inputs(self) -> dict:
        """Extra constructor keywords describing the data (graph kinds: feature kinds)."""
        return {}

    @classmethod
    def supports_torchrun(cls, trainer) -> bool:
        return False

    # ------------------------------------------------------------------ one run
    def split(self, run: int):
        return self.dataset.split(run, self.settings.split_seed)

    def split_fingerprint(self, split) -> str:
        return split_fingerprint(split)

    def input_transform(self, split) -> dict | None:
        """The statistics, fitted on ``split``'s train part, that the inputs are transformed
        with (recorded in every checkpoint); None: the inputs are used as loaded."""
        return None

    def use_input_transform(self, split, state: dict | None) -> None:
        """Eval mode: transform ``split``'s inputs with the statistics a checkpoint recorded
        (None: as loaded) instead of fitting them again."""
        return None

    @abstractmethod
    def epoch_runner(self, model, optimizer, split, run: int):
        """An object whose ``train_epoch(epoch, progress)`` returns the mean training loss and
        whose ``state_dict()`` is what it must carry across a resume."""

    def evaluates_at(self, epoch: int, epochs: int) -> bool:
        return True

    @abstractmethod
    def evaluate(self, model, split) -> dict:
        """Scores with ``valid`` (the selection score) and whatever is logged."""

    def evaluate_test(self, model, split) -> dict:
        """Eval mode on a checkpoint: the same evaluation on the task's devices."""
        return self.evaluate(model, split)

    def early_stopping(self) -> EarlyStopping | None:
        if self.trainer.patience is None:
            return None
        return EarlyStopping(self.trainer.patience, self.trainer.patience_mode)

    def finish_run(self, model, best: dict, best_state: dict, split) -> dict:
        return {k: best[k] for k in ("train", "valid", "test")}

    # ------------------------------------------------------------------ how results read
    def checkpoint_metrics(self, record: dict) -> dict:
        return {
            "metric": self.metric,
            "best_epoch": record["best_epoch"],
            **{k: record[k] for k in ("train", "valid", "test")},
        }

    def run_line(self, record: dict) -> str:
        return (
            f"run {record['run']} | seed {record['seed']} | best epoch "
            f"{record['best_epoch']} | train {self.fmt(record['train'])} | valid "
            f"{self.fmt(record['valid'])} | test {self.fmt(record['test'])} | "
            f"{record['seconds']:.1f}s"
        )

    def regime(self) -> str:
        return self.trainer.name

    def summary(self, records: list[dict]) -> dict:
        test_mean, test_std = mean_std([r["test"] for r in records])
        valid_mean, valid_std = mean_std([r["valid"] for r in records])
        return {
            "metric": self.metric,
            "regime": self.regime(),
            "higher_is_better": self.higher_is_better,
            "split": self.dataset.splits.description,
            "test_mean": test_mean,
            "test_std": test_std,
            "valid_mean": valid_mean,
            "valid_std": valid_std,
        }

    def report(self, summary: dict) -> str:
        return (
            f"{summary['metric']} over {summary['n_runs']} run(s): test "
            f"{self.fmt(summary['test_mean'])} ± {self.fmt(summary['test_std'])} | valid "
            f"{self.fmt(summary['valid_mean'])}"
        )

    def fmt(self, value: float | None) -> str:
        """Percent for the scores in [0, 1]; 4 decimals for an error (MSE, MAE); ``n/a`` for
        a value that does not exist (the std of one run, a part not scored), as in
        ``aggregate.py``'s tables (``null`` in the JSON files)."""
        if value is None or value != value:
            return "n/a"
        return f"{value:.4f}" if self.metric in ERROR_METRICS else f"{100 * value:.2f}"
