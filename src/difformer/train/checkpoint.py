"""The two checkpoint formats of a run, both plain dicts of tensors, strings and numbers that
load with ``torch.load(weights_only=True)`` (no pickled code is ever executed):

* ``checkpoints/run<i>.pt``: the run's best weights and everything needed to rebuild model and
  data (:func:`make_checkpoint`), read by ``mode=eval`` and ``mode=inspect``;
* ``checkpoints/run<i>_last.pt``: the run's resume state (:class:`RunState`), written during
  training and read back by a rerun into the same directory.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .. import __version__
from ..runs import rundir
from ..runs.files import save_torch

FORMAT = "difformer-checkpoint"
FORMAT_VERSION = 1
OFFICIAL_FORMAT = "official-difformer-state-dict"
# Keys every state_dict of the official DIFFormer class has (docs/protocols.md §2.5).
OFFICIAL_KEYS = (
    "convs.0.Wk.weight",
    "convs.0.Wq.weight",
    "fcs.0.weight",
    "fcs.1.weight",
    "bns.0.weight",
)


def is_official_state_dict(obj) -> bool:
    """A released checkpoint of the authors: a bare state_dict of the official DIFFormer."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
        and all(k in obj for k in OFFICIAL_KEYS)
    )


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not match the model or data it is used with."""


CHECKSUM = "checksum"  # sha256 of the rest of the checkpoint's content (content_digest)


def content_digest(obj) -> str:
    """sha256 of a checkpoint's content: every tensor's dtype, shape and bytes and every other
    value's repr, dict keys in sorted order. ``torch.load`` does not check the zip archive's
    CRCs, so a flipped byte in a tensor would load silently; this digest, saved inside the
    file, makes it a one-line refusal."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{type(obj).__name__}{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r};".encode())


def with_checksum(payload: dict) -> dict:
    return {**payload, CHECKSUM: content_digest(payload)}


def verify_checksum(path: Path, payload: dict, action: str) -> dict:
    """``payload`` without its checksum, refused when the content does not match it (files
    written before checksums were added have none and are taken as they are)."""
    payload = dict(payload)
    expected = payload.pop(CHECKSUM, None)
    if expected is not None and content_digest(payload) != expected:
        raise CheckpointError(
            f"{path} is damaged: its content does not match the checksum it was saved with "
            f"({action})"
        )
    return payload


def non_finite(state_dict: dict) -> list[str]:
    """The floating-point tensors of ``state_dict`` holding NaN or inf."""
    return [
        k
        for k, v in state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all())
    ]


LAST_FORMAT = "difformer-last"


@dataclass
class RunState:
    """Everything the rest of a run depends on: model, optimizer, the last finished epoch,
    the best score so far and its weights, the early-stopping count, the epoch runner's state
    (the partition generator), the scheduler, and the RNG states of torch, numpy and python.
    The one reader and writer of ``run<i>_last.pt`` (its keys are these fields and
    ``format``); ``finished`` runs also carry their ``record``."""

    run: int
    epoch: int = -1  # the last finished epoch
    finished: bool = False
    stopped: bool = False  # early stopping ended the run at ``epoch``
    record: dict | None = None
    model: dict | None = None
    optimizer: dict | None = None
    runner: dict | None = None
    stopper: dict | None = None
    scheduler: dict | None = None
    best: dict | None = None
    best_state: dict | None = None
    last_finite: tuple | None = None
    rng: dict | None = None
    seconds: float = 0.0  # training time of the attempts so far

    def to_dict(self) -> dict:
        return {"format": LAST_FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, state: dict) -> RunState:
        return cls(**{f.name: state[f.name] for f in fields(cls)})


def save_last(run_dir: Path, state: RunState) -> None:
    save_torch(rundir.last_checkpoint(run_dir, state.run), with_checksum(state.to_dict()))


def load_last(run_dir: Path, run: int) -> RunState | None:
    """Run ``run``'s resume state in ``run_dir``, None when it has none."""
    path = rundir.last_checkpoint(run_dir, run)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(
            f"cannot resume from {path}: {err}; move it away to start this run again"
        ) from err
    if not isinstance(state, dict) or state.get("format") != LAST_FORMAT:
        raise CheckpointError(f"{path} is not a last checkpoint of this package")
    state = verify_checksum(path, state, "move it away to start this run again")
    return RunState.from_dict(state)


def make_checkpoint(
    *,
    state_dict,
    model_name,
    model_kwargs,
    dataset_config,
    data_fingerprint,
    split_fingerprint,
    run,
    seed,
    split_seed,
    metrics,
    config,
    input_transform=None,
) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": model_name, "kwargs": dict(model_kwargs)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "dataset": {
            "config": dataset_config,
            "fingerprint": data_fingerprint,
            "split_fingerprint": split_fingerprint,
            "run": run,
            "split_seed": split_seed,
            "input_transform": input_transform,  # statistics fitted on this run's train part
        },
        "metrics": metrics,
        "seed": seed,
        "run": run,
        "config": config,
    }


def save_run_checkpoint(run_dir: Path, run: int, **fields) -> str:
    """Write run ``run``'s checkpoint to ``run_dir/checkpoints/run<run>.pt`` atomically and
    return its path; ``fields`` are :func:`make_checkpoint`'s keywords other than ``run``."""
    path = rundir.best_checkpoint(run_dir, run)
    save_torch(path, with_checksum(make_checkpoint(run=run, **fields)))
    return str(path)


# What eval mode reads from one of our checkpoints.
REQUIRED_FIELDS = (
    "model.name",
    "model.kwargs",
    "state_dict",
    "dataset.config",
    "dataset.fingerprint",
    "dataset.split_fingerprint",
    "dataset.run",
    "dataset.split_seed",
    "metrics.test",
)


def missing_fields(ckpt: dict) -> list[str]:
    missing = []
    for dotted in REQUIRED_FIELDS:
        node = ckpt
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    return missing


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch's zip format / legacy pickle
        raise CheckpointError(f"{path} is not a checkpoint: not a file written by torch.save")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        reason = (
            str(err).strip().splitlines()[0].split(". ")[0]
            if str(err).strip()
            else type(err).__name__
        )
        if (
            "central directory" in reason
            or "Invalid argument" in reason
            or isinstance(err, (EOFError, RuntimeError, OSError))
        ):
            raise CheckpointError(
                f"{path} is truncated or damaged ({path.stat().st_size} "
                f"bytes): torch.load says: {reason}"
            ) from err
        raise CheckpointError(
            f"cannot read checkpoint {path} with weights_only=True (no "
            f"pickled code is run): {reason}"
        ) from err
    if is_official_state_dict(ckpt):
        return {"format": OFFICIAL_FORMAT, "state_dict": dict(ckpt)}
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is neither a difformer checkpoint (no 'format': {FORMAT!r}) nor an "
            f"official DIFFormer state_dict (keys {', '.join(OFFICIAL_KEYS)})"
        )
    ckpt = verify_checksum(path, ckpt, "use another checkpoint, or train again")
    missing = missing_fields(ckpt)
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks the field(s) {', '.join(missing)}; "
            "it was not written by a complete run of this package"
        )
    bad = non_finite(ckpt["state_dict"])
    if bad:
        raise CheckpointError(
            f"{path} holds NaN or inf weights ({len(bad)} tensor(s), first {bad[0]}); a "
            "checkpoint of a diverged model is refused"
        )
    return ckpt


def fingerprint_differences(recorded: dict, current: dict) -> list[str]:
    return [
        f"{k}: checkpoint={recorded.get(k)!r} current={current.get(k)!r}"
        for k in sorted(set(recorded) | set(current))
        if recorded.get(k) != current.get(k)
    ]


def state_dict_differences(expected: dict, given: dict) -> list[str]:
    """Keys missing, unexpected, or of another shape, between a model and a checkpoint."""
    out = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in given]
    out += [f"unexpected {k} {tuple(v.shape)}" for k, v in given.items() if k not in expected]
    out += [
        f"{k}: checkpoint {tuple(given[k].shape)} model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    return out
