"""The config tree mirrors the code: model files hold constructor keys, dataset files dataset
keys, recipes bind to an existing dataset and model."""
from pathlib import Path

import pytest
import yaml

from difformer.config.core import CONFIG_DIR
from difformer.data import DATASETS
from difformer.models import MODELS

DATASET_CONFIGS = {p.stem for p in (CONFIG_DIR / "dataset").glob("*.yaml")}
MODEL_CONFIGS = {p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "recipe").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_recipe_binds_to_one_dataset_and_one_model(path):
    bindings = [(d, path.stem[len(d) + 1:]) for d in DATASET_CONFIGS
                if path.stem.startswith(d + "_") and path.stem[len(d) + 1:] in MODEL_CONFIGS]
    assert len(bindings) == 1, f"{path.name} names no (or several) dataset_model pairs"
    assert "@package _global_" in path.read_text()
    data = load(path)
    for parent in data.pop("defaults", []):  # a recipe may extend another recipe
        assert (path.parent / f"{parent}.yaml").exists(), parent
    assert set(data) <= {"model", "optim", "trainer", "seed", "dataset"}


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "recipe/model").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_model_recipes_name_a_model_and_hold_training_keys_only(path):
    assert path.stem in MODEL_CONFIGS
    assert set(load(path)) <= {"optim", "trainer"}


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "model").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_model_files_hold_constructor_keys_only(path):
    text = path.read_text()
    assert "@package" not in text
    data = load(path)
    data.pop("defaults", None)
    keys = set(data) - {"name"}
    assert "optim" not in keys and "trainer" not in keys
    if "name" in data:
        assert data["name"] in MODELS


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "dataset").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_dataset_files_hold_dataset_keys_and_switch_nothing(path):
    text = path.read_text()
    assert "@package" not in text and "defaults" not in load(path)
    from difformer.data import registry_name

    # custom: your loader; tu: a family whose members dataset.name picks
    assert registry_name(load(path)) in DATASETS or "_target_" in load(path)


def test_trainer_auto_on_a_graph_dataset_is_the_graph_preset(compose):
    from difformer.config.core import config_hash
    from difformer.config.settings import normalise
    from difformer.train.tasks import TASKS

    cfg = normalise(compose("dataset=tu", "model=gin_graph"), TASKS)
    assert (cfg.trainer.name, cfg.trainer.epochs, cfg.trainer.batch_size) == ("graph", 100, 32)
    assert "mse" not in cfg.trainer and "eval_chunk" not in cfg.trainer
    explicit = normalise(compose("dataset=tu", "model=gin_graph", "trainer=graph"), TASKS)
    assert config_hash(explicit) == config_hash(cfg)


@pytest.mark.parametrize("dataset,trainer,epochs", [
    ("film", "fullgraph", 500), ("chickenpox", "temporal", 200)])
def test_trainer_auto_follows_the_task_kind(compose, dataset, trainer, epochs):
    """No recipe for these pairs: the task kind's regime and defaults."""
    from difformer.config.settings import normalise
    from difformer.train.tasks import TASKS

    cfg = normalise(compose(f"dataset={dataset}", "model=difformer_s_pernode"), TASKS)
    assert (cfg.trainer.name, cfg.trainer.epochs) == (trainer, epochs)
    if trainer == "temporal":
        assert cfg.trainer.patience == 20 and "batch_size" not in cfg.trainer
    else:
        assert "patience" not in cfg.trainer and "mse" not in cfg.trainer
    explicit = normalise(compose(f"dataset={dataset}", "model=difformer_s_pernode",
                                 f"trainer={trainer}"), TASKS)
    from difformer.config.core import config_hash

    assert config_hash(explicit) == config_hash(cfg)  # auto = the explicit preset


def test_every_protocol_citation_names_a_section_of_docs_protocols():
    import re

    from difformer.config.core import CONFIG_DIR

    repo = CONFIG_DIR.parent
    doc = (repo / "docs/protocols.md").read_text()
    sections = set(re.findall(r"^#+ (\d+(?:\.\d+)*)\.? ", doc, flags=re.M))
    cited = set()
    for path in [*repo.joinpath("src").rglob("*.py"), *CONFIG_DIR.rglob("*.yaml")]:
        cited |= set(re.findall(r"docs/protocols\.md`{0,2} §(\d+(?:\.\d+)*)", path.read_text()))
    assert cited and cited <= sections, sorted(cited - sections)


def test_options_without_effect_leave_the_settings_hash_unchanged(compose):
    """Results recorded before the plateau scheduler and mode=inspect existed stay valid:
    the plateau keys count only with optim.scheduler=plateau, inspect.* never."""
    from difformer.config.core import config_hash

    base = config_hash(compose("dataset=cora"))
    assert config_hash(compose("dataset=cora", "optim.plateau_factor=0.25",
                               "inspect.lam=3")) == base
    assert config_hash(compose("dataset=cora", "optim.scheduler=plateau")) != base
