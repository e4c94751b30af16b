"""What keeps a run alive across real use: RNG states for an exact resume, signals that stop at
an epoch boundary, the non-finite-loss guard, and progress lines off a terminal."""

from __future__ import annotations

import math
import random
import signal
import sys
import time
from typing import cast

import numpy as np
import torch

from ..runs.rundir import PROFILE

# ---------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states as tensors and plain numbers, so a
    last checkpoint stays loadable with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = cast(tuple, np.random.get_state())
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- signals


class Interrupted(Exception):
    """SIGTERM / SIGINT: the run stopped at an epoch boundary with its last checkpoint saved.
    ``forward``: a handler that was installed before ours for this signal (submitit's requeue
    on SIGUSR2), to be called once the checkpoint is written."""

    def __init__(self, signum: int, where: str, forward=None, saved: str = "saved"):
        self.signum, self.where, self.forward = signum, where, forward
        # what the console says of the last checkpoint: "saved" at this epoch's end, "kept"
        # (an earlier one: a second signal stopped at once), or "none" (save_checkpoints off)
        self.saved = saved
        self.exit_code = 128 + signum  # 143 for SIGTERM, 130 for SIGINT
        super().__init__(f"{signal.Signals(signum).name} {where}")

    def outcome(self) -> str:
        return {
            "saved": "the last checkpoint is saved",
            "kept": "the last checkpoint saved before it is kept",
            "none": "no checkpoint is kept (trainer.save_checkpoints=false): a rerun starts over",
        }[self.saved]


class GracefulStop:
    """Turns the first SIGTERM/SIGINT into a flag the loop reads at the end of each epoch
    (the state is consistent only there); a second one stops at once.

    SIGUSR1/SIGUSR2 are taken over only when a Python handler already waits for them: that
    is how a job scheduler's wrapper (submitit, used by ``hydra/launcher=slurm``) asks a job to
    checkpoint before its time limit. The loop then saves the last checkpoint and the wrapper's
    handler runs (it requeues the job, which resumes from that checkpoint)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    CHAINED = (signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # asked twice: do not wait for the epoch to end
            signal.signal(signum, signal.SIG_DFL)
            raise Interrupted(signum, "twice: stopped at once", saved="kept")
        self.signum = signum
        print(
            f"{signal.Signals(signum).name} received: stopping at the end of this epoch",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            for sig in self.CHAINED:
                if callable(signal.getsignal(sig)):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def forward(self):
        """The handler to call after checkpointing, for a chained signal (else None)."""
        previous = self._previous.get(self.signum)
        if self.signum in self.CHAINED and callable(previous):
            signum = self.signum
            return lambda: previous(signum, None)
        return None


# ---------------------------------------------------------------- non-finite loss


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run stops, no result is written."""


class FiniteGuard:
    def __init__(self, run: int):
        self.run = run
        self.last: tuple[int, float] | None = None  # (epoch, loss) of the last finite loss

    def check(self, epoch: int, loss: float) -> None:
        if math.isfinite(loss):
            self.last = (epoch, loss)
            return
        before = (
            "no finite loss before it"
            if self.last is None
            else f"last finite loss {self.last[1]:.6g} at epoch {self.last[0]}"
        )
        raise NonFiniteLoss(
            f"run {self.run}, epoch {epoch}: the training loss is {loss} "
            f"({before}); lower optim.lr or check the data"
        )


# ---------------------------------------------------------------- progress


class Progress:
    """A tqdm bar on a terminal; off one (nohup, SLURM logs, sweeps), a heartbeat line every
    ``every_epochs`` epochs or ``every_seconds`` seconds: run, epoch, loss, valid, best,
    seconds per epoch and the time left for this run."""

    def __init__(
        self,
        run: int,
        runs: int,
        epochs: int,
        first_epoch: int,
        enabled: bool,
        every_epochs: int | None,
        every_seconds: float | None,
        stream=None,
    ):
        self.run, self.runs, self.epochs, self.first = run, runs, epochs, first_epoch
        self.every_epochs, self.every_seconds = every_epochs, every_seconds
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, initial=first_epoch, desc=f"run {run}", leave=False)
        self.start = self.last_line = time.time()

    def _due(self, epoch: int) -> bool:
        if self.every_epochs is not None:
            return (epoch + 1) % self.every_epochs == 0
        return time.time() - self.last_line >= (self.every_seconds or 0.0)

    def epoch(self, epoch: int, loss: float, valid: float | None, best: float | None, fmt) -> None:
        if self.bar is not None:
            post = {"loss": f"{loss:.4f}"}
            if valid is not None:
                post.update(valid=fmt(valid), best=fmt(best))
            self.bar.set_postfix(post)
            self.bar.update(1)
            return
        if not self.enabled or not (self._due(epoch) or epoch == self.epochs - 1):
            return
        done = epoch + 1 - self.first
        per_epoch = (time.time() - self.start) / max(done, 1)
        left = per_epoch * (self.epochs - epoch - 1)
        scores = "" if valid is None else f" | valid {fmt(valid)} | best {fmt(best)}"
        print(
            f"{self.where(epoch)} | loss "
            f"{loss:.4f}{scores} | {per_epoch:.2f} s/epoch | ETA {left:.0f} s",
            file=self.stream,
            flush=True,
        )
        self.last_line = time.time()

    def where(self, epoch: int) -> str:
        """Runs and epochs are numbered from 0 everywhere (files, records, messages); the
        parentheses count them: ``run 1 (2/5) | epoch 9 (10/500)``."""
        return (
            f"run {self.run} ({self.run + 1}/{self.runs}) | epoch {epoch} "
            f"({epoch + 1}/{self.epochs})"
        )

    def step(self, epoch: int):
        """A callback for long epochs (mini-batches): a line per interval inside the epoch."""
        if self.bar is not None or not self.enabled or self.every_seconds is None:
            return None

        def report(step: int, steps: int) -> None:
            if time.time() - self.last_line >= (self.every_seconds or 0.0) and step < steps:
                print(
                    f"{self.where(epoch)} | step {step}/{steps}",
                    file=self.stream,
                    flush=True,
                )
                self.last_line = time.time()

        return report

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- profiling


class Profiler:
    """``trainer.profile_epochs=K``: torch.profiler over the first K epochs of run 0; writes
    ``profile_trace.json`` (chrome://tracing, Perfetto) and ``profile.txt`` (the top operators
    by total time) into the run directory."""

    def __init__(self, run_dir, epochs: int | None, device: torch.device):
        self.run_dir, self.epochs = run_dir, epochs
        self.active: torch.profiler.profile | None = None
        self.activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            self.activities.append(torch.profiler.ProfilerActivity.CUDA)

    def step(self, index: int) -> None:
        if not self.epochs:
            return
        if index == 0:
            self.active = torch.profiler.profile(activities=self.activities, record_shapes=True)
            self.active.__enter__()
        elif index == self.epochs:
            self.close()

    def close(self) -> None:
        if self.active is None:
            return
        self.active.__exit__(None, None, None)
        self.active.export_chrome_trace(str(self.run_dir / PROFILE[1]))
        table = self.active.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        (self.run_dir / PROFILE[0]).write_text(table + "\n")
        print(
            f"profile of {self.epochs} epoch(s): {self.run_dir / PROFILE[0]}, "
            f"{self.run_dir / PROFILE[1]}",
            flush=True,
        )
        self.active, self.epochs = None, None
