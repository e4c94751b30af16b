"""The Optuna sweeper (``hydra/sweeper=difformer_optuna``): current Optuna and SQLAlchemy, the
search-space grammar, the study's budget shared through its storage, pruning from the valid
score, and one line where a study cannot start or every trial failed. The real database, the
real scheduler and two nodes are in tests/test_cluster.py."""
import json
import time
from importlib import metadata

import pytest

from conftest import DATA_DIR, REPO, train_py

optuna = pytest.importorskip("optuna")

from difformer.config.core import ConfigError  # noqa: E402
from difformer.sweeps import search_space, study  # noqa: E402


def major(version: str) -> int:
    return int(version.split(".")[0])


def test_the_sweep_extra_installs_current_optuna_and_sqlalchemy():
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["sweep"]
    assert "optuna>=4" in extra and "sqlalchemy>=2" in extra
    assert not any("hydra-optuna-sweeper" in r or "<2" in r or "<3" in r for r in extra), extra
    assert major(metadata.version("optuna")) >= 4
    assert major(metadata.version("sqlalchemy")) >= 2


def test_the_search_space_grammar_becomes_optuna_distributions():
    from optuna.distributions import CategoricalDistribution as C
    from optuna.distributions import FloatDistribution as F
    from optuna.distributions import IntDistribution as I  # noqa: E741

    space = search_space.parse(
        {"model.dropout": "choice(0.0, 0.5)", "model.num_layers": "range(2, 10, 2)",
         "optim.lr": "tag(log, interval(1e-4, 1e-1))",
         "model.hidden_channels": "tag(int, interval(16, 128))",
         "model.alpha": "interval(0, 1)"},
        ["trainer.epochs=3", "optim.weight_decay=choice(0, 1e-3)"])
    d = space.distributions
    assert d["model.dropout"] == C([0.0, 0.5]) and d["optim.weight_decay"] == C([0, 1e-3])
    assert d["model.num_layers"] == I(2, 8, step=2)
    assert d["optim.lr"] == F(1e-4, 1e-1, log=True)
    assert d["model.hidden_channels"] == I(16, 128) and d["model.alpha"] == F(0.0, 1.0)
    assert space.fixed == {"trainer.epochs": "3"}
    assert space.grid() is None  # intervals have no grid
    # every categorical value and both ends of every range are checked before the study
    corners = space.corners()
    assert {c["model.num_layers"] for c in corners} == {2, 8}
    assert {c["optim.weight_decay"] for c in corners} == {0, 1e-3}


@pytest.mark.parametrize("params,message", [
    ({"model.dropout": "interval(0.5, 0.1)"}, "the interval's start must be below its end"),
    ({"optim.lr": "tag(log, interval(0, 1))"}, "a log interval must start above 0"),
    ({"model.dropout": "choice(0.1, "}, "cannot parse 'model.dropout=choice(0.1, '"),
])
def test_a_search_space_optuna_cannot_search_is_one_line(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search_space.parse(params, [])


def test_the_budget_is_claimed_once_and_a_silent_owner_is_failed(tmp_path):
    storage = study.open_storage(f"sqlite:///{tmp_path}/s.db")
    grid = {"x": [1, 2, 3]}
    s, had = study.open_study(storage, "s", "maximize", study.make_sampler("grid", 0, grid),
                              study.make_pruner("none", {}), 3)
    assert had == 0 and len(s.get_trials()) == 3
    first = study.claim(s, storage, 2)
    other = optuna.load_study(study_name="s", storage=storage)
    second = study.claim(other, storage, 5)  # another process: only what is left
    assert [t.number for t in first] == [0, 1] and [t.number for t in second] == [2]
    assert study.claim(s, storage, 1) == []
    # trial 0's owner goes silent: after the grace period any process marks it failed
    storage.set_trial_system_attr(first[0]._trial_id, study.HEARTBEAT, time.time() - 100)
    assert study.late(s, 50) == [0] and study.fail_stale(s, storage, 50) == [0]
    assert s.get_trials()[0].state.name == "FAIL"
    # reopening with a larger budget adds the difference; the same budget adds nothing
    s, had = study.open_study(storage, "s", "maximize", None, None, 5)
    assert had == 3 and len(s.get_trials()) == 5
    with pytest.raises(ConfigError, match="was created to maximize, this sweep asks to minimize"):
        study.open_study(storage, "s", "minimize", None, None, 5)


def sweep(tmp_path, *args, check=False):
    return train_py("-m", "hydra/sweeper=difformer_optuna", "trainer.runs=1", "threads=1",
                    f"hydra.sweep.dir={tmp_path}", *args, check=check)


def test_a_trial_that_cannot_run_stops_the_sweep_before_the_study(tmp_path):
    proc = sweep(tmp_path, "model.hidden_channels=choice(8,0)", "trainer.epochs=2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: the sweep cannot start: a trial with model.hidden_channels=0 cannot run: "
        "model.hidden_channels must be >= 1, got 0"]
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "0").exists()


def test_a_missing_dataset_stops_the_sweep_before_the_study(tmp_path):
    # an empty cache too: other tests may have copied Cora into the session's cache
    proc = train_py("-m", "experiment=hyper_search_tpe", "dataset=cora",
                    "paths.data_dir=/nonexistent", f"paths.cache_dir={tmp_path}/cache",
                    "paths.offline=true", f"hydra.sweep.dir={tmp_path}/sweep", check=False,
                    timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: the sweep cannot start: dataset 'cora': files not found at "
                           "/nonexistent/Planetoid/Cora")
    assert not (tmp_path / "sweep" / "optuna.db").exists()


@pytest.mark.skipif(not (DATA_DIR / "Planetoid/Cora/raw/ind.cora.x").exists(),
                    reason="no Cora files")
@pytest.mark.slow  # ~40 s idle: make test-slow (keeps make test under 10 minutes)
def test_a_study_resumes_to_its_total_and_a_study_of_failures_is_one_line(tmp_path):
    # the data check off: a trial on a dataset whose files are absent (PubMed) fails when it runs
    assert not (DATA_DIR / "Planetoid/PubMed").exists()
    args = ["hydra/sweeper/sampler=grid", "hydra.sweeper.check_data=false",
            "hydra.sweeper.direction=maximize", "paths.offline=true", "trainer.epochs=2",
            "dataset=choice(cora,pubmed)", "model.num_layers=choice(1,2)"]
    first = sweep(tmp_path, *args, "hydra.sweeper.n_trials=2")
    second = sweep(tmp_path, *args, "hydra.sweeper.n_trials=4")
    assert "2 trial(s) there before, 4 in all" in second.stdout
    s = optuna.load_study(study_name="difformer", storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = s.get_trials()
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # each grid point once
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"], states
    for t in trials:
        if t.state.name == "FAIL":
            assert t.params["dataset"] == "pubmed"
            assert "DatasetUnavailable" in t.user_attrs["error"]
        else:
            summary = json.loads((tmp_path / str(t.number) / "summary.json").read_text())
            assert t.value == summary["valid_mean"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    for proc in (first, second):  # an invocation that ran a failing trial exits 1
        assert proc.returncode in (0, 1), proc.stderr
    third = sweep(tmp_path, *args, "hydra.sweeper.n_trials=4")
    assert third.returncode == 0 and "4 trial(s) there before, 4 in all" in third.stdout
    assert len(s.get_trials()) == 4
    # a study whose every trial failed: one line naming the failures, exit 1
    failing = sweep(tmp_path / "all-fail", *args[:-2], "dataset=pubmed",
                    "model.num_layers=choice(1,2)")
    assert failing.returncode == 1
    lines = [line for line in failing.stderr.splitlines() if line.startswith("error: no trial")]
    assert len(lines) == 1 and lines[0].startswith(
        "error: no trial of study 'difformer' completed (2 fail): trials 0, 1: "
        f"DatasetUnavailable: dataset 'pubmed': files not found at {DATA_DIR}"), failing.stderr


def test_a_trial_below_the_median_is_pruned_and_recorded_as_pruned(tmp_path):
    # seed 1 draws lr 0.01 first, then 1e-9 (which learns nothing), then 0.02
    proc = sweep(tmp_path, "hydra/sweeper/sampler=grid", "hydra.sweeper.sampler.seed=1",
                 "optim.lr=choice(0.01,0.02,1e-9)", "hydra.sweeper.pruner=median",
                 "+hydra.sweeper.pruner_args={n_startup_trials:1,n_warmup_steps:2}",
                 "trainer.epochs=10", check=True)
    s = optuna.load_study(study_name="difformer", storage=f"sqlite:///{tmp_path}/optuna.db")
    by_lr = {t.params["optim.lr"]: t for t in s.get_trials()}
    pruned = by_lr[1e-9]
    assert pruned.state.name == "PRUNED" and by_lr[0.01].state.name == "COMPLETE"
    job = tmp_path / str(pruned.number)
    status = json.loads((job / "status.json").read_text())
    assert status["status"] == "pruned" and "pruned after epoch" in status["error"]
    lines = (job / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    last = max(pruned.intermediate_values)
    assert epochs[-1] == last < 9  # stopped at the step the pruner judged, its record kept
    assert f"trial {pruned.number} pruned after epoch {last} of run 0" in proc.stdout
    assert s.best_trial.number == by_lr[0.01].number or s.best_value >= by_lr[0.01].value
