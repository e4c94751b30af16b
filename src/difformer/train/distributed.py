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
