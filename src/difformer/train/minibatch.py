"""Random-partition mini-batches (official ``main-batch.py``), built in one pass over the edges.

Each epoch a random permutation of all N nodes is cut into ceil(N / B) chunks; each chunk is
trained on as if it were the whole graph: its induced subgraph, attention over the chunk only,
the loss on the chunk's train nodes, one optimizer step per chunk.

The official script calls ``torch_geometric.utils.subgraph`` once per chunk over the full edge
list (O(E) per chunk) and gathers features in permutation order, which PyG 2.1-2.3 relabels in
sorted order instead, silently pairing nodes with the wrong features (docs/protocols.md §7 item 1).
Here a node's local index *is* its position in the chunk, so the features ``x[chunk]`` match the
relabelled edges by construction, and all chunks of an epoch come from one O(E) pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .metrics import with_auxiliary_loss


def partition_subgraphs(
    edge_index: Tensor, perm: Tensor, batch_size: int
) -> list[tuple[Tensor, Tensor]]:
    """Cut ``perm`` into chunks of ``batch_size`` and return, per chunk, (global node ids,
    edge_index of the induced subgraph relabelled to positions in the chunk)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = perm.numel()
    num_chunks = (n + batch_size - 1) // batch_size
    position = torch.empty(n, dtype=torch.long, device=perm.device)
    position[perm] = torch.arange(n, device=perm.device)
    # The two random gathers over all E edges dominate; the smallest id dtype keeps the
    # lookup table in cache (1.6 MB for Pokec with uint8 instead of 13 MB with int64).
    small = (
        torch.uint8 if num_chunks <= 256 else torch.int16 if num_chunks <= 32768 else torch.int32
    )
    chunk = (position // batch_size).to(small)
    src, dst = edge_index
    keep = chunk[src] == chunk[dst]
    src, dst = src[keep], dst[keep]
    edge_chunk = chunk[src].long()
    order = torch.argsort(edge_chunk, stable=True)  # group edges by chunk, keep their order
    src, dst, edge_chunk = src[order], dst[order], edge_chunk[order]
    counts = torch.bincount(edge_chunk, minlength=num_chunks).tolist()
    local = torch.stack([position[src] % batch_size, position[dst] % batch_size])
    nodes = perm.split(batch_size)
    return list(zip(nodes, local.split(counts, dim=1)))


def shard_steps(num_chunks: int, world_size: int, rank: int) -> list[int]:
    """Chunk index for ``rank`` at each optimizer step: step s uses chunks s*K .. s*K+K-1 over
    the K ranks (gradients averaged by DDP); the last step wraps around to the first chunks
    when K does not divide the count (as DistributedSampler pads), so every rank takes part
    in every step."""
    steps = -(-num_chunks // world_size)
    return [(s * world_size + rank) % num_chunks for s in range(steps)]


class RandomPartitionStep:
    """One epoch of mini-batch steps over a fresh random partition.

    The permutation comes from its own generator seeded with ``seed``, so every rank of a
    distributed run draws the same partition whatever else consumed the global RNG. Chunks
    without train nodes are skipped (identically on all ranks).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        edge_index: Tensor,
        train_idx: Tensor,
        batch_size: int,
        loss_fn,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        autocast_dtype: torch.dtype | None = None,
        model=None,
        optimizer=None,
    ):
        # The graph stays where it is (CPU for large graphs); chunks move to the device.
        self.x, self.y, self.edge_index = x, y, edge_index
        self.is_train = torch.zeros(x.shape[0], dtype=torch.bool)
        self.is_train[train_idx.cpu()] = True
        self.batch_size, self.loss_fn, self.device = batch_size, loss_fn, device
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.autocast_dtype = autocast_dtype
        self.model, self.optimizer = model, optimizer  # for train_epoch (the run loop's API)

    def chunks(self) -> list[tuple[Tensor, Tensor]]:
        """This epoch's chunks that hold train nodes, in order (advances the generator)."""
        perm = torch.randperm(self.x.shape[0], generator=self.generator)
        return [
            (nodes, edges)
            for nodes, edges in partition_subgraphs(self.edge_index, perm, self.batch_size)
            if bool(self.is_train[nodes].any())
        ]

    def state_dict(self) -> dict:
        """What a resumed run needs to draw the same partitions: the generator's state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def train_epoch(self, epoch: int, progress=None) -> float:
        return self(self.model, self.optimizer, progress)

    def __call__(self, model, optimizer, progress=None) -> float:
        """One epoch; returns the mean train loss over this rank's train nodes.
        ``progress(step, steps)`` is called after each step (heartbeats in long epochs)."""
        model.train()
        chunks = self.chunks()
        total, count = 0.0, 0
        steps = shard_steps(len(chunks), self.world_size, self.rank)
        for step, index in enumerate(steps):
            nodes, edges = chunks[index]
            mask = self.is_train[nodes]
            optimizer.zero_grad()
            with torch.autocast(
                self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
            ):
                out = model(self.x[nodes].to(self.device), edges.to(self.device))
                loss = self.loss_fn(
                    out[mask.to(self.device)].float(), self.y[nodes][mask].to(self.device)
                )
            with_auxiliary_loss(model, loss).backward()
            optimizer.step()
            total += loss.item() * int(mask.sum())
            count += int(mask.sum())
            if progress is not None:
                progress(step + 1, len(steps))
        return total / max(count, 1)
