"""``train.py`` / ``difformer-train``: Hydra entry point for training and checkpoint evaluation.

    python train.py                                  # DIFFormer-s on sklearn digits, offline
    python train.py dataset=cora model=difformer_s   # the paper's Cora setting
    python train.py mode=eval checkpoint=PATH        # re-evaluate a saved checkpoint

Exit codes: 0 done; 1 a run failed (the error is in ``status.json``) or a multirun had failed
jobs; 2 bad input (one ``error:`` line, before any work); 130 / 143 stopped by SIGINT / SIGTERM
with the last checkpoint saved (rerun the same command to continue).
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .config import CONFIG_DIR, ConfigError, config_hash, register_resolvers
from .rundir import inspect, move_aside, read_json, remove_if_untouched, write_status

register_resolvers()

# Config groups a command line may choose from (dataset=X): checked before Hydra composes, so
# a typo is one line listing the choices, not Hydra's traceback-sized message.
GROUPS = ("dataset", "model", "trainer", "logger", "paths", "recipe", "experiment", "debug")


def group_options(group: str) -> list[str]:
    root = CONFIG_DIR / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def preflight(argv: list[str]) -> str | None:
    """The first problem with the command line's group choices and added keys, if any."""
    from .config import declared_keys, undeclared_key

    # your own loader (dataset=custom) reads keys no config declares
    own_loader = any(a.startswith(("dataset=custom", "dataset._target_=")) for a in argv)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.startswith("+") and not key.startswith("++"):
            if own_loader and key.lstrip("+").startswith("dataset."):
                continue
            problem = undeclared_key(key.lstrip("+"))
            if problem:
                return problem
        elif not key.startswith(("+", "~", "hydra")) and "." in key and \
                key not in declared_keys() and key.split(".", 1)[0] not in ("hydra",):
            return (f"{key} is not a key of any config; keys no config declares are added "
                    f"with +{key}=... (model keys are then checked by the model)")
        key = key.lstrip("+~")
        if key in GROUPS and (CONFIG_DIR / key).is_dir():
            options = group_options(key)
            for choice in value.strip("[]").split(","):  # a sweep, or a list (logger=[a,b])
                if choice and choice != "null" and choice not in options:
                    return (f"{key}={choice} is not a {key}; allowed: {', '.join(options)}")
    return None


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Check the settings, decide what the run directory holds, and dispatch on the mode."""
    from .settings import build_probe, resolve
    from .train import distributed
    from .train.io import write_text

    settings = resolve(cfg)  # also resolves trainer=auto in cfg, before it is hashed
    probe = build_probe(settings)
    if distributed.rank() > 0:  # torchrun: rank 0 owns the run directory
        from .runner import train

        return train(settings, probe, cfg, run_dir)
    settings_hash = config_hash(cfg)
    if settings.mode == "train":
        from .runner import check_trainer, task_of

        check_trainer(settings, *task_of(settings), probe)  # before the run directory is touched
        state = inspect(run_dir, settings_hash) if settings.resume else None
        if state is not None and state.state == "finished":
            print(f"already finished with the same settings: {run_dir} (skipped; resume=false "
                  "runs it again)", flush=True)
            return state.summary
        if state is None or state.state != "resumable":
            stale = move_aside(run_dir)
            if stale is not None:
                print(f"moved a previous attempt's files to {stale}", flush=True)
    ckpt = None
    if settings.mode in ("eval", "inspect"):  # a bad checkpoint is refused before any write
        from .train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(settings.checkpoint)
    threads = settings.threads or parallel_job_threads()
    if threads:
        import torch

        torch.set_num_threads(threads)
    from omegaconf import OmegaConf

    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(f"run directory: {run_dir}", flush=True)
    if settings.mode == "inspect":
        from .inspect_report import inspect_checkpoint

        return inspect_checkpoint(settings, cfg, run_dir, ckpt)
    if settings.mode == "eval":
        from .evaluate import evaluate_checkpoint

        return evaluate_checkpoint(settings, ckpt, cfg, run_dir)
    from .runner import train

    write_status(run_dir, "running", settings_hash)
    summary = train(settings, probe, cfg, run_dir)
    write_status(run_dir, "finished", settings_hash)
    return summary


def parallel_job_threads() -> int | None:
    """Under a parallel launcher (joblib, n_jobs = k), each job takes cores / k torch threads,
    so k jobs do not oversubscribe the machine (``threads=`` overrides)."""
    import os

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = int(launcher.get("n_jobs") or 1)
    jobs = cores if jobs < 1 else jobs  # joblib's -1: one job per core
    return max(1, (cores or 1) // jobs)


def _safe_hash(cfg: DictConfig) -> str | None:
    try:
        return config_hash(cfg)
    except Exception:  # noqa: BLE001 - a config too broken to hash still gets a status
        return None


def record_failure(run_dir: Path, cfg: DictConfig, err: BaseException) -> None:
    """status.json says why the run stopped: the real exception, with its traceback."""
    from .data import DatasetUnavailable
    from .train.lifecycle import Interrupted

    if isinstance(err, Interrupted):
        write_status(run_dir, "interrupted", _safe_hash(cfg), error=str(err),
                     signal=err.signum)
        return
    status = "unavailable" if isinstance(err, DatasetUnavailable) else "failed"
    write_status(run_dir, status, _safe_hash(cfg), error=f"{type(err).__name__}: {err}",
                 missing_path=getattr(err, "path", None),
                 traceback=traceback.format_exception(type(err), err, err.__traceback__))


def _hydra_main(cfg: DictConfig) -> float | None:
    """Returns the mean validation score, the objective of Hydra sweepers (e.g. Optuna)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .data import DataError, DatasetUnavailable
    from .data.safe_pickle import UnsafeDataFile
    from .train.checkpoint import CheckpointError
    from .train.lifecycle import Interrupted, NonFiniteLoss

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        result = run(cfg, run_dir)
    except BaseException as err:
        bad_input = isinstance(err, (ConfigError, CheckpointError))
        if bad_input and not multirun:
            remove_if_untouched(run_dir)
        elif not isinstance(err, SystemExit):
            record_failure(run_dir, cfg, err)
        if isinstance(err, Interrupted):
            if err.forward is not None:  # a scheduler's wrapper asked: it requeues and exits
                print(f"stopped by {err}: the last checkpoint is saved", file=sys.stderr,
                      flush=True)
                err.forward()
            print(f"stopped by {err}: the last checkpoint is saved; run the same command "
                  f"again (or add resume={run_dir}) to continue", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)
        if isinstance(err, KeyboardInterrupt):
            sys.exit(130)
        if not isinstance(err, Exception):
            raise
        if multirun:
            print(f"error: job {hydra_cfg.job.num} ({run_dir}): {type(err).__name__}: {err}",
                  file=sys.stderr, flush=True)
            return None
        if bad_input or isinstance(err, (DataError, DatasetUnavailable, UnsafeDataFile)):
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        if isinstance(err, NonFiniteLoss):
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)
        raise
    return result.get("valid_mean")


class MultirunReport(Callback):
    """After a multirun: list the jobs that failed or lacked data; exit 1 if any failed.

    Only this invocation's jobs count: a resumed sweep (``hydra/sweeper=resumable_optuna``)
    shares its folder with earlier attempts, whose failures were reported then. A marker
    written when the multirun starts dates the invocation on the folder's own filesystem
    clock; job files last written before it belong to earlier attempts."""

    MARKER = ".multirun_started"

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        sweep.mkdir(parents=True, exist_ok=True)
        (sweep / self.MARKER).write_text(f"{time.time()}\n")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        marker = sweep / self.MARKER
        since = marker.stat().st_mtime if marker.exists() else float("-inf")
        failed, unavailable = [], []
        for path in sorted(sweep.glob("*/status.json")):
            if path.stat().st_mtime < since:
                continue  # an earlier attempt's job
            status = read_json(path) or {}
            if status.get("status") in ("failed", "interrupted"):
                failed.append(f"{path.parent}: {status.get('error')}")
            elif status.get("status") == "unavailable":
                unavailable.append(f"{path.parent}: {status.get('missing_path')}")
        for line in unavailable:
            print(f"unavailable (data missing): {line}", file=sys.stderr, flush=True)
        if failed:
            print(f"{len(failed)} job(s) failed:", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr, flush=True)
            sys.exit(1)


def _resume_argv(argv: list[str]) -> list[str]:
    """``resume=PATH``: continue the run in PATH (its saved config and directory)."""
    for i, arg in enumerate(argv):
        if arg.startswith("resume=") and arg.split("=", 1)[1] not in ("true", "false",
                                                                       "True", "False"):
            path = Path(arg.split("=", 1)[1])
            saved = path / ".hydra" / "overrides.yaml"
            if not (path / "config.yaml").exists() or not saved.exists():
                print(f"error: resume={path}: not a run directory (no config.yaml and "
                      ".hydra/overrides.yaml)", file=sys.stderr, flush=True)
                sys.exit(2)
            import yaml

            overrides = [o for o in yaml.safe_load(saved.read_text()) or []
                         if not o.startswith(("hydra.run.dir=", "resume="))]
            return [*overrides, *argv[:i], *argv[i + 1:], f"hydra.run.dir={path}",
                    "resume=true"]
    return argv


def main() -> None:
    from .allocator import AllocatorError, reexec_if_requested

    try:
        reexec_if_requested()  # DIFFORMER_ALLOCATOR=mimalloc: this command again, preloaded
    except AllocatorError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    argv = _resume_argv(sys.argv[1:])
    problem = preflight(argv)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR),
               config_name="train")(_hydra_main)()


if __name__ == "__main__":
    main()
