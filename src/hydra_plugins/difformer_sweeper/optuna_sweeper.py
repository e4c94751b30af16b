"""``hydra/sweeper=difformer_optuna``: Hydra's sweeper interface (``-m``, the search space in
YAML or on the command line) over Optuna 4/5, written here because hydra-optuna-sweeper pins
optuna < 3 (and with it SQLAlchemy < 2).

What it adds to a plain ask-and-tell loop (:mod:`difformer.sweeps`):
- one study fed by many processes or SLURM jobs, with exactly ``n_trials`` trials in all
  (sqlite on one machine; PostgreSQL or a journal file across machines);
- rerunning the command continues the study; a process killed mid-trial leaves that trial to
  be marked failed by the others once its heartbeat stops;
- pruning from each epoch's valid score (``hydra.sweeper.pruner=median|hyperband|none``);
- before the first trial, every searched value is composed and checked and the dataset is
  loaded once, so a bad search space or a missing dataset is one line (exit 2), not N failed
  trials; a study whose every trial failed ends with one line naming each failure (exit 1).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

from difformer.config.core import ConfigError
from difformer.runs.rundir import STATUS, read_json
from difformer.sweeps import search_space
from difformer.sweeps import study as studies
from difformer.sweeps.trial import ENV

DIRECTIONS = ("auto", "maximize", "minimize")


class DifformerOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any = None,
        direction: str = "auto",
        storage: str | None = None,
        study_name: str = "difformer",
        n_trials: int = 20,
        n_jobs: int = 1,
        pruner: str = "none",
        pruner_args: Any = None,
        heartbeat_seconds: float = 60.0,
        grace_seconds: float = 180.0,
        check_data: bool = True,
        params: Any = None,
    ) -> None:
        sampler = OmegaConf.to_container(sampler) if isinstance(sampler, DictConfig) else sampler
        self.sampler = dict(sampler or {"name": "tpe"})
        self.direction, self.storage, self.study_name = str(direction), storage, str(study_name)
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.pruner = str(pruner)
        self.pruner_args = (
            OmegaConf.to_container(pruner_args) if isinstance(pruner_args, DictConfig) else {}
        )
        self.heartbeat_seconds, self.grace_seconds = float(heartbeat_seconds), float(grace_seconds)
        self.check_data = bool(check_data)
        self.params = {str(k): str(v) for k, v in (params or {}).items()}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- before the study ---------------------------------------------------------------

    def prepare(self, arguments: list[str]):
        """The search space, sampler, pruner and direction, every value checked."""
        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"hydra.sweeper.direction={self.direction}: allowed: {', '.join(DIRECTIONS)}"
            )
        if self.n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={self.n_trials}: at least 1")
        space = search_space.parse(self.params, arguments)
        if not space.distributions:
            raise ConfigError(
                "the search space is empty: set hydra.sweeper.params or sweep a key on the "
                "command line (e.g. model.dropout='interval(0,0.5)')"
            )
        pruner = studies.make_pruner(self.pruner, self.pruner_args)
        if self.pruner.lower() != "none" and not self.storage:
            raise ConfigError(
                f"hydra.sweeper.pruner={self.pruner} needs a storage the jobs can reach "
                "(hydra.sweeper.storage=sqlite:///..., postgresql+psycopg://... or journal://...)"
            )
        grid = space.grid()
        sampler = studies.make_sampler(
            self.sampler.get("name", "tpe"), self.sampler.get("seed"), grid
        )
        if self.sampler.get("name") == "grid" and grid is not None:
            size = studies.grid_size(grid)
            if self.n_trials > size:
                print(f"optuna: the grid has {size} points: n_trials {self.n_trials} -> {size}")
                self.n_trials = size
        direction = self.check_before_study(space)
        return space, sampler, pruner, direction

    def check_before_study(self, space) -> str:
        """Compose and check every searched value (one key changed at a time), then load the
        dataset once; returns the direction (``auto``: from the dataset's metric)."""
        from hydra.core.hydra_config import HydraConfig

        from difformer.config.settings import build_probe, resolve
        from difformer.modes.train import load_data
        from difformer.train.metrics import HIGHER_IS_BETTER
        from difformer.train.tasks import TASKS

        loader = self.hydra_context.config_loader
        first = None  # (settings, probe) of the first point: its dataset is loaded below
        for point in space.corners():
            overrides = space.overrides(point)
            cfg = loader.load_sweep_config(self.config, overrides)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            try:
                settings = resolve(cfg, TASKS)
                probe = build_probe(settings)  # the model's own checks of its keywords
            except ConfigError as err:
                where = " ".join(f"{k}={search_space.text(v)}" for k, v in point.items())
                raise ConfigError(f"a trial with {where} cannot run: {err}") from err
            first = first or (settings, probe)
        HydraConfig.instance().set_config(self.config)
        assert first is not None
        if not self.check_data and self.direction != "auto":
            return self.direction
        _, spec = load_data(*first)
        if self.direction != "auto":
            return self.direction
        return "maximize" if HIGHER_IS_BETTER.get(spec.metric, True) else "minimize"

    # -- the study ----------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        from difformer.data import DataError, DatasetUnavailable

        try:
            space, sampler, pruner, direction = self.prepare(arguments)
            storage = studies.open_storage(self.storage)
            study, had = studies.open_study(
                storage, self.study_name, direction, sampler, pruner, self.n_trials
            )
        except (ConfigError, DataError, DatasetUnavailable) as err:
            print(f"error: the sweep cannot start: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        budget = max(self.n_trials, had)
        print(
            f"optuna: study {self.study_name!r} ({direction}, {self.storage or 'in memory'}): "
            f"{had} trial(s) there before, {budget} in all",
            flush=True,
        )
        with studies.Heartbeat(storage, self.heartbeat_seconds) as beat:
            while True:
                stale = studies.fail_stale(study, storage, self.grace_seconds)
                if stale:
                    print(f"optuna: trial(s) {stale} had no heartbeat: marked failed", flush=True)
                batch = studies.claim(study, storage, self.n_jobs)
                if not batch:
                    # trials of a process that stopped beating: wait until they are marked
                    # failed (or beat again), so the study ends with every trial finished
                    if not studies.late(study, 2 * self.heartbeat_seconds):
                        break
                    time.sleep(self.heartbeat_seconds)
                    continue
                beat.trial_ids.update(t._trial_id for t in batch)
                try:
                    self.run_batch(study, space, batch)
                finally:
                    beat.trial_ids.difference_update(t._trial_id for t in batch)
        self.report(study)

    def run_batch(self, study, space, batch: list) -> None:
        from optuna.trial import TrialState

        jobs = []
        for trial in batch:
            values = studies.suggest(trial, space)
            jobs.append(
                [
                    *space.overrides(values),
                    f"hydra.sweep.subdir={trial.number}",
                    f"+hydra.job.env_set.{ENV}={trial._trial_id}",
                ]
            )
        self.validate_batch_is_legal(jobs)
        returns = self.launcher.launch(jobs, initial_job_idx=batch[0].number)
        for trial, ret in zip(batch, returns):
            state, value, why = outcome(ret)
            try:
                if why:
                    trial.set_user_attr("error", why)
                if state == "complete":
                    study.tell(trial, value)
                else:
                    study.tell(trial, state=TrialState[state.upper()])
            except Exception as err:  # noqa: BLE001 - e.g. failed as stale by another process
                print(f"optuna: trial {trial.number}: {type(err).__name__}: {err}", flush=True)

    def report(self, study) -> None:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        n = studies.counts(study)
        line = ", ".join(f"{v} {k}" for k, v in sorted(n.items()))
        print(f"optuna: study {self.study_name!r}: {line}", flush=True)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        if complete:
            best = study.best_trial
            results = {
                "name": "optuna",
                "study_name": self.study_name,
                "best_trial": best.number,
                "best_params": best.params,
                "best_value": best.value,
                "trials": n,
            }
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
            print(f"optuna: best trial {best.number}: {best.value} with {best.params}", flush=True)
            return
        if n.get("waiting") or n.get("running"):
            return  # other processes are still at work on this study
        reasons: dict[str, list[int]] = {}  # the same reason once, with every trial it ended
        for t in trials:
            if t.state == TrialState.FAIL:
                reasons.setdefault(failure(t), []).append(t.number)
        failures = "; ".join(
            f"trial{'s' * (len(ns) > 1)} {', '.join(map(str, ns))}: {why}"
            for why, ns in reasons.items()
        )
        print(
            f"error: no trial of study {self.study_name!r} completed ({line}): {failures}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)


def failure(trial) -> str:
    return str(
        trial.user_attrs.get("error") or trial.system_attrs.get("difformer_failed") or "failed"
    )


def outcome(ret) -> tuple[str, float | None, str | None]:
    """(state, value, why) of a finished job: complete with a finite value, pruned, or failed
    with the reason its ``status.json`` (or the exception) gives."""
    try:
        value = ret.return_value
    except Exception as err:  # noqa: BLE001 - the job raised: Hydra keeps the exception
        return "fail", None, f"{type(err).__name__}: {err}"
    if isinstance(value, dict) and value.get("pruned"):
        return "pruned", None, None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return "complete", float(value), None
    status = {}
    try:
        status = read_json(Path(ret.hydra_cfg.hydra.runtime.output_dir) / STATUS) or {}
    except Exception:  # noqa: BLE001 - no status: the job ended before writing one
        pass
    why = status.get("error") or status.get("missing_path") or f"returned {value!r}"
    return "fail", None, str(why).splitlines()[0]
