"""``mode=eval``: re-evaluate a checkpoint.

Two formats are recognised by :func:`difformer.train.checkpoint.load_checkpoint`:

* our self-describing checkpoints (``checkpoints/runN.pt``): model, data and split are rebuilt
  from the file alone and checked against its fingerprints;
* the authors' released files (``ogbn-proteins-difformer.pkl``, ``pokec-difformer.pkl``): a bare
  state_dict. The dataset comes from the command line and the model keywords from the paper
  pair (``pair/<dataset>_<model>``); evaluation follows the official ``test_large_dataset.py``:
  one full-graph forward (on CPU unless ``trainer.eval_device`` says otherwise) on the OGB split
  or the fixed Pokec split files.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .cli import ConfigError, _dataset_overridden, model_kwargs


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path) -> dict:
    from .train.checkpoint import OFFICIAL_FORMAT, load_checkpoint

    ckpt = load_checkpoint(cfg.checkpoint)
    if ckpt["format"] == OFFICIAL_FORMAT:
        return evaluate_official(cfg, run_dir, ckpt["state_dict"])
    return evaluate_own(cfg, run_dir, ckpt)


def evaluate_own(cfg: DictConfig, run_dir: Path, ckpt: dict) -> dict:
    """Rebuild model and data from the checkpoint alone and report its test metric."""
    from .data import DataRoot, load_dataset, prepare_for_model, split_fingerprint
    from .data.temporal import chrono_split_fingerprint
    from .models import build_model
    from .train.checkpoint import (CheckpointError, fingerprint_differences,
                                   state_dict_differences)
    from .train.common import resolve_device
    from .train.io import write_json
    from .train.metrics import evaluate
    from .train.temporal import evaluate_temporal

    recorded = ckpt["dataset"]
    dataset_cfg = cfg.dataset if _dataset_overridden() else OmegaConf.create(recorded["config"])
    dataset, spec = load_dataset(dataset_cfg, DataRoot.from_config(cfg.paths))
    kwargs = {**ckpt["model"]["kwargs"], "in_channels": dataset.num_features,
              "out_channels": dataset.num_classes}
    model = build_model(ckpt["model"]["name"], **kwargs)
    dataset = prepare_for_model(dataset, model)
    split = dataset.split(recorded["run"], recorded["split_seed"])
    temporal = spec.regime == "temporal"
    problems = state_dict_differences(model.state_dict(), ckpt["state_dict"])
    problems += fingerprint_differences(recorded["fingerprint"], dataset.fingerprint())
    current_split = chrono_split_fingerprint(split) if temporal else split_fingerprint(split)
    if current_split != recorded["split_fingerprint"]:
        problems.append(f"split: checkpoint={recorded['split_fingerprint']} "
                        f"current={current_split}")
    if problems and not cfg.eval_allow_mismatch:
        raise CheckpointError(f"checkpoint {cfg.checkpoint} does not match: " + "; ".join(problems)
                              + " (eval_allow_mismatch=true to evaluate anyway)")
    model.load_state_dict(ckpt["state_dict"], strict=True)
    device = resolve_device(cfg.trainer.device)
    model.to(device)
    if temporal:
        snaps = [dataset.snapshots[i] for i in split.test]
        mse = evaluate_temporal(model, [(s.x.to(device), s.edge_index.to(device),
                                         s.edge_weight.to(device), s.y.to(device))
                                        for s in snaps])
        scores = {"test": mse[ckpt["metrics"]["mse"]],
                  **{f"test_mse_{k}": v for k, v in mse.items()}}
    else:
        scores = evaluate(model, dataset.x.to(device), dataset.edge_index.to(device),
                          dataset.y.to(device), split, spec.metric, spec.loss)
    result = {"checkpoint": str(Path(cfg.checkpoint).resolve()), "dataset": dataset.name,
              "model": ckpt["model"]["name"], "metric": spec.metric, "run": recorded["run"],
              **scores, "recorded": ckpt["metrics"],
              "matches_recorded": scores["test"] == ckpt["metrics"].get("test"),
              "mismatches": problems, "device": str(device)}
    write_json(run_dir / "eval.json", result)
    fmt = (lambda v: f"{v:.4f}") if temporal else (lambda v: f"{100 * v:.2f}")
    print(f"{dataset.name} | {spec.metric} test {fmt(scores['test'])} (recorded "
          f"{fmt(ckpt['metrics']['test'])}) | {run_dir / 'eval.json'}", flush=True)
    return result


def evaluate_official(cfg: DictConfig, run_dir: Path, state_dict: dict) -> dict:
    """The authors' released state_dict, evaluated as their ``test_large_dataset.py``."""
    from .data import DataRoot, load_dataset
    from .models import build_model
    from .train.checkpoint import CheckpointError, state_dict_differences
    from .train.common import resolve_device
    from .train.io import write_json
    from .train.metrics import evaluate

    if not _dataset_overridden():
        raise ConfigError(f"{cfg.checkpoint} is an official DIFFormer state_dict, which records "
                          "no dataset: pass dataset=ogbn-proteins or dataset=pokec (and "
                          "model=difformer_s, whose paper settings give the model shape)")
    if cfg.model.name != "difformer":
        raise ConfigError(f"an official DIFFormer state_dict needs model=difformer_s, got "
                          f"model.name={cfg.model.name}")
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    if dataset_cfg.get("split") == "random":
        # The released scores are on the authors' split files, never on a fresh random split.
        dataset_cfg["split"] = "fixed"
        print("official checkpoint: using the fixed split files (dataset.split=fixed)",
              flush=True)
    dataset, spec = load_dataset(OmegaConf.create(dataset_cfg), DataRoot.from_config(cfg.paths))
    kwargs = {**model_kwargs(cfg), "in_channels": dataset.num_features,
              "out_channels": dataset.num_classes}
    model = build_model("difformer", **kwargs)
    problems = state_dict_differences(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(
            f"{cfg.checkpoint} does not fit model=difformer with {kwargs} on {dataset.name}: "
            + "; ".join(problems) + ". The model keywords come from the paper pair "
            f"pair/{dataset.name}_difformer_s; override model.* to match the file")
    model.load_state_dict(state_dict, strict=True)
    device = resolve_device(cfg.trainer.get("eval_device") or "cpu")
    model.to(device)
    split = dataset.split(0, cfg.seed)
    scores = evaluate(model, dataset.x.to(device), dataset.edge_index.to(device),
                      dataset.y.to(device), split, spec.metric, spec.loss,
                      cfg.trainer.get("eval_chunk"))
    result = {"checkpoint": str(Path(cfg.checkpoint).resolve()), "format": "official",
              "dataset": dataset.name, "model": "difformer", "model_kwargs": kwargs,
              "metric": spec.metric, "split": dataset.splits.description, **scores,
              "device": str(device)}
    write_json(run_dir / "eval.json", result)
    label = {"rocauc_ogb": "ROCAUC", "rocauc": "ROCAUC"}.get(spec.metric, "Accuracy")
    print(f"{dataset.name} | official checkpoint | Test {label}: {100 * scores['test']:.2f}% | "
          f"{run_dir / 'eval.json'}", flush=True)
    return result
