"""Benchmarks (make bench): each comparison is measured side by side in this process (or in
child processes for peak memory) and printed as a ratio; results go to bench/results.json.

  batching     per-chunk torch_geometric.utils.subgraph over the full edge list (the official
               way) vs difformer's one-pass partition, synthetic Pokec-size graph, B = 100,000
  sigmoid_mem  DIFFormer-a layer forward + backward at N = 19,717 (PubMed size): peak RSS of
               the dense attention vs the row-chunked one
  epoch        one DIFFormer-s mini-batch training epoch on the synthetic Pokec-size graph
               (paper pokec settings: 3 layers, hidden 128, B = 100,000): seconds and peak RSS,
               against the matmul floor 10 * N * h^2 FLOP per layer at the measured matmul rate
  tolokers     DIFFormer-s on tolokers (real files, DIFFORMER_DATA): full-graph epoch vs
               mini-batch epoch
  import       ``from difformer.models import DIFFormer`` in a fresh interpreter, against
               ``import torch`` alone (the median of 5 of each, alternated)
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
    from difformer.data.large import synthetic_graph as generate

    return generate(num_nodes, num_edges, 65, 2, homophily=0.6, seed=seed)[2]


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


def matmul_gflops(rows: int = 65_536, hidden: int = 128, repeats: int = 20) -> float:
    """This machine's float32 rate on the layer's own matmul shape [rows, h] x [h, h]."""
    a, b = torch.randn(rows, hidden), torch.randn(hidden, hidden)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * hidden * hidden * repeats / (time.perf_counter() - t0) / 1e9


def _epoch_child(num_nodes: int, num_edges: int, batch_size: int) -> None:
    """Child process: one DIFFormer-s mini-batch epoch (pokec pair settings); prints JSON."""
    from omegaconf import OmegaConf

    from difformer.data.large import load_synthetic
    from difformer.models import DIFFormer
    from difformer.train.metrics import cross_entropy
    from difformer.train.minibatch import RandomPartitionStep

    ds = load_synthetic("synthetic", OmegaConf.create(
        {"num_nodes": num_nodes, "num_edges": num_edges}), None)
    hidden, layers = 128, 3
    torch.manual_seed(0)
    model = DIFFormer(ds.num_features, hidden, ds.num_classes, num_layers=layers,
                      kernel="simple", dropout=0.0, use_weight=True, use_graph=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    step = RandomPartitionStep(ds.x, ds.y, ds.edge_index, ds.split(0, 0).train, batch_size,
                               cross_entropy, torch.device("cpu"), seed=0)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    step(model, optimizer)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    rate = matmul_gflops(hidden=hidden)
    floor = 10 * num_nodes * hidden ** 2 * layers / (rate * 1e9)
    print(json.dumps({"nodes": num_nodes, "edges": int(ds.edge_index.shape[1]),
                      "batch_size": batch_size, "hidden": hidden, "layers": layers,
                      "seconds": seconds, "peak_rss_mib": peak / 1024,
                      "delta_rss_mib": (peak - base) / 1024, "matmul_gflops": rate,
                      "floor_forward_seconds": floor, "ratio_to_forward_floor": seconds / floor,
                      "ratio_to_train_floor": seconds / (3 * floor)}))


def bench_epoch(num_nodes: int, num_edges: int, batch_size: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child-epoch", str(num_nodes),
                           str(num_edges), str(batch_size)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_tolokers(batch_size: int, epochs: int) -> dict | None:
    import os

    from omegaconf import OmegaConf

    from difformer.data import DataRoot, DatasetUnavailable, load_dataset
    from difformer.models import DIFFormer
    from difformer.train.metrics import cross_entropy
    from difformer.train.minibatch import RandomPartitionStep

    data_dir = os.environ.get("DIFFORMER_DATA") or str(REPO / "data")
    root = DataRoot(Path(data_dir), Path(os.environ.get("DIFFORMER_CACHE") or REPO / "data"),
                    offline=True)
    try:
        ds, _ = load_dataset(OmegaConf.create({"name": "tolokers"}), root)
    except DatasetUnavailable as err:
        print(f"tolokers: skipped ({err})")
        return None
    train = ds.split(0, 0).train
    torch.manual_seed(0)
    model = DIFFormer(ds.num_features, 64, 2, num_layers=2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    step = RandomPartitionStep(ds.x, ds.y, ds.edge_index, train, batch_size, cross_entropy,
                               torch.device("cpu"))

    def full_epoch():
        model.train()
        optimizer.zero_grad()
        cross_entropy(model(ds.x, ds.edge_index)[train], ds.y[train]).backward()
        optimizer.step()

    times = {}
    for name, fn in (("fullgraph", full_epoch), ("minibatch", lambda: step(model, optimizer))):
        fn()  # warm-up
        t0 = time.perf_counter()
        for _ in range(epochs):
            fn()
        times[name] = (time.perf_counter() - t0) / epochs
    return {"nodes": ds.num_nodes, "edges": int(ds.edge_index.shape[1]),
            "batch_size": batch_size, "fullgraph_seconds": times["fullgraph"],
            "minibatch_seconds": times["minibatch"],
            "minibatch_over_fullgraph": times["minibatch"] / times["fullgraph"]}


def bench_import(repeats: int = 5) -> dict:
    """Seconds for a fresh interpreter to import torch, and torch + DIFFormer (alternated)."""
    def once(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        return time.perf_counter() - start

    torch_only, encoder = [], []
    for _ in range(repeats):
        torch_only.append(once("import torch"))
        encoder.append(once("import torch; from difformer.models import DIFFormer"))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"torch_seconds": median(torch_only), "encoder_seconds": median(encoder),
            "beyond_torch_seconds": median(encoder) - median(torch_only)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    parser.add_argument("--child-sigmoid", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-epoch", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_epoch:
        _epoch_child(*args.child_epoch)
        return 0
    if args.child_sigmoid:
        n, hidden, chunk = args.child_sigmoid
        _sigmoid_child(n, hidden, chunk or None)
        return 0
    if args.quick:
        sizes = dict(batching=(20_000, 300_000, 2_000), sigmoid=(2_000, 64, 256),
                     epoch=(20_000, 300_000, 2_000), tolokers=(2_000, 1))
    else:
        sizes = dict(batching=(1_632_803, 30_622_564, 100_000), sigmoid=(19_717, 64, 1_024),
                     epoch=(1_632_803, 30_622_564, 100_000), tolokers=(2_000, 3))
    results = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
               platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    results["import"] = i = bench_import()
    print(f"import: torch {i['torch_seconds']:.2f}s, torch + difformer.models.DIFFormer "
          f"{i['encoder_seconds']:.2f}s -> {i['beyond_torch_seconds']:.2f}s beyond torch",
          flush=True)
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
    results["epoch"] = e = bench_epoch(*sizes["epoch"])
    print(f"DIFFormer-s epoch ({e['nodes']:,} nodes, {e['edges']:,} edges, B={e['batch_size']:,}, "
          f"L={e['layers']}, h={e['hidden']}): {e['seconds']:.1f}s, peak RSS "
          f"{e['peak_rss_mib']:.0f} MiB; matmul {e['matmul_gflops']:.0f} GFLOP/s -> forward "
          f"floor {e['floor_forward_seconds']:.1f}s: {e['ratio_to_forward_floor']:.1f}x the "
          f"forward floor, {e['ratio_to_train_floor']:.1f}x the training floor (3x)", flush=True)
    t = results["tolokers"] = bench_tolokers(*sizes["tolokers"])
    if t is not None:
        print(f"tolokers DIFFormer-s epoch: full graph {t['fullgraph_seconds']:.2f}s, mini-batch "
              f"(B={t['batch_size']:,}) {t['minibatch_seconds']:.2f}s -> "
              f"{t['minibatch_over_fullgraph']:.2f}x the full-graph time", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
