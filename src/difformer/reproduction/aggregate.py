"""Aggregate any multirun directory into mean ± std over seeds, grouped by the swept values.

    python scripts/aggregate.py outputs/multiruns/<date>/<time>_<id> [--csv out.csv]

Each job directory holds ``summary.json`` and Hydra's ``.hydra/overrides.yaml``. Jobs are
grouped by the overrides that differ between jobs, except ``seed`` (and bookkeeping keys);
overrides common to all jobs are not swept values. Within a group each run counts once, a run
being its (model seed, data split): ``-m seed=1,2 trainer.runs=2`` trains seed 2 in both jobs
(on the same split where the split follows the run's seed), and that run is counted once, with
a warning. Mean and sample std (ddof = 1) of the per-run test (and valid) scores, n the number
of distinct runs. Jobs that failed or lacked data (``status.json``) are listed, never dropped
silently.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import yaml

from ..runs import rundir
from ..train.metrics import ERROR_METRICS

IGNORED = ("seed", "hydra.", "threads", "trainer.progress", "paths.")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def problems(root: Path) -> list[dict]:
    """Jobs without a result: their status (failed, unavailable, interrupted) and why."""
    out = []
    for status_path in sorted(Path(root).rglob(rundir.STATUS)):
        job = status_path.parent
        if (job / rundir.SUMMARY).exists() or "stale-" in str(job):
            continue
        status = json.loads(status_path.read_text())
        out.append(
            {
                "dir": job,
                "status": status.get("status"),
                "why": status.get("error") or status.get("missing_path"),
            }
        )
    return out


def collect(root: Path) -> list[dict]:
    jobs = []
    for summary_path in sorted(Path(root).rglob(rundir.SUMMARY)):
        job = summary_path.parent
        if "stale-" in str(job):  # files of an earlier attempt, moved aside
            continue
        overrides_path = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.exists() else []
        jobs.append(
            {
                "dir": job,
                "overrides": overrides or [],
                "summary": json.loads(summary_path.read_text()),
            }
        )
    return jobs


def aggregate(jobs: list[dict]) -> list[dict]:
    """One row per combination of swept values (overrides that differ between jobs)."""
    values: dict[str, set] = {}
    for job in jobs:
        for o in job["overrides"]:
            values.setdefault(_key(o), set()).add(o)
    swept = {k for k, v in values.items() if len(v) > 1 and not k.startswith(IGNORED)}
    groups: dict[tuple, list[dict]] = {}
    for job in jobs:
        kept = tuple(sorted(o for o in job["overrides"] if _key(o) in swept))
        groups.setdefault(kept, []).append(job)
    rows = []
    for kept, members in sorted(groups.items()):
        runs, seen, repeated = [], set(), []
        for job in members:
            for r in job["summary"]["runs"]:
                key = (r.get("seed"), r.get("split_fingerprint"))
                if r.get("split_fingerprint") is not None and key in seen:
                    repeated.append(f"seed {r.get('seed')} in {job['dir']}")
                    continue
                seen.add(key)
                runs.append(r)
        if repeated:
            print(
                f"warning: {' '.join(kept) or 'the sweep'}: the jobs' seeds overlap; counted "
                f"once: {', '.join(repeated)}",
                file=sys.stderr,
            )
        tests = [r["test"] for r in runs]
        valids = [r["valid"] for r in runs]
        std = statistics.stdev(tests) if len(tests) > 1 else None
        rows.append(
            {
                "group": " ".join(kept) or "(no swept values)",
                "metric": members[0]["summary"]["metric"],
                "n": len(tests),
                "jobs": len(members),
                "test_mean": statistics.fmean(tests),
                "test_std": std,
                "valid_mean": statistics.fmean(valids),
                "ddof": 1,
            }
        )
    return rows


def shown(value: float | None, metric: str) -> str:
    """As the console shows it: scores in [0, 1] in percent, errors (MSE, MAE) as they are,
    ``n/a`` for a value that does not exist (the std of one run)."""
    if value is None or value != value:
        return "n/a"
    return f"{value:.4f}" if metric in ERROR_METRICS else f"{100 * value:.2f}"


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "| group | metric | test mean ± std | valid mean | n runs (jobs) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        m = r["metric"]
        lines.append(
            f"| {r['group']} | {m} | {shown(r['test_mean'], m)} ± {shown(r['test_std'], m)} | "
            f"{shown(r['valid_mean'], m)} | {r['n']} ({r['jobs']}) |"
        )
    return "\n".join(lines) + (
        "\n\nScores in percent as on the console (errors such as MSE as they are; the JSON "
        "files keep fractions); std: sample standard deviation (ddof = 1) over all runs in the "
        "group."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mean ± std over seeds of a multirun directory")
    parser.add_argument("directory")
    parser.add_argument("--csv", default=None, help="also write the table as CSV")
    args = parser.parse_args(argv)
    root = Path(args.directory)
    jobs = collect(root)
    missing = problems(root)
    for job in missing:
        print(f"{job['status']}: {job['dir']}: {job['why']}", file=sys.stderr)
    if not jobs:
        print(f"error: no summary.json under {root}", file=sys.stderr)
        return 2
    rows = aggregate(jobs)
    print(to_markdown(rows))
    if missing:
        print(f"\n{len(missing)} job(s) without a result (listed above) are not in the table.")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
