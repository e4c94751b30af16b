"""Speed against the official computation (make bench; results in bench/speed_results.json).
Every figure is a ratio of two computations measured in this process, alternated, on the
same cores and threads:

  cora_s    one Cora epoch of the DIFFormer-s paper cell (8 layers, hidden 64, dropout 0.2,
            Adam lr 1e-3, wd 1e-2): a training step and the evaluation forward. Ours against
            the official computation (dense input features, the adjacency rebuilt in every
            forward and transposed by autograd in every layer's backward, Q and K projected
            for every node -- our model with sparse_input=False, cache_adjacency=False,
            gram_attention=False, which equals the official class within 1e-5), ours with
            the projected attention, and ours under torch.compile
  cora_a    the same for the DIFFormer-a cell (sigmoid kernel, wd 0.1, dropout 0), and the
            attention's share against its matmul floor (4 N^2 h FLOP per layer forward)
  scaling   DIFFormer-s forward + backward at 10 k / 100 k / 1 M nodes (synthetic, Pokec's
            degree; 3 layers, hidden 128) against the training matmul floor of the official
            computation (30 N h^2 FLOP per layer) and of the Gram form (16), and the growth,
            each in a child process with glibc's allocator and with DIFFORMER_ALLOCATOR=mimalloc
  sgformer  our SGFormer against PyG's SGFormer, forward + backward at 10 k / 100 k nodes
  cell      the whole Cora DIFFormer-s cell (5 runs x 500 epochs) through train.py, wall
            time: the official computation in one process against ours with
            trainer.parallel_runs=auto, and with model.dropout_mask=fast too (--cell;
            minutes; needs the cores idle)

Needs DIFFORMER_DATA with Planetoid/Cora (../shared/data).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = {"sparse_input": False, "cache_adjacency": False, "gram_attention": False}
CELLS = {"cora_s": dict(kernel="simple", dropout=0.2, weight_decay=0.01),
         "cora_a": dict(kernel="sigmoid", dropout=0.0, weight_decay=0.1)}


def load_cora():
    from omegaconf import OmegaConf

    from difformer.data import DataRoot, load_dataset

    root = DataRoot.from_config(OmegaConf.create({
        "data_dir": os.environ.get("DIFFORMER_DATA", str(REPO.parent / "shared" / "data")),
        "cache_dir": os.environ.get("DIFFORMER_CACHE", str(REPO / "data" / "cache"))}))
    dataset, _ = load_dataset(OmegaConf.create({"name": "cora", "labels_per_class": 20,
                                                "valid_num": 500, "test_num": 1000,
                                                "shared_split": True}), root)
    return dataset


class Epoch:
    """One full-graph epoch as our loop runs it: train step, then eval forward."""

    def __init__(self, ds, kernel, dropout, weight_decay, compile=False, **model_kwargs):
        from difformer.models import DIFFormer
        from difformer.models.sparse_ops import keep_eager_under_compile

        torch.manual_seed(0)
        self.model = DIFFormer(ds.num_features, 64, ds.num_classes, num_layers=8, kernel=kernel,
                               dropout=dropout, use_weight=False, **model_kwargs)
        if compile:
            keep_eager_under_compile()
        self.forward = torch.compile(self.model) if compile else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3,
                                          weight_decay=weight_decay)
        self.x, self.edge_index, self.y = ds.x, ds.edge_index, ds.y
        self.train_idx = ds.split(0, 0).train

    def __call__(self) -> None:
        self.model.train()
        self.optimizer.zero_grad()
        out = self.forward(self.x, self.edge_index)
        F.cross_entropy(out[self.train_idx], self.y[self.train_idx]).backward()
        self.optimizer.step()
        self.model.eval()
        with torch.no_grad():
            self.forward(self.x, self.edge_index)


def alternate(fns: dict, epochs: int, repeats: int) -> dict:
    """Seconds per call of each fn: ``repeats`` rounds of ``epochs`` calls each, alternated,
    the median round kept (one warm-up round first, which also triggers compilation)."""
    rounds = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(epochs):
                fn()
            rounds[name].append((time.perf_counter() - t0) / epochs)
    return {name: sorted(r)[len(r) // 2] for name, r in rounds.items()}


def matmul_gflops(n: int, h: int) -> float:
    a, b = torch.randn(n, h), torch.randn(h, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 2 * n * n * h * 5 / (time.perf_counter() - t0) / 1e9


def bench_cora(cell: str, epochs: int, repeats: int, compile: bool) -> dict:
    ds = load_cora()
    fns = {"official": Epoch(ds, **CELLS[cell], **OFFICIAL), "ours": Epoch(ds, **CELLS[cell])}
    if CELLS[cell]["dropout"] > 0:
        fns["ours_fast_dropout"] = Epoch(ds, **CELLS[cell], dropout_mask="fast")
    if CELLS[cell]["kernel"] == "simple":  # Q and K projected for every node, as officially
        fns["ours_projected"] = Epoch(ds, **CELLS[cell], gram_attention=False)
    if CELLS[cell]["kernel"] == "sigmoid":  # O(N * chunk) memory, blocks recomputed in backward
        fns["ours_chunked"] = Epoch(ds, **CELLS[cell], attention_chunk=1024)
    if compile:
        fns["ours_compiled"] = Epoch(ds, **CELLS[cell], compile=True)
    seconds = alternate(fns, epochs, repeats)
    out = {"nodes": ds.num_nodes, "features": ds.num_features, "threads":
           torch.get_num_threads(), **{f"{k}_seconds": v for k, v in seconds.items()},
           "speedup": seconds["official"] / seconds["ours"]}
    for variant in ("compiled", "fast_dropout", "chunked", "projected"):
        if f"ours_{variant}" in seconds:
            out[f"speedup_{variant}"] = seconds["official"] / seconds[f"ours_{variant}"]
    if cell == "cora_a":
        # train forward + backward (3x) and eval forward (1x) of 8 layers: S = QK^T and S V,
        # 2 N^2 h FLOP each
        flop = 4 * 8 * 2 * 2 * ds.num_nodes ** 2 * 64
        floor = flop / (matmul_gflops(ds.num_nodes, 64) * 1e9)
        out.update(attention_floor_seconds=floor, ratio_to_attention_floor=seconds["ours"] / floor,
                   chunked_ratio_to_attention_floor=seconds["ours_chunked"] / floor)
    return out


def bench_scaling(sizes: list[int], allocators=("default", "mimalloc")) -> list[dict]:
    """Each size in a child process per allocator (LD_PRELOAD must be set at start): the
    default glibc malloc against DIFFORMER_ALLOCATOR=mimalloc (difformer.system.allocator)."""
    from difformer.system.allocator import AllocatorError, mimalloc_library

    out = []
    for allocator in allocators:
        env = {**os.environ, "DIFFORMER_ALLOCATOR": allocator}
        if allocator == "mimalloc":
            try:
                mimalloc_library()
            except AllocatorError as err:
                print(f"scaling with mimalloc: skipped ({err})", flush=True)
                continue
        rows = []
        for n in sizes:
            proc = subprocess.run([sys.executable, __file__, "--child-scaling", str(n),
                                   "--threads", str(torch.get_num_threads())], env=env,
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        for a, b in zip(rows, rows[1:]):
            b["time_over_previous"] = b["steady_step_seconds"] / a["steady_step_seconds"]
            b["nodes_over_previous"] = b["nodes"] / a["nodes"]
        out += rows
    return out


def _scaling_child(n: int, degree: int = 19) -> dict:
    """DIFFormer-s forward + backward on a full synthetic graph (Pokec's mean degree, 65
    features; 3 layers, hidden 128, the pokec pair's sizes): the adjacency build, the first
    step (which builds it) and the steady step (the cached adjacency), against the training
    matmul floor 3 x 10 N h^2 FLOP per layer at this machine's rate on that shape."""
    from difformer.system.allocator import loaded_allocator
    from difformer.data.large import synthetic_graph
    from difformer.models import DIFFormer
    from difformer.models.difformer import gcn_normalized_adjacency

    hidden, layers = 128, 3
    rate = matmul_rate(hidden)
    x, y, edge_index = synthetic_graph(n, degree * n, 65, 2, homophily=0.6, seed=0)
    edge_index = torch.cat([edge_index, torch.arange(n).repeat(2, 1)], dim=1)
    torch.manual_seed(0)
    model = DIFFormer(65, hidden, 2, num_layers=layers, kernel="simple", dropout=0.0,
                      use_weight=True)

    def step():
        model.zero_grad()
        F.cross_entropy(model(x, edge_index), y).backward()

    t0 = time.perf_counter()
    gcn_normalized_adjacency(edge_index, n)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    steady = []
    for _ in range(2 if n >= 1_000_000 else 3):
        t0 = time.perf_counter()
        step()
        steady.append(time.perf_counter() - t0)
    floor = 3 * 10 * n * hidden ** 2 * layers / rate
    # the Gram form's own products: forward [x,1]^T[x,1], x @ [M | m] and V = x Wv^T (for the
    # GCN branch), backward one, two and two of them: 16 N h^2 FLOP per layer (model.gram_attention)
    own_floor = 16 * n * hidden ** 2 * layers / rate
    peak = int(next(li for li in Path("/proc/self/status").read_text().splitlines()
                    if li.startswith("VmHWM:")).split()[1]) / 1024
    return {"allocator": loaded_allocator(), "nodes": n, "edges": int(edge_index.shape[1]),
            "build_seconds": build, "first_step_seconds": first,
            "steady_step_seconds": min(steady), "train_floor_seconds": floor,
            "ratio_to_floor": min(steady) / floor, "own_floor_seconds": own_floor,
            "ratio_to_own_floor": min(steady) / own_floor, "peak_rss_mib": peak}


def matmul_rate(hidden: int, rows: int = 65_536, repeats: int = 20) -> float:
    """FLOP/s of this machine on the layers' own matmul shape [rows, h] x [h, h]."""
    a, b = torch.randn(rows, hidden), torch.randn(hidden, hidden)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * hidden * hidden * repeats / (time.perf_counter() - t0)


def bench_sgformer(sizes: list[int], degree: int = 19) -> list[dict]:
    """Our SGFormer against PyG's ``SGFormer`` (configs sgformer / sgformer_pyg: one attention
    layer, two GCN layers, hidden 64), forward + backward on a synthetic graph, alternated."""
    import yaml

    from difformer.data.large import synthetic_graph
    from difformer.models import build_model

    def config(name):
        kwargs = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
        return kwargs.pop("name"), kwargs

    out = []
    for n in sizes:
        x, y, edge_index = synthetic_graph(n, degree * n, 65, 2, homophily=0.6, seed=0)
        edge_index = torch.cat([edge_index, torch.arange(n).repeat(2, 1)], dim=1)
        steps = {}
        for label, cfg in (("ours", "sgformer"), ("pyg", "sgformer_pyg")):
            torch.manual_seed(0)
            name, kwargs = config(cfg)
            model = build_model(name, 65, 2, **kwargs)

            def step(model=model):
                model.zero_grad()
                F.cross_entropy(model(x, edge_index), y).backward()
            steps[label] = step
        seconds = alternate(steps, epochs=1, repeats=3)
        out.append({"nodes": n, "edges": int(edge_index.shape[1]), "ours_seconds":
                    seconds["ours"], "pyg_seconds": seconds["pyg"],
                    "speedup": seconds["pyg"] / seconds["ours"]})
    return out


def bench_cell(parallel_runs: int | str = "auto", rounds: int = 2) -> dict:
    """The Cora DIFFormer-s cell through train.py: the official computation in one process
    with every core's thread, against ours with ``parallel_runs`` processes; ``rounds``
    alternated rounds (this machine's speed drifts by ~10 % over minutes), medians kept."""
    def run(*overrides) -> tuple[float, dict]:
        out = REPO / "outputs" / "bench-cell" / f"{time.time_ns()}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "train.py", "experiment=paper/table1/cora_difformer_s",
                        f"hydra.run.dir={out}", "trainer.progress=false",
                        "trainer.save_checkpoints=false", *overrides], cwd=REPO, check=True,
                       capture_output=True)
        seconds = time.perf_counter() - t0
        return seconds, json.loads((out / "summary.json").read_text())

    cores = os.cpu_count() or 1
    variants = {"official": ("model.sparse_input=false", "model.cache_adjacency=false",
                             "model.gram_attention=false", f"threads={cores}"),
                "ours": (f"trainer.parallel_runs={parallel_runs}", f"threads={cores}"),
                "fast_dropout": (f"trainer.parallel_runs={parallel_runs}", f"threads={cores}",
                                 "model.dropout_mask=fast")}
    seconds, tests = {k: [] for k in variants}, {}
    for _ in range(rounds):
        for name, overrides in variants.items():
            wall, summary = run(*overrides)
            seconds[name].append(wall)
            tests[name] = [r["test"] for r in summary["runs"]]
    median = {k: statistics.median(v) for k, v in seconds.items()}
    return {"cores": cores, "parallel_runs": parallel_runs, "rounds": rounds,
            "official_seconds": median["official"], "ours_seconds": median["ours"],
            "speedup": median["official"] / median["ours"],
            "fast_dropout_seconds": median["fast_dropout"],
            "speedup_fast_dropout": median["official"] / median["fast_dropout"],
            "all_seconds": seconds, "official_test": tests["official"],
            "ours_test": tests["ours"], "fast_dropout_test": tests["fast_dropout"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="few epochs (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--cell", action="store_true", help="also time the whole Cora cell")
    parser.add_argument("--parts", default="cora,scaling,sgformer",
                        help="comma-separated: cora, scaling, sgformer, cell")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", default=str(REPO / "bench" / "speed_results.json"))
    parser.add_argument("--child-scaling", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_scaling:
        from difformer.system.allocator import reexec_if_requested

        reexec_if_requested()  # DIFFORMER_ALLOCATOR=mimalloc: preload it (once)
        print(json.dumps(_scaling_child(args.child_scaling)))
        return 0
    # (epochs per round, rounds): a DIFFormer-a epoch takes ~2 s here, a DIFFormer-s one ~0.15 s
    sizes = {"cora_s": (2, 1), "cora_a": (1, 1)} if args.quick else \
        {"cora_s": (20, 5), "cora_a": (4, 3)}
    results = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
               platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__}
    parts = set(args.parts.split(",")) | ({"cell"} if args.cell else set())
    unknown = parts - {"cora", "scaling", "sgformer", "cell"}
    if unknown:
        raise SystemExit(f"error: --parts {', '.join(sorted(unknown))}: allowed cora, scaling, "
                         "sgformer, cell")
    for cell in CELLS if "cora" in parts else ():
        r = results[cell] = bench_cora(cell, *sizes[cell], not args.no_compile)
        line = (f"{cell}: Cora epoch ({r['threads']} thread(s)) official computation "
                f"{1e3 * r['official_seconds']:.1f} ms, ours {1e3 * r['ours_seconds']:.1f} ms "
                f"-> {r['speedup']:.2f}x")
        if "speedup_projected" in r:
            line += (f"; with model.gram_attention=false {1e3 * r['ours_projected_seconds']:.1f} "
                     f"ms -> {r['speedup_projected']:.2f}x")
        if "speedup_fast_dropout" in r:
            line += (f"; with model.dropout_mask=fast {1e3 * r['ours_fast_dropout_seconds']:.1f} "
                     f"ms -> {r['speedup_fast_dropout']:.2f}x")
        if "speedup_compiled" in r:
            line += (f"; with torch.compile {1e3 * r['ours_compiled_seconds']:.1f} ms -> "
                     f"{r['speedup_compiled']:.2f}x")
        if "ratio_to_attention_floor" in r:
            line += (f"; {r['ratio_to_attention_floor']:.2f}x the attention's matmul floor "
                     f"({1e3 * r['attention_floor_seconds']:.1f} ms), with attention_chunk=1024 "
                     f"{1e3 * r['ours_chunked_seconds']:.1f} ms = "
                     f"{r['chunked_ratio_to_attention_floor']:.2f}x")
        print(line, flush=True)
    scale = [2_000, 20_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = results["scaling"] = bench_scaling(scale) if "scaling" in parts else []
    for r in rows:
        grow = (f"; {r['time_over_previous']:.1f}x the time of {r['nodes_over_previous']:.0f}x "
                "fewer nodes" if "time_over_previous" in r else "")
        print(f"DIFFormer-s fwd+bwd at {r['nodes']:,} nodes ({r['edges']:,} edges, "
              f"{r['allocator']} allocator): steady {r['steady_step_seconds']:.2f} s = "
              f"{r['ratio_to_floor']:.2f}x the official computation's training matmul floor "
              f"({r['train_floor_seconds']:.2f} s), {r['ratio_to_own_floor']:.2f}x the Gram "
              f"form's own ({r['own_floor_seconds']:.2f} s), peak RSS {r['peak_rss_mib']:,.0f} MiB; first "
              f"step (builds the adjacency, {r['build_seconds']:.2f} s) "
              f"{r['first_step_seconds']:.2f} s{grow}", flush=True)
    rows = results["sgformer"] = bench_sgformer([2_000] if args.quick else [10_000, 100_000]) \
        if "sgformer" in parts else []
    for r in rows:
        print(f"SGFormer fwd+bwd at {r['nodes']:,} nodes: ours {r['ours_seconds']:.3f} s, PyG's "
              f"SGFormer {r['pyg_seconds']:.3f} s -> {r['speedup']:.2f}x", flush=True)
    if "cell" in parts:
        c = results["cell"] = bench_cell()
        print(f"Cora DIFFormer-s cell (5 runs x 500 epochs, {c['cores']} cores): official "
              f"computation {c['official_seconds']:.0f} s, ours with parallel_runs="
              f"{c['parallel_runs']} {c['ours_seconds']:.0f} s -> {c['speedup']:.2f}x; with "
              f"model.dropout_mask=fast {c['fast_dropout_seconds']:.0f} s -> "
              f"{c['speedup_fast_dropout']:.2f}x", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
