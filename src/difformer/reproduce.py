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
import csv
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from .config import CONFIG_DIR, config_hash, register_resolvers
from .rundir import inspect as inspect_run_dir

REPO = CONFIG_DIR.parent
EXPERIMENTS = CONFIG_DIR / "experiment"


def table_group(table: str) -> str:
    """``1`` -> ``paper/table1``; ``heterophily`` -> ``paper/heterophily``; ``smoke`` -> ``smoke``."""
    for name in (f"paper/table{table}", f"paper/{table}", table):
        if (EXPERIMENTS / name).is_dir():
            return name
    known = sorted(str(p.parent.relative_to(EXPERIMENTS)) for p in EXPERIMENTS.rglob("*.yaml")
                   if p.parent != EXPERIMENTS)
    raise SystemExit(f"error: unknown table {table!r}; allowed: {', '.join(sorted(set(known)))}")


def compose_cell(experiment: str, extra: list[str]):
    from hydra import compose, initialize_config_dir

    from .settings import normalise

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return normalise(compose("train", overrides=[f"experiment={experiment}", *extra]))


@dataclass
class Cell:
    experiment: str                     # e.g. paper/table1/cora_difformer_s
    directory: Path
    config_hash: str
    paper: dict
    status: str = "pending"             # done | pending | changed | unavailable | failed
    summary: dict | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.experiment.rsplit("/", 1)[-1]


def inspect(cell: Cell) -> Cell:
    """Set the cell's status from what its directory holds (:mod:`difformer.rundir`)."""
    state = inspect_run_dir(cell.directory, cell.config_hash)
    status = state.status or {}
    if state.state == "finished":
        cell.status, cell.summary = "done", state.summary
    elif state.state == "unavailable":
        missing = status.get("missing_path")
        if missing and Path(missing).exists():  # the data has appeared since: try again
            cell.status = "pending"
        else:
            cell.status, cell.error = "unavailable", status.get("error")
            cell.notes.append(f"looked for {missing}")
    elif state.state in ("failed", "resumable"):
        cell.status, cell.error = "pending", status.get("error")  # run again / continue
    elif state.state == "changed":
        cell.status = "changed"  # train.py moves the old files aside and starts over
    return cell


def plan(table: str, out_dir: Path, extra: list[str]) -> list[Cell]:
    group = table_group(table)
    cells = []
    for path in sorted((EXPERIMENTS / group).glob("*.yaml")):
        experiment = f"{group}/{path.stem}"
        cfg = compose_cell(experiment, extra)
        paper = OmegaConf.to_container(cfg.get("paper") or OmegaConf.create({}), resolve=True)
        cells.append(inspect(Cell(experiment, out_dir / path.stem, config_hash(cfg), paper)))
    return cells


def launch(cells: list[Cell], out_dir: Path, jobs: int, extra: list[str],
           threads: int | None = None) -> int:
    """Run the given cells as one multirun (joblib launcher when jobs > 1); each job gets
    ``threads`` torch threads (default: the cores shared out), so jobs do not oversubscribe."""
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    cmd = [sys.executable, "-m", "difformer", "-m",
           "experiment=" + ",".join(c.experiment for c in cells),
           f"hydra.sweep.dir={out_dir}", "hydra.sweep.subdir='${basename:${hydra:runtime.choices.experiment}}'",
           f"threads={threads}", "trainer.progress=false", *extra]
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


# ---------------------------------------------------------------- report

def scale(cell: Cell) -> float:
    return 100.0 if cell.paper.get("unit") == "percent" else 1.0


def verdict(ours_mean, ours_std, paper_mean, paper_std) -> str:
    """'within' when |ours - paper| <= sqrt(ours_std^2 + paper_std^2) (missing stds count 0)."""
    if paper_mean is None:
        return "no paper number"
    if ours_mean is None:
        return "not run"
    combined = math.hypot(ours_std or 0.0, paper_std or 0.0)
    return "within" if abs(ours_mean - paper_mean) <= combined else "outside"


def row(cell: Cell) -> dict:
    p = cell.paper
    out = {"cell": cell.name, "status": cell.status, "paper_mean": p.get("mean"),
           "paper_std": p.get("std"), "paper_runs": p.get("runs"),
           "paper_confidence": p.get("confidence"), "paper_source": p.get("source"),
           "ours_mean": None, "ours_std": None, "n_runs": None, "ddof": None, "diff": None,
           "verdict": None, "note": None, "wall_seconds": None}
    s = cell.summary
    if cell.status == "done" and s:
        k = scale(cell)
        # the paper's convention: the official spatial-temporal script reports ddof 0
        population = s.get("paper_std_ddof") == 0 and "test_std_population" in s
        std = s["test_std_population"] if population else s.get("test_std")
        out.update(ours_mean=k * s["test_mean"], ours_std=None if std is None else k * std,
                   n_runs=s["n_runs"], ddof=0 if population else s.get("std_ddof"),
                   wall_seconds=s.get("wall_seconds"))
        if p.get("mean") is not None:
            out["diff"] = out["ours_mean"] - p["mean"]
        out["verdict"] = verdict(out["ours_mean"], out["ours_std"], p.get("mean"), p.get("std"))
        out["note"] = s.get("report_note")
        if str(s.get("device", "cpu")).startswith("cuda"):  # not this table's CPU machine
            out["note"] = "; ".join(filter(None, [out["note"], "measured on a GPU (see README)"]))
        if population:
            out["note"] = f"{out['note']}; std with ddof 0 (population), as the official script"
    elif cell.status == "unavailable":
        out["verdict"] = "not run: data unavailable"
        out["note"] = "; ".join(cell.notes) or cell.error
    else:
        out["verdict"] = f"not run: {cell.status}"
        out["note"] = cell.error
    return out


def _fmt(mean, std, digits):
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _wall(seconds) -> str:
    """The cell's wall time (its last attempt; a resumed cell counts the final attempt)."""
    if seconds is None:
        return "—"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def write_report(table: str, cells: list[Cell], out_dir: Path) -> Path:
    rows = [row(c) for c in cells]
    name = table_group(table).rsplit("/", 1)[-1]
    with open(out_dir / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {name}: ours beside the paper", "",
             f"Generated by `scripts/reproduce.py --table {table}` on "
             f"{time.strftime('%Y-%m-%d')}. Ours: mean ± sample std (ddof = 1) over n runs; "
             "verdict 'within' when |ours − paper| ≤ √(std_ours² + std_paper²). Temporal cells use the "
             "population std (ddof = 0), the official spatial-temporal script's convention, "
             "for the verdict (the n column shows the runs; the note says so).", "",
             "| cell | ours | n | paper | confidence | diff | verdict | wall | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r, c in zip(rows, cells):
        digits = 2 if c.paper.get("unit") == "percent" else 4
        diff = "—" if r["diff"] is None else f"{r['diff']:+.{digits}f}"
        lines.append(f"| {r['cell']} | {_fmt(r['ours_mean'], r['ours_std'], digits)} | "
                     f"{r['n_runs'] or '—'} | {_fmt(r['paper_mean'], r['paper_std'], digits)} | "
                     f"{r['paper_confidence'] or '—'} | {diff} | {r['verdict']} | "
                     f"{_wall(r['wall_seconds'])} | {(r['note'] or '').replace('|', '/')} |")
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines) + "\n")
    names = {"mse_paper": "MSE, the paper's convention", "rocauc_ogb": "ROC-AUC"}
    units = ["percentage points" if c.paper.get("unit") == "percent" else
             names.get(c.paper.get("metric"), c.paper.get("metric") or "metric") for c in cells]
    _plot(rows, out_dir / f"{name}.png", name, units)
    return report


def _plot(rows: list[dict], path: Path, title: str, units: list[str]) -> None:
    """A difference plot: ours − paper per cell, with the combined std as the bar around it
    (the band of the 'within' verdict), green within, red outside, grey × for cells not run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * len(rows) + 1.5), 4.0))
    ax.axhline(0.0, color="black", linewidth=0.8)
    for x, r in enumerate(rows):
        if r["diff"] is None:
            ax.plot([x], [0.0], marker="x", color="grey", markersize=8)
            ax.annotate("not run" if r["ours_mean"] is None else "no paper number", (x, 0.0),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=6,
                        color="grey", rotation=90)
            continue
        band = math.hypot(r["ours_std"] or 0.0, r["paper_std"] or 0.0)
        color = "tab:green" if r["verdict"] == "within" else "tab:red"
        ax.errorbar([x], [r["diff"]], yerr=[band], fmt="o", color=color, capsize=4)
    ax.set_xticks(list(range(len(rows))), [r["cell"] for r in rows], rotation=45, ha="right",
                  fontsize=7)
    unit = ", ".join(sorted(set(units)))
    ax.set_ylabel(f"ours − paper ({unit})")
    ax.set_title(f"{title}: ours − paper, bar = combined std (green within, red outside)",
                 fontsize=8)
    ax.set_xlim(-0.7, len(rows) - 0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def update_readme(readme: Path, report: Path) -> None:
    """Replace the block between ``<!-- results:<name>:start -->`` and ``...:end -->``."""
    name = report.stem
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"error: {readme} has no {start} ... {end} block")
    body = report.read_text().split("\n", 2)[2].strip()  # drop the report's title line
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="1, 3, 4, heterophily, smoke, ...")
    parser.add_argument("--jobs", type=int, default=1, help="parallel jobs (joblib launcher)")
    parser.add_argument("--out", default=None, help="default: reproduction/")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per job (default: cores / jobs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override applied to every cell (part of its config hash)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the results present, run nothing")
    parser.add_argument("--readme", action="store_true",
                        help="also put the table into README.md between its results markers")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs must be >= 1, got {args.jobs}")
    group = table_group(args.table)
    out_dir = Path(args.out or REPO / "reproduction").resolve() / "runs" / group.rsplit("/", 1)[-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = plan(args.table, out_dir, args.set)
    todo = [c for c in cells if c.status in ("pending", "changed")]
    skipped = [c for c in cells if c not in todo]
    print(f"{len(cells)} cells: {len(todo)} to run, {len(skipped)} skipped "
          f"({', '.join(f'{c.name}: {c.status}' for c in skipped) or 'none'})", flush=True)
    if todo and not args.report_only:
        if launch(todo, out_dir, args.jobs, args.set, args.threads) != 0:
            print("warning: the multirun exited with an error; see the cells' status",
                  file=sys.stderr)
        cells = [inspect(Cell(c.experiment, c.directory, c.config_hash, c.paper)) for c in cells]
    report = write_report(args.table, cells, out_dir.parent.parent)
    if args.readme:
        update_readme(REPO / "README.md", report)
    print(report.read_text())
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
