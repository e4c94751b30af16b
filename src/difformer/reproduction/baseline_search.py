"""One documented search for the baselines: the same budget for each, selected on valid.

    python scripts/search_baselines.py --dataset cora [--model gcn ...] [--threads 1]
    python scripts/search_baselines.py --family graph_search --dataset tu [--model gin_graph]

A family of searches is a folder ``configs/experiment/<family>/``: ``baseline_search`` (the
node-level baselines) and ``graph_search`` (every graph-level model, one grid for all). Each
model's grid is ``configs/experiment/<family>/<model>.yaml``: the same number of
grid points for every model (``common.yaml``), each point trained ``trainer.runs`` times and
scored by the mean validation accuracy that ``train.py`` returns. A study lives in
``<out>/runs/<dataset>/<model>/optuna.db``, so a stopped search continues where it stopped.
Once a study holds every grid point, its best point (the highest validation mean; of equal
means, the point listed first in the grid) is kept twice:

- ``<out>/<dataset>/<model>.json``: every trial's parameters and score, the choice, the date
  and the machine (committed, like the cells' records);
- ``configs/recipe/<dataset>_<model>.yaml``: the chosen settings, which then apply whenever
  ``dataset=<dataset> model=<model>`` is trained -- the paper cells of that pair included.

The test scores are never read: the choice is made on validation alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import yaml

from ..config.core import CONFIG_DIR
from ..runs.files import write_json, write_text
from ..system import processes
from .records import machine

REPO = CONFIG_DIR.parent
FAMILIES = ("baseline_search", "graph_search")
RECIPES = CONFIG_DIR / "recipe"
OUT = REPO / "reproduction" / "search"
STUDY = "baseline_search"
# the second line (after the package header) of every recipe this module writes; a recipe
# without it is never overwritten
MARK = "# Written by difformer.reproduction.baseline_search"
LEGACY_MARK = "# Written by difformer.baseline_search"  # recipes written before the move


class SearchIncomplete(RuntimeError):
    pass


def searches(family: str = "baseline_search") -> Path:
    if family not in FAMILIES:
        raise SystemExit(f"error: no search family {family!r}; allowed: {', '.join(FAMILIES)}")
    return CONFIG_DIR / "experiment" / family


def models(family: str = "baseline_search") -> list[str]:
    return sorted(p.stem for p in searches(family).glob("*.yaml") if p.stem != "common")


def grid(model: str, family: str = "baseline_search") -> tuple[dict[str, list], int, int]:
    """(the grid's axes as {key: values}, the trial budget, the runs per trial) of ``model``."""
    from hydra import compose, initialize_config_dir

    if model not in models(family):
        raise SystemExit(
            f"error: no {family} for model {model!r}; allowed: {', '.join(models(family))}"
        )
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={family}/{model}"], return_hydra_config=True)
    axes = {}
    for key, spec in cfg.hydra.sweeper.params.items():
        inner = str(spec).strip()
        if not (inner.startswith("choice(") and inner.endswith(")")):
            raise ValueError(f"{family}/{model}: {key}: {spec!r} is not a choice(...)")
        axes[key] = [yaml.safe_load(v) for v in inner[len("choice(") : -1].split(",")]
    return axes, int(cfg.hydra.sweeper.n_trials), int(cfg.trainer.runs)


def study_dir(out: Path, dataset: str, model: str) -> Path:
    return Path(out) / "runs" / dataset / model


def run_study(
    dataset: str,
    model: str,
    out: Path,
    threads: int | None = None,
    family: str = "baseline_search",
) -> int:
    """Run (or continue) the study of ``model`` on ``dataset``; the exit code of the multirun."""
    threads = threads or os.cpu_count() or 1
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        f"experiment={family}/{model}",
        f"dataset={dataset}",
        f"hydra.sweep.dir={study_dir(out, dataset, model)}",
        f"threads={threads}",
        "trainer.progress=false",
    ]
    print("running:", " ".join(cmd), flush=True)
    return processes.call(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def collect(db: Path, budget: int, axes: dict[str, list]) -> dict:
    """Every trial of the stored study and the best one; SearchIncomplete until ``budget``
    trials have completed. Equal scores go to the grid point listed first in ``axes`` (the
    grid sampler draws the points in a random order, so trial numbers would not repeat)."""
    import optuna

    storage = f"sqlite:///{db}"
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
    except KeyError:
        raise SearchIncomplete(f"{db}: no study {STUDY!r} yet; run the search") from None
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < budget:
        failed = [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL]
        if failed:  # the resumable sweeper counts them as finished: a rerun does not retry them
            raise SearchIncomplete(
                f"{db}: {len(done)} of {budget} trials complete, trials {failed} failed (see "
                f"their status.json); a failed grid point is not retried: remove {db.parent} "
                "to start this search again"
            )
        raise SearchIncomplete(
            f"{db}: {len(done)} of {budget} trials complete; run the search again to continue"
        )

    def listed_first(trial):
        return tuple(-values.index(trial.params[key]) for key, values in axes.items())

    best = max(done, key=lambda t: (t.value, listed_first(t)))
    ties = [t.number for t in done if t.value == best.value and t is not best]
    seconds = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()  # type: ignore[misc,operator]
        for t in done
    )
    return {
        "trials": [{"number": t.number, "params": dict(t.params), "valid": t.value} for t in done],
        "best": {
            "number": best.number,
            "params": dict(best.params),
            "valid": best.value,
            "tied_with": ties,
        },
        "seconds": round(seconds, 1),
    }


def nested(params: dict) -> dict:
    """{"model.dropout": 0.5} -> {"model": {"dropout": 0.5}}"""
    out: dict = {}
    for key, value in sorted(params.items()):
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def written_by_search(recipe: Path) -> bool:
    lines = Path(recipe).read_text().splitlines()
    return len(lines) > 1 and lines[1].startswith((MARK, LEGACY_MARK))


def write_choice(
    dataset: str,
    model: str,
    result: dict,
    out: Path = OUT,
    recipes: Path = RECIPES,
    family: str = "baseline_search",
) -> tuple[Path, Path]:
    """Write the search summary and the recipe of the chosen settings; the paths written."""
    axes, budget, runs = grid(model, family)
    recipe = Path(recipes) / f"{dataset}_{model}.yaml"
    if recipe.exists() and not written_by_search(recipe):
        raise SystemExit(
            f"error: {recipe} holds settings not written by the search (paper "
            "settings?); not overwritten"
        )
    summary = Path(out) / dataset / f"{model}.json"
    best = result["best"]
    write_json(
        summary,
        {
            "dataset": dataset,
            "model": model,
            "family": family,
            "budget": budget,
            "runs_per_trial": runs,
            "objective": "mean validation accuracy",
            "grid": axes,
            **result,
            "measured_on": time.strftime("%Y-%m-%d"),
            "machine": machine(),
        },
    )
    rel = summary.resolve().relative_to(REPO) if summary.resolve().is_relative_to(REPO) else summary
    header = (
        "# @package _global_\n"
        f"{MARK} (rerun it rather than edit this file).\n"
        f"# {model} on {dataset}: the best of {budget} grid points of "
        f"configs/experiment/{family}/{model}.yaml\n"
        f"# by the mean validation score of {runs} runs ({best['valid']:.4f}, trial "
        f"{best['number']}); every trial: {rel}\n"
    )
    write_text(recipe, header + yaml.safe_dump(nested(best["params"]), sort_keys=True))
    return summary, recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="e.g. cora")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="a model of the family (repeatable); default: every one (but dense_gat)",
    )
    parser.add_argument(
        "--family",
        default="baseline_search",
        choices=FAMILIES,
        help="configs/experiment/<family>/: baseline_search (node level) or graph_search",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per trial")
    parser.add_argument("--out", default=None, help="default: reproduction/search/")
    parser.add_argument(
        "--collect-only",
        action="store_true",
        help="write the choices of the finished studies, run nothing",
    )
    args = parser.parse_args(argv)
    out = Path(args.out or OUT).resolve()
    # Dense GAT costs ~18 min a run on one core for Cora (8 x 3 runs: 7 hours); ask for it
    family = args.family
    chosen = args.model or [m for m in models(family) if m != "dense_gat"]
    for model in chosen:
        grid(model, family)  # an unknown model fails here, before anything runs
    incomplete = []
    for model in chosen:
        if not args.collect_only:
            code = run_study(args.dataset, model, out, args.threads, family)
            if processes.stopped_by(code) == signal.SIGTERM:  # being stopped: not the next
                print(
                    f"{model}: stopped by SIGTERM; run the same command again to continue",
                    file=sys.stderr,
                    flush=True,
                )
                return code
        try:
            axes, budget, _ = grid(model, family)
            result = collect(study_dir(out, args.dataset, model) / "optuna.db", budget, axes)
        except SearchIncomplete as err:
            incomplete.append(model)
            print(f"{model}: {err}", file=sys.stderr, flush=True)
            continue
        summary, recipe = write_choice(args.dataset, model, result, out, family=family)
        print(
            f"{model}: best valid {result['best']['valid']:.4f} with "
            f"{result['best']['params']} -> {recipe}",
            flush=True,
        )
    return 1 if incomplete else 0
