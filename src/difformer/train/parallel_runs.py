"""A cell's runs in parallel processes: ``trainer.parallel_runs=K``.

A paper cell is R independent runs (run i seeds ``seed + i`` and draws its own split), each too
small to keep several cores busy: on a 2-core machine two one-thread processes do 1.25x the
work of one two-thread process. With K > 1 the runs still to train are spread over K worker
processes, worker k taking runs k, k + K, ... (fixed by K, so a resume finds its files again),
each with cores / K torch threads (or ``threads / K``). A worker is this package's own run on
``<run_dir>/workers/worker<k>/`` with the same resolved settings and ``trainer.run_ids`` set
to its runs. When all have finished, their checkpoints (``run<i>.pt`` and the finished
``run<i>_last.pt``) and metrics lines are moved into the run directory, and the run loop then
reads those runs as finished: the summary is the one a sequential run with the same threads
per run gives (tested), and every file of the run directory is where it would be.

SIGTERM/SIGINT to this process is passed on to the workers, which stop at the end of their
epoch with their last checkpoint saved; running the same command again resumes each of them.
CPU only: on a GPU one process drives the device (the runs are launch-bound there).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..runs import rundir
from ..runs.files import read_jsonl, write_text
from ..runs.rundir import worker_dir
from ..system.processes import child_env, stopped_by
from .checkpoint import load_last
from .lifecycle import GracefulStop, Interrupted


def balanced_workers(runs: int, cores: int) -> int:
    """``trainer.parallel_runs=auto``: the fewest workers (at least one per core) that keep
    every core busy to the end, i.e. at least ``cores`` of them hold the largest share of the
    runs. 5 runs on 2 cores: 3 workers with 2, 2 and 1 runs, 2.5 run-times of wall instead of
    3 with 2 workers (the third shares the cores until it is done; measured 77 s against 84 s
    for the Cora cell here). One worker per run when there are no more runs than cores."""
    if runs <= 1 or cores <= 1:
        return 1
    for k in range(cores, runs):
        largest = -(-runs // k)
        if runs - k * (largest - 1) >= cores:  # the workers holding ``largest`` runs
            return k
    return runs


def pending_runs(run_dir: Path, runs: int) -> list[int]:
    """The runs without a finished last checkpoint in ``run_dir``."""
    out = []
    for run in range(runs):
        last = load_last(run_dir, run)
        if last is None or not last.finished:
            out.append(run)
    return out


def worker_config(config: dict, run_ids: list[int], threads: int) -> DictConfig:
    """The settings of a worker: the run's own (resolved), with its runs and threads."""
    job = OmegaConf.create(copy.deepcopy(config))
    job.trainer.parallel_runs = 1
    job.trainer.run_ids = list(run_ids)
    job.trainer.progress = False
    job.trainer.save_checkpoints = True  # the finished last checkpoints carry the runs back
    if job.get("logger") and job.logger.get("jsonl") is not None:
        job.logger.jsonl.curves = False  # the parent plots the whole cell's curves
    job.threads = threads
    job.resume = True
    return job


class Workers:
    """The worker processes of one run directory, started at once and collected by
    :meth:`finish`. The run loop starts them before it loads its own data, so their start-up
    (imports and loading, ~4 s each) overlaps the parent's instead of following it. Empty when
    at most one run is pending (the parent trains it itself)."""

    def __init__(
        self, config: dict, run_dir: Path, runs: int, parallel_runs: int, threads: int | None = None
    ):
        self.run_dir, self.runs = Path(run_dir), runs
        self.pending = pending_runs(self.run_dir, runs)
        groups = [[r for r in self.pending if r % parallel_runs == k] for k in range(parallel_runs)]
        self.groups = {k: g for k, g in enumerate(groups) if g}
        self.procs, self.stop = {}, None
        self.relays: list[threading.Thread] = []
        if len(self.groups) <= 1:
            self.groups = {}
            return
        cores = threads or (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        per_worker = max(1, cores // len(self.groups))
        # from the first worker on, a signal is passed on to all (by finish)
        self.stop = GracefulStop().__enter__()
        try:
            for k, run_ids in self.groups.items():
                wdir = worker_dir(self.run_dir, k)
                wdir.mkdir(parents=True, exist_ok=True)
                job = worker_config(config, run_ids, per_worker)
                write_text(wdir / rundir.JOB, OmegaConf.to_yaml(job))
                hand_over(self.run_dir, wdir, run_ids, job)
                print(
                    f"worker {k}: runs {', '.join(map(str, run_ids))} with {per_worker} "
                    f"thread(s) in {wdir}",
                    flush=True,
                )
                self.procs[k] = subprocess.Popen(
                    [sys.executable, "-m", "difformer.worker", str(wdir)],
                    # child_env: a SIGKILLed parent leaves no worker training
                    env=child_env({**os.environ, "OMP_NUM_THREADS": str(per_worker)}),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    bufsize=1,
                )
                self.relays.append(relay(self.procs[k], f"[worker {k}] "))
        except BaseException:
            self.abort()
            raise

    def _release(self) -> None:
        for thread in self.relays:  # every line the workers wrote, before anything else
            thread.join(timeout=10)
        self.relays = []
        if self.stop is not None:
            self.stop.__exit__(None, None, None)
            self.stop = None

    def abort(self) -> None:
        """The parent failed before :meth:`finish`: stop the workers at their epoch's end
        (their last checkpoints are saved; the same command resumes them)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait()
        self._release()

    def finish(self, logger) -> list[int]:
        """Wait for every worker, then move their files into the run directory; returns the
        runs trained this way (none when the workers were not needed)."""
        if not self.procs:
            return []
        try:
            assert self.stop is not None, "set when the workers started"
            codes = wait_all(self.procs, self.stop)
        finally:
            self._release()
        run_dir, groups = self.run_dir, self.groups
        # a worker's files say whether its runs finished (it may have been stopped after its
        # last)
        unfinished = {
            k: c
            for k, c in codes.items()
            if set(pending_runs(worker_dir(run_dir, k), self.runs)) & set(groups[k])
        }
        if unfinished:
            signals = [stopped_by(code) for code in unfinished.values()]
            if all(signals):
                raise Interrupted(
                    int(signals[0] or 0), f"in worker(s) {', '.join(map(str, sorted(unfinished)))}"
                )
            k, code = next((k, c) for k, c in sorted(unfinished.items()) if not stopped_by(c))
            raise RuntimeError(
                f"worker {k} (runs {', '.join(map(str, groups[k]))}) exited "
                f"with code {code}; its files are in {worker_dir(run_dir, k)} "
                "(the other workers' finished runs are kept; run again to "
                "continue)"
            )
        collect({worker_dir(run_dir, k): run_ids for k, run_ids in groups.items()}, run_dir, logger)
        try:
            (run_dir / rundir.WORKERS).rmdir()
        except OSError:  # not empty: a user's file, or a worker of another parallel_runs
            pass
        return self.pending


def hand_over(run_dir: Path, wdir: Path, run_ids: list[int], job) -> None:
    """A run a sequential attempt left unfinished in ``run_dir`` continues in its worker: its
    last checkpoint and its metrics lines move there (with the worker's config, so that the
    worker reads the checkpoint as its own)."""
    stopped = [r for r in run_ids if rundir.last_checkpoint(run_dir, r).exists()]
    if not stopped:
        return
    write_text(wdir / rundir.CONFIG, OmegaConf.to_yaml(job, resolve=True))
    lines = [r for r in read_jsonl(run_dir / rundir.METRICS) if r.get("run") in stopped]
    with open(wdir / rundir.METRICS, "a") as f:
        for record in lines:
            f.write(json.dumps(record) + "\n")
    (wdir / rundir.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    for run in stopped:
        os.replace(rundir.last_checkpoint(run_dir, run), rundir.last_checkpoint(wdir, run))


def relay(proc: subprocess.Popen, prefix: str) -> threading.Thread:
    """Pass a worker's output on, line by line, through this process's ``sys.stdout``, so it
    reaches the console and ``train.log`` (:mod:`difformer.runs.console`) as the parent's."""

    def forward_lines() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()

    thread = threading.Thread(target=forward_lines, daemon=True)
    thread.start()
    return thread


def wait_all(procs: dict, stop: GracefulStop) -> dict:
    """Wait for every worker; a SIGTERM/SIGINT (``stop``) is passed on to all of them."""
    forwarded = False
    while True:
        codes = {k: p.poll() for k, p in procs.items()}
        if all(c is not None for c in codes.values()):
            return codes
        if stop.requested and not forwarded:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(stop.signum)
            forwarded = True
        try:
            next(p for p in procs.values() if p.poll() is None).wait(timeout=0.1)
        except (subprocess.TimeoutExpired, StopIteration):
            pass


def collect(workers: dict, run_dir: Path, logger) -> None:
    """Move the workers' finished runs ({worker dir: its runs}) into ``run_dir``: the metrics
    lines first, in run order, then each run's best and last checkpoint (the last one marks
    the run finished, so it goes last)."""
    trained = {run for run_ids in workers.values() for run in run_ids}
    lines = [
        r
        for wdir, run_ids in workers.items()
        for r in read_jsonl(wdir / rundir.METRICS)
        if r.get("run") in run_ids
    ]
    logger.jsonl.keep(lambda r: r.get("run", 0) not in trained)
    for record in sorted(lines, key=lambda r: (r["run"], r.get("epoch", 0))):
        logger.log(record)
    (run_dir / rundir.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    for wdir, run_ids in workers.items():
        for run in run_ids:
            best = rundir.best_checkpoint(wdir, run)
            if best.exists():
                os.replace(best, rundir.best_checkpoint(run_dir, run))
            os.replace(rundir.last_checkpoint(wdir, run), rundir.last_checkpoint(run_dir, run))
        shutil.rmtree(wdir, ignore_errors=True)
