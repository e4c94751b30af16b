"""Run logging: metrics.jsonl always, Weights & Biases with ``logger=wandb``."""
from __future__ import annotations

import os
from pathlib import Path

from .io import JsonlWriter


class RunLogger:
    def __init__(self, run_dir: Path, logger_cfg, config: dict):
        self.jsonl = JsonlWriter(Path(run_dir) / "metrics.jsonl")
        self.wandb = None
        if logger_cfg.get("name") == "wandb":
            try:
                import wandb  # an extra: only this logger needs it
            except ImportError as err:
                raise ImportError("logger=wandb needs Weights & Biases: pip install "
                                  "'difformer[wandb]' (or pip install wandb)") from err

            mode = os.environ.get("WANDB_MODE") or logger_cfg.get("mode")
            self.wandb = wandb.init(project=logger_cfg.get("project"),
                                    entity=logger_cfg.get("entity"),
                                    group=logger_cfg.get("group"), mode=mode,
                                    dir=str(run_dir), config=config,
                                    name=Path(run_dir).name)

    def log(self, record: dict) -> None:
        self.jsonl.write(record)
        if self.wandb is not None:
            run = record.get("run", 0)
            self.wandb.log({f"run{run}/{k}": v for k, v in record.items()
                            if k not in ("run",) and isinstance(v, (int, float))})

    def truncate(self, run: int, epoch: int) -> None:
        """Forget what an interrupted attempt logged for ``run`` after ``epoch`` (a resume
        logs those epochs again)."""
        self.jsonl.keep(lambda r: r.get("run", 0) < run or
                        (r.get("run", 0) == run and r.get("epoch", 0) <= epoch))

    def finish(self, summary: dict) -> None:
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in summary.items()
                                       if isinstance(v, (int, float, str))})

    def close(self) -> None:
        self.jsonl.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


class NullLogger:
    """What ranks other than 0 of a distributed run log: nothing."""

    def log(self, record: dict) -> None:
        pass

    def truncate(self, run: int, epoch: int) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        pass
