"""The one run loop every task kind shares.

Per run: seed ``seed + run``, a fresh model and Adam, the task's epoch runner; the model's
hooks (``on_epoch_start``, ``auxiliary_loss`` inside the runners, ``set_labels`` inside the
evaluation) for every task alike; evaluation when the task says so, the first best valid score
kept (with its weights); early stopping when the task has it. Then the run's best weights go to
``checkpoints/run<i>.pt`` and its record to the summary.

Resume: ``checkpoints/run<i>_last.pt`` holds everything the rest of the run depends on --
model, optimizer, epoch, best so far and its weights, early-stopping count, the epoch runner's
state (the partition generator) and the RNG states of torch, numpy and python -- written
atomically every ``trainer.checkpoint_every`` epochs (default: every
``trainer.checkpoint_seconds`` = 60 s), when a SIGTERM/SIGINT arrives (at the end of the
epoch), and at the run's end (then with the run's record). A rerun into the same directory
continues bit for bit on CPU.

Under torchrun (mini-batch only) every rank trains its share of each epoch's chunks through
DistributedDataParallel; rank 0 alone evaluates, logs and writes checkpoints.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..models import build_model
from . import distributed
from .checkpoint import save_run_checkpoint
from .common import adam, peak_memory_mb, seed_everything
from .io import save_torch
from .lifecycle import (FiniteGuard, GracefulStop, Interrupted, Profiler, Progress,
                        parse_log_every, rng_state, set_rng_state)

LAST_FORMAT = "difformer-last"


def last_path(run_dir: Path, run: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"run{run}_last.pt"


def load_last(run_dir: Path, run: int) -> dict | None:
    path = last_path(run_dir, run)
    if not path.exists():
        return None
    from .checkpoint import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"cannot resume from {path}: {err}; move it away to start "
                              "this run again") from err
    if not isinstance(state, dict) or state.get("format") != LAST_FORMAT:
        raise CheckpointError(f"{path} is not a last checkpoint of this package")
    return state


def _copy_state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class RunLoop:
    """Trains ``settings.trainer.runs`` runs of ``task`` into ``run_dir``."""

    def __init__(self, task, settings, run_dir: Path, logger, device: torch.device,
                 data_fingerprint: dict):
        self.task, self.settings, self.trainer = task, settings, settings.trainer
        self.run_dir, self.logger, self.device = Path(run_dir), logger, device
        self.data_fingerprint = data_fingerprint
        self.lead = distributed.rank() == 0
        in_channels, out_channels = task.channels()
        # graph tasks describe their features to the model (node_input, edge_input, ...)
        extras = task.model_inputs() if hasattr(task, "model_inputs") else {}
        self.model_kwargs = {"in_channels": in_channels, "out_channels": out_channels,
                             **extras, **settings.model_kwargs}
        self.log_every = parse_log_every(self.trainer.log_every)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.task.higher_is_better else a < b

    def fit(self) -> tuple[list[dict], bool]:
        """All runs; returns their records and whether any was resumed."""
        records, resumed = [], False
        with GracefulStop() as stop:
            # a parallel worker (train/parallel_runs.py) trains only its own runs
            run_ids = self.trainer.run_ids or range(self.trainer.runs)
            for run in run_ids:
                last = load_last(self.run_dir, run) if self.settings.resume else None
                if last is not None and last["finished"]:
                    records.append(last["record"])
                    resumed = True
                    continue
                resumed |= last is not None
                records.append(self.train_run(run, last, stop))
        return records, resumed

    def train_run(self, run: int, last: dict | None, stop: GracefulStop) -> dict:
        run_start = time.time()
        task, trainer = self.task, self.trainer
        split = task.split(run)
        seed_everything(self.settings.seed + run)
        model = build_model(self.settings.model_name, **self.model_kwargs).to(self.device)
        # A model without trainable parameters (label propagation) is evaluated once.
        trainable = any(p.requires_grad for p in model.parameters())
        trained = distributed.wrap(model, self.device) if trainable else model
        if trainable and trainer.compile:
            # the training forward only (evaluation stays eager); inductor draws its own
            # dropout masks, so a compiled run is not the eager run's random stream
            trained = torch.compile(trained)
        optimizer = adam(model.parameters(), self.settings.lr, self.settings.weight_decay) \
            if trainable else None
        runner = task.epoch_runner(trained, optimizer, split, run) if trainable else None
        scheduler = None if optimizer is None or self.settings.plateau is None else \
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max" if task.higher_is_better else "min",
                **self.settings.plateau)
        stopper = task.early_stopping()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        best, best_state, first_epoch, elapsed, stopped = None, None, 0, 0.0, False
        guard = FiniteGuard(run)
        if last is not None:
            model.load_state_dict(last["model"])
            if optimizer is not None:
                optimizer.load_state_dict(last["optimizer"])
                runner.load_state_dict(last["runner"])
            if stopper is not None:
                stopper.load_state_dict(last["stopper"])
            if scheduler is not None:
                scheduler.load_state_dict(last["scheduler"])
            best, best_state = last["best"], last["best_state"]
            first_epoch, elapsed = last["epoch"] + 1, last["seconds"]
            stopped = last["stopped"]  # interrupted in the epoch early stopping ended
            guard.last = tuple(last["last_finite"]) if last["last_finite"] else None
            set_rng_state(last["rng"])
            if self.lead:
                print(f"run {run}: resuming after epoch {last['epoch']} from "
                      f"{last_path(self.run_dir, run)}", flush=True)
        # Lines an interrupted attempt logged after its last checkpoint are logged again.
        self.logger.truncate(run, first_epoch - 1)
        epochs = trainer.epochs if trainable else 1
        progress = Progress(run, trainer.runs, epochs, first_epoch,
                            self.lead and trainer.progress, *self.log_every)
        saved_at, epoch = time.time(), first_epoch - 1

        def save_last(finished: bool = False, record: dict | None = None) -> None:
            if not (self.lead and trainer.save_checkpoints):
                return
            save_torch(last_path(self.run_dir, run), {
                "format": LAST_FORMAT, "run": run, "epoch": epoch, "finished": finished,
                "stopped": stopped,
                "record": record, "model": _copy_state(model),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "runner": runner.state_dict() if runner is not None else None,
                "stopper": stopper.state_dict() if stopper is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "best": best, "best_state": best_state, "last_finite": guard.last,
                "rng": rng_state(), "seconds": elapsed + time.time() - run_start})

        profiler = Profiler(self.run_dir, trainer.profile_epochs if run == 0 and self.lead
                            else None, self.device)
        try:
            for epoch in range(first_epoch, epochs if not stopped else first_epoch):
                profiler.step(epoch - first_epoch)
                t0 = time.time()
                if hasattr(model, "on_epoch_start"):  # e.g. Polynormer's local-then-global
                    model.on_epoch_start(epoch)
                if runner is None:
                    loss = float("nan")
                else:
                    loss = runner.train_epoch(epoch, progress.step(epoch))
                    guard.check(epoch, loss)
                valid = None
                if self.lead and task.evaluates_at(epoch, epochs):
                    scores = task.evaluate(model, split)
                    valid = scores["valid"]
                    self.logger.log({"run": run, "epoch": epoch, "loss": loss, **scores,
                                     "seconds": time.time() - t0,
                                     "peak_memory_mb": peak_memory_mb(self.device)})
                    improved = best is None or self.better(valid, best["valid"])
                    if improved:
                        best = {"epoch": epoch, **scores}
                        best_state = _copy_state(model)
                    if scheduler is not None:
                        scheduler.step(valid)
                    if stopper is not None and stopper.step(improved):
                        stopped = True
                progress.epoch(epoch, loss, valid, None if best is None else best["valid"],
                               task.fmt)
                due = (trainer.checkpoint_every is not None
                       and (epoch + 1) % trainer.checkpoint_every == 0) or (
                    trainer.checkpoint_every is None
                    and time.time() - saved_at >= trainer.checkpoint_seconds)
                if stop.requested or (due and not stopped and epoch < epochs - 1):
                    save_last()
                    saved_at = time.time()
                if stop.requested:
                    raise Interrupted(stop.signum, f"in run {run}, after epoch {epoch}",
                                      stop.forward())
                if stopped:
                    break
        finally:
            progress.close()
            profiler.close()
        if not self.lead:
            return {}
        # seed and split identify a run: aggregation counts each (seed, split) once
        record = {"run": run, "seed": self.settings.seed + run,
                  "split_fingerprint": task.split_fingerprint(split), "best_epoch": best["epoch"]}
        if stopper is not None:
            record["epochs_run"] = epoch + 1
        record.update(task.finish_run(model, best, best_state, split))
        elapsed += time.time() - run_start
        record["seconds"] = elapsed
        if trainer.save_checkpoints:
            s = self.settings
            record["checkpoint"] = save_run_checkpoint(
                self.run_dir, run, state_dict=best_state, model_name=s.model_name,
                model_kwargs=self.model_kwargs, dataset_config=s.dataset_config,
                data_fingerprint=self.data_fingerprint,
                split_fingerprint=task.split_fingerprint(split), seed=s.seed + run,
                split_seed=s.split_seed, metrics=task.checkpoint_metrics(record),
                config=s.config)
        save_last(finished=True, record=record)
        self.logger.run_finished(record)
        print(task.run_line(record), flush=True)
        return record

