"""The settings of one invocation, resolved once from the composed config and checked.

Every check names the key, the value and what is allowed (:class:`ConfigError`, one line,
exit code 2, before any work). The training loop, the tasks and eval mode read these typed
fields instead of the raw config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ..data import get_spec, registry_name
from ..models import build_model
from .core import ConfigError, check, config_hash, to_dict

MODES = ("train", "eval", "inspect")
PRECISIONS = ("32", "bf16")


def parse_log_every(value) -> tuple[int | None, float | None]:
    """``trainer.log_every``: an integer counts epochs, ``"30s"`` counts seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(value))
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"trainer.log_every={value} is not allowed; use a number of epochs "
            "(e.g. 10) or of seconds (e.g. 30s)"
        )
    return None, float(match.group(1))


def _integer(value, key: str, minimum: int | None = None, allow_null: bool = False):
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    return value


def _number(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _positive(value, key: str) -> float:
    number = _number(value, key)
    check(number > 0, f"{key} must be > 0, got {value!r}")
    return number


def _boolean(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _device(value, key: str, allow_null: bool = False) -> str | None:
    if value is None and allow_null:
        return None
    value = str(value)
    check(
        value in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", value) is not None,
        f"{key}={value} is not allowed; use auto, cpu, cuda or cuda:N",
    )
    if value.startswith("cuda"):
        import torch  # (already imported with the models)

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.split(":")[1]) if ":" in value else 0
        check(
            index < count,
            f"{key}={value} but "
            + ("CUDA is not available here" if count == 0 else f"there are {count} CUDA devices")
            + ": use auto or cpu",
        )
    return value


@dataclass(frozen=True)
class TrainerSettings:
    name: str
    epochs: int
    runs: int
    device: str = "auto"
    parallel_runs: int | str = 1  # CPU: the runs in this many processes, or "auto"
    run_ids: tuple[int, ...] | None = None  # a parallel worker's own runs (set by its parent)
    eval_step: int = 1
    batch_size: int | None = None
    eval_device: str | None = None
    eval_chunk: int | None = None
    precision: str = "32"
    compile: bool | None = None  # torch.compile the training forward (null/false: eager)
    patience: int | None = None
    patience_mode: str = "reset"
    mse: str = "standard"
    progress: bool = True
    save_checkpoints: bool = True
    checkpoint_every: int | None = None  # epochs; null: every checkpoint_seconds
    checkpoint_seconds: float = 60.0
    log_every: tuple[int | None, float | None] = (None, 30.0)  # (epochs, seconds): one is set
    profile_epochs: int | None = None  # profile this many epochs of run 0 (debug=profile)
    eval_last: bool | None = None  # also evaluate the last epoch (null/false: official)
    eval_train: bool = True  # graph: also score the train graphs at each evaluation


TRAINER_KEYS = tuple(f.name for f in fields(TrainerSettings))


def _parallel_runs(value) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, str):
        raise ConfigError(f"trainer.parallel_runs must be an integer or auto, got {value!r}")
    return _integer(value, "trainer.parallel_runs", 1)


def _run_ids(value, runs) -> tuple[int, ...] | None:
    if value is None:
        return None
    ok = (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < runs for v in value)
    )
    check(bool(ok), f"trainer.run_ids must be a list of run numbers in [0, {runs}), got {value!r}")
    return tuple(value)


def trainer_settings(node) -> TrainerSettings:
    raw = to_dict(node)
    unknown = sorted(set(raw) - set(TRAINER_KEYS))
    check(
        not unknown,
        f"trainer.{unknown[0] if unknown else ''} is not a trainer setting; "
        f"known: {', '.join(TRAINER_KEYS)}",
    )
    get = raw.get
    precision = str(get("precision") or 32)
    check(
        precision in PRECISIONS,
        f"trainer.precision={precision} is not allowed; use null (float32), 32 or bf16",
    )
    return TrainerSettings(
        name=str(get("name")),
        epochs=_integer(get("epochs"), "trainer.epochs", 1),
        runs=_integer(get("runs"), "trainer.runs", 1),
        device=str(_device(get("device", "auto"), "trainer.device")),
        parallel_runs=_parallel_runs(get("parallel_runs", 1)),
        run_ids=_run_ids(get("run_ids"), get("runs")),
        eval_step=_integer(get("eval_step", 1), "trainer.eval_step", 1),
        batch_size=_integer(get("batch_size"), "trainer.batch_size", 1, allow_null=True),
        eval_device=_device(get("eval_device"), "trainer.eval_device", allow_null=True),
        eval_chunk=_integer(get("eval_chunk"), "trainer.eval_chunk", 1, allow_null=True),
        precision=precision,
        compile=None if get("compile") is None else _boolean(get("compile"), "trainer.compile"),
        patience=_integer(get("patience"), "trainer.patience", 1, allow_null=True),
        patience_mode=str(get("patience_mode", "reset")),
        mse=str(get("mse", "standard")),
        progress=_boolean(get("progress", True), "trainer.progress"),
        save_checkpoints=_boolean(get("save_checkpoints", True), "trainer.save_checkpoints"),
        checkpoint_every=_integer(
            get("checkpoint_every"), "trainer.checkpoint_every", 1, allow_null=True
        ),
        checkpoint_seconds=_positive(get("checkpoint_seconds", 60.0), "trainer.checkpoint_seconds"),
        log_every=parse_log_every(get("log_every", "30s")),
        profile_epochs=_integer(
            get("profile_epochs"), "trainer.profile_epochs", 1, allow_null=True
        ),
        eval_last=None
        if get("eval_last") is None
        else _boolean(get("eval_last"), "trainer.eval_last"),
        eval_train=_boolean(get("eval_train", True), "trainer.eval_train"),
    )


# Model keywords that count things: each must be a whole number >= 1 (or >= the value here).
SIZE_KEY = re.compile(
    r"^(K|hops|.*_channels|.*layers|.*heads|.*_k|.*_chunk|.*_order|"
    r"nb_.*|.*_epochs)$"
)
SIZE_MINIMUM = {"rb_order": 0, "local_epochs": 0}


OPTIM_KEYS = (
    "lr",
    "weight_decay",
    "optimizer",
    "scheduler",
    "plateau_factor",
    "plateau_patience",
    "min_lr",
    "warmup_epochs",
    "clip_grad_norm",
)
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("plateau", "cosine")


def plateau_settings(optim) -> dict | None:
    """``optim.scheduler=plateau``: multiply the lr by ``plateau_factor`` after
    ``plateau_patience`` evaluations without a better valid score (the Gated Graph
    Transformer recipe halves it after 5), down to ``min_lr``; null: a constant lr."""
    scheduler = optim.get("scheduler")
    if scheduler in (None, "none"):
        return None
    check(
        scheduler in SCHEDULERS,
        f"optim.scheduler={scheduler} is not allowed; use null (constant lr), "
        f"{' or '.join(SCHEDULERS)}",
    )
    if scheduler != "plateau":
        return None
    factor = _number(optim.get("plateau_factor", 0.5), "optim.plateau_factor")
    check(0 < factor < 1, f"optim.plateau_factor must be in (0, 1), got {factor}")
    return {
        "factor": factor,
        "patience": _integer(optim.get("plateau_patience", 5), "optim.plateau_patience", 0),
        "min_lr": _number(optim.get("min_lr", 0.0), "optim.min_lr"),
    }


def cosine_settings(optim, epochs: int) -> dict | None:
    """``optim.scheduler=cosine``: the lr rises linearly over ``warmup_epochs`` epochs, then
    follows a half cosine down to ``min_lr`` at the last epoch, stepped once per epoch
    (GraphGPS's ``cosine_with_warmup``)."""
    if optim.get("scheduler") != "cosine":
        return None
    warmup = _integer(optim.get("warmup_epochs") or 0, "optim.warmup_epochs", 0)
    check(
        warmup < epochs,
        f"optim.warmup_epochs={warmup} must be below trainer.epochs={epochs}",
    )
    return {"warmup": warmup, "min_lr": _number(optim.get("min_lr", 0.0), "optim.min_lr")}


def check_model_sizes(kwargs: dict) -> None:
    for key, value in kwargs.items():
        if SIZE_KEY.match(key) and not isinstance(value, (list, tuple)):
            _integer(value, f"model.{key}", SIZE_MINIMUM.get(key, 1), allow_null=True)


@dataclass(frozen=True)
class Settings:
    mode: str
    seed: int
    split_seed: int
    model_name: str
    model_kwargs: dict
    lr: float
    weight_decay: float
    trainer: TrainerSettings
    dataset: DictConfig = field(repr=False)
    dataset_config: dict = field(repr=False)
    config: dict = field(repr=False)  # the whole resolved config, for checkpoints
    config_hash: str  # what names a result (config.core.config_hash)
    paths: DictConfig = field(repr=False)  # data_dir, cache_dir, offline
    logger: dict = field(repr=False)  # the logger backends and their options
    checkpoint: str | None = None
    eval_allow_mismatch: bool = False
    eval_trust_checkpoint: bool = False
    resume: bool = True
    threads: int | None = None
    plateau: dict | None = field(default=None, repr=False)  # ReduceLROnPlateau keywords
    cosine: dict | None = field(default=None, repr=False)  # warm-up then cosine, per epoch
    optimizer: str = "adam"  # adam (the official) | adamw (decoupled weight decay)
    clip_grad_norm: float | None = None  # clip the gradients' total norm before each step


def normalise(cfg: DictConfig, tasks: Mapping[str, Any]) -> DictConfig:
    """Resolve ``trainer=auto`` in place from the dataset's task kind (``tasks``: kind -> its
    class, which owns ``auto_trainer`` and ``unused_trainer_keys``): the regime's name, the
    task's defaults for null values, and no keys that task does not read -- so config.yaml
    records what ran, and the settings hash equals that of the explicit preset."""
    if cfg.trainer.get("name") != "auto":
        return cfg
    try:
        kind = get_spec(registry_name(cfg.dataset)).kind
    except ValueError as err:
        raise ConfigError(
            str(err).replace("unknown dataset", "dataset.name: unknown dataset")
        ) from err
    task = tasks[kind]
    name, defaults = task.auto_trainer
    with open_dict(cfg):
        cfg.trainer.name = name
        for key, value in defaults.items():
            if cfg.trainer.get(key) is None:
                cfg.trainer[key] = value
        preset = auto_defaults()
        for key in task.unused_trainer_keys:
            value = cfg.trainer.pop(key, None)
            # a value the user chose that this task would never read: refused, not dropped
            check(
                value is None or value == preset.get(key),
                f"trainer.{key}={value} does not apply to dataset "
                f"{registry_name(cfg.dataset)} (a {kind} task, trainer={name}): remove it",
            )
    return cfg


def auto_defaults() -> dict:
    """The values of ``configs/trainer/auto.yaml`` (what a key holds when nobody set it)."""
    import yaml

    from .core import CONFIG_DIR

    return yaml.safe_load((CONFIG_DIR / "trainer" / "auto.yaml").read_text()) or {}


def resolve(cfg: DictConfig, tasks: Mapping[str, Any]) -> Settings:
    """Check every value of ``cfg`` and return the typed settings (``cfg`` normalised with
    ``tasks``, see :func:`normalise`)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    check(
        not missing,
        f"{missing[0] if missing else ''} must be set: add "
        f"{missing[0] if missing else ''}=... to the command line",
    )
    normalise(cfg, tasks)
    mode = str(cfg.get("mode"))
    check(mode in MODES, f"mode={mode} is not allowed; use {', '.join(MODES[:-1])} or {MODES[-1]}")
    checkpoint = cfg.get("checkpoint")
    if mode in ("eval", "inspect"):
        check(checkpoint is not None, f"mode={mode} needs checkpoint=PATH")
    if checkpoint is not None:
        check(Path(str(checkpoint)).is_file(), f"checkpoint={checkpoint}: no such file")
    lr = _number(cfg.optim.lr, "optim.lr")
    check(lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}")
    weight_decay = _number(cfg.optim.weight_decay, "optim.weight_decay")
    check(weight_decay >= 0, f"optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}")
    unknown = sorted(set(cfg.optim) - set(OPTIM_KEYS))
    check(
        not unknown,
        f"optim.{unknown[0] if unknown else ''} is not an optimizer setting; "
        f"known: {', '.join(OPTIM_KEYS)}",
    )
    plateau = plateau_settings(cfg.optim)
    optimizer = str(cfg.optim.get("optimizer") or "adam")
    check(
        optimizer in OPTIMIZERS,
        f"optim.optimizer={optimizer} is not allowed; use {' or '.join(OPTIMIZERS)}",
    )
    seed = _integer(cfg.get("seed"), "seed", 0)
    runs = int(cfg.trainer.runs) if isinstance(cfg.trainer.get("runs"), int) else 1
    # run r is seeded seed + r, and numpy takes seeds below 2^32: larger ones would alias
    check(
        seed + runs <= 2**32,
        f"seed={seed} is too large: seed + trainer.runs must be at most 2^32 = {2**32}",
    )
    split_seed = _integer(cfg.dataset.get("split_seed"), "dataset.split_seed", 0, allow_null=True)
    model = to_dict(cfg.model)
    name = model.pop("_target_", None) or model.pop("name", None)  # _target_: your own class
    model.pop("name", None)
    check(isinstance(name, str), f"model.name must be a model name, got {name!r}")
    check_model_sizes(model)
    dataset_config = to_dict(cfg.dataset)
    if dataset_config.get("split_seed") is None:
        dataset_config.pop("split_seed", None)
    config = to_dict(cfg)
    trainer = trainer_settings(cfg.trainer)
    return Settings(
        mode=mode,
        seed=seed,
        split_seed=seed if split_seed is None else split_seed,
        model_name=name,
        model_kwargs=model,
        lr=lr,
        weight_decay=weight_decay,
        plateau=plateau,
        cosine=cosine_settings(cfg.optim, trainer.epochs),
        optimizer=optimizer,
        clip_grad_norm=None
        if cfg.optim.get("clip_grad_norm") is None
        else _positive(cfg.optim.clip_grad_norm, "optim.clip_grad_norm"),
        trainer=trainer,
        dataset=cfg.dataset,
        dataset_config=dataset_config,
        config=config,
        config_hash=config_hash(cfg),
        paths=cfg.paths,
        logger=config.get("logger") or {},
        checkpoint=None if checkpoint is None else str(checkpoint),
        eval_allow_mismatch=bool(cfg.get("eval_allow_mismatch", False)),
        eval_trust_checkpoint=_boolean(
            cfg.get("eval_trust_checkpoint", False), "eval_trust_checkpoint"
        ),
        resume=bool(cfg.get("resume", True)),
        threads=_integer(cfg.get("threads"), "threads", 1, allow_null=True),
    )


def check_model_flags(name: str, kwargs: dict) -> None:
    """Switches are true or false: a keyword whose default in the model class is a bool, or
    whose name says it is one (``use_*``: forwarded through ``**kwargs`` by wrappers such as
    the graph-level DIFFormer). ``use_bn=2`` would otherwise be taken as true in silence."""
    import inspect

    from ..models import MODELS, model_class

    defaults = {}
    if name in MODELS:
        params = inspect.signature(model_class(name)).parameters.values()
        defaults = {p.name: p.default for p in params}
    for key, value in kwargs.items():
        flag = isinstance(defaults.get(key), bool) or key.startswith("use_")
        if flag and value is not None and not isinstance(value, bool):
            raise ConfigError(f"model.{key} must be true or false, got {value!r}")


def build_probe(settings: Settings):
    """The model built once with placeholder sizes: its constructor checks its own keywords
    (kernel, layers, alpha, ...) and it declares what it needs from the data."""
    check_model_flags(settings.model_name, settings.model_kwargs)
    try:
        return build_model(settings.model_name, 1, 1, **settings.model_kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model: {err}") from err
