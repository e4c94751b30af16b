"""Attention kernels: one graph (kernels), within each graph of a batch (batched), the Gram form
(gram), and PyG's attentions fixed for batches (pyg_fixes)."""
