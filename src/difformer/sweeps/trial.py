"""The job's side of a study: report each evaluated epoch's valid score to the trial and stop
when the study's pruner says so.

The sweeper tells a job which trial it is through the environment (``DIFFORMER_OPTUNA_TRIAL``,
set by Hydra's ``hydra.job.env_set`` in whatever process or node runs the job) and the job
opens the study from ``hydra.sweeper`` in its own Hydra config. Steps are counted over all
runs of the job: run ``r``'s epoch ``e`` is step ``r * epochs + e``, so trials with the same
trainer settings compare like with like.
"""

from __future__ import annotations

import os
from typing import Any

from .study import make_pruner, open_storage

ENV = "DIFFORMER_OPTUNA_TRIAL"


class TrialPruned(Exception):
    """The study's pruner stopped this trial (not an error: its job ends with status pruned)."""

    def __init__(self, number: int, run: int, epoch: int, value: float):
        super().__init__(
            f"trial {number} pruned after epoch {epoch} of run {run} (valid {value:.4f}): "
            "the study's pruner ranks it below the other trials at this step"
        )
        self.number, self.run, self.epoch, self.value = number, run, epoch, value


class TrialReporter:
    def __init__(self, trial, epochs: int, prunes: bool):
        self.trial, self.epochs, self.prunes = trial, max(1, int(epochs)), prunes

    def report(self, record: dict) -> None:
        value = record.get("valid")
        if not isinstance(value, (int, float)):
            return
        run, epoch = int(record.get("run", 0)), int(record.get("epoch", 0))
        self.trial.report(float(value), run * self.epochs + epoch)
        if self.prunes and self.trial.should_prune():
            raise TrialPruned(self.trial.number, run, epoch, float(value))

    def wrap(self, logger) -> ReportingLogger:
        return ReportingLogger(logger, self)


class ReportingLogger:
    """A run logger that also reports to the trial (after the record is written, so a pruned
    trial's last epoch is in its metrics.jsonl)."""

    def __init__(self, inner, reporter: TrialReporter):
        self.inner, self.reporter = inner, reporter

    def log(self, record: dict) -> None:
        self.inner.log(record)
        self.reporter.report(record)

    def truncate(self, run: int, epoch: int) -> None:
        self.inner.truncate(run, epoch)

    def run_finished(self, record: dict) -> None:
        self.inner.run_finished(record)

    def finish(self, summary: dict) -> None:
        self.inner.finish(summary)

    def close(self) -> None:
        self.inner.close()


def from_sweeper_config(sweeper: Any, epochs: int) -> TrialReporter | None:
    """This job's trial, when an Optuna sweeper with a persistent storage started it."""
    trial_id = os.environ.get(ENV)
    if not trial_id or sweeper is None or not sweeper.get("storage"):
        return None
    import optuna

    storage = open_storage(sweeper.get("storage"))
    pruner_name = str(sweeper.get("pruner") or "none")
    study = optuna.load_study(
        study_name=str(sweeper.get("study_name")),
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # the job samples nothing
        pruner=make_pruner(pruner_name, sweeper.get("pruner_args")),
    )
    trial = optuna.trial.Trial(study, int(trial_id))
    return TrialReporter(trial, epochs, prunes=pruner_name.lower() != "none")
