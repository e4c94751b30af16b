"""Paper-table reproduction, resume, aggregation, sweeps and every experiment config."""
import json
import shutil

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import train_py
from difformer.config.core import CONFIG_DIR, config_hash
from difformer.data import DatasetUnavailable
from difformer.invocation import run
from difformer.reproduction import aggregate, cells, reproduce
from difformer.reproduction import report as table_report

EXPERIMENTS = sorted(str(p.relative_to(CONFIG_DIR / "experiment").with_suffix(""))
                     for p in (CONFIG_DIR / "experiment").rglob("*.yaml")
                     if p.parent != CONFIG_DIR / "experiment")
# one epoch over HIV's 32,901 train molecules takes 30-230 s on one core: make test-slow
# the HIV cells and the 20News DIFFormer-a cells (20-40 s each here) run in make test-slow
SMOKED = [pytest.param(e, marks=pytest.mark.slow)
          if e.startswith("paper/molhiv/")
          or (e.startswith("paper/table3/20news_") and e.endswith("_a"))
          or e in {f"paper/enzymes/enzymes_{m}" for m in
                   ("difformer_s_graph", "difformer_a_graph", "gcn_graph", "gin_vn_graph", "gps")}
          else e
          for e in EXPERIMENTS]


def reproduce_main(capsys, *args):
    assert reproduce.main(list(args)) == 0
    return capsys.readouterr().out


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_smoke_table_end_to_end_then_resume(tmp_path, capsys):
    out = reproduce_main(capsys, "--table", "smoke", "--out", str(tmp_path))
    assert "2 cells: 2 to run, 0 skipped" in out
    report = (tmp_path / "smoke.md").read_text()
    for cell in ("digits_difformer_s", "digits_difformer_a"):
        line = next(li for li in report.splitlines() if li.startswith(f"| {cell} "))
        assert "±" in line and "| 2 |" in line and "no paper number" in line
        summary = json.loads((tmp_path / "runs/smoke" / cell / "summary.json").read_text())
        assert summary["n_runs"] == 2 and summary["config_hash"]
    assert (tmp_path / "smoke.csv").exists() and (tmp_path / "smoke.png").stat().st_size > 0
    rows = (tmp_path / "smoke.csv").read_text().splitlines()
    assert rows[0].startswith("cell,status,paper_mean") and len(rows) == 3

    # a second invocation does no work
    out = reproduce_main(capsys, "--table", "smoke", "--out", str(tmp_path))
    assert "0 to run, 2 skipped (digits_difformer_a: done, digits_difformer_s: done)" in out
    assert "running:" not in out

    # a changed setting re-runs the cells; the old results are kept aside, not deleted
    out = reproduce_main(capsys, "--table", "smoke", "--out", str(tmp_path),
                         "--set", "trainer.epochs=3")
    assert "2 to run" in out
    # (one convention with train.py: moved into <cell>/stale-<time>-<token>/)
    stale = sorted((tmp_path / "runs/smoke").glob("*/stale-*/summary.json"))
    assert len(stale) == 2

    # the committed records carry the results when the (git-ignored) run directories are gone
    report = (tmp_path / "smoke.md").read_text()
    record = json.loads((tmp_path / "results/smoke/digits_difformer_s.json").read_text())
    summary = json.loads((tmp_path / "runs/smoke/digits_difformer_s/summary.json").read_text())
    assert record["overrides"] == ["trainer.epochs=3"]
    assert record["config_hash"] == summary["config_hash"]
    assert record["summary"]["test_mean"] == summary["test_mean"]
    assert [r["test"] for r in record["summary"]["runs"]] == [r["test"] for r in summary["runs"]]
    shutil.rmtree(tmp_path / "runs")
    out = reproduce_main(capsys, "--table", "smoke", "--out", str(tmp_path),
                         "--set", "trainer.epochs=3")
    assert "0 to run, 2 skipped (digits_difformer_a: done, digits_difformer_s: done)" in out
    assert (tmp_path / "smoke.md").read_text() == report
    # ... but only for the settings they were measured with
    out = reproduce_main(capsys, "--table", "smoke", "--out", str(tmp_path), "--report-only")
    line = next(li for li in out.splitlines() if li.startswith("| digits_difformer_s "))
    assert "not run: pending" in line
    assert f"the result recorded on {record['measured_on']} is for other settings " \
           "(--set trainer.epochs=3)" in line


def test_only_names_cells_of_the_table(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: --only cora_gcnn: no such cell in table 1; "
                                         r"allowed: citeseer_difformer_a, citeseer_difformer_s, "):
        reproduce.main(["--table", "1", "--out", str(tmp_path), "--only", "cora_gcnn"])


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_unavailable_data_is_reported_and_not_retried(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("DIFFORMER_DATA", str(empty))
    monkeypatch.setenv("DIFFORMER_CACHE", str(tmp_path / "cache"))  # not the session's
    out = reproduce_main(capsys, "--table", "1", "--out", str(tmp_path / "r"))
    assert "18 to run" in out  # 6 DIFFormer cells and 12 baseline cells
    report = (tmp_path / "r/table1.md").read_text()
    pubmed = next(li for li in report.splitlines() if li.startswith("| pubmed_difformer_s "))
    assert "not run: data unavailable" in pubmed and str(empty / "Planetoid/PubMed") in pubmed
    assert "81.80 ± 0.30" in pubmed  # the paper's number is still shown
    status = json.loads((tmp_path / "r/runs/table1/cora_difformer_s/status.json").read_text())
    assert status["status"] == "unavailable"
    out = reproduce_main(capsys, "--table", "1", "--out", str(tmp_path / "r"))
    assert "0 to run, 18 skipped" in out


@pytest.mark.parametrize("ours,ours_std,paper,paper_std,expected", [
    (85.5, 0.5, 85.9, 0.4, "within"),     # |0.4| <= sqrt(0.25 + 0.16) = 0.64
    (85.0, 0.5, 85.9, 0.4, "outside"),    # |0.9| > 0.64
    (68.0, 0.3, 68.2, None, "within"),    # a paper number without std: ours alone
    (68.0, None, 68.2, None, "outside"),  # single run, no std: must match exactly
    (70.0, 1.0, None, None, "no paper number"),
    (None, None, 85.9, 0.4, "not run"),
])
def test_verdict_rule(ours, ours_std, paper, paper_std, expected):
    assert table_report.verdict(ours, ours_std, paper, paper_std) == expected


def test_unknown_table_lists_the_tables():
    with pytest.raises(SystemExit, match="unknown table '9'; allowed: .*paper/table1.*smoke"):
        cells.table_group("9")


def fake_job(root, name, overrides, tests, valids=None):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    runs = [{"test": t, "valid": v} for t, v in zip(tests, valids or tests)]
    (job / "summary.json").write_text(json.dumps({"metric": "accuracy", "runs": runs}))


def test_aggregation_against_hand_computed_values(tmp_path):
    fake_job(tmp_path, "0", ["model.num_layers=1", "seed=1", "trainer.epochs=5"], [0.5, 0.7])
    fake_job(tmp_path, "1", ["model.num_layers=1", "seed=2", "trainer.epochs=5"], [0.6])
    fake_job(tmp_path, "2", ["model.num_layers=2", "seed=1", "trainer.epochs=5"], [0.9, 0.8])
    rows = aggregate.aggregate(aggregate.collect(tmp_path))
    assert [r["group"] for r in rows] == ["model.num_layers=1", "model.num_layers=2"]
    one, two = rows
    assert (one["n"], one["jobs"]) == (3, 2)
    assert one["test_mean"] == pytest.approx(0.6)
    assert one["test_std"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + .1^2 + 0) / (3 - 1))
    assert two["test_mean"] == pytest.approx(0.85)
    assert two["test_std"] == pytest.approx(0.05 * 2 ** 0.5)
    assert "model.num_layers=2 | accuracy | 85.00 ± 7.07" in aggregate.to_markdown(rows)


def test_a_failing_job_does_not_lose_the_others(tmp_path):
    proc = train_py("-m", "model.num_layers=1,0", "trainer.runs=1", "trainer.epochs=2",
                    f"hydra.sweep.dir={tmp_path}", check=False)
    assert (tmp_path / "0/summary.json").exists()
    status = json.loads((tmp_path / "1/status.json").read_text())
    assert status["status"] == "failed" and "num_layers must be >= 1, got 0" in status["error"]
    # the multirun ends non-zero and lists the failed job
    assert proc.returncode == 1
    assert "1 job(s) failed:" in proc.stderr and f"{tmp_path / '1'}: ConfigError" in proc.stderr


@pytest.mark.parametrize("experiment", SMOKED)
def test_every_experiment_config_composes_and_runs_one_epoch(experiment, compose, tmp_path):
    cfg = compose(f"experiment={experiment}", "trainer.epochs=1", "trainer.runs=1",
                  "trainer.progress=false")
    if experiment == "hyper_search" or experiment.startswith(("baseline_search/", "graph_search/")):
        return  # a sweep definition; composed here, run by the Optuna and search tests
    paper = cfg.paper
    assert paper.metric in ("accuracy", "rocauc_ogb", "mse_paper", "rocauc_molhiv",
                            "mae") and paper.confidence in (
        "verified", "recalled", "none")
    try:
        summary = run(cfg, tmp_path)
    except DatasetUnavailable as err:
        pytest.skip(f"data not available offline: {err.path}")
    assert summary["n_runs"] == 1


def test_hyper_search_is_the_official_grid(compose):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["experiment=hyper_search"],
                            return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.sampler.name == "grid"
    assert sweeper._target_.endswith("DifformerOptunaSweeper")
    grid = sweeper.params
    assert grid["optim.weight_decay"] == "choice(0.0, 1.0e-4, 1.0e-3, 1.0e-2, 0.1, 1.0)"
    assert grid["model.num_layers"] == "choice(2, 4, 8, 16)"
    assert sweeper.n_trials == 6 * 3 * 3 * 4


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_optuna_sweep_runs_and_optimises_valid(tmp_path):
    train_py("-m", "hydra/sweeper=difformer_optuna", "hydra/sweeper/sampler=grid",
             "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
             "model.num_layers=choice(1,2)", "trainer.runs=1",
             "trainer.epochs=3", f"hydra.sweep.dir={tmp_path}")
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    valids = [json.loads(p.read_text())["valid_mean"] for p in tmp_path.glob("*/summary.json")]
    assert len(valids) == 2 and best["best_value"] == pytest.approx(max(valids))


@pytest.mark.parametrize("launcher,target", [("slurm", "SlurmLauncher"),
                                             ("joblib", "JoblibLauncher")])
def test_launcher_configs_compose(launcher, target):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"hydra/launcher={launcher}"],
                            return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.timeout_min == 720 and cfg.hydra.launcher.gpus_per_node == 1


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_a_sweep_resumes_by_skipping_finished_jobs(tmp_path):
    args = ["-m", "model.num_layers=1,2", "trainer.runs=1", "trainer.epochs=2",
            f"hydra.sweep.dir={tmp_path}"]
    train_py(*args)
    first = [(tmp_path / f"{i}/summary.json").read_text() for i in (0, 1)]
    proc = train_py(*args)
    assert proc.stdout.count("already finished with the same settings") == 2
    assert [(tmp_path / f"{i}/summary.json").read_text() for i in (0, 1)] == first
    # other settings in the same directories: run again, the old results moved aside
    proc = train_py(*args[:-2], "trainer.epochs=3", f"hydra.sweep.dir={tmp_path}")
    assert "already finished" not in proc.stdout
    stale = list((tmp_path / "0").glob("stale-*/summary.json"))
    assert len(stale) == 1 and stale[0].read_text() == first[0]
    assert json.loads((tmp_path / "0/summary.json").read_text())["runs"][0]["best_epoch"] <= 2


def test_an_interrupted_run_is_moved_aside_and_run_again(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"run": 0, "epoch": 0}\n')
    train_py("trainer.runs=1", "trainer.epochs=2", f"hydra.run.dir={tmp_path}")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["epoch"] == 0  # a fresh file
    assert len(list(tmp_path.glob("stale-*/metrics.jsonl"))) == 1


def test_readme_block_is_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:smoke:start -->\nold\n<!-- results:smoke:end -->\ntail\n")
    report = tmp_path / "smoke.md"
    report.write_text("# smoke: ours beside the paper\n\n| cell |\n| --- |\n| a |\n")
    table_report.update_readme(readme, report)
    assert readme.read_text() == ("intro\n<!-- results:smoke:start -->\n| cell |\n| --- |\n| a |\n"
                                  "<!-- results:smoke:end -->\ntail\n")
    with pytest.raises(SystemExit, match="no <!-- results:other:start -->"):
        table_report.update_readme(readme, report.rename(tmp_path / "other.md"))


def test_config_hash_ignores_nulls_and_volatile_keys(compose):
    from omegaconf import open_dict

    from difformer.config.core import config_hash

    base = compose("dataset=cora", "model=difformer_s")
    same = compose("dataset=cora", "model=difformer_s", "trainer.device=cpu", "threads=1",
                   "paths.data_dir=/elsewhere", "logger=wandb")
    with open_dict(same):
        same.model.future_option = None  # a new option whose null default changes nothing
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(compose("dataset=cora", "model=difformer_s",
                                                    "model.num_layers=4"))


RECORDS = sorted((CONFIG_DIR.parent / "reproduction/results").glob("*/*.json"))


@pytest.mark.parametrize("path", RECORDS, ids=[f"{p.parent.name}/{p.stem}" for p in RECORDS])
def test_committed_records_are_for_the_cells_current_settings_and_explained(path):
    """A change to a measured cell's settings must be deliberate: re-measure it or drop its
    record (the report would otherwise show an old number beside new settings)."""
    record = json.loads(path.read_text())
    group = cells.table_group(path.parent.name.removeprefix("table"))
    cfg = cells.compose_cell(f"{group}/{path.stem}", record["overrides"])
    assert record["config_hash"] == config_hash(cfg)
    assert record["cell"] == path.stem and record["summary"]["n_runs"] >= 1
    # every `outside` verdict says why: the cause found, or "unknown" and what was ruled out
    paper = OmegaConf.to_container(cfg.paper, resolve=True)
    cell = cells.Cell(f"{group}/{path.stem}", path.parent, record["config_hash"], paper,
                          status="done", summary=record["summary"])
    if table_report.row(cell)["verdict"] == "outside":
        assert len(paper.get("outside_note") or "") > 20, f"{path.stem}: no paper.outside_note"


def test_a_sigterm_to_the_table_script_stops_its_training_with_a_checkpoint(tmp_path):
    """A scheduler stops a job by signalling the process it started: the script passes the
    SIGTERM on, the training child saves its last checkpoint, and the next call resumes."""
    import signal
    import subprocess
    import sys
    import time

    cell = tmp_path / "runs/smoke/digits_difformer_a"
    args = [sys.executable, str(CONFIG_DIR.parent / "scripts/reproduce.py"), "--table", "smoke",
            "--out", str(tmp_path), "--set", "trainer.epochs=100000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not ((cell / "metrics.jsonl").exists() and (cell / "metrics.jsonl").stat().st_size):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 143, out
    assert "stopped by SIGTERM: the running cell saved its last checkpoint" in out
    status = json.loads((cell / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == 15
    assert (cell / "checkpoints/run0_last.pt").exists()
    assert not (tmp_path / "runs/smoke/digits_difformer_s/metrics.jsonl").exists()  # not begun


def test_a_record_at_a_reduced_budget_shows_its_numbers_and_budget(tmp_path):
    """The committed HIV records ran 1 run x 5 epochs: the report shows each with its numbers
    and a visible budget mark, never as pending, and make reproduce still runs the cell."""
    from difformer.reproduction.report import row

    records_dir = CONFIG_DIR.parent / "reproduction/results/molhiv"
    planned = {c.name: c for c in cells.plan("molhiv", tmp_path, [], records_dir)}
    gin = planned["hiv_gin_graph"]
    recorded = json.loads((records_dir / "hiv_gin_graph.json").read_text())
    assert gin.status == "pending"  # the full protocol is still to run
    assert gin.budget == ["trainer.runs=1", "trainer.epochs=5", "trainer.eval_train=false"]
    r = row(gin)
    assert r["verdict"] == "reduced budget" and r["status"] == "reduced" and r["n_runs"] == 1
    assert r["ours_mean"] == pytest.approx(100 * recorded["summary"]["test_mean"])
    assert r["note"].startswith("reduced budget: trainer.runs=1 trainer.epochs=5")


def test_a_cells_standing_note_is_shown_beside_its_numbers(tmp_path):
    """paper.note (e.g. why a model sits below the structure-agnostic floor) reaches the row,
    for a cell measured at its settings and for one measured at a reduced budget."""
    summary = {"test_mean": 0.6, "test_std": 0.05, "n_runs": 10, "std_ddof": 1}
    paper = {"metric": "accuracy", "unit": "percent", "mean": None, "std": None,
             "note": "below Deep Sets: its settings were not searched"}
    done = cells.Cell("enzymes/x", tmp_path, "h", paper, status="done", summary=summary)
    assert table_report.row(done)["note"] == paper["note"]
    reduced = cells.Cell("enzymes/x", tmp_path, "h", paper, status="pending", summary=summary,
                         budget=["trainer.epochs=50"])
    assert table_report.row(reduced)["note"] == (
        "below Deep Sets: its settings were not searched; reduced budget: trainer.epochs=50")
