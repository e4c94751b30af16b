"""``mode=eval``: re-evaluate a checkpoint.

Two formats are recognised by :func:`difformer.train.checkpoint.load_checkpoint`:

* our self-describing checkpoints (``checkpoints/runN.pt``): model, data and split are rebuilt
  from the file alone and checked against its fingerprints; the dataset's task evaluates it;
* the authors' released files (``ogbn-proteins-difformer.pkl``, ``pokec-difformer.pkl``): a bare
  state_dict. The dataset comes from the command line and the model keywords from the paper
  recipe (``recipe/<dataset>_<model>``); evaluation follows the official
  ``test_large_dataset.py``: one full-graph forward (on CPU unless ``trainer.eval_device`` says
  otherwise) on the OGB split or the fixed Pokec split files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from ..config.core import ConfigError
from ..config.settings import Settings
from ..data import DataRoot, NodeDataset, load_dataset, prepare_for_model
from ..models import MODELS, build_model
from ..runs import rundir
from ..runs.files import write_json
from ..train.checkpoint import (
    OFFICIAL_FORMAT,
    CheckpointError,
    fingerprint_differences,
    state_dict_differences,
)
from ..train.common import resolve_device
from ..train.metrics import evaluate
from ..train.tasks import TASKS


def dataset_overridden() -> bool:
    """Whether the command line chose a dataset (or set a dataset key)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(
        o.split("=")[0].lstrip("+~").startswith("dataset") for o in HydraConfig.get().overrides.task
    )


def evaluate_checkpoint(settings: Settings, ckpt: dict, run_dir: Path) -> dict:
    """``ckpt``: what :func:`~difformer.train.checkpoint.load_checkpoint` read."""
    if ckpt["format"] == OFFICIAL_FORMAT:
        return evaluate_official(settings, run_dir, ckpt["state_dict"])
    return evaluate_own(settings, run_dir, ckpt)


def _write(run_dir: Path, result: dict) -> None:

    write_json(run_dir / rundir.EVAL, result)


def model_overrides() -> list[str]:
    """The command line's ``model.<key>=...`` settings (``model=X`` and ``model._target_`` /
    ``model.name``, which name a class, are not among them)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [
        o
        for o in HydraConfig.get().overrides.task
        if o.lstrip("+~").startswith("model.")
        and o.lstrip("+~").split("=")[0] not in ("model._target_", "model.name")
    ]


def refuse_unused_model_keys(settings: Settings) -> None:
    """Our checkpoints rebuild the model from the keywords they recorded: a ``model.*`` on the
    command line would be silently ignored, so it is refused."""
    unused = model_overrides()
    if unused:
        raise ConfigError(
            f"mode={settings.mode} rebuilds the model from the keywords recorded in "
            f"{settings.checkpoint}; {', '.join(unused)} would not be used: remove it"
        )


FILE_KEYS = ("path", "nodes", "edges")  # dataset keys that name a file to read


def refuse_code_and_files(settings: Settings, ckpt: dict) -> None:
    """A checkpoint is data: it may not pick the code that runs or the files that are read.
    A model class outside the registry, a dataset ``_target_`` (your own loader) or a data
    file recorded in it is used only when the command line names it too, or with
    ``eval_trust_checkpoint=true``."""
    opt_in = "or add eval_trust_checkpoint=true if you trust this file"
    name = str(ckpt["model"]["name"])
    if name not in MODELS and settings.model_name != name:
        raise CheckpointError(
            f"{settings.checkpoint} names the model class {name!r}, which is not one of "
            f"this package's models: pass model=custom model._target_={name} to import it, "
            f"{opt_in}"
        )
    if dataset_overridden():
        return  # the command line chose the data
    recorded = ckpt["dataset"]["config"] or {}
    target = recorded.get("_target_")
    if target:
        raise CheckpointError(
            f"{settings.checkpoint} reads its data with your loader {target} (recorded in the "
            f"file): pass dataset=custom dataset._target_={target} to run it, {opt_in}"
        )
    files = [f"dataset.{k}={recorded[k]}" for k in FILE_KEYS if recorded.get(k)]
    if files:
        loader = recorded.get("name") or recorded.get("loader")
        raise CheckpointError(
            f"{settings.checkpoint} reads the file(s) {', '.join(files)} (recorded in the "
            f"checkpoint): pass dataset={loader} {' '.join(files)} to confirm, {opt_in}"
        )


def rebuild(settings: Settings, ckpt: dict):
    """Model (weights loaded), dataset, task and split of one of our checkpoints, rebuilt from
    the file alone (or on the command line's dataset) and checked against its fingerprints;
    returns them with the list of mismatches (refused unless ``eval_allow_mismatch``)."""
    recorded = ckpt["dataset"]
    if not settings.eval_trust_checkpoint:  # (invocation.run checked before any write)
        refuse_code_and_files(settings, ckpt)
    dataset_cfg = settings.dataset if dataset_overridden() else OmegaConf.create(recorded["config"])
    root = DataRoot.from_config(settings.paths)
    dataset, spec = load_dataset(dataset_cfg, root)
    task_cls = TASKS[spec.kind]
    kwargs = {
        **ckpt["model"]["kwargs"],
        "in_channels": dataset.num_features,
        "out_channels": task_cls.out_channels(dataset),
    }
    model = build_model(ckpt["model"]["name"], **kwargs)
    dataset = prepare_for_model(dataset, model, root.cache_dir)
    trainer = replace(settings.trainer, mse=ckpt["metrics"].get("mse", settings.trainer.mse))
    task_settings = replace(settings, split_seed=recorded["split_seed"], trainer=trainer)
    device = resolve_device(settings.trainer.device)
    task = task_cls(dataset, spec, task_settings, device)
    split = task.split(recorded["run"])
    # the statistics the run was trained with; a checkpoint from before input scaling has none
    task.use_input_transform(split, recorded.get("input_transform"))
    if hasattr(model, "upgrade_state_dict"):  # a model that renamed its weights since
        ckpt["state_dict"] = model.upgrade_state_dict(ckpt["state_dict"])  # type: ignore[operator]
    problems = state_dict_differences(model.state_dict(), ckpt["state_dict"])
    problems += fingerprint_differences(recorded["fingerprint"], dataset.fingerprint())
    current_split = task.split_fingerprint(split)
    if current_split != recorded["split_fingerprint"]:
        problems.append(
            f"split: checkpoint={recorded['split_fingerprint']} current={current_split}"
        )
    if problems and not settings.eval_allow_mismatch:
        raise CheckpointError(
            f"checkpoint {settings.checkpoint} does not match: "
            + "; ".join(problems)
            + " (eval_allow_mismatch=true to evaluate anyway)"
        )
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.to(device)
    return model, dataset, task, split, problems


def evaluate_own(settings: Settings, run_dir: Path, ckpt: dict) -> dict:
    """Rebuild model and data from the checkpoint alone and report its test metric."""
    model, dataset, task, split, problems = rebuild(settings, ckpt)
    recorded, device = ckpt["dataset"], task.device
    scores = task.evaluate_test(model, split)
    result = {
        "checkpoint": str(Path(str(settings.checkpoint)).resolve()),
        "dataset": dataset.name,
        "model": ckpt["model"]["name"],
        "metric": task.metric,
        "run": recorded["run"],
        **scores,
        "recorded": ckpt["metrics"],
        "matches_recorded": scores["test"] == ckpt["metrics"].get("test"),
        "mismatches": problems,
        "device": str(device),
    }
    _write(run_dir, result)
    print(
        f"{dataset.name} | {task.metric} test {task.fmt(scores['test'])} (recorded "
        f"{task.fmt(ckpt['metrics']['test'])}) | {run_dir / rundir.EVAL}",
        flush=True,
    )
    return result


def evaluate_official(settings: Settings, run_dir: Path, state_dict: dict) -> dict:
    """The authors' released state_dict, evaluated as their ``test_large_dataset.py``."""
    if not dataset_overridden():
        raise ConfigError(
            f"{settings.checkpoint} is an official DIFFormer state_dict, which "
            "records no dataset: pass dataset=ogbn-proteins or dataset=pokec "
            "(and model=difformer_s, whose paper settings give the model shape)"
        )
    if settings.model_name != "difformer":
        raise ConfigError(
            f"an official DIFFormer state_dict needs model=difformer_s, got "
            f"model.name={settings.model_name}"
        )
    dataset_cfg = dict(settings.dataset_config)
    if dataset_cfg.get("split") == "random":
        # The released scores are on the authors' split files, never on a fresh random split.
        dataset_cfg["split"] = "fixed"
        print("official checkpoint: using the fixed split files (dataset.split=fixed)", flush=True)
    dataset, spec = load_dataset(
        OmegaConf.create(dataset_cfg), DataRoot.from_config(settings.paths)
    )
    kwargs = {
        **settings.model_kwargs,
        "in_channels": dataset.num_features,
        "out_channels": dataset.num_classes,
    }
    model = build_model("difformer", **kwargs)
    problems = state_dict_differences(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(
            f"{settings.checkpoint} does not fit model=difformer with {kwargs} on "
            f"{dataset.name}: " + "; ".join(problems) + ". The model keywords come from the "
            f"paper recipe recipe/{dataset.name}_difformer_s; override model.* to match the file"
        )
    model.load_state_dict(state_dict, strict=True)
    device = resolve_device(settings.trainer.eval_device or "cpu")
    if not isinstance(dataset, NodeDataset):
        raise ConfigError(
            f"an official DIFFormer state_dict classifies the nodes of one graph; dataset "
            f"{dataset.name} is not such a dataset: pass dataset=ogbn-proteins or dataset=pokec"
        )
    model.to(device)
    split = dataset.split(0, settings.split_seed)
    scores = evaluate(
        model,
        dataset.x.to(device),
        dataset.edge_index.to(device),
        dataset.y.to(device),
        split,
        spec.metric,
        spec.loss,
        settings.trainer.eval_chunk,
    )
    result = {
        "checkpoint": str(Path(str(settings.checkpoint)).resolve()),
        "format": "official",
        "dataset": dataset.name,
        "model": "difformer",
        "model_kwargs": kwargs,
        "metric": spec.metric,
        "split": dataset.splits.description,
        **scores,
        "device": str(device),
    }
    _write(run_dir, result)
    label = {"rocauc_ogb": "ROCAUC", "rocauc": "ROCAUC"}.get(spec.metric, "Accuracy")
    print(
        f"{dataset.name} | official checkpoint | Test {label}: {100 * scores['test']:.2f}% | "
        f"{run_dir / rundir.EVAL}",
        flush=True,
    )
    return result
