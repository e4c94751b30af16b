"""``train.py`` / ``difformer-train``: Hydra entry point for training and checkpoint evaluation.

    python train.py                                  # DIFFormer-s on sklearn digits, offline
    python train.py dataset=cora model=difformer_s   # the paper's Cora setting
    python train.py mode=eval checkpoint=PATH        # re-evaluate a saved checkpoint

Exit codes: 0 done; 1 a run failed (the error is in ``status.json``) or a multirun had failed
jobs; 2 bad input (one ``error:`` line, before any work); 130 / 143 stopped by SIGINT / SIGTERM
with the last checkpoint saved (rerun the same command to continue).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .config.core import CONFIG_DIR, ConfigError, declared_keys, register_resolvers, undeclared_key
from .runs.console import ConsoleLog
from .runs.rundir import CONFIG, STATUS, discard_attempt, is_locked, read_json
from .system.allocator import AllocatorError, reexec_if_requested
from .system.processes import die_with_parent

register_resolvers()

# Config groups a command line may choose from (dataset=X): checked before Hydra composes, so
# a typo is one line listing the choices, not Hydra's traceback-sized message.
GROUPS = ("dataset", "model", "trainer", "logger", "paths", "recipe", "experiment", "debug")


def group_options(group: str) -> list[str]:
    root = CONFIG_DIR / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def unwritable(argv: list[str]) -> str | None:
    """Where the run directory would go, if it cannot be written (Hydra would fail there
    with a traceback before our code runs): a read-only file system or a forbidden folder."""

    values = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    multirun = "-m" in argv or "--multirun" in argv
    target = values.get("hydra.sweep.dir" if multirun else "hydra.run.dir") or values.get(
        "paths.output_dir", os.environ.get("DIFFORMER_OUTPUT", "outputs")
    )
    path = Path(target.split("${", 1)[0] or ".").absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if os.access(path, os.W_OK):
        return None
    read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    return (
        f"cannot write the run directory {target}: {path} is on a read-only file system"
        if read_only
        else f"cannot write the run directory {target}: permission denied on {path}"
    ) + " (choose another with hydra.run.dir=...)"


def preflight(argv: list[str]) -> str | None:
    """The first problem with the command line's group choices and added keys, if any."""
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
        elif (
            not key.startswith(("+", "~", "hydra"))
            and "." in key
            and key not in declared_keys()
            and key.split(".", 1)[0] not in ("hydra",)
        ):
            return (
                f"{key} is not a key of any config; keys no config declares are added "
                f"with +{key}=... (model keys are then checked by the model)"
            )
        key = key.lstrip("+~")
        if key in GROUPS and (CONFIG_DIR / key).is_dir():
            options = group_options(key)
            if value.startswith("choice(") and value.endswith(")"):  # an Optuna search
                value = value[len("choice(") : -1]
            for choice in value.strip("[]").split(","):  # a sweep, or a list (logger=[a,b])
                choice = choice.strip()
                if choice and choice != "null" and choice not in options:
                    return f"{key}={choice} is not a {key}; allowed: {', '.join(options)}"
    return None


def _hydra_main(cfg: DictConfig) -> float | dict | None:
    """Returns the mean validation score, the objective of Hydra sweepers (e.g. Optuna); a
    pruned Optuna trial returns ``{"pruned": True, ...}``, a failed job None."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    lead = os.environ.get("RANK", "0") == "0"  # torchrun: rank 0 speaks for all
    with ConsoleLog(run_dir / "train.log", enabled=lead):  # train.log = what the console shows
        if lead:
            print(f"run directory: {run_dir}\n{banner(cfg)}", flush=True)
        return _invoke(cfg, run_dir)


def banner(cfg: DictConfig) -> str:
    """What is about to run, from the composed config (before the settings are checked and
    before torch is imported, so it appears within a second of the start)."""

    def name(node) -> str:
        return str(node.get("_target_") or node.get("name") or "?") if node else "?"

    try:
        t = cfg.trainer
        return (
            f"mode {cfg.mode} | dataset {name(cfg.dataset)} | model {name(cfg.model)} | "
            f"trainer {t.name}: {t.runs} run(s) x {t.epochs or 'auto'} epochs"
        )
    except Exception:  # noqa: BLE001 - a config too broken to describe is refused next
        return "checking the settings"


def _invoke(cfg: DictConfig, run_dir: Path) -> float | dict | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    # start-up time: torch, PyG and the modes are imported once the command line is checked
    from .data import DatasetUnavailable
    from .invocation import record_failure, run
    from .sweeps.trial import TrialPruned
    from .train.lifecycle import Interrupted

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        result = run(cfg, run_dir)
    except BaseException as err:
        # bad input (exit 2) leaves no run directory, unless it holds results of an earlier
        # attempt; missing data is recorded (reproduce.py marks the cell unavailable)
        known = outcome(err)
        bad_input = known is not None and known[0] == 2
        if bad_input and not multirun and not isinstance(err, DatasetUnavailable):
            discard_attempt(run_dir)
            # results of an earlier attempt stayed: its status says why this one stopped
            # (never when another command holds the directory)
            record = (run_dir / STATUS).exists() and not is_locked(run_dir)
        else:
            record = not isinstance(err, SystemExit)
        if record:
            try:
                record_failure(run_dir, cfg, err)
            except OSError:  # a full or read-only disk: the message below still says why
                pass
        if isinstance(err, Interrupted):
            if err.forward is not None:  # a scheduler's wrapper asked: it requeues and exits
                print(f"stopped by {err}: {err.outcome()}", file=sys.stderr, flush=True)
                err.forward()
            resume = (
                ""
                if err.saved == "none"
                else f"; run the same command again (or add resume={run_dir}) to continue"
            )
            print(f"stopped by {err}: {err.outcome()}{resume}", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)
        if isinstance(err, TrialPruned):  # the sweeper records the trial as pruned
            print(f"{err} ({run_dir})", flush=True)
            return {"pruned": True, "step": err.epoch, "value": err.value}
        if isinstance(err, KeyboardInterrupt):
            sys.exit(130)
        if not isinstance(err, Exception):
            raise
        if multirun:
            print(
                f"error: job {hydra_cfg.job.num} ({run_dir}): {type(err).__name__}: {err}",
                file=sys.stderr,
                flush=True,
            )
            return None
        if known is None:  # (classified above)
            raise
        print(known[1], file=sys.stderr, flush=True)
        sys.exit(known[0])
    return result.get("valid_mean")


def outcome(err: BaseException) -> tuple[int, str] | None:
    """The exit code and the one line of an error the command line reports without a
    traceback: 2 for bad input (settings, data, checkpoints), 1 for a diverged run or a
    full / read-only disk; None for anything else (a bug: its traceback is shown)."""
    from .data import DataError, DatasetUnavailable
    from .data.safe_pickle import UnsafeDataFile
    from .train.checkpoint import CheckpointError
    from .train.distributed import peer_lost
    from .train.lifecycle import NonFiniteLoss

    if isinstance(
        err, (ConfigError, CheckpointError, DataError, DatasetUnavailable, UnsafeDataFile)
    ):
        return 2, f"error: {err}"
    if isinstance(err, NonFiniteLoss):
        return 1, f"error: {err}"
    lost = peer_lost(err)
    if lost is not None:
        return 1, (
            f"error: another process of this torchrun job stopped ({lost}); the run's last "
            "checkpoint is kept: start the job again on every node to resume"
        )
    if isinstance(err, OSError):
        return 1, f"error: {os_error_line(err)}"
    return None


def os_error_line(err: OSError) -> str:
    """A full disk, a read-only or forbidden path: what happened to which file, and that the
    files already written are intact (every write is atomic; a rerun resumes)."""
    import errno

    where = err.filename or "a file of the run"
    what = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }.get(err.errno or 0, err.strerror or type(err).__name__)
    return (
        f"{what}: {where} ({type(err).__name__}); the files already written are intact: fix "
        "it and run the same command again to resume"
    )


def jobs_table(sweep: Path) -> str | None:
    """The finished jobs of a sweep folder, mean ± std per swept setting
    (:mod:`difformer.reproduction.aggregate`, also ``scripts/aggregate.py DIR``)."""
    from .reproduction import aggregate

    try:
        jobs = aggregate.collect(sweep)
        return aggregate.to_markdown(aggregate.aggregate(jobs)) if jobs else None
    except Exception as err:  # noqa: BLE001 - the table is a courtesy; the jobs are done
        return f"(no table: {type(err).__name__}: {err})"


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
        for path in sorted(sweep.glob(f"*/{STATUS}")):
            if path.stat().st_mtime < since:
                continue  # an earlier attempt's job
            status = read_json(path) or {}
            if status.get("status") in ("failed", "interrupted"):
                failed.append(f"{path.parent}: {status.get('error')}")
            elif status.get("status") == "unavailable":
                unavailable.append(f"{path.parent}: {status.get('missing_path')}")
        table = jobs_table(sweep)
        if table:
            print(f"\njobs of {sweep}:\n{table}\n", flush=True)
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
        if arg.startswith("resume=") and arg.split("=", 1)[1] not in (
            "true",
            "false",
            "True",
            "False",
        ):
            path = Path(arg.split("=", 1)[1])
            saved = path / ".hydra" / "overrides.yaml"
            if not (path / CONFIG).exists() or not saved.exists():
                print(
                    f"error: resume={path}: not a run directory (no config.yaml and "
                    ".hydra/overrides.yaml)",
                    file=sys.stderr,
                    flush=True,
                )
                sys.exit(2)
            import yaml

            overrides = [
                o
                for o in yaml.safe_load(saved.read_text()) or []
                if not o.startswith(("hydra.run.dir=", "resume="))
            ]
            return [*overrides, *argv[:i], *argv[i + 1 :], f"hydra.run.dir={path}", "resume=true"]
    return argv


def main() -> None:
    die_with_parent()  # started by reproduce.py / search_baselines.py: end when it ends
    try:
        reexec_if_requested()  # DIFFORMER_ALLOCATOR=mimalloc: this command again, preloaded
    except AllocatorError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    argv = _resume_argv(sys.argv[1:])
    problem = preflight(argv) or unwritable(argv)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    # your own classes (model._target_=my_pkg.Net) are found in the folder you run from, as
    # with python -m; appended, so nothing there can shadow a library module
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(_hydra_main)()


if __name__ == "__main__":
    main()
