"""Configuration helpers shared by the entry points: errors, checks, hashing, resolvers.

Nothing here runs a model or reads data; :mod:`difformer.config.settings` turns a composed config
into the typed settings of one run, :mod:`difformer.runs.rundir` decides what a run directory holds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

# An installed wheel ships the config tree inside the package (difformer/configs); a source
# checkout (also an editable install) reads configs/ at the repository's root.
_PACKAGED = Path(__file__).resolve().parents[1] / "configs"
CONFIG_DIR = (
    _PACKAGED
    if (_PACKAGED / "train.yaml").is_file()
    else Path(__file__).resolve().parents[3] / "configs"
)

# One token per process, so two jobs started in the same second get different run
# directories; it is constant within a process, so every interpolation agrees.
# Under torchrun all ranks share the elastic run id, hence the token and (started within the
# same second) the run directory.
TOKEN = (
    hashlib.sha256(os.environ["TORCHELASTIC_RUN_ID"].encode()).hexdigest()[:6]
    if os.environ.get("TORCHELASTIC_RUN_ID")
    else secrets.token_hex(3)
)


def register_resolvers() -> None:
    """The interpolations our configs use: ``${difformer_token:}`` and ``${basename:path}``."""
    if not OmegaConf.has_resolver("difformer_token"):
        OmegaConf.register_new_resolver("difformer_token", lambda: TOKEN)
    if not OmegaConf.has_resolver("basename"):  # sweep subdirs named after the experiment
        OmegaConf.register_new_resolver("basename", lambda path: str(path).rsplit("/", 1)[-1])


class ConfigError(ValueError):
    """A bad configuration value, reported in one line before any work starts."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# Keys that do not change what a run computes: excluded from the config hash, so a finished
# cell is recognised again whatever machine, path or logger the new invocation uses.
VOLATILE_KEYS = (
    "paths",
    "logger",
    "mode",
    "checkpoint",
    "eval_allow_mismatch",
    "eval_trust_checkpoint",
    "threads",
    "resume",
    "paper",
    "hydra",
    "inspect",
)
# read only by optim.scheduler=plateau: without a scheduler they change nothing
SCHEDULER_KEYS = ("plateau_factor", "plateau_patience", "min_lr", "warmup_epochs")
# how the model computes, not what: the same numbers within float rounding (models/sparse_ops.py)
VOLATILE_MODEL_KEYS = ("sparse_input", "cache_adjacency", "gram_attention")
VOLATILE_TRAINER_KEYS = (
    "parallel_runs",
    "run_ids",
    "device",
    "eval_device",
    "eval_chunk",
    "progress",
    "save_checkpoints",
    "checkpoint_every",
    "checkpoint_seconds",
    "log_every",
    "profile_epochs",
)


def _drop_nulls(obj):
    if isinstance(obj, dict):
        return {k: _drop_nulls(v) for k, v in obj.items() if v is not None}
    return obj


def to_dict(node: Any) -> dict[str, Any]:
    """A config mapping as plain Python, interpolations resolved (``None`` as ``{}``)."""
    if node is None:
        return {}
    out = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(out, dict):
        raise ConfigError(f"expected a mapping of keys, got {out!r}")
    return cast(dict[str, Any], out)


def config_hash(cfg: DictConfig | ListConfig | dict) -> str:
    """Hash of the resolved settings that determine a run's result. Null values are left
    out, so a new option whose null default keeps the old behaviour keeps old results valid."""
    container = to_dict(cfg) if OmegaConf.is_config(cfg) else json.loads(json.dumps(cfg))
    for key in VOLATILE_KEYS:
        container.pop(key, None)
    for key in VOLATILE_TRAINER_KEYS:
        container.get("trainer", {}).pop(key, None)
    for key in VOLATILE_MODEL_KEYS:
        container.get("model", {}).pop(key, None)
    optim = container.get("optim", {})
    if optim.get("scheduler") in (None, "none"):
        for key in SCHEDULER_KEYS:
            optim.pop(key, None)
    dataset = container.get("dataset", {})
    if dataset.get("split_seed") == container.get("seed"):
        dataset.pop("split_seed")  # the default: same results as before the key existed
    text = json.dumps(_drop_nulls(container), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(node, prefix: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            yield path
            yield from _flatten(value, path + ".")


@functools.cache
def declared_keys() -> frozenset[str]:
    """Every key path some config file under ``configs/`` sets (group files under their
    group's name unless they are ``@package _global_``)."""
    import yaml

    keys: set[str] = set()
    for path in CONFIG_DIR.rglob("*.yaml"):
        text = path.read_text()
        node = yaml.safe_load(text) or {}
        rel = path.relative_to(CONFIG_DIR)
        group = rel.parts[0] if len(rel.parts) > 1 else None
        if group and "@package _global_" not in text and group != "hydra":
            node = {group: node}
        keys.update(_flatten(node))
    return frozenset(keys)


def undeclared_key(key: str) -> str | None:
    """``+key=value`` adds a key; one that no config declares is read by no code (a typo,
    as Hydra's own hint ``+trainer.epoch=3`` would add), so it is refused."""
    group = key.split(".", 1)[0]
    if group in ("model", "hydra"):
        return None  # the model's constructor checks its own keywords; Hydra checks its own
    if key in declared_keys():
        return None
    if group in ("trainer", "optim", "dataset", "logger", "paths"):
        siblings = sorted(
            k.split(".", 1)[1]
            for k in declared_keys()
            if k.startswith(group + ".") and k.count(".") == 1
        )
        return f"+{key}: no code reads {key}; known {group} keys: {', '.join(siblings)}"
    return f"+{key}: no code reads {key}"
