"""torch.distributed for the mini-batch trainer.

``torchrun --nproc_per_node=K train.py ... trainer=minibatch`` starts K processes with RANK,
WORLD_SIZE and LOCAL_RANK set; each joins one process group (gloo on CPU, nccl on GPU), draws
the same partition, trains its share of the chunks under DistributedDataParallel, and only rank
0 evaluates, logs and writes files.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return (
        dist.get_rank()
        if dist.is_available() and dist.is_initialized()
        else int(os.environ.get("RANK", "0"))
    )


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def setup(device: torch.device) -> torch.device:
    """Join the process group when started by torchrun; returns this rank's device."""
    if env_world_size() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def seed_epoch(seed: int, epoch: int) -> None:
    """Under torchrun, reseed this rank's torch RNG (dropout) from (seed, epoch, rank) at the
    start of each epoch. Only rank 0 writes checkpoints, so the other ranks' RNG states are
    never saved; with a fresh seed per epoch a job resumed after epoch e continues exactly as
    the uninterrupted job would (tested over two nodes). One process: nothing changes."""
    if world_size() > 1:
        torch.manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank())


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel when distributed (its construction broadcasts rank 0's
    parameters, so all ranks start equal); the model itself otherwise."""
    if world_size() <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def teardown(finished: bool = True) -> None:
    """Leave the process group; after a normal finish, together (rank 0 may still be
    evaluating when the others are done). Call it after the DDP wrapper is gone."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (e.g. copies and processes a dataset into the cache), the
    other ranks after it, so they never race on the same files."""
    distributed = world_size() > 1
    if distributed and rank() > 0:
        dist.barrier()
    yield
    if distributed and rank() == 0:
        dist.barrier()


# What a collective raises when another process of the job is gone (gloo, nccl, the store).
PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "remote process exited",
    "Socket Timeout",
)


def peer_lost(err: BaseException) -> str | None:
    """The backend's first line, when ``err`` says another process of a torchrun job stopped
    (a node lost, a rank killed); None for any other error."""
    if env_world_size() <= 1 or not isinstance(err, RuntimeError):
        return None
    text = str(err).strip()
    dist_error = getattr(dist, "DistError", ())
    if not (isinstance(err, dist_error) or any(s in text for s in PEER_LOST)):
        return None
    first = text.splitlines()[0] if text else type(err).__name__
    return first.split("] ", 1)[-1][:200]  # without gloo's source path
