"""The baseline search: the same budget for every baseline, the choice made on valid alone, and
the committed recipes equal to the committed searches' choices."""
import itertools
import json
import math

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import needs_data
from difformer.reproduction import baseline_search as search
from difformer.config.core import CONFIG_DIR

# optuna 2.10 calls create_trial/add_trial experimental
pytestmark = pytest.mark.filterwarnings("ignore:.* is experimental")
SUMMARIES = sorted((CONFIG_DIR.parent / "reproduction/search").glob("*/*.json"))


def test_every_baseline_gets_the_same_budget_and_a_full_grid_of_its_own_keys(compose):
    budgets = set()
    for model in search.models():
        axes, budget, runs = search.grid(model)
        assert math.prod(len(v) for v in axes.values()) == budget, model  # each point once
        budgets.add((budget, runs))
        cfg = compose(f"experiment=baseline_search/{model}", "dataset=cora")
        assert cfg.model.name == model
        for key in axes:  # a misspelt key would be added silently by the sweep
            assert OmegaConf.select(cfg, key) is not None, f"{model}: {key}"
    assert budgets == {(8, 3)}
    assert {"mlp", "lp", "manireg", "sgc", "gcn", "gat", "gcn_knn", "gat_knn",
            "dense_gat"} <= set(search.models())


def test_an_unknown_model_is_refused_before_anything_runs():
    with pytest.raises(SystemExit, match="no baseline_search for model 'gnc'; allowed: dense_gat"):
        search.main(["--dataset", "cora", "--model", "gnc"])


def test_every_graph_level_model_is_searched_on_one_and_the_same_grid(compose):
    """Issue #27's equal budget: one grid (common.yaml) for every graph-level model, each key
    a setting the model really has, and every graph-level model config in the family."""
    grids = set()
    for model in search.models("graph_search"):
        axes, budget, runs = search.grid(model, "graph_search")
        assert math.prod(len(v) for v in axes.values()) == budget == 8, model
        grids.add((json.dumps(axes), budget, runs))
        cfg = compose(f"experiment=graph_search/{model}", "dataset=tu")
        assert cfg.trainer.epochs == 50 and cfg.trainer.runs == 3, model
        for key in axes:
            assert OmegaConf.select(cfg, key) is not None, f"{model}: {key}"
    assert len(grids) == 1
    graph_models = {p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")
                    if yaml.safe_load(p.read_text()).get("name") in
                    ("difformer_graph", "mol_gnn", "gps", "gated_gt", "deepsets")
                    or p.stem == "difformer_s_pernode_graph"}
    assert graph_models == set(search.models("graph_search"))
    with pytest.raises(SystemExit, match="no search family 'graphs'; allowed: baseline_search"):
        search.models("graphs")


def fake_study(tmp_path, scores, failed=0):
    """A stored study of the lp grid with these scores, in the grid's order."""
    optuna = pytest.importorskip("optuna")
    axes, _, _ = search.grid("lp")
    points = list(itertools.product(*axes.values()))
    dists = {k: optuna.distributions.CategoricalDistribution(v) for k, v in axes.items()}
    tmp_path.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=search.STUDY, direction="maximize",
                                storage=f"sqlite:///{tmp_path}/optuna.db")
    order = list(reversed(range(len(scores))))  # trial numbers unlike the grid's order
    for i in order:
        study.add_trial(optuna.trial.create_trial(
            params=dict(zip(axes, points[i])), distributions=dists, value=scores[i]))
    for _ in range(failed):
        study.add_trial(optuna.trial.create_trial(
            params=dict(zip(axes, points[0])), distributions=dists,
            state=optuna.trial.TrialState.FAIL))
    return tmp_path / "optuna.db", axes, points


def test_the_best_validation_score_wins_and_a_tie_goes_to_the_point_listed_first(tmp_path):
    scores = [0.5, 0.7, 0.6, 0.7, 0.1, 0.7, 0.2, 0.3]
    db, axes, points = fake_study(tmp_path, scores)
    result = search.collect(db, 8, axes)
    assert result["best"]["params"] == dict(zip(axes, points[1]))  # 1, 3 and 5 tie at 0.7
    assert result["best"]["valid"] == 0.7 and len(result["best"]["tied_with"]) == 2
    assert sorted(t["valid"] for t in result["trials"]) == sorted(scores)


def test_an_unfinished_study_says_how_far_it_got(tmp_path):
    db, axes, _ = fake_study(tmp_path, [0.5, 0.6, 0.7])
    with pytest.raises(search.SearchIncomplete,
                       match="3 of 8 trials complete; run the search again to continue"):
        search.collect(db, 8, axes)
    db, axes, _ = fake_study(tmp_path / "failed", [0.5, 0.6, 0.7], failed=1)
    with pytest.raises(search.SearchIncomplete,
                       match=r"3 of 8 trials complete, trials \[3\] failed \(see their "
                             r"status.json\); a failed grid point is not retried: remove "):
        search.collect(db, 8, axes)


def test_the_choice_is_written_as_a_recipe_and_a_hand_written_recipe_is_kept(tmp_path):
    scores = [0.5, 0.7, 0.6, 0.65, 0.1, 0.2, 0.3, 0.4]
    db, axes, points = fake_study(tmp_path, scores)
    recipes = tmp_path / "recipes"
    summary, recipe = search.write_choice("cora", "lp", search.collect(db, 8, axes),
                                          tmp_path / "out", recipes)
    text = recipe.read_text()
    assert text.startswith("# @package _global_\n" + search.MARK)
    assert yaml.safe_load(text) == {"model": {"alpha": points[1][0], "num_layers": points[1][1]}}
    assert json.loads(summary.read_text())["best"]["valid"] == 0.7
    search.write_choice("cora", "lp", search.collect(db, 8, axes), tmp_path / "out", recipes)
    (recipes / "cora_lp.yaml").write_text("# @package _global_\n# the paper's\nmodel: {}\n")
    with pytest.raises(SystemExit, match="cora_lp.yaml holds settings not written by the "
                                         r"search \(paper settings\?\); not overwritten"):
        search.write_choice("cora", "lp", search.collect(db, 8, axes), tmp_path / "out",
                            recipes)


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("Planetoid/Cora")
def test_a_search_runs_from_a_fresh_folder_and_resumes(tmp_path):
    """Label propagation (no training) on Cora: the real multirun, study and choice."""
    pytest.importorskip("optuna")

    out = tmp_path / "search"  # does not exist yet: sqlite needs its folder made
    assert search.run_study("cora", "lp", out, threads=1) == 0
    axes, budget, runs = search.grid("lp")
    result = search.collect(search.study_dir(out, "cora", "lp") / "optuna.db", budget, axes)
    assert len(result["trials"]) == 8
    assert {tuple(t["params"][k] for k in axes) for t in result["trials"]} == \
        set(itertools.product(*axes.values()))
    jobs = sorted(search.study_dir(out, "cora", "lp").glob("*/summary.json"))
    valids = {round(json.loads(p.read_text())["valid_mean"], 6) for p in jobs}
    assert round(result["best"]["valid"], 6) == max(valids)
    assert search.run_study("cora", "lp", out, threads=1) == 0  # nothing left to run
    assert len(list(search.study_dir(out, "cora", "lp").glob("*/summary.json"))) == 8


@pytest.mark.parametrize("path", SUMMARIES, ids=[f"{p.parent.name}/{p.stem}" for p in SUMMARIES])
def test_committed_searches_are_complete_and_their_choices_are_the_recipes(path, compose):
    result = json.loads(path.read_text())
    dataset, model = path.parent.name, path.stem
    axes, budget, runs = search.grid(model, result.get("family", "baseline_search"))
    assert (result["grid"], result["budget"], result["runs_per_trial"]) == (axes, budget, runs)
    points = {tuple(t["params"][k] for k in axes) for t in result["trials"]}
    assert points == set(itertools.product(*axes.values()))
    best = max(t["valid"] for t in result["trials"])
    assert result["best"]["valid"] == best
    first = min((t for t in result["trials"] if t["valid"] == best),
                key=lambda t: tuple(axes[k].index(t["params"][k]) for k in axes))
    assert result["best"]["params"] == first["params"]
    recipe = CONFIG_DIR / "recipe" / f"{dataset}_{model}.yaml"
    assert search.written_by_search(recipe)
    cfg = compose(f"dataset={dataset}", f"model={model}")
    for key, value in result["best"]["params"].items():
        assert OmegaConf.select(cfg, key) == value, key


def test_a_stopped_search_does_not_go_on_to_the_next_baseline(monkeypatch, capsys):
    started = []

    def stopped(dataset, model, out, threads=None, family="baseline_search"):
        started.append(model)
        return 143  # the multirun child stopped by a SIGTERM, checkpoint saved

    monkeypatch.setattr(search, "run_study", stopped)
    assert search.main(["--dataset", "cora", "--model", "mlp", "--model", "gcn"]) == 143
    assert started == ["mlp"]
    assert "mlp: stopped by SIGTERM; run the same command again to continue" in \
        capsys.readouterr().err
