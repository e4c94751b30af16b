"""Stacked seeds, measured (make bench; results in bench/stacked_results.json): the R runs of
the Cora DIFFormer-s cell as one model whose parameters carry a leading run dimension, one
batched forward and backward per epoch, against R separate models (ours, cached adjacency and
CSR features) stepped one after the other, in this process, alternated.

Only a measurement: the stacked forward below is written for the cell's configuration (simple
kernel, no Wv, GCN branch, LayerNorm, alpha-residual, one head) and checked against the R
separate models with dropout off (outputs within 1e-5). It is not a training mode of the package
(the run loop trains one model per run); see the README's Speed section for the figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import REPO, alternate, load_cora  # noqa: E402

from difformer.models import DIFFormer  # noqa: E402
from difformer.models.difformer import gcn_normalized_adjacency  # noqa: E402
from difformer.models.sparse_ops import SparseOperand, sparse_product  # noqa: E402


def stacked_parameters(models: list[DIFFormer]) -> dict:
    """name -> [R, ...] leaf tensors (a copy of the models' weights)."""
    names = [n for n, _ in models[0].named_parameters()]
    return {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
            .requires_grad_() for n in names}


def layer_norm(z, weight, bias):
    """z [R, N, h] with per-run affine weight/bias [R, h]."""
    return F.layer_norm(z, z.shape[-1:]) * weight[:, None] + bias[:, None]


def linear(z, weight, bias):
    """Per-run ``z @ W^T + b``: z [R, N, i], weight [R, o, i], bias [R, o] -> [R, N, o]."""
    return torch.baddbmm(bias[:, None], z, weight.transpose(1, 2))


def stacked_forward(p: dict, x: SparseOperand, adj: SparseOperand, layers: int,
                    alpha: float = 0.5) -> torch.Tensor:
    """The R models' logits [R, N, C] in one pass (eval-mode arithmetic: no dropout). Runs
    lead ([R, N, h]: batched matmuls without copies); the two sparse products read all runs
    at once as [N, R*h]."""
    runs, hidden = p["fcs.0.weight"].shape[:2]
    n = adj.shape[0]
    w0 = p["fcs.0.weight"].permute(2, 0, 1).reshape(-1, runs * hidden)  # [F, R*h]
    z = sparse_product(x, w0).view(n, runs, hidden).transpose(0, 1) + p["fcs.0.bias"][:, None]
    z = F.relu(layer_norm(z, p["bns.0.weight"], p["bns.0.bias"]))
    for i in range(layers):
        q = linear(z, p[f"convs.{i}.Wq.weight"], p[f"convs.{i}.Wq.bias"])
        k = linear(z, p[f"convs.{i}.Wk.weight"], p[f"convs.{i}.Wk.bias"])
        v = z
        scale = 1.0 / (q.square().sum((1, 2)).sqrt() * k.square().sum((1, 2)).sqrt())  # [R]
        kvs = torch.bmm(k.transpose(1, 2), v) * scale[:, None, None]  # [R, h, h]
        k_sum = k.sum(1) * scale[:, None]  # [R, h]
        numerator = torch.baddbmm(v.sum(1, keepdim=True), q, kvs)
        attention = numerator / (torch.bmm(q, k_sum[:, :, None]) + n)
        gcn = sparse_product(adj, v.transpose(0, 1).reshape(n, -1)).view(n, runs, hidden)
        out = alpha * (attention + gcn.transpose(0, 1)) + (1 - alpha) * z
        z = layer_norm(out, p[f"bns.{i + 1}.weight"], p[f"bns.{i + 1}.bias"])
    return linear(z, p["fcs.1.weight"], p["fcs.1.bias"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "stacked_results.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_cora()
    layers, train = 8, ds.split(0, 0).train
    models = []
    for r in range(args.runs):
        torch.manual_seed(r)
        models.append(DIFFormer(ds.num_features, 64, ds.num_classes, num_layers=layers,
                                dropout=0.0, use_weight=False))
    params = stacked_parameters(models)
    x = SparseOperand(ds.x.to_sparse_csr())
    adj = SparseOperand(gcn_normalized_adjacency(ds.edge_index, ds.num_nodes))
    with torch.no_grad():
        separate = torch.stack([m.eval()(ds.x, ds.edge_index) for m in models])
        stacked = stacked_forward(params, x, adj, layers)
    error = (stacked - separate).abs().max().item()
    assert error < 1e-5, error
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=0.01) for m in models]
    stacked_optimizer = torch.optim.Adam(params.values(), lr=1e-3, weight_decay=0.01)

    def separate_epoch():
        for model, optimizer in zip(models, optimizers):
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(ds.x, ds.edge_index)[train], ds.y[train]).backward()
            optimizer.step()

    def stacked_epoch():
        stacked_optimizer.zero_grad()
        logits = stacked_forward(params, x, adj, layers)[:, train]  # [R, T, C]
        F.cross_entropy(logits.permute(1, 2, 0), ds.y[train, None].expand(-1, args.runs),
                        reduction="none").mean(0).sum().backward()  # each run its own mean
        stacked_optimizer.step()

    seconds = alternate({"separate": separate_epoch, "stacked": stacked_epoch},
                        *((2, 1) if args.quick else (10, 5)))
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "threads": 1,
           "runs": args.runs, "max_abs_difference": error,
           "separate_seconds": seconds["separate"], "stacked_seconds": seconds["stacked"],
           "speedup": seconds["separate"] / seconds["stacked"]}
    print(f"stacked seeds: {args.runs} Cora DIFFormer-s runs (8 x 64, no dropout), one training "
          f"step each: separate models {1e3 * out['separate_seconds']:.1f} ms, stacked "
          f"{1e3 * out['stacked_seconds']:.1f} ms -> {out['speedup']:.2f}x (outputs within "
          f"{error:.1e})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
