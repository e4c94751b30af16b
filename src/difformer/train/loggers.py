"""Run logging: metrics.jsonl always; metrics.csv, TensorBoard and Weights & Biases on request
(``logger=[csv,tensorboard,wandb]``, any subset). Each seed is its own curve from epoch 0: one
TensorBoard folder and one W&B run per seed, W&B runs grouped by job (or sweep)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ..runs import rundir
from ..runs.files import JsonlWriter, read_jsonl, write_text


def _scalars(record: dict) -> dict:
    return {
        k: v
        for k, v in record.items()
        if k not in ("run", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class CsvLog:
    """metrics.csv, rewritten (atomically) from metrics.jsonl when a run ends or stops, so it
    always equals the JSON lines, resumed runs included."""

    def __init__(self, run_dir: Path, jsonl_path: Path):
        self.path, self.source = Path(run_dir) / rundir.METRICS_CSV, jsonl_path

    def flush(self) -> None:
        records = read_jsonl(self.source)
        columns = list(dict.fromkeys(k for r in records for k in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
        write_text(self.path, out.getvalue())


def plot_curves(jsonl_path: Path, out: Path, metric: str = "score") -> None:
    """curves.png: training loss, valid and test score against epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(jsonl_path)
    if not records:
        return
    panels = [key for key in ("loss", "valid", "test") if any(key in r for r in records)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.2), squeeze=False)
    runs = sorted({r.get("run", 0) for r in records})
    for ax, key in zip(axes[0], panels):
        for run in runs:
            points = [
                (r["epoch"], r[key])
                for r in records
                if r.get("run", 0) == run and isinstance(r.get(key), (int, float))
            ]
            if points:
                ax.plot(*zip(*points), label=f"run {run}", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss" if key == "loss" else f"{key} {metric}")
    if len(runs) > 1:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


class TensorBoardLog:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                "logger=tensorboard needs TensorBoard: pip install "
                "'difformer[tensorboard]' (or pip install tensorboard)"
            ) from err
        self.make = lambda run: SummaryWriter(
            log_dir=str(Path(run_dir) / rundir.TENSORBOARD / f"run{run}")
        )
        self.writers: dict[int, Any] = {}

    def log(self, record: dict) -> None:
        run = record.get("run", 0)
        if run not in self.writers:
            self.writers[run] = self.make(run)
        for key, value in _scalars(record).items():
            self.writers[run].add_scalar(key, value, record.get("epoch", 0))

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


class WandbLog:
    def __init__(self, run_dir: Path, options: dict, config: dict):
        try:
            import wandb  # an extra: only this logger needs it
        except ImportError as err:
            raise ImportError(
                "logger=wandb needs Weights & Biases: pip install "
                "'difformer[wandb]' (or pip install wandb)"
            ) from err
        self.wandb, self.options, self.config = wandb, options, config
        self.run_dir = Path(run_dir)
        self.mode: Any = os.environ.get("WANDB_MODE") or options.get("mode")
        self.group = options.get("group") or self._default_group()
        self.current: Any = None
        self.current_index: int | None = None

    def _default_group(self) -> str:
        """A sweep's jobs share the sweep directory's name (Hydra writes multirun.yaml
        there); a single job its own."""
        if (self.run_dir.parent / "multirun.yaml").exists():
            return self.run_dir.parent.name
        return self.run_dir.name

    def log(self, record: dict) -> None:
        run = record.get("run", 0)
        if run != self.current_index:
            self.end()
            self.current = self.wandb.init(
                project=self.options.get("project"),
                entity=self.options.get("entity"),
                group=self.group,
                job_type="train",
                mode=self.mode,
                dir=str(self.run_dir),
                name=f"{self.run_dir.name}-run{run}",
                config={**self.config, "run": run},
                reinit="finish_previous",
            )
            self.current_index = run
        self.current.log(_scalars(record), step=record.get("epoch", 0))

    def run_finished(self, record: dict) -> None:
        if self.current is None:
            return
        # the selected epoch's scores as best_*: W&B's own summary keeps the last logged values
        self.current.summary.update(
            {
                (k if k in ("run", "seed", "best_epoch") else f"best_{k}"): v
                for k, v in record.items()
                if isinstance(v, (int, float)) and k != "seconds"
            }
        )
        if self.options.get("log_checkpoints") and record.get("checkpoint"):
            artifact = self.wandb.Artifact(f"{self.run_dir.name}-run{record['run']}", type="model")
            artifact.add_file(record["checkpoint"])
            self.current.log_artifact(artifact)
        self.end()

    def end(self) -> None:
        if self.current is not None:
            self.current.finish()
            self.current, self.current_index = None, None


class RunLogger:
    def __init__(self, run_dir: Path, logger_cfg, config: dict):
        self.jsonl = JsonlWriter(Path(run_dir) / rundir.METRICS)
        options = dict(logger_cfg) if logger_cfg is not None else {}
        jsonl = options.get("jsonl") or {}
        self.curves = (
            Path(run_dir) / rundir.CURVES
            if str(jsonl.get("curves", True)).lower() in ("true", "1", "yes")
            else None
        )
        self.csv = CsvLog(run_dir, self.jsonl.path) if "csv" in options else None
        self.tensorboard = TensorBoardLog(run_dir) if "tensorboard" in options else None
        self.wandb = (
            WandbLog(run_dir, dict(options["wandb"] or {}), config) if "wandb" in options else None
        )

    def log(self, record: dict) -> None:
        self.jsonl.write(record)
        for backend in (self.tensorboard, self.wandb):
            if backend is not None:
                backend.log(record)

    def truncate(self, run: int, epoch: int) -> None:
        """Forget what an interrupted attempt logged for ``run`` after ``epoch`` (a resume
        logs those epochs again; TensorBoard keeps its events, newer ones win in its view)."""
        self.jsonl.keep(
            lambda r: (
                r.get("run", 0) < run or (r.get("run", 0) == run and r.get("epoch", 0) <= epoch)
            )
        )

    def run_finished(self, record: dict) -> None:
        if self.wandb is not None:
            self.wandb.run_finished(record)
        if self.csv is not None:
            self.csv.flush()
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def finish(self, summary: dict) -> None:
        if self.curves is not None:
            plot_curves(self.jsonl.path, self.curves, summary.get("metric", "score"))

    def close(self) -> None:
        self.jsonl.close()
        if self.csv is not None:
            self.csv.flush()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.end()


class NullLogger:
    """What ranks other than 0 of a distributed run log: nothing."""

    def log(self, record: dict) -> None:
        pass

    def truncate(self, run: int, epoch: int) -> None:
        pass

    def run_finished(self, record: dict) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        pass
