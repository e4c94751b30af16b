"""A paper table's cells: which experiment configs make it, what each has measured so far.

A cell is one experiment config under ``configs/experiment/paper/table<T>/`` (or
``configs/experiment/<T>/``); its status comes from its run directory
(:mod:`difformer.runs.rundir`) and its committed record (:mod:`.records`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir

from ..config.core import CONFIG_DIR, ConfigError, config_hash, register_resolvers, to_dict
from ..config.core import VOLATILE_TRAINER_KEYS as VOLATILE
from ..config.settings import normalise, resolve
from ..runs.rundir import read_state
from ..train.tasks import TASKS
from . import records

REPO = CONFIG_DIR.parent
EXPERIMENTS = CONFIG_DIR / "experiment"


def table_group(table: str) -> str:
    """``1`` -> ``paper/table1``; ``heterophily`` -> ``paper/heterophily``;
    ``smoke`` -> ``smoke``."""
    for name in (f"paper/table{table}", f"paper/{table}", table):
        if (EXPERIMENTS / name).is_dir():
            return name
    known = sorted(
        str(p.parent.relative_to(EXPERIMENTS))
        for p in EXPERIMENTS.rglob("*.yaml")
        if p.parent != EXPERIMENTS
    )
    raise SystemExit(f"error: unknown table {table!r}; allowed: {', '.join(sorted(set(known)))}")


def compose_cell(experiment: str, extra: list[str]):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return normalise(compose("train", overrides=[f"experiment={experiment}", *extra]), TASKS)


@dataclass
class Cell:
    experiment: str  # e.g. paper/table1/cora_difformer_s
    directory: Path
    config_hash: str
    paper: dict
    record: Path | None = None  # reproduction/results/<table>/<cell>.json
    overrides: list[str] = field(default_factory=list)  # --set options (part of config_hash)
    status: str = "pending"  # done | pending | changed | unavailable | failed
    summary: dict | None = None
    measured: str | None = None  # "<date>, <machine>" of a done cell's record
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    budget: list[str] | None = None  # the --set options of a record at a reduced budget

    @property
    def name(self) -> str:
        return self.experiment.rsplit("/", 1)[-1]


def refresh(cell: Cell) -> Cell:
    """Set the cell's status: a finished run directory of the same settings
    (:mod:`difformer.runs.rundir`), else the cell's record of the same settings
    (:mod:`difformer.reproduction.records`), else what the run directory holds."""
    state = read_state(cell.directory, cell.config_hash)
    status = state.status or {}
    record, why = records.matching(cell.record, cell.config_hash)
    if state.state == "finished":
        cell.status, cell.summary = "done", state.summary
        new = records.make_record(cell.name, cell.config_hash, state.summary or {}, cell.overrides)
        if record is None or record["summary"] != new["summary"]:
            if cell.record is not None:
                records.write_record(cell.record, new)
            record = new
        cell.measured = f"{record['measured_on']}, {record['machine']}"
    elif record is not None:
        cell.status, cell.summary = "done", record["summary"]
        cell.measured = f"{record['measured_on']}, {record['machine']}"
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
    if why and cell.status != "done":
        cell.notes.append(why)
    return cell


def reduced_budget(cell: Cell) -> Cell:
    """A cell not done at its own settings whose record was measured with other ``--set``
    options (fewer runs or epochs) shows that record's numbers marked with those options,
    and stays to be run at its own settings."""
    record = None if cell.record is None else records.read_record(cell.record)
    if cell.status == "done" or record is None or record.get("config_hash") == cell.config_hash:
        return cell
    overrides = [str(o) for o in record.get("overrides") or []]
    if config_hash(compose_cell(cell.experiment, overrides)) != record.get("config_hash"):
        return cell  # measured with settings this cell can no longer express
    # the budget the row shows: what changed the result (not trainer.progress and the like)
    shown = [o for o in overrides if o.split("=", 1)[0].removeprefix("trainer.") not in VOLATILE]
    cell.budget, cell.summary = shown, record["summary"]
    cell.measured = f"{record['measured_on']}, {record['machine']}"
    cell.notes = [n for n in cell.notes if not n.startswith("the result recorded")]
    return cell


def check_overrides(cells: list[Cell], extra: list[str]) -> None:
    """The ``--set`` options resolve to valid settings in every cell to run (ConfigError,
    one line naming the option, before anything runs)."""
    for cell in cells:
        try:
            resolve(compose_cell(cell.experiment, extra), TASKS)
        except (ConfigError, ValueError) as err:
            sets = " ".join(f"--set {o}" for o in extra)
            raise ConfigError(f"{sets}: cell {cell.name}: {err}") from err
        except Exception as err:  # noqa: BLE001 - Hydra's own errors for unknown keys
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--set {' '.join(extra)}: {reason}") from err


def plan(table: str, out_dir: Path, extra: list[str], records_dir: Path) -> list[Cell]:
    group = table_group(table)
    cells = []
    for path in sorted((EXPERIMENTS / group).glob("*.yaml")):
        experiment = f"{group}/{path.stem}"
        cfg = compose_cell(experiment, extra)
        paper = to_dict(cfg.get("paper"))
        record = records.record_path(records_dir, path.stem)
        cell = Cell(experiment, out_dir / path.stem, config_hash(cfg), paper, record, list(extra))
        cells.append(reduced_budget(refresh(cell)))
    return cells
