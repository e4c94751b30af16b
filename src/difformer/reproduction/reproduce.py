"""Reproduce a paper table: run its cells as one Hydra multirun, resume, and report.

    python scripts/reproduce.py --table 1 [--jobs 2] [--set trainer.epochs=10]

Cells are the experiment configs under ``configs/experiment/paper/table<T>/`` (or
``configs/experiment/<T>/``). A cell is skipped when its directory already holds a result
(``summary.json``) for the same resolved settings (``config_hash``), or when it could not run
for lack of data that is still missing; a cell whose settings changed is moved aside to
``<cell>.stale-<time>`` (never deleted) and run again. The report ``<out>/<table>.md``, a CSV
and a plot put our mean ± std beside the paper's with the difference and a verdict.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..config.core import ConfigError
from ..system import processes
from .cells import REPO, Cell, check_overrides, plan, refresh, table_group
from .report import update_readme, write_report


def launch(
    cells: list[Cell], out_dir: Path, jobs: int, extra: list[str], threads: int | None = None
) -> int:
    """Run the given cells as one multirun (joblib launcher when jobs > 1); each job gets
    ``threads`` torch threads (default: the cores shared out), so jobs do not oversubscribe."""
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    cmd = [
        sys.executable,
        "-m",
        "difformer",
        "-m",
        "experiment=" + ",".join(c.experiment for c in cells),
        f"hydra.sweep.dir={out_dir}",
        "hydra.sweep.subdir='${basename:${hydra:runtime.choices.experiment}}'",
        f"threads={threads}",
        "trainer.progress=false",
        *extra,
    ]
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    print("running:", " ".join(cmd), flush=True)
    return processes.call(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


# the report: difformer.reproduction.report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="1, 3, 4, heterophily, smoke, ...")
    parser.add_argument("--jobs", type=int, default=1, help="parallel jobs (joblib launcher)")
    parser.add_argument("--out", default=None, help="default: reproduction/")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per job (default: cores / jobs)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override applied to every cell (part of its config hash)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CELL",
        help="run just these cells (repeatable); the report still lists every cell",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the results present, run nothing",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="also put the table into README.md between its results markers",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs must be >= 1, got {args.jobs}")
    group = table_group(args.table)
    root = Path(args.out or REPO / "reproduction").resolve()
    out_dir = root / "runs" / group.rsplit("/", 1)[-1]
    try:
        cells = plan(args.table, out_dir, args.set, root / "results" / out_dir.name)
    except Exception as err:  # noqa: BLE001 - an --set Hydra cannot compose
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: --set {' '.join(args.set)}: {reason}", file=sys.stderr)
        return 2
    names = {c.name for c in cells}
    unknown = sorted(set(args.only) - names)
    if unknown:
        raise SystemExit(
            f"error: --only {', '.join(unknown)}: no such cell in table "
            f"{args.table}; allowed: {', '.join(sorted(names))}"
        )
    todo = [
        c
        for c in cells
        if c.status in ("pending", "changed") and (not args.only or c.name in args.only)
    ]
    if todo and not args.report_only and args.set:
        try:
            check_overrides(todo, args.set)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = [c for c in cells if c not in todo]
    print(
        f"{len(cells)} cells: {len(todo)} to run, {len(skipped)} skipped "
        f"({', '.join(f'{c.name}: {c.status}' for c in skipped) or 'none'})",
        flush=True,
    )
    code = 0
    if todo and not args.report_only:
        code = launch(todo, out_dir, args.jobs, args.set, args.threads)
        if processes.stopped_by(code) == signal.SIGTERM:
            print(
                "stopped by SIGTERM: the running cell saved its last checkpoint; run the same "
                "command again to continue",
                file=sys.stderr,
            )
        elif code != 0:
            print(
                "warning: the multirun exited with an error; see the cells' status", file=sys.stderr
            )
        cells = [
            refresh(Cell(c.experiment, c.directory, c.config_hash, c.paper, c.record, c.overrides))
            for c in cells
        ]
    report = write_report(args.table, out_dir.name, cells, root)
    if args.readme:
        update_readme(REPO / "README.md", report)
    print(report.read_text())
    print(f"report: {report}")
    if processes.stopped_by(code) == signal.SIGTERM:
        return code
    ran = {c.name for c in todo} if todo and not args.report_only else set()
    failed = [c for c in cells if c.name in ran and c.status != "done"]
    if failed:
        print(
            f"error: {len(failed)} cell(s) did not finish: "
            + "; ".join(f"{c.name}: {c.error or c.status}" for c in failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
