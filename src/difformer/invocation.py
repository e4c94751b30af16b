"""One invocation of the package, whatever started it (``train.py``, a parallel worker, a
SLURM job): check the settings, decide what the run directory holds, dispatch on the mode, and
record why a run stopped.

:func:`run` is below the command line (:mod:`difformer.cli`, which maps exceptions to exit
codes) and above the modes (:mod:`difformer.modes`), which never look at the raw config.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config.core import config_hash
from .config.settings import Settings, build_probe, resolve
from .data import DatasetUnavailable
from .modes import evaluate, inspect, train
from .runs import rundir
from .runs.files import write_text
from .sweeps.trial import TrialPruned
from .sweeps.trial import from_sweeper_config as trial_reporter
from .train import distributed
from .train.checkpoint import OFFICIAL_FORMAT, load_checkpoint
from .train.lifecycle import Interrupted
from .train.tasks import TASKS


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Check the settings, decide what the run directory holds, and dispatch on the mode."""
    settings = resolve(cfg, TASKS)  # also resolves trainer=auto in cfg, before it is hashed
    probe = build_probe(settings)
    if settings.mode == "train":
        train.check_trainer(settings, probe)  # before the run directory is touched
    if distributed.rank() > 0:  # torchrun: rank 0 owns the run directory
        return train.train(settings, probe, run_dir)
    if settings.mode != "train":
        return _run(cfg, settings, probe, run_dir)
    with rundir.RunDirLock(run_dir):  # one command per run directory
        rundir.remove_orphans(run_dir)
        return _run(cfg, settings, probe, run_dir)


def _run(cfg: DictConfig, settings: Settings, probe, run_dir: Path) -> dict:
    if settings.mode == "train":
        state = rundir.read_state(run_dir, settings.config_hash) if settings.resume else None
        if state is not None and state.state == "finished":
            print(
                f"already finished with the same settings: {run_dir} (skipped; resume=false "
                "runs it again)",
                flush=True,
            )
            return state.summary or {}
        if state is None or state.state != "resumable":
            stale = rundir.move_aside(run_dir)
            if stale is not None:
                print(f"moved a previous attempt's files to {stale}", flush=True)
    ckpt = None
    if settings.mode in ("eval", "inspect"):  # a bad checkpoint is refused before any write
        ckpt = load_checkpoint(str(settings.checkpoint))  # resolve() checked it is a file
        if ckpt["format"] != OFFICIAL_FORMAT:
            evaluate.refuse_unused_model_keys(settings)
            if not settings.eval_trust_checkpoint:
                evaluate.refuse_code_and_files(settings, ckpt)
    threads = settings.threads or parallel_job_threads()
    if threads:
        import torch  # already imported by the modes; named here for set_num_threads

        torch.set_num_threads(threads)
    write_text(run_dir / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    return dispatch(settings, probe, run_dir, ckpt)


def dispatch(settings: Settings, probe, run_dir: Path, ckpt: dict | None) -> dict:
    if settings.mode in ("eval", "inspect"):
        assert ckpt is not None, "run() reads the checkpoint of eval and inspect first"
        if settings.mode == "inspect":
            return inspect.inspect_checkpoint(settings, run_dir, ckpt)
        return evaluate.evaluate_checkpoint(settings, ckpt, run_dir)
    rundir.write_status(run_dir, "running", settings.config_hash)
    summary = train.train(settings, probe, run_dir, trial=sweep_trial(settings))
    rundir.write_status(run_dir, "finished", settings.config_hash)
    return summary


def sweep_trial(settings: Settings):
    """The Optuna trial this job is, when the sweeper (``hydra/sweeper=difformer_optuna``) with
    a persistent study started it: the job reports its valid scores there and may be pruned."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().get("sweeper")  # type: ignore[attr-defined]
    return trial_reporter(sweeper, settings.trainer.epochs)


def parallel_job_threads() -> int | None:
    """Under a parallel launcher (joblib, n_jobs = k), each job takes cores / k torch threads,
    so k jobs do not oversubscribe the machine (``threads=`` overrides)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().get("launcher") or {}  # type: ignore[attr-defined]
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = int(launcher.get("n_jobs") or 1)
    jobs = (cores or 1) if jobs < 1 else jobs  # joblib's -1: one job per core
    return max(1, (cores or 1) // jobs)


def safe_hash(cfg: DictConfig) -> str | None:
    try:
        return config_hash(cfg)
    except Exception:  # noqa: BLE001 - a config too broken to hash still gets a status
        return None


def record_failure(run_dir: Path, cfg: DictConfig, err: BaseException) -> None:
    """status.json says why the run stopped: the real exception, with its traceback."""
    if isinstance(err, Interrupted):
        rundir.write_status(
            run_dir, "interrupted", safe_hash(cfg), error=str(err), signal=err.signum
        )
        return
    if isinstance(err, TrialPruned):
        rundir.write_status(run_dir, "pruned", safe_hash(cfg), error=str(err))
        return
    status = "unavailable" if isinstance(err, DatasetUnavailable) else "failed"
    rundir.write_status(
        run_dir,
        status,
        safe_hash(cfg),
        error=f"{type(err).__name__}: {err}",
        missing_path=getattr(err, "path", None),
        traceback=traceback.format_exception(type(err), err, err.__traceback__),
    )


def validate(cfg: DictConfig) -> Settings:
    """The settings of ``cfg`` with the model's own checks of its keywords; runs nothing."""
    settings = resolve(cfg, TASKS)
    build_probe(settings)
    return settings
