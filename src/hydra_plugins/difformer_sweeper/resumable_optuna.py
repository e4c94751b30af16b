"""An Optuna sweeper that resumes: ``hydra/sweeper=resumable_optuna`` (difformer's; Hydra
loads sweepers only from the ``hydra_plugins`` namespace, hence this package).

hydra-optuna-sweeper reloads a study from its storage (``load_if_exists``) but then runs
``n_trials`` *more* trials and numbers the jobs from 0 again, over the folders of the first
attempt; and when every trial failed it crashes on ``study.best_trial``. Here ``n_trials`` is
the study's total: trials already finished (complete, failed or pruned) count, new jobs are
numbered after the existing trials, and a study without a completed trial ends with one line
instead of a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # the sweep extra; without it this plugin defines nothing
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # pragma: no cover - depends on the installed extras
    OptunaSweeper = None


def finished_and_all(storage, study_name: str) -> tuple[int, int]:
    """(finished trials, all trials) of the stored study; (0, 0) when there is none yet."""
    import optuna

    if storage is None:
        return 0, 0
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return 0, 0
    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.PRUNED,
    )
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in states for t in trials), len(trials)


def make_sqlite_folder(storage) -> None:
    """sqlite does not create the folder of its file, and Hydra creates the sweep directory only
    when it launches the first job -- after the study is opened."""
    url = str(storage or "")
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)


if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        def sweep(self, arguments):
            impl = self.sweeper
            make_sqlite_folder(impl.storage)
            finished, existing = finished_and_all(impl.storage, impl.study_name)
            if finished:
                print(
                    f"optuna: study {impl.study_name!r} has {finished} finished trial(s); "
                    f"running up to {max(0, impl.n_trials - finished)} more",
                    flush=True,
                )
            impl.n_trials = max(0, impl.n_trials - finished)
            impl.job_idx = existing  # new trials' job folders come after the earlier ones
            try:
                return impl.sweep(arguments)
            except ValueError as err:
                if "No trials are completed yet" not in str(err):
                    raise
                print(
                    f"optuna: no trial of study {impl.study_name!r} completed; see each job's "
                    "status.json",
                    file=sys.stderr,
                    flush=True,
                )
                return None
