"""An Optuna study that several processes feed at once, with an exact budget.

The budget is fixed in the storage, not in each process: the process that creates the study
adds ``n_trials`` *waiting* trials, and every process (on this machine, or in SLURM jobs on
others) claims waiting trials one at a time (a claim is one atomic state change in the
storage, so no trial is handed out twice). A process that dies leaves its trials running;
their heartbeat stops, and after ``grace_seconds`` any process marks them failed, so a study
ends with exactly ``n_trials`` finished trials (complete, pruned or failed). Rerunning with a
larger ``n_trials`` adds the difference.

Storage, from ``hydra.sweeper.storage``:
    null                                   in memory (one process; no pruning in jobs)
    sqlite:///path/optuna.db               one machine (a local disk, not NFS)
    postgresql+psycopg://user@host/db      an RDB server, for many machines
    journal:///shared/path/study.log       Optuna's journal file, for many machines without
                                           a database server (a file system with locks)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..config.core import ConfigError

PRUNERS = ("none", "median", "hyperband")
HEARTBEAT = "difformer_heartbeat"  # trial system attribute: the owner's last sign of life
BUDGET = "difformer_n_trials"  # study user attribute: the budget the study holds


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``url``; one :class:`ConfigError` when it cannot be opened."""
    import optuna

    if url is None or str(url) in ("", "null", "None"):
        return optuna.storages.InMemoryStorage()
    url = str(url)
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal://") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url)
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"hydra.sweeper.storage={url}: the database driver {err.name!r} is not "
                "installed (PostgreSQL: pip install 'psycopg[binary]' and write "
                "postgresql+psycopg://...)"
            ) from err
        except Exception as err:  # noqa: BLE001 - SQLAlchemy's errors name the server's reason
            # processes started together race to create the schema of a new database: the
            # loser's next attempt finds the tables
            racing = "already exists" in str(err) or "duplicate key" in str(err)
            if racing and attempt < 3:
                time.sleep(0.5 + attempt)
                continue
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"hydra.sweeper.storage={url}: cannot open it: {first}") from err
    raise AssertionError("unreachable")


def make_pruner(name: str, args: dict | None) -> Any:
    import optuna

    name = str(name).lower()
    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner={name}: allowed: {', '.join(PRUNERS)}")
    args = dict(args or {})
    if name == "none":
        return optuna.pruners.NopPruner()
    cls = optuna.pruners.MedianPruner if name == "median" else optuna.pruners.HyperbandPruner
    try:
        return cls(**args)
    except TypeError as err:
        raise ConfigError(f"hydra.sweeper.pruner_args for {name}: {err}") from err


def make_sampler(name: str, seed: int | None, grid: dict[str, list] | None) -> Any:
    import optuna

    name = str(name).lower()
    if name == "grid":
        if grid is None:
            raise ConfigError(
                "hydra/sweeper/sampler=grid needs every searched key to be a choice(...) "
                "(an interval has no grid): use sampler=tpe or random for intervals"
            )
        return quiet_grid_sampler(grid, seed=seed)
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }
    if name not in samplers:
        raise ConfigError(
            f"hydra.sweeper.sampler.name={name}: allowed: grid, {', '.join(samplers)}"
        )
    return samplers[name](seed=seed)


def grid_size(grid: dict[str, list]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def quiet_grid_sampler(grid: dict[str, list], seed: int | None = None):
    """Optuna's grid sampler without its ``study.stop()`` when the grid is exhausted (that
    call works only inside ``study.optimize``; here the study's budget ends the sweep)."""
    import optuna

    class QuietGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return QuietGridSampler(grid, seed=seed)


def open_study(storage, name: str, direction: str, sampler, pruner, n_trials: int):
    """Create or load study ``name`` and make its budget ``n_trials`` trials in all."""
    import optuna

    created = False
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=optuna.study.StudyDirection[direction.upper()],
            sampler=sampler,
            pruner=pruner,
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        stored = study.direction.name.lower()
        if stored != direction:
            raise ConfigError(
                f"study {name!r} in the storage {direction_hint(stored, direction)}"
            ) from None
    if not created:
        wait_for_budget(study)
    have = len(study.get_trials(deepcopy=False))
    for _ in range(max(0, n_trials - have)):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING))
    study.set_user_attr(BUDGET, max(n_trials, have))
    return study, have


def direction_hint(stored: str, asked: str) -> str:
    return (
        f"was created to {stored}, this sweep asks to {asked}: use another "
        "hydra.sweeper.study_name (or the same direction)"
    )


def wait_for_budget(study, seconds: float = 60.0) -> None:
    """A study just created by another process gets its waiting trials a moment later."""
    deadline = time.time() + seconds
    while BUDGET not in study.user_attrs and time.time() < deadline:
        time.sleep(0.5)


def claim(study, storage, count: int) -> list:
    """Up to ``count`` waiting trials, now running and owned by this process."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    out: list = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if len(out) == count:
            break
        try:
            if not storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                continue  # another process claimed it first
        except UpdateFinishedTrialError:
            continue
        storage.set_trial_system_attr(frozen._trial_id, HEARTBEAT, time.time())
        out.append(optuna.trial.Trial(study, frozen._trial_id))
    return out


def suggest(trial, space) -> dict[str, Any]:
    """The trial's values of every searched key (the study's sampler chooses)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values = {}
    for key, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, IntDistribution):
            values[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[key] = trial.suggest_float(
                key, dist.low, dist.high, step=dist.step, log=dist.log
            )
    return values


def last_beat(trial) -> float | None:
    beat = trial.system_attrs.get(HEARTBEAT)
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    return None if beat is None else float(beat)


def late(study, seconds: float) -> list[int]:
    """The running trials whose owner has not beaten for ``seconds``."""
    from optuna.trial import TrialState

    now = time.time()
    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if (beat := last_beat(t)) is not None and now - beat >= seconds
    ]


def fail_stale(study, storage, grace_seconds: float) -> list[int]:
    """Mark failed the running trials whose owner stopped beating ``grace_seconds`` ago;
    returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now, failed = time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = last_beat(trial)
        if beat is None or now - beat < grace_seconds:
            continue
        try:
            storage.set_trial_system_attr(
                trial._trial_id,
                "difformer_failed",
                f"no heartbeat for {now - beat:.0f}s: its process was stopped",
            )
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial.number)
        except UpdateFinishedTrialError:
            continue
    return failed


class Heartbeat:
    """A thread that stamps this process's running trials every ``interval`` seconds."""

    def __init__(self, storage, interval: float):
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="optuna-heartbeat")

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=self.interval + 5)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
                except Exception:  # noqa: BLE001 - finished meanwhile, or the server blinked
                    pass


def counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name.lower()] = out.get(trial.state.name.lower(), 0) + 1
    return out
