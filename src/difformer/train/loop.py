"""The one run loop every task kind shares.

Per run: seed ``seed + run``, a fresh model and Adam, the task's epoch runner; the model's
hooks (``on_epoch_start``, ``auxiliary_loss`` inside the runners, ``set_labels`` inside the
evaluation) for every task alike; evaluation when the task says so, the first best valid score
kept (with its weights); early stopping when the task has it. Then the run's best weights go to
``checkpoints/run<i>.pt`` and its record to the summary.

Resume: ``checkpoints/run<i>_last.pt`` holds the run's :class:`~.checkpoint.RunState` --
written atomically every ``trainer.checkpoint_every`` epochs (default: every
``trainer.checkpoint_seconds`` = 60 s), when a SIGTERM/SIGINT arrives (at the end of the
epoch), and at the run's end (then with the run's record). A rerun into the same directory
continues bit for bit on CPU.

Under torchrun (mini-batch only) every rank trains its share of each epoch's chunks through
DistributedDataParallel; rank 0 alone evaluates, logs and writes checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..models import build_model
from ..models.sparse_ops import keep_eager_under_compile
from ..runs import rundir
from . import distributed
from .checkpoint import RunState, load_last, save_last, save_run_checkpoint
from .common import (
    clip_before_step,
    cosine_with_warmup,
    make_optimizer,
    peak_memory_mb,
    seed_everything,
)
from .lifecycle import (
    FiniteGuard,
    GracefulStop,
    Interrupted,
    Profiler,
    Progress,
    rng_state,
    set_rng_state,
)


def copy_state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class RunLoop:
    """Trains ``settings.trainer.runs`` runs of ``task`` into ``run_dir``."""

    def __init__(
        self, task, settings, run_dir: Path, logger, device: torch.device, data_fingerprint: dict
    ):
        self.task, self.settings, self.trainer = task, settings, settings.trainer
        self.run_dir, self.logger, self.device = Path(run_dir), logger, device
        self.data_fingerprint = data_fingerprint
        self.lead = distributed.rank() == 0
        in_channels, out_channels = task.channels()
        # graph tasks describe their features to the model (node_input, edge_input, ...)
        self.model_kwargs = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            **task.model_inputs(),
            **settings.model_kwargs,
        }

    def better(self, a: float, b: float) -> bool:
        return a > b if self.task.higher_is_better else a < b

    def fit(self) -> tuple[list[dict], bool]:
        """All runs; returns their records and whether any was resumed."""
        records, resumed = [], False
        if self.lead:
            rundir.check_data(self.run_dir, self.data_fingerprint, self.settings.resume)
        with GracefulStop() as stop:
            # a parallel worker (train/parallel_runs.py) trains only its own runs
            run_ids = self.trainer.run_ids or range(self.trainer.runs)
            for run in run_ids:
                last = load_last(self.run_dir, run) if self.settings.resume else None
                if last is not None and last.finished:
                    records.append(last.record or {})  # a finished run always has one
                    resumed = True
                    continue
                resumed |= last is not None
                records.append(TrainingRun(self, run, last, stop).train())
        return records, resumed


class TrainingRun:
    """One run of a :class:`RunLoop`: its model, optimizer, epoch runner, scheduler and early
    stopping, built fresh (seeded ``seed + run``) or restored from ``last``."""

    def __init__(self, loop: RunLoop, run: int, last: RunState | None, stop: GracefulStop):
        self.loop, self.run, self.stop = loop, run, stop
        self.task, self.trainer = loop.task, loop.trainer
        self.started = time.time()
        self.build()
        self.state = RunState(run)
        if last is not None:
            self.restore(last)
        self.saved_at = time.time()

    def build(self) -> None:
        loop, task, trainer = self.loop, self.task, self.trainer
        self.split = task.split(self.run)
        seed_everything(loop.settings.seed + self.run)
        model = build_model(loop.settings.model_name, **loop.model_kwargs).to(loop.device)
        # A model without trainable parameters (label propagation) is evaluated once.
        self.trainable = any(p.requires_grad for p in model.parameters())
        trained: Any = distributed.wrap(model, loop.device) if self.trainable else model
        if self.trainable and trainer.compile:
            # the training forward only (evaluation stays eager); inductor draws its own
            # dropout masks, so a compiled run is not the eager run's random stream
            keep_eager_under_compile()
            trained = torch.compile(trained)
        self.model = model
        settings = loop.settings
        self.optimizer = (
            make_optimizer(
                settings.optimizer, model.parameters(), settings.lr, settings.weight_decay
            )
            if self.trainable
            else None
        )
        if self.optimizer is not None and settings.clip_grad_norm is not None:
            clip_before_step(self.optimizer, settings.clip_grad_norm)
        self.runner = (
            task.epoch_runner(trained, self.optimizer, self.split, self.run)
            if self.trainable
            else None
        )
        self.scheduler: Any = None  # plateau: stepped with each valid score; cosine: per epoch
        if self.optimizer is not None and settings.plateau is not None:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode="max" if task.higher_is_better else "min",
                **settings.plateau,
            )
        elif self.optimizer is not None and settings.cosine is not None:
            self.scheduler = cosine_with_warmup(
                self.optimizer, trainer.epochs, settings.cosine["warmup"], settings.cosine["min_lr"]
            )
        self.stopper = task.early_stopping()
        if loop.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(loop.device)
        self.guard = FiniteGuard(self.run)

    def parts(self) -> dict:
        """The objects whose state a resume restores, by their RunState field."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "runner": self.runner,
            "stopper": self.stopper,
            "scheduler": self.scheduler,
        }

    def restore(self, last: RunState) -> None:
        for name, part in self.parts().items():
            if part is not None:
                part.load_state_dict(getattr(last, name))
        self.state = last
        self.guard.last = tuple(last.last_finite) if last.last_finite else None
        if last.rng is not None:
            set_rng_state(last.rng)
        if self.loop.lead:
            print(
                f"run {self.run}: resuming after epoch {last.epoch} from "
                f"{rundir.last_checkpoint(self.loop.run_dir, self.run)}",
                flush=True,
            )

    def save_last(self, epoch: int, finished: bool = False, record: dict | None = None) -> None:
        if not (self.loop.lead and self.trainer.save_checkpoints):
            return
        s = self.state
        s.epoch, s.finished, s.record = epoch, finished, record
        for name, part in self.parts().items():
            state = (
                None
                if part is None
                else (copy_state(part) if name == "model" else part.state_dict())
            )
            setattr(s, name, state)
        s.last_finite, s.rng = self.guard.last, rng_state()
        seconds = s.seconds
        s.seconds = seconds + time.time() - self.started
        save_last(self.loop.run_dir, s)
        s.seconds = seconds  # the attempts before this one; this one's time is added at the end

    def train(self) -> dict:
        first_epoch = self.state.epoch + 1
        # Lines an interrupted attempt logged after its last checkpoint are logged again.
        self.loop.logger.truncate(self.run, first_epoch - 1)
        epochs = self.trainer.epochs if self.trainable else 1
        lead = self.loop.lead
        progress = Progress(
            self.run,
            self.trainer.runs,
            epochs,
            first_epoch,
            lead and self.trainer.progress,
            *self.trainer.log_every,
        )
        profiler = Profiler(
            self.loop.run_dir,
            self.trainer.profile_epochs if self.run == 0 and lead else None,
            self.loop.device,
        )
        epoch = first_epoch - 1
        try:
            for epoch in range(first_epoch, epochs if not self.state.stopped else first_epoch):
                profiler.step(epoch - first_epoch)
                self.epoch(epoch, epochs, progress)
                if self.state.stopped:
                    break
        finally:
            progress.close()
            profiler.close()
        return self.finish(epoch) if lead else {}

    def epoch(self, epoch: int, epochs: int, progress: Progress) -> None:
        t0 = time.time()
        model, state = self.model, self.state
        distributed.seed_epoch(self.loop.settings.seed + self.run, epoch)
        if hasattr(model, "on_epoch_start"):  # e.g. Polynormer's local-then-global
            model.on_epoch_start(epoch)  # type: ignore[operator]
        if self.runner is None:
            loss = float("nan")
        else:
            loss = self.runner.train_epoch(epoch, progress.step(epoch))
            self.guard.check(epoch, loss)
            if self.loop.settings.cosine is not None and self.scheduler is not None:
                self.scheduler.step()
        valid = None
        if self.loop.lead and self.task.evaluates_at(epoch, epochs):
            scores = self.task.evaluate(model, self.split)
            valid = scores["valid"]
            self.loop.logger.log(
                {
                    "run": self.run,
                    "epoch": epoch,
                    "loss": loss,
                    **scores,
                    "seconds": time.time() - t0,
                    "peak_memory_mb": peak_memory_mb(self.loop.device),
                }
            )
            improved = state.best is None or self.loop.better(valid, state.best["valid"])
            if improved:
                state.best = {"epoch": epoch, **scores}
                state.best_state = copy_state(model)
            if self.loop.settings.plateau is not None and self.scheduler is not None:
                self.scheduler.step(valid)
            if self.stopper is not None and self.stopper.step(improved):
                state.stopped = True
        progress.epoch(
            epoch, loss, valid, None if state.best is None else state.best["valid"], self.task.fmt
        )
        self.checkpoint_if_due(epoch, epochs)

    def checkpoint_if_due(self, epoch: int, epochs: int) -> None:
        trainer, stop = self.trainer, self.stop
        due = (
            trainer.checkpoint_every is not None and (epoch + 1) % trainer.checkpoint_every == 0
        ) or (
            trainer.checkpoint_every is None
            and time.time() - self.saved_at >= trainer.checkpoint_seconds
        )
        if stop.requested or (due and not self.state.stopped and epoch < epochs - 1):
            self.save_last(epoch)
            self.saved_at = time.time()
        if stop.requested:
            raise Interrupted(
                stop.signum,
                f"in run {self.run}, after epoch {epoch}",
                stop.forward(),
                saved="saved" if trainer.save_checkpoints else "none",
            )

    def finish(self, epoch: int) -> dict:
        """The run's record, its best checkpoint and its finished last checkpoint."""
        loop, task, s, state = self.loop, self.task, self.loop.settings, self.state
        assert state.best is not None, "every run evaluates at least once"
        # seed and split identify a run: aggregation counts each (seed, split) once
        record = {
            "run": self.run,
            "seed": s.seed + self.run,
            "split_fingerprint": task.split_fingerprint(self.split),
            "best_epoch": state.best["epoch"],
        }
        if self.stopper is not None:
            record["epochs_run"] = epoch + 1
        record.update(task.finish_run(self.model, state.best, state.best_state, self.split))
        record["seconds"] = state.seconds + time.time() - self.started
        if self.trainer.save_checkpoints:
            record["checkpoint"] = save_run_checkpoint(
                loop.run_dir,
                self.run,
                state_dict=state.best_state,
                model_name=s.model_name,
                model_kwargs=loop.model_kwargs,
                dataset_config=s.dataset_config,
                data_fingerprint=loop.data_fingerprint,
                split_fingerprint=task.split_fingerprint(self.split),
                seed=s.seed + self.run,
                split_seed=s.split_seed,
                metrics=task.checkpoint_metrics(record),
                config=s.config,
                input_transform=task.input_transform(self.split),
            )
        self.save_last(epoch, finished=True, record=record)
        loop.logger.run_finished(record)
        print(task.run_line(record), flush=True)
        return record
