"""Benchmarks (make bench): each comparison is measured side by side in this process (or in
child processes for peak memory) and printed as a ratio; results go to bench/results.json.

  batching     per-chunk torch_geometric.utils.subgraph over the full edge list (the official
               way) vs difformer's one-pass partition, synthetic Pokec-size graph, B = 100,000
  sigmoid_mem  DIFFormer-a layer forward + backward at N = 19,717 (PubMed size): peak RSS of
               the dense attention vs the row-chunked one
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def synthetic_graph(num_nodes: int, num_edges: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_nodes, (2, num_edges), generator=g)


def bench_batching(num_nodes: int, num_edges: int, batch_size: int) -> dict:
    from torch_geometric.utils import subgraph

    from difformer.train.minibatch import partition_subgraphs

    edge_index = synthetic_graph(num_nodes, num_edges)
    perm = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    official = [subgraph(chunk, edge_index, relabel_nodes=True, num_nodes=num_nodes)[0]
                for chunk in perm.split(batch_size)]
    t_official = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = partition_subgraphs(edge_index, perm, batch_size)
    t_ours = time.perf_counter() - t0
    assert sum(e.shape[1] for e in official) == sum(e.shape[1] for _, e in ours)
    return {"nodes": num_nodes, "edges": num_edges, "batch_size": batch_size,
            "chunks": len(ours), "official_seconds": t_official, "ours_seconds": t_ours,
            "speedup": t_official / t_ours}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _sigmoid_child(n: int, hidden: int, chunk: int | None) -> None:
    """Run in a child process: one DIFFormer-a layer forward + backward; print the peak RSS
    reached during it above the RSS before it (Linux: VmHWM reset through clear_refs)."""
    from difformer.models.difformer import DIFFormerConv

    torch.manual_seed(0)
    conv = DIFFormerConv(hidden, hidden, kernel="sigmoid", use_graph=False, use_weight=True,
                         attention_chunk=chunk)
    x = torch.randn(n, hidden, requires_grad=True)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    conv(x).square().sum().backward()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_rss_mib": peak / 1024, "delta_rss_mib": (peak - base) / 1024,
                      "seconds": seconds}))


def bench_sigmoid_memory(n: int, hidden: int, chunk: int) -> dict:
    out = {"nodes": n, "hidden": hidden, "chunk": chunk}
    for name, c in (("dense", None), ("chunked", chunk)):
        proc = subprocess.run([sys.executable, __file__, "--child-sigmoid", str(n), str(hidden),
                               str(c or 0)], capture_output=True, text=True, check=True)
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["memory_ratio"] = out["dense"]["delta_rss_mib"] / out["chunked"]["delta_rss_mib"]
    out["time_ratio_chunked_over_dense"] = out["chunked"]["seconds"] / out["dense"]["seconds"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    parser.add_argument("--child-sigmoid", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_sigmoid:
        n, hidden, chunk = args.child_sigmoid
        _sigmoid_child(n, hidden, chunk or None)
        return 0
    if args.quick:
        sizes = dict(batching=(20_000, 300_000, 2_000), sigmoid=(2_000, 64, 256))
    else:
        sizes = dict(batching=(1_632_803, 30_622_564, 100_000), sigmoid=(19_717, 64, 1_024))
    results = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
               platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    results["batching"] = bench_batching(*sizes["batching"])
    b = results["batching"]
    print(f"batching ({b['nodes']:,} nodes, {b['edges']:,} edges, B={b['batch_size']:,}): "
          f"official per-chunk subgraph {b['official_seconds']:.2f}s, ours "
          f"{b['ours_seconds']:.2f}s -> {b['speedup']:.1f}x faster", flush=True)
    results["sigmoid_memory"] = s = bench_sigmoid_memory(*sizes["sigmoid"])
    print(f"DIFFormer-a layer fwd+bwd at N={s['nodes']:,}: dense +{s['dense']['delta_rss_mib']:.0f} "
          f"MiB, chunked ({s['chunk']}) +{s['chunked']['delta_rss_mib']:.0f} MiB -> "
          f"{s['memory_ratio']:.1f}x less memory, {s['time_ratio_chunked_over_dense']:.2f}x the "
          "time", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
