"""Random-partition mini-batches (official ``main-batch.py``), built in one pass over the edges.

Each epoch a random permutation of all N nodes is cut into ceil(N / B) chunks; each chunk is
trained on as if it were the whole graph: its induced subgraph, attention over the chunk only,
the loss on the chunk's train nodes, one optimizer step per chunk.

The official script calls ``torch_geometric.utils.subgraph`` once per chunk over the full edge
list (O(E) per chunk) and gathers features in permutation order, which PyG 2.1-2.3 relabels in
sorted order instead, silently pairing nodes with the wrong features (reference §7 item 1).
Here a node's local index *is* its position in the chunk, so the features ``x[chunk]`` match the
relabelled edges by construction, and all chunks of an epoch come from one O(E) pass.
"""
from __future__ import annotations

import torch
from torch import Tensor


def partition_subgraphs(edge_index: Tensor, perm: Tensor, batch_size: int
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
    small = (torch.uint8 if num_chunks <= 256 else torch.int16 if num_chunks <= 32768
             else torch.int32)
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


class RandomPartitionStep:
    """One epoch of mini-batch steps over a fresh random partition."""

    def __init__(self, x: Tensor, y: Tensor, edge_index: Tensor, train_idx: Tensor,
                 batch_size: int, loss_fn, device: torch.device):
        # The graph stays where it is (CPU for large graphs); chunks move to the device.
        self.x, self.y, self.edge_index = x, y, edge_index
        self.is_train = torch.zeros(x.shape[0], dtype=torch.bool)
        self.is_train[train_idx.cpu()] = True
        self.batch_size, self.loss_fn, self.device = batch_size, loss_fn, device

    def __call__(self, model, optimizer) -> float:
        model.train()
        perm = torch.randperm(self.x.shape[0])
        total, count = 0.0, 0
        for nodes, edges in partition_subgraphs(self.edge_index, perm, self.batch_size):
            mask = self.is_train[nodes]
            if not bool(mask.any()):
                continue
            optimizer.zero_grad()
            out = model(self.x[nodes].to(self.device), edges.to(self.device))
            loss = self.loss_fn(out[mask.to(self.device)], self.y[nodes][mask].to(self.device))
            loss.backward()
            optimizer.step()
            total += loss.item() * int(mask.sum())
            count += int(mask.sum())
        return total / max(count, 1)
