"""What a run directory holds, and what to do with it: the one owner of its file names and of
"finished?", "resumable?" and "stale", used by ``train.py`` and ``reproduce.py`` alike.

States (:func:`read_state`):

* ``finished``   -- ``summary.json`` with the same settings hash: skip, report it again;
* ``resumable``  -- the same settings and ``checkpoints/run*_last.pt`` left by a run that was
  stopped (a kill, a signal, a failure): continue where it stopped;
* ``failed`` / ``unavailable`` -- ``status.json`` of an attempt with the same settings;
* ``changed``    -- files of an attempt with other settings: moved aside, never deleted;
* ``empty``      -- nothing of ours.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from omegaconf import OmegaConf

from ..config.core import TOKEN, ConfigError, config_hash
from .files import write_json

# Every file and folder a run writes into its directory.
SUMMARY = "summary.json"  # the finished invocation's results
STATUS = "status.json"  # running / finished / failed / interrupted / unavailable
CONFIG = "config.yaml"  # the resolved settings (their hash names the attempt)
METRICS = "metrics.jsonl"  # one line per evaluation
METRICS_CSV = "metrics.csv"  # logger=csv
TENSORBOARD = "tensorboard"  # logger=tensorboard
CHECKPOINTS = "checkpoints"  # run<i>.pt (best weights) and run<i>_last.pt (resume state)
CURVES = "curves.png"
EVAL = "eval.json"  # mode=eval
INSPECT = "inspect.json"  # mode=inspect, with its figures:
INSPECT_PLOTS = ("energy.png", "attention_share.png", "class_attention.png", "heatmap.png")
PROFILE = ("profile.txt", "profile_trace.json")  # trainer.profile_epochs
WORKERS = "workers"  # trainer.parallel_runs: one folder per worker process
JOB = "job.yaml"  # a worker's settings (python -m difformer.worker)
DATA = "data.json"  # the fingerprint of the data the runs train on (a resume compares it)
RUN_OUTPUTS = (
    DATA,
    SUMMARY,
    STATUS,
    METRICS,
    METRICS_CSV,
    CONFIG,
    CHECKPOINTS,
    EVAL,
    INSPECT,
    CURVES,
    WORKERS,
    TENSORBOARD,
    *PROFILE,
    *INSPECT_PLOTS,
)
# What Hydra writes into every run directory before our code runs: .hydra/ and an empty log.
HYDRA_DIR = ".hydra"
LOCK = ".lock"  # held (flock) by the command training into the directory


def best_checkpoint(run_dir: Path, run: int) -> Path:
    """Run ``run``'s best weights with everything eval needs (train/checkpoint.py)."""
    return Path(run_dir) / CHECKPOINTS / f"run{run}.pt"


def last_checkpoint(run_dir: Path, run: int) -> Path:
    """Run ``run``'s resume state (train/loop.py)."""
    return Path(run_dir) / CHECKPOINTS / f"run{run}_last.pt"


def worker_dir(run_dir: Path, k: int) -> Path:
    return Path(run_dir) / WORKERS / f"worker{k}"


def recorded_hash(run_dir: Path, summary: dict | None = None) -> str | None:
    """The settings hash of a run directory, from its saved resolved config (so results stay
    recognised when the hash function evolves), else the hash stored in its summary."""
    saved = Path(run_dir) / CONFIG
    if saved.exists():
        return config_hash(OmegaConf.load(saved))
    return (summary or {}).get("config_hash")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class RunDirState:
    state: str  # finished | resumable | failed | unavailable | changed | empty
    summary: dict | None = None
    status: dict | None = None


def last_checkpoints(run_dir: Path) -> list[Path]:
    """The run's last checkpoints, and those its parallel workers left (trainer.parallel_runs)."""
    run_dir = Path(run_dir)
    return sorted(
        [
            *run_dir.glob(f"{CHECKPOINTS}/run*_last.pt"),
            *run_dir.glob(f"{WORKERS}/*/{CHECKPOINTS}/run*_last.pt"),
        ]
    )


def read_state(run_dir: Path, settings_hash: str) -> RunDirState:
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY)
    status = read_json(run_dir / STATUS)
    ours = [n for n in RUN_OUTPUTS if (run_dir / n).exists()]
    if not ours:
        return RunDirState("empty")
    same = recorded_hash(run_dir, summary or status) == settings_hash
    if not same and status is not None and not (run_dir / CONFIG).exists():
        same = status.get("config_hash") == settings_hash
    if not same:
        return RunDirState("changed", summary, status)
    if summary is not None:
        return RunDirState("finished", summary, status)
    if last_checkpoints(run_dir):
        return RunDirState("resumable", None, status)
    if status is not None and status.get("status") in ("failed", "unavailable"):
        return RunDirState(status["status"], None, status)
    return RunDirState("changed", None, status)  # an attempt that left nothing to resume


def move_aside(run_dir: Path) -> Path | None:
    """Move our files of a previous attempt to ``run_dir/stale-<time>-<token>/``."""
    run_dir = Path(run_dir)
    leftovers = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if not leftovers:
        return None
    stale = run_dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}-{TOKEN}"
    stale.mkdir(parents=True)
    for path in leftovers:
        shutil.move(str(path), str(stale / path.name))
    return stale


def is_untouched(run_dir: Path) -> bool:
    """True when ``run_dir`` holds only what Hydra wrote before our code ran (and a lock
    file nobody holds)."""
    run_dir = Path(run_dir)
    return (
        run_dir.is_dir()
        and all(
            p.name in (HYDRA_DIR, LOCK) or (p.suffix == ".log" and p.stat().st_size == 0)
            for p in run_dir.iterdir()
        )
        and not is_locked(run_dir)
    )


def remove_if_untouched(run_dir: Path) -> None:
    """A command rejected before any work leaves no run directory behind."""
    if is_untouched(run_dir):  # (its parent stays: it may be the user's own folder)
        shutil.rmtree(run_dir, ignore_errors=True)


def discard_attempt(run_dir: Path) -> None:
    """A command refused for bad input leaves no run directory: the files it wrote itself
    (settings, status, data fingerprint) go, unless an earlier attempt left results there
    (checkpoints, metrics, a summary), which stay untouched."""
    run_dir = Path(run_dir)
    kept = (SUMMARY, METRICS, CHECKPOINTS, EVAL, INSPECT, WORKERS)
    if not any((run_dir / name).exists() for name in kept) and not is_locked(run_dir):
        for name in (CONFIG, STATUS, DATA):
            (run_dir / name).unlink(missing_ok=True)
        for log in run_dir.glob("*.log"):  # train.log: the console of the refused command
            log.unlink(missing_ok=True)
    remove_if_untouched(run_dir)


class RunDirLock:
    """One command per run directory: an exclusive ``flock`` on ``<run_dir>/.lock``, held
    while the command trains there and released by the kernel when its process ends, however
    it ends (so a killed command never leaves a stale lock). Where ``fcntl`` is missing
    (Windows) nothing is locked."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.file: IO[str] | None = None

    def __enter__(self) -> RunDirLock:
        try:
            import fcntl
        except ImportError:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.run_dir / LOCK, "a+")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            f.close()
            raise ConfigError(
                f"{self.run_dir} is in use by another command ({owner}): wait for it to "
                "end, or give this one its own hydra.run.dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor releases the flock
            self.file = None


def is_locked(run_dir: Path) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def remove_orphans(run_dir: Path) -> list[Path]:
    """Temporary files of atomic writes (``runs.files``) that a SIGKILL left behind; only
    called while holding the directory's lock, so none is being written."""
    run_dir = Path(run_dir)
    orphans = [
        p
        for folder in (run_dir, run_dir / CHECKPOINTS)
        if folder.is_dir()
        for p in folder.glob(".*.tmp")
    ]
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def check_data(run_dir: Path, fingerprint: dict, resume: bool) -> None:
    """Refuse to resume runs trained on other data (a file changed in place keeps its path,
    and so the settings hash); record the fingerprint for the next attempt."""
    from ..data.sources import DataError

    path = Path(run_dir) / DATA
    recorded = read_json(path) if resume else None
    current = json.loads(json.dumps(fingerprint))  # as it reads back
    if recorded is not None and recorded != current:
        changed = [
            f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}"
            for k in sorted(set(recorded) | set(current))
            if recorded.get(k) != current.get(k)
        ]
        raise DataError(
            f"{run_dir} holds runs trained on other data ({'; '.join(changed)}): run with the "
            "data they were trained on, or add resume=false to start over (the old files are "
            "moved aside)"
        )
    if recorded != current:
        write_json(path, current)


def write_status(run_dir: Path, status: str, settings_hash: str | None, **fields) -> None:
    write_json(
        Path(run_dir) / STATUS,
        {
            "status": status,
            "config_hash": settings_hash,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **fields,
        },
    )
