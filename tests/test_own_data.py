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


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
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
    proc = train_py("mode=eval", "checkpoint=runs/mine/checkpoints/run0.pt", "dataset=npz",
                    "dataset.path=my_graph.npz", "hydra.run.dir=runs/mine-eval2", cwd=tmp_path,
                    check=False)
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
    assert f"error: {tmp_path / 'bad.npz'}: the file needs arrays 'x' and 'y' (has x)" in proc.stderr
    assert proc.returncode == 2 and not (tmp_path / "b").exists()  # bad data leaves no run dir


def test_your_own_model_and_loader_classes_without_a_fork(tmp_path):
    (tmp_path / "mine.py").write_text(
        "import numpy as np, torch\n"
        "from difformer.data import NodeDataset\n"
        "from difformer.data.preprocess import self_loops\n"
        "from difformer.data.splits import RandomFractionSplit\n"
        "class TwoLayer(torch.nn.Module):\n"
        "    def __init__(self, in_channels, out_channels, width=16):\n"
        "        super().__init__()\n"
        "        self.net = torch.nn.Sequential(torch.nn.Linear(in_channels, width),\n"
        "                                       torch.nn.ReLU(), torch.nn.Linear(width, out_channels))\n"
        "    def forward(self, x, edge_index=None):\n"
        "        return self.net(x)\n"
        "def blobs(name, opts, root):\n"
        "    g = torch.Generator().manual_seed(int(opts.blob_seed))\n"
        "    y = torch.arange(300) % 3\n"
        "    x = torch.randn(300, 4, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 4)\n"
        "    return NodeDataset(name=name, x=x, y=y, edge_index=self_loops(300), num_classes=3,\n"
        "                       splits=RandomFractionSplit(torch.arange(300), 0.5, 0.25),\n"
        "                       has_graph=False)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "model=custom",
                           "model._target_=mine.TwoLayer", "+model.width=32", "dataset=custom",
                           "dataset._target_=mine.blobs", "+dataset.blob_seed=1", "trainer.runs=1",
                           "trainer.epochs=60", "optim.lr=0.05", f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "mine.TwoLayer" and summary["test_mean"] >= 0.7  # chance: 0.33
    ckpt = torch.load(run_dir / "checkpoints/run0.pt", weights_only=True)
    assert ckpt["model"]["kwargs"]["width"] == 32
    evaluate = [sys.executable, str(REPO / "train.py"), "mode=eval",
                f"checkpoint={run_dir / 'checkpoints/run0.pt'}"]
    # the checkpoint names code: imported only when the command line names it too
    proc = subprocess.run([*evaluate, f"hydra.run.dir={tmp_path / 'refused'}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {run_dir / 'checkpoints/run0.pt'} names the model class 'mine.TwoLayer', "
        "which is not one of this package's models: pass model=custom "
        "model._target_=mine.TwoLayer to import it, or add eval_trust_checkpoint=true if you "
        "trust this file\n")
    proc = subprocess.run([*evaluate, "model=custom", "model._target_=mine.TwoLayer",
                           "dataset=custom", "dataset._target_=mine.blobs",
                           "+dataset.blob_seed=1", f"hydra.run.dir={tmp_path / 'eval'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "eval/eval.json").read_text())["test"] == \
        summary["runs"][0]["test"]


def test_loading_a_pyg_file_keeps_pyg_own_safe_globals(tmp_path):
    """PyG admits its Data class for weights-only loads at import; reading a user's file must
    not take that away (torch's scoped safe_globals would, breaking every later PyG cache)."""
    from torch_geometric.data import Data
    from omegaconf import OmegaConf

    from difformer.data import DataRoot, load_dataset

    x, y, edge_index = graph()
    torch.save(Data(x=torch.tensor(x), y=torch.tensor(y)), tmp_path / "g.pt")
    opts = OmegaConf.create({"name": "pyg", "path": str(tmp_path / "g.pt"), "undirected": True})
    load_dataset(opts, DataRoot(tmp_path, tmp_path, True))
    torch.save((Data(x=torch.ones(2, 2)).to_dict(), None, Data), tmp_path / "processed.pt")
    assert torch.load(tmp_path / "processed.pt", weights_only=True)[2] is Data
