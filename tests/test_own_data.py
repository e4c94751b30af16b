"""Your own graph: npz, PyG and CSV files end to end, with eval mode and a changed file."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, train_py


def readme_example() -> tuple[str, list[str]]:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- own-graph:start -->", 1)[1].split("<!-- own-graph:end -->", 1)[0]
    python = block.split("```python", 1)[1].split("```", 1)[0]
    bash = block.split("```bash", 1)[1].split("```", 1)[0]
    return python, [line for line in bash.strip().splitlines() if line.strip()]


def test_the_readme_example_trains_and_evaluates(tmp_path):
    python, commands = readme_example()
    subprocess.run([sys.executable, "-c", python], cwd=tmp_path, check=True, timeout=120)
    for command in commands:
        args = shlex.split(command)
        assert args[:2] == ["python", "train.py"]
        proc = train_py(*args[2:], cwd=tmp_path)
    summary = json.loads((tmp_path / "runs/mine/summary.json").read_text())
    assert summary["metric"] == "accuracy" and summary["test_mean"] >= 0.9, summary
    result = json.loads((tmp_path / "runs/mine-eval/eval.json").read_text())
    assert result["test"] == summary["runs"][0]["test"] and result["mismatches"] == []
    # the file changes: the checkpoint no longer matches its data, and says so
    data = dict(np.load(tmp_path / "my_graph.npz"))
    data["x"][0, 0] += 1.0
    np.savez(tmp_path / "my_graph.npz", **data)
    proc = train_py("mode=eval", "checkpoint=runs/mine/checkpoints/run0.pt",
                    "hydra.run.dir=runs/mine-eval2", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "does not match" in proc.stderr and "x: checkpoint=" in proc.stderr


def graph(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n // 3)
    x = (rng.normal(size=(n, 8)) + y[:, None]).astype(np.float32)
    src, dst = rng.integers(0, n, (2, 800))
    keep = y[src] == y[dst]
    return x, y, np.stack([src[keep], dst[keep]])


def test_a_pyg_data_file_with_its_own_masks(tmp_path):
    from torch_geometric.data import Data

    x, y, edge_index = graph()
    part = torch.arange(120) % 4  # every class in every part
    masks = {"train": part == 0, "val": part == 1, "test": part >= 2}
    data = Data(x=torch.tensor(x), y=torch.tensor(y), edge_index=torch.tensor(edge_index),
                train_mask=masks["train"], val_mask=masks["val"], test_mask=masks["test"])
    torch.save(data, tmp_path / "g.pt")
    train_py("dataset=pyg", f"dataset.path={tmp_path / 'g.pt'}", "model=gcn", "trainer.runs=1",
             "trainer.epochs=30", f"hydra.run.dir={tmp_path / 'run'}")
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["split"] == "1 splits from the file, run i uses split i"
    assert summary["test_mean"] >= 0.8
    from difformer.data import DataRoot, load_dataset
    from omegaconf import OmegaConf

    opts = OmegaConf.create({"name": "pyg", "path": str(tmp_path / "g.pt"), "undirected": True})
    dataset, _ = load_dataset(opts, DataRoot(tmp_path, tmp_path, True))
    split = dataset.split(0, 0)
    assert torch.equal(split.valid, torch.arange(1, 120, 4))  # val_mask is the valid split


def test_csv_regression(tmp_path):
    x, y, edge_index = graph()
    target = x.sum(axis=1) * 0.1 + 0.5  # a float target: regression
    rows = ["id,label," + ",".join(f"f{i}" for i in range(8))]
    rows += [f"n{i},{target[i]:.6f}," + ",".join(f"{v:.6f}" for v in x[i]) for i in range(120)]
    (tmp_path / "nodes.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "edges.csv").write_text("source,target\n" + "".join(
        f"n{s},n{t}\n" for s, t in edge_index.T))
    train_py("dataset=csv", f"dataset.nodes={tmp_path / 'nodes.csv'}",
             f"dataset.edges={tmp_path / 'edges.csv'}", "model=mlp", "trainer.runs=1",
             "trainer.epochs=60", f"hydra.run.dir={tmp_path / 'run'}")
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["metric"] == "mse" and summary["higher_is_better"] is False
    assert summary["test_mean"] < float(np.var(target)), summary  # beats predicting the mean


def test_own_data_errors_name_the_problem(tmp_path):
    proc = train_py("dataset=npz", f"hydra.run.dir={tmp_path / 'a'}", check=False)
    assert proc.stderr.strip() == "error: dataset.path must be set: add dataset.path=... to " \
                                  "the command line"
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2)))
    proc = train_py("dataset=npz", f"dataset.path={tmp_path / 'bad.npz'}",
                    f"hydra.run.dir={tmp_path / 'b'}", check=False)
    assert "error: dataset=npz: the file needs arrays 'x' and 'y' (has x)" in proc.stderr
