"""``train.py`` / ``difformer-train``: Hydra entry point for training and checkpoint evaluation.

    python train.py                                  # DIFFormer-s on sklearn digits, offline
    python train.py dataset=cora model=difformer_s   # the paper's Cora setting
    python train.py mode=eval checkpoint=PATH        # re-evaluate a saved checkpoint
"""
from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import __version__

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# One token per process, so two jobs started in the same second get different run
# directories; it is constant within a process, so every interpolation agrees.
# Under torchrun all ranks share the elastic run id, hence the token and (started within the
# same second) the run directory.
_TOKEN = (hashlib.sha256(os.environ["TORCHELASTIC_RUN_ID"].encode()).hexdigest()[:6]
          if os.environ.get("TORCHELASTIC_RUN_ID") else secrets.token_hex(3))
if not OmegaConf.has_resolver("difformer_token"):
    OmegaConf.register_new_resolver("difformer_token", lambda: _TOKEN)
if not OmegaConf.has_resolver("basename"):  # sweep subdirs named after the experiment's file
    OmegaConf.register_new_resolver("basename", lambda path: str(path).rsplit("/", 1)[-1])


class ConfigError(ValueError):
    """A bad configuration value, reported in one line before any work starts."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Reject bad values early, naming the value and what is allowed."""
    from .models import build_model

    _check(cfg.mode in ("train", "eval"), f"mode={cfg.mode} is not allowed; use train or eval")
    if cfg.mode == "eval":
        _check(cfg.checkpoint is not None, "mode=eval needs checkpoint=PATH")
    if cfg.checkpoint is not None:
        _check(Path(cfg.checkpoint).is_file(), f"checkpoint={cfg.checkpoint}: no such file")
    _check(cfg.optim.lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}")
    _check(cfg.optim.weight_decay >= 0,
           f"optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}")
    for key in ("runs", "epochs", "eval_step", "patience", "batch_size"):
        if cfg.trainer.get(key) is not None:
            _check(cfg.trainer[key] >= 1, f"trainer.{key} must be >= 1, got {cfg.trainer[key]}")
    for key in ("device", "eval_device"):
        device = cfg.trainer.get(key)
        if key == "eval_device" and device is None:
            continue
        device = str(device)
        _check(device in ("auto", "cpu") or device.startswith("cuda"),
               f"trainer.{key}={device} is not allowed; use auto, cpu, cuda or cuda:N")
    if cfg.trainer.get("eval_chunk") is not None:
        _check(cfg.trainer.eval_chunk >= 1,
               f"trainer.eval_chunk must be >= 1 or null, got {cfg.trainer.eval_chunk}")
    precision = str(cfg.trainer.get("precision") or 32)
    _check(precision in ("32", "bf16"),
           f"trainer.precision={precision} is not allowed; use null (float32), 32 or bf16")
    # The model's own constructor knows its valid arguments (kernel, layers, alpha, ...).
    try:
        build_model(cfg.model.name, 1, 1, **model_kwargs(cfg))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model: {err}") from err


# Keys that do not change what a run computes: excluded from the config hash, so a finished
# cell is recognised again whatever machine, path or logger the new invocation uses.
VOLATILE_KEYS = ("paths", "logger", "mode", "checkpoint", "eval_allow_mismatch", "threads",
                 "resume", "paper", "hydra")
VOLATILE_TRAINER_KEYS = ("device", "eval_device", "eval_chunk", "progress", "save_checkpoints")


def _drop_nulls(obj):
    if isinstance(obj, dict):
        return {k: _drop_nulls(v) for k, v in obj.items() if v is not None}
    return obj


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved settings that determine a run's result. Null values are left
    out, so a new option whose null default keeps the old behaviour keeps old results valid."""
    import json

    container = OmegaConf.to_container(cfg, resolve=True)
    for key in VOLATILE_KEYS:
        container.pop(key, None)
    for key in VOLATILE_TRAINER_KEYS:
        container.get("trainer", {}).pop(key, None)
    text = json.dumps(_drop_nulls(container), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded_hash(run_dir: Path, summary: dict) -> str | None:
    """The settings hash of a finished run, from its saved resolved config (so results stay
    recognised when the hash function evolves), else the hash stored in its summary."""
    saved = run_dir / "config.yaml"
    return config_hash(OmegaConf.load(saved)) if saved.exists() else summary.get("config_hash")


def model_kwargs(cfg: DictConfig) -> dict:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs.pop("name")
    return kwargs


def _dataset_overridden() -> bool:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(o.split("=")[0].lstrip("+~").startswith("dataset")
               for o in HydraConfig.get().overrides.task)


def _report(summary: dict, run_dir: Path) -> str:
    n, ddof = summary["n_runs"], summary["std_ddof"]
    if summary["metric"] == "mse":
        scores = " | ".join(f"test MSE ({c}) {summary[f'test_mse_{c}_mean']:.4f} ± "
                            f"{summary[f'test_mse_{c}_std']:.4f}" for c in ("paper", "standard"))
        head = f"mse over {n} run(s), selected by the {summary['mse_convention']} convention: "
    else:
        scores = (f"test {100 * summary['test_mean']:.2f} ± {100 * summary['test_std']:.2f} | "
                  f"valid {100 * summary['valid_mean']:.2f}")
        head = f"{summary['metric']} over {n} run(s): "
    return (f"{head}{scores} (sample std, ddof={ddof}) | {summary['wall_seconds']:.1f}s | "
            f"{run_dir}")


def train(cfg: DictConfig, run_dir: Path) -> dict:
    from .data import DataRoot, load_dataset, prepare_for_model
    from .models import build_model
    from .train import distributed
    from .train.common import resolve_device
    from .train.fullgraph import train_fullgraph
    from .train.io import write_json
    from .train.loggers import NullLogger, RunLogger
    from .train.temporal import train_temporal

    device = distributed.setup(resolve_device(cfg.trainer.device))
    lead = distributed.rank() == 0
    with distributed.rank_zero_first():
        dataset, spec = load_dataset(cfg.dataset, DataRoot.from_config(cfg.paths))
    allowed = ("temporal",) if spec.regime == "temporal" else ("fullgraph", "minibatch")
    if cfg.trainer.name not in allowed:
        raise ConfigError(f"dataset {spec.name} needs trainer={' or '.join(allowed)}, "
                          f"got trainer={cfg.trainer.name}")
    probe = build_model(cfg.model.name, 1, 1, **model_kwargs(cfg))
    dataset = prepare_for_model(dataset, probe)
    if getattr(probe, "requires_graph", False) and not getattr(dataset, "has_graph", True):
        raise ConfigError(f"model {cfg.model.name} uses the input graph, but dataset "
                          f"{spec.name} has none: set dataset.knn_k=5 for a k-NN graph (or, "
                          "for DIFFormer, model.use_graph=false)")
    if cfg.trainer.get("eval_chunk") is not None and not hasattr(probe, "inference"):
        raise ConfigError(f"trainer.eval_chunk needs a model with streamed inference (difformer); "
                          f"model {cfg.model.name} has none: set trainer.eval_chunk=null")
    if distributed.world_size() > 1 and spec.regime != "fullgraph":
        raise ConfigError(f"torchrun is supported for node classification with "
                          f"trainer=minibatch, not for the {spec.regime} regime")
    if lead:
        print(dataset.summary(), flush=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    logger = RunLogger(run_dir, cfg.logger, config) if lead else NullLogger()
    common = dict(
        dataset=dataset, spec=spec, model_name=cfg.model.name, model_kwargs=model_kwargs(cfg),
        lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, epochs=cfg.trainer.epochs,
        runs=cfg.trainer.runs, seed=cfg.seed, device=device, run_dir=run_dir, logger=logger,
        dataset_config=OmegaConf.to_container(cfg.dataset, resolve=True), config=config,
        progress=cfg.trainer.progress, save_checkpoints=cfg.trainer.save_checkpoints and lead)
    try:
        if spec.regime == "temporal":
            summary = train_temporal(**common, patience=cfg.trainer.patience,
                                     patience_mode=cfg.trainer.patience_mode,
                                     mse=cfg.trainer.mse)
        else:
            eval_device = cfg.trainer.get("eval_device")
            summary = train_fullgraph(
                **common, eval_step=cfg.trainer.eval_step,
                batch_size=cfg.trainer.get("batch_size"),
                eval_device=None if eval_device is None else resolve_device(eval_device),
                eval_chunk=cfg.trainer.get("eval_chunk"),
                precision=str(cfg.trainer.get("precision") or 32))
        finished = True
        if not lead:
            return summary
        summary["package_version"] = __version__
        summary["config_hash"] = config_hash(cfg)
        summary["run_dir"] = str(run_dir)
        write_json(run_dir / "summary.json", summary)
        logger.finish(summary)
    finally:
        logger.close()
        distributed.teardown(finished)
    print(_report(summary, run_dir), flush=True)
    return summary


RUN_OUTPUTS = ("summary.json", "status.json", "metrics.jsonl", "config.yaml", "checkpoints")


def previous_result(run_dir: Path, cfg: DictConfig) -> dict | None:
    """Resume support. A finished run with the same settings in ``run_dir`` is returned (and
    not run again); anything else a previous attempt left there (an interrupted run, other
    settings, a failure) is moved to ``run_dir/stale-<time>/`` -- never deleted."""
    import json
    import shutil

    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if recorded_hash(run_dir, summary) == config_hash(cfg):
            return summary
    leftovers = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if leftovers:
        stale = run_dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}-{_TOKEN}"
        stale.mkdir(parents=True)
        for path in leftovers:
            shutil.move(str(path), str(stale / path.name))
        print(f"moved a previous attempt's files to {stale}", flush=True)
    return None


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Validate, write the resolved config, and dispatch on ``cfg.mode``."""
    from .train.io import write_text

    validate(cfg)
    from .train import distributed

    if distributed.rank() > 0:  # torchrun: rank 0 owns the run directory
        return train(cfg, run_dir)
    if cfg.mode == "train" and cfg.get("resume", True):
        done = previous_result(run_dir, cfg)
        if done is not None:
            print(f"already finished with the same settings: {run_dir} (skipped; resume=false "
                  "runs it again)", flush=True)
            return done
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(f"run directory: {run_dir}", flush=True)
    if cfg.mode == "train":
        return train(cfg, run_dir)
    from .evaluate import evaluate_checkpoint

    return evaluate_checkpoint(cfg, run_dir)


def _record_failure(run_dir: Path, cfg: DictConfig, err: BaseException) -> None:
    """In a sweep, a failed job leaves status.json (why) and lets the other jobs go on."""
    from .data import DatasetUnavailable
    from .train.io import write_json

    status = "unavailable" if isinstance(err, DatasetUnavailable) else "failed"
    write_json(run_dir / "status.json", {
        "status": status, "error": f"{type(err).__name__}: {err}",
        "missing_path": getattr(err, "path", None), "config_hash": config_hash(cfg)})


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the mean validation score, the objective of Hydra sweepers (e.g. Optuna)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .data import DatasetUnavailable
    from .train.checkpoint import CheckpointError

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        result = run(cfg, run_dir)
    except Exception as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            _record_failure(run_dir, cfg, err)
            print(f"error: job {hydra_cfg.job.num} ({run_dir}): {err}", file=sys.stderr,
                  flush=True)
            return None
        if isinstance(err, (ConfigError, DatasetUnavailable, CheckpointError)):
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        raise
    return result.get("valid_mean")


if __name__ == "__main__":
    main()
