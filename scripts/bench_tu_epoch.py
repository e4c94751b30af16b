"""ENZYMES epoch: our graph pipeline against PyG's own GIN-on-TU loop (make bench; results in
bench/tu_epoch_results.json).

Both sides train the same model object (PyG's ``GIN`` as in its ``examples/gin.py``: 5 layers of
32, sum pooling, a linear head) on the same standardised ENZYMES graphs of fold 0, 32 graphs per
batch, Adam at 1e-2, and after each training pass score the train, valid and test graphs (what
``train.py`` does per epoch with ``trainer.eval_train=true``, and what the PyG example does).
Ours: :class:`~difformer.train.tasks.graph.GraphEpoch` and ``GraphTask.evaluate``; PyG's: the
example's loop written out (``DataLoader(shuffle=True)``, zero_grad, forward, cross entropy,
backward, step; then ``argmax`` accuracy per loader). Epochs alternate between the two sides in
one process; the medians are compared. A second pair puts our default ENZYMES GIN
(``model=gin_graph``: OGB's 5 layers of 300 with BatchNorm) through the same two loops, to show
what the model, not the loop, costs.

    python scripts/bench_tu_epoch.py [--epochs 7] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


class PyGGIN(nn.Module):
    """PyG's examples/gin.py model, with the forward our loop calls."""

    level = "graph"

    def __init__(self, in_channels: int, hidden: int, out_channels: int, layers: int = 5):
        super().__init__()
        from torch_geometric.nn import MLP
        from torch_geometric.nn.models import GIN

        self.gnn = GIN(in_channels, hidden, layers)
        self.head = MLP([hidden, hidden, out_channels], norm=None, dropout=0.5)

    def forward(self, x, edge_index, batch=None, **_):
        from torch_geometric.nn import global_add_pool

        return self.head(global_add_pool(self.gnn(x, edge_index), batch))


def task_and_split():
    from hydra import compose, initialize_config_dir

    from difformer.config.core import CONFIG_DIR
    from difformer.config.settings import build_probe, resolve
    from difformer.modes.train import load_data, task_of
    from difformer.train.tasks import TASKS

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper/enzymes/enzymes_gin_graph",
                                          "trainer.runs=1"])
    settings = resolve(cfg, TASKS)
    probe = build_probe(settings)
    dataset, spec = load_data(settings, probe)
    _, task_cls = task_of(settings)
    task = task_cls(dataset, spec, settings, torch.device("cpu"))
    return task, task.split(0)


def pyg_epoch(model, optimizer, train, valid, test) -> float:
    from torch_geometric.loader import DataLoader

    t0 = time.perf_counter()
    model.train()
    for data in DataLoader(train, batch_size=32, shuffle=True):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index, data.batch), data.y)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for graphs in (train, valid, test):
            correct = 0
            for data in DataLoader(graphs, batch_size=32):
                correct += int((model(data.x, data.edge_index, data.batch).argmax(-1) == data.y)
                               .sum())
    return time.perf_counter() - t0


def our_epoch(runner, task, model, split, epoch: int) -> float:
    t0 = time.perf_counter()
    runner.train_epoch(epoch)
    task.evaluate(model, split)
    return time.perf_counter() - t0


def pair(make_model, task, split, epochs: int) -> dict:
    torch.manual_seed(0)
    ours_model, theirs_model = make_model(), make_model()
    theirs_model.load_state_dict(ours_model.state_dict())
    ours_opt = torch.optim.Adam(ours_model.parameters(), lr=1e-2)
    theirs_opt = torch.optim.Adam(theirs_model.parameters(), lr=1e-2)
    runner = task.epoch_runner(ours_model, ours_opt, split, run=0)
    train, valid, test = (task._graphs(split, p) for p in ("train", "valid", "test"))  # noqa: SLF001
    ours, theirs = [], []
    for epoch in range(epochs + 1):  # epoch 0 warms both up and is not counted
        o = our_epoch(runner, task, ours_model, split, epoch)
        t = pyg_epoch(theirs_model, theirs_opt, train, valid, test)
        if epoch:
            ours.append(o)
            theirs.append(t)
    return {"ours_s": statistics.median(ours), "pyg_s": statistics.median(theirs),
            "ratio": statistics.median(ours) / statistics.median(theirs),
            "ours_all_s": ours, "pyg_all_s": theirs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from difformer.models.graph_level import MolGNN

    task, split = task_and_split()
    channels_in, channels_out = task.channels()
    results = {
        "pyg_gin_32": pair(lambda: PyGGIN(channels_in, 32, channels_out), task, split,
                           args.epochs),
        "gin_graph_300": pair(lambda: MolGNN(channels_in, 300, channels_out), task, split,
                              args.epochs),
    }
    for name, r in results.items():
        print(f"{name}: ours {r['ours_s']:.3f} s/epoch, PyG's loop {r['pyg_s']:.3f} s/epoch, "
              f"ratio {r['ratio']:.2f}x (medians of {args.epochs})", flush=True)
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "what": "ENZYMES fold 0, one epoch = train pass + scoring train/valid/test",
        **results,
    }
    path = REPO / "bench" / "tu_epoch_results.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
