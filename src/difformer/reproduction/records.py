"""The measured result of each reproduced cell, kept in the repository.

Run directories (checkpoints, logs, per-epoch metrics) are git-ignored, so a fresh clone has
none: a report built from them alone would show every cell as pending, and ``make reproduce``
would spend hours measuring again what was measured before. Each finished cell therefore
leaves ``reproduction/results/<table>/<cell>.json`` -- its settings hash, its summary and where
and when it ran -- small, and committed with the report.

A record counts only for the settings it was measured with: a cell whose resolved config hashes
differently is run again (its record is replaced when the new run finishes). A run directory of
the same settings takes precedence over the record.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from ..runs.files import write_json

# a run directory's own path is no result; of each run the scores are kept, not its timings
DROPPED = ("run_dir",)
RUN_KEYS = ("run", "seed", "best_epoch", "train", "valid", "test")


def machine() -> str:
    """A one-line description of where this process runs, e.g. ``x86_64, 2 cores, torch 2.13.0``."""
    import torch

    parts = [
        platform.machine() or "unknown cpu",
        f"{os.cpu_count()} cores",
        f"torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return ", ".join(parts)


def record_path(records_dir: Path, cell: str) -> Path:
    return Path(records_dir) / f"{cell}.json"


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "summary" in record else None


def make_record(
    cell: str,
    settings_hash: str,
    summary: dict,
    overrides: Sequence[str] = (),
    measured_on: str | None = None,
    where: str | None = None,
) -> dict:
    """``overrides``: the ``--set`` options the cell ran with (they are part of its hash)."""
    return {
        "cell": cell,
        "config_hash": settings_hash,
        "overrides": list(overrides),
        "measured_on": measured_on or time.strftime("%Y-%m-%d"),
        "machine": where or machine(),
        "summary": kept(summary),
    }


def kept(summary: dict) -> dict:
    out = {k: v for k, v in summary.items() if k not in DROPPED}
    if "runs" in out:
        out["runs"] = [{k: r[k] for k in RUN_KEYS if k in r} for r in out["runs"]]
    return out


def write_record(path: Path, record: dict) -> bool:
    """Write ``record`` atomically; False (and nothing written) when the file already holds the
    same measurement, so that re-reporting does not churn the committed files."""
    old = read_record(path)
    if (
        old is not None
        and old.get("config_hash") == record["config_hash"]
        and old.get("summary") == record["summary"]
    ):
        return False
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), record)
    return True


def matching(path: Path | None, settings_hash: str) -> tuple[dict | None, str | None]:
    """(the record, None) when it was measured with these settings; (None, why not) otherwise."""
    record = None if path is None else read_record(path)
    if record is None:
        return None, None
    if record.get("config_hash") != settings_hash:
        sets = " ".join(f"--set {o}" for o in record.get("overrides") or [])
        return None, (
            f"the result recorded on {record.get('measured_on')} is for other settings"
            + (f" ({sets})" if sets else "")
        )
    return record, None
