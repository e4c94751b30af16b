"""Graph-level benchmarks (make bench; results in bench/graph_results.json).

  hiv_epoch   one training epoch over MoleculeNet HIV's 32,901 train molecules (32 per batch,
              the models' default configs) for DIFFormer-s, GPS and the Gated Graph
              Transformer, each in a child process: seconds and peak RSS
  scaling     DIFFormer-s (4 layers, hidden 64) forward + backward per batch as the batch
              grows from 8 to 1,024 molecules: milliseconds per batch and per 1,000 nodes,
              beside the padding-free alternative (per-node outer products k_j v_j^T summed
              per graph with index_add_) in the same process; outputs checked equal

Needs DIFFORMER_DATA with moleculenet/HIV.csv (../shared/data) and rdkit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MODELS = {"difformer_s_graph": "difformer_graph", "gps": "gps", "gated_gt": "gated_gt"}


def load_hiv(model=None):
    from omegaconf import OmegaConf

    from difformer.data import DataRoot, load_dataset, prepare_for_model

    root = DataRoot.from_config(OmegaConf.create({
        "data_dir": os.environ.get("DIFFORMER_DATA", str(REPO.parent / "shared" / "data")),
        "cache_dir": os.environ.get("DIFFORMER_CACHE", str(REPO / "data" / "cache"))}))
    dataset, _ = load_dataset(OmegaConf.create({"name": "hiv"}), root)
    return dataset if model is None else prepare_for_model(dataset, model, root.cache_dir)


def model_config(config: str) -> tuple[str, dict]:
    import yaml

    kwargs = yaml.safe_load((REPO / "configs" / "model" / f"{config}.yaml").read_text())
    return kwargs.pop("name"), kwargs


def _epoch_child(config: str, limit: int | None) -> None:
    """Child process: one HIV training epoch of ``config``; prints JSON. Peak memory is this
    process's VmHWM (ru_maxrss would carry the parent's high-water mark across exec)."""
    from torch_geometric.loader import DataLoader

    from difformer.models import build_model
    from difformer.train.tasks.graph import predict
    from difformer.train.metrics import bce_masked

    torch.manual_seed(0)
    name, kwargs = model_config(config)
    probe = build_model(name, 9, 1, node_input="ogb_atom", edge_input="ogb_bond",
                        edge_channels=3, **kwargs)
    dataset = load_hiv(probe)
    train = [dataset.graphs[i] for i in dataset.split(0, 0).train.tolist()][:limit]
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
    probe.train()
    start = time.perf_counter()
    for data in DataLoader(train, batch_size=32, shuffle=True):
        optimizer.zero_grad()
        bce_masked(predict(probe, data), data.y).backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"model": config, "graphs": len(train), "seconds": seconds,
                      "peak_rss_mib": peak / 1024}))


def bench_hiv_epochs(limit: int | None) -> list[dict]:
    out = []
    for config in MODELS:
        cmd = [sys.executable, __file__, "--child-epoch", config]
        if limit:
            cmd += ["--limit", str(limit)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def outer_product_attention(qs, ks, vs, batch, num_graphs, scale):
    """The padding-free alternative: K_g^T V_g as index_add_ of per-node outer products."""
    from difformer.models.attention.batched import graph_sizes, segment_sum

    n = graph_sizes(batch, num_graphs).to(qs.dtype)
    kvs = segment_sum(torch.einsum("nhm,nhd->nhmd", ks, vs), batch, num_graphs)
    kvs = kvs * scale.view(-1, 1, 1, 1)
    k_sum = segment_sum(ks, batch, num_graphs) * scale.view(-1, 1, 1)
    numerator = torch.einsum("nhm,nhmd->nhd", qs, kvs[batch]) + segment_sum(
        vs, batch, num_graphs)[batch]
    denominator = torch.einsum("nhm,nhm->nh", qs, k_sum[batch]).unsqueeze(-1) + n[batch].view(
        -1, 1, 1)
    return numerator / denominator


def bench_scaling(batch_sizes: list[int], repeats: int) -> list[dict]:
    import difformer.models.attention.batched as ga
    from torch_geometric.loader import DataLoader

    from difformer.models import build_model
    from difformer.train.tasks.graph import predict

    dataset = load_hiv()
    name, kwargs = model_config("difformer_s_graph")
    torch.manual_seed(0)
    model = build_model(name, 9, 1, node_input="ogb_atom", **{**kwargs, "dropout": 0.0})
    ours = ga.batched_linear_attention
    rows = []
    for size in batch_sizes:
        data = next(iter(DataLoader(dataset.graphs[:size], batch_size=size)))

        def run(impl):
            ga.batched_linear_attention = impl
            try:
                times = []
                for _ in range(repeats):
                    model.zero_grad()
                    t0 = time.perf_counter()
                    out = predict(model, data)
                    out.sum().backward()
                    times.append(time.perf_counter() - t0)
                return sorted(times)[len(times) // 2], out.detach()
            finally:
                ga.batched_linear_attention = ours

        def alternative(qs, ks, vs, batch, num_graphs, scale=None, self_value=False, **_):
            return outer_product_attention(qs, ks, vs, batch, num_graphs, scale)

        t_ours, out_ours = run(ours)
        t_alt, out_alt = run(alternative)
        assert torch.allclose(out_ours, out_alt, atol=1e-5), "the two computations differ"
        nodes = int(data.num_nodes)
        rows.append({"graphs": size, "nodes": nodes, "ours_ms": 1e3 * t_ours,
                     "ours_ms_per_1k_nodes": 1e6 * t_ours / nodes,
                     "outer_product_ms": 1e3 * t_alt, "speedup": t_alt / t_ours})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "graph_results.json"))
    parser.add_argument("--limit", type=int, default=None, help="train graphs per epoch")
    parser.add_argument("--child-epoch", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child_epoch:
        _epoch_child(args.child_epoch, args.limit)
        return 0
    results = {"machine": f"{platform.node()} ({os.cpu_count()} cores), {platform.processor()}",
               "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "threads": args.threads}
    results["hiv_epoch"] = bench_hiv_epochs(args.limit)
    for r in results["hiv_epoch"]:
        print(f"HIV epoch ({r['graphs']:,} molecules, 32 per batch) {r['model']}: "
              f"{r['seconds']:.1f}s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    results["scaling"] = bench_scaling([8, 32, 128, 512, 1024], repeats=5)
    for r in results["scaling"]:
        print(f"DIFFormer-s fwd+bwd, {r['graphs']:>4} molecules ({r['nodes']:>6} nodes): "
              f"{r['ours_ms']:7.1f} ms ({r['ours_ms_per_1k_nodes']:.1f} ms per 1k nodes); "
              f"outer products {r['outer_product_ms']:7.1f} ms -> {r['speedup']:.1f}x", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
