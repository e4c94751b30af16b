"""Image/text and spatial-temporal datasets, MSE conventions, early stopping, and runs."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import DATA_DIR, needs_data, train_py
from difformer.data import DataRoot, DatasetUnavailable, load_dataset
from difformer.train.metrics import mse_paper, mse_standard
from difformer.train.tasks.base import EarlyStopping


def session_root(data_dir=DATA_DIR):
    return DataRoot(Path(data_dir), Path(os.environ["DIFFORMER_CACHE"]), offline=True)


def load(name, root, **opts):
    return load_dataset(OmegaConf.create({"name": name, **opts}), root)[0]


# ---------------------------------------------------------------- image / text

def write_features_pkl(folder, n_train, n_test, dim=12, classes=10, seed=0):
    """A features.pkl in the authors' format: a pickled dict of numpy arrays."""
    rng = np.random.default_rng(seed)
    data = {"x_train": rng.normal(size=(n_train, dim)).astype(np.float32),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.normal(size=(n_test, dim)).astype(np.float32),
            "y_test": np.arange(n_test) % classes}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "features.pkl", "wb") as f:
        pickle.dump(data, f)
    return data


def test_cifar10_keeps_the_first_rows_of_train_then_test(tmp_path):
    data = write_features_pkl(tmp_path / "cifar10", 1400, 1600)
    root = DataRoot(tmp_path, tmp_path / "cache", offline=True)
    ds = load("cifar10", root, labels_per_class=10, valid_num=1000, test_num=None,
              max_instances=1500, knn_k=None)
    assert ds.num_nodes == 1500 and ds.num_features == 12 and ds.num_classes == 10
    assert torch.equal(ds.x[:1400], torch.as_tensor(data["x_train"]))
    assert torch.equal(ds.x[1400:], torch.as_tensor(data["x_test"][:100]))
    assert not ds.has_graph and ds.edge_index.shape[1] == 1500  # self-loops only
    a, b = ds.split(0, 1), ds.split(1, 1)
    assert torch.bincount(ds.y[a.train]).tolist() == [10] * 10
    assert (len(a.valid), len(a.train) + len(a.valid) + len(a.test)) == (1000, 1500)
    assert not torch.equal(a.train, b.train)  # a new split per run


def test_stl10_uses_all_rows_and_knn_graph(tmp_path):
    write_features_pkl(tmp_path / "stl10", 700, 600)
    root = DataRoot(tmp_path, tmp_path / "cache", offline=True)
    ds = load("stl10", root, labels_per_class=10, valid_num=1000, test_num=None,
              max_instances=None, knn_k=5)
    assert ds.num_nodes == 1300 and ds.has_graph
    ei = ds.edge_index
    pairs = set(map(tuple, ei.t().tolist()))
    assert all((t, s) in pairs for s, t in pairs)  # symmetric
    assert int((ei[0] == ei[1]).sum()) == 1300  # exactly one self-loop each
    # include_self=True: each node's 5 neighbours count itself, so >= 4 others
    out_deg = torch.bincount(ei[0][ei[0] != ei[1]], minlength=1300)
    assert int(out_deg.min()) >= 4
    # the nearest other point of node 0 is among its neighbours
    d = torch.cdist(ds.x[:1], ds.x).view(-1)
    d[0] = float("inf")
    assert (0, int(d.argmin())) in pairs


def test_missing_features_say_where_the_authors_publish_them(tmp_path):
    root = DataRoot(tmp_path, tmp_path / "cache", offline=True)
    with pytest.raises(DatasetUnavailable, match=r"stl10/features.pkl.*Google Drive.*qitianwu/DIFFormer"):
        load("stl10", root, labels_per_class=10, valid_num=1000)


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("20news/20news-bydate.tar.gz")
def test_20news_from_the_offline_archive():
    ds = load("20news", session_root(), labels_per_class=100, valid_num=1000, test_num=None,
              knn_k=None)
    assert (ds.num_nodes, ds.num_features, ds.num_classes) == (9607, 236, 10)
    split = ds.split(0, 42)
    assert torch.bincount(ds.y[split.train]).tolist() == [100] * 10
    assert len(split.test) == 9607 - 1000 - 1000
    row_norms = ds.x.norm(dim=1)
    assert torch.allclose(row_norms[row_norms > 0], torch.ones(int((row_norms > 0).sum())))


# ---------------------------------------------------------------- spatial-temporal

@needs_data("pytorch_geometric_temporal/dataset/chickenpox.json")
def test_chickenpox_windows_and_chronological_split():
    ds = load("chickenpox", session_root(), lags=4, step="cumulative")
    raw = json.loads((DATA_DIR / "pytorch_geometric_temporal/dataset/chickenpox.json").read_text())
    fx = np.array(raw["FX"], dtype=np.float32)
    assert len(ds.snapshots) == fx.shape[0] - 4 == 517
    s = ds.snapshots[10]
    assert np.array_equal(s.x.numpy(), fx[10:14].T) and np.array_equal(s.y.numpy(), fx[14])
    assert s.edge_index.shape == (2, 102) and torch.equal(s.edge_weight, torch.ones(102))
    split = ds.split()
    assert (len(split.train), len(split.valid), len(split.test)) == (103, 103, 311)
    assert split.train.stop == split.valid.start and split.valid.stop == split.test.start
    assert ds.split(3, 99) == split  # the same in every run


@needs_data("pytorch_geometric_temporal/dataset/england_covid.json")
def test_covid_dynamic_graph_and_standardised_targets():
    ds = load("covid", session_root(), lags=8, step="cumulative")
    raw = json.loads((DATA_DIR / "pytorch_geometric_temporal/dataset/england_covid.json").read_text())
    y = np.array(raw["y"], dtype=np.float64)
    z = (y - y.mean(0)) / (y.std(0) + 1e-10)
    assert len(ds.snapshots) == 61 - 8 == 53
    s = ds.snapshots[5]
    assert np.allclose(s.x.numpy(), z[5:13].T, atol=1e-6) and np.allclose(s.y.numpy(), z[13], atol=1e-6)
    assert s.edge_index.shape[1] == len(raw["edge_mapping"]["edge_weight"]["5"])
    assert np.allclose(s.edge_weight.numpy(), raw["edge_mapping"]["edge_weight"]["5"])
    assert ds.snapshots[0].edge_index.shape[1] == 2158


def write_wikimath_json(path, nodes=6, periods=30, seed=0):
    """wikivital_mathematics.json in the genuine layout: edges, weights, time_periods and a
    record {"y": [...]} per period keyed by its index."""
    rng = np.random.default_rng(seed)
    raw = {"edges": [[i, (i + 1) % nodes] for i in range(nodes)] + [[0, 3]],
           "weights": [1, 2, 3, 1, 1, 2, 5], "time_periods": periods}
    for t in range(periods):
        raw[str(t)] = {"y": rng.integers(0, 100, size=nodes).tolist()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return raw


def test_wikimath_fixture(tmp_path):
    raw = write_wikimath_json(tmp_path / "pytorch_geometric_temporal/dataset/wikivital_mathematics.json")
    ds = load("wikimath", DataRoot(tmp_path, tmp_path / "cache", offline=True), lags=14,
              step="per_snapshot")
    y = np.stack([raw[str(t)]["y"] for t in range(30)]).astype(np.float64)
    z = (y - y.mean(0)) / y.std(0)
    assert len(ds.snapshots) == 16 and ds.num_features == 14
    assert np.allclose(ds.snapshots[2].x.numpy(), z[2:16].T, atol=1e-6)
    assert np.allclose(ds.snapshots[2].y.numpy(), z[16], atol=1e-6)
    assert ds.snapshots[0].edge_weight.tolist() == raw["weights"]
    with pytest.raises(DatasetUnavailable, match="wikivital_mathematics.json"):
        load("wikimath", DataRoot(tmp_path / "none", tmp_path / "c2", offline=True), lags=14,
             step="per_snapshot")


def test_mse_conventions():
    pred, y = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([0.0, 2.0, 3.0])
    by_hand_paper = sum((p - t) ** 2 for p in (1.0, 2.0, 4.0) for t in (0.0, 2.0, 3.0)) / 9
    by_hand_standard = ((1 - 0) ** 2 + 0 + (4 - 3) ** 2) / 3
    assert mse_paper(pred, y).item() == pytest.approx(by_hand_paper)
    assert mse_standard(pred, y).item() == pytest.approx(by_hand_standard)
    # the paper convention is minimised by predicting the snapshot mean everywhere
    mean = torch.full((3, 1), y.mean().item())
    assert mse_paper(mean, y) < mse_paper(y.view(-1, 1), y)
    assert mse_standard(y.view(-1, 1), y) == 0


def test_early_stopping_modes():
    history = [True, False, False, True, False, False, True, False]
    def stop_epoch(mode):
        stopper = EarlyStopping(3, mode)
        return next((i for i, imp in enumerate(history) if stopper.step(imp)), None)
    assert stop_epoch("reset") is None        # never 3 non-improving epochs in a row
    assert stop_epoch("total") == 4           # the official count: 3rd non-improving overall
    with pytest.raises(ValueError, match="patience_mode=sometimes is not allowed; use reset or total"):
        EarlyStopping(3, "sometimes")


# ---------------------------------------------------------------- end to end

@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("pytorch_geometric_temporal/dataset/chickenpox.json")
def test_chickenpox_run_reports_both_conventions_and_round_trips(tmp_path):
    out = tmp_path / "run"
    proc = train_py("dataset=chickenpox", "model=difformer_s", "trainer.runs=2",
                    "trainer.epochs=4", f"hydra.run.dir={out}")
    summary = json.loads((out / "summary.json").read_text())
    config = OmegaConf.load(out / "config.yaml")
    assert config.trainer.name == "temporal" and config.trainer.mse == "paper"  # paper pair
    assert config.model.hidden_channels == 4 and config.optim.lr == 0.01
    assert summary["metric"] == "mse" and summary["mse_convention"] == "paper"
    assert summary["higher_is_better"] is False and summary["n_runs"] == 2
    for key in ("test_mse_paper_mean", "test_mse_standard_mean", "test_mse_paper_std"):
        assert summary[key] is not None
    assert summary["test_mean"] == summary["test_mse_paper_mean"]
    assert "test MSE (paper)" in proc.stdout and "test MSE (standard)" in proc.stdout
    train_py("mode=eval", f"checkpoint={out}/checkpoints/run1.pt", f"hydra.run.dir={tmp_path / 'e'}")
    result = json.loads((tmp_path / "e/eval.json").read_text())
    assert result["test"] == summary["runs"][1]["test"]
    assert result["test_mse_standard"] == summary["runs"][1]["test_mse_standard"]


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("pytorch_geometric_temporal/dataset/england_covid.json")
def test_covid_without_graph_standard_mse(tmp_path):
    train_py("dataset=covid", "model=difformer_a_nograph", "trainer.runs=1", "trainer.epochs=3",
             "trainer.mse=standard", f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    config = OmegaConf.load(tmp_path / "config.yaml")
    assert config.model.use_graph is False and config.model.kernel == "sigmoid"
    assert config.optim.lr == 0.005  # the "a, no graph" pair
    assert summary["mse_convention"] == "standard"
    assert summary["test_mean"] == summary["test_mse_standard_mean"]


def test_temporal_dataset_needs_the_temporal_trainer(tmp_path):
    proc = train_py("dataset=chickenpox", "trainer=fullgraph", f"hydra.run.dir={tmp_path}",
                    check=False)
    assert proc.returncode == 2
    assert "error: dataset chickenpox needs trainer=temporal, got trainer=fullgraph" in proc.stderr


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("20news/20news-bydate.tar.gz")
def test_20news_run(tmp_path):
    train_py("dataset=20news", "model=difformer_s", "trainer.runs=1", "trainer.epochs=30",
             "optim.lr=0.01", f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    config = OmegaConf.load(tmp_path / "config.yaml")
    assert config.model.hidden_channels == 300 and config.seed == 42  # the 20news-s pair
    assert summary["test_mean"] > 0.3  # 10 classes: chance is 0.1


def test_stl10_paper_cell_on_a_fixture(tmp_path):
    write_features_pkl(tmp_path / "data/stl10", 1500, 800, dim=16)
    out = tmp_path / "run"
    train_py("dataset=stl10", "model=difformer_a", "dataset.labels_per_class=50",
             "trainer.runs=1", "trainer.epochs=2", f"paths.data_dir={tmp_path / 'data'}",
             f"hydra.run.dir={out}")
    config = OmegaConf.load(out / "config.yaml")
    assert (config.model.hidden_channels, config.optim.lr, config.trainer.epochs) == (400, 5e-4, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_runs"] == 1 and summary["dataset"] == "stl10"


def test_temporal_summaries_carry_both_stds_and_the_verdict_uses_the_papers():
    import statistics

    from difformer.reproduction import cells
    from difformer.reproduction import report as table_report
    from difformer.train.tasks.temporal import TemporalTask

    records = [{"test": t, "valid": t, "test_mse_paper": t, "test_mse_standard": t}
               for t in (0.9, 1.0, 1.3)]
    fake = TemporalTask.__new__(TemporalTask)
    fake.mse = "paper"
    fake._split = type("S", (), {"train": range(2), "valid": range(2), "test": range(6)})()
    summary = TemporalTask.summary(fake, records)
    assert summary["test_std"] == pytest.approx(statistics.stdev([0.9, 1.0, 1.3]))
    assert summary["test_std_population"] == pytest.approx(statistics.pstdev([0.9, 1.0, 1.3]))
    cell = cells.Cell("paper/table4/x", None, "h", {"mean": 1.3, "std": 0.12}, status="done",
                          summary={**summary, "n_runs": 3, "std_ddof": 1})
    row = table_report.row(cell)
    assert row["ours_std"] == pytest.approx(summary["test_std_population"]) and row["ddof"] == 0
    # |1.0667 - 1.3| = 0.233 > sqrt(0.170^2 + 0.12^2) = 0.208 with ddof 0 -> outside,
    # while the sample std (0.208) would give sqrt(0.208^2 + 0.12^2) = 0.240 -> within
    assert row["verdict"] == "outside"
    assert table_report.verdict(row["ours_mean"], summary["test_std"], 1.3, 0.12) == "within"
    assert "ddof 0 (population)" in row["note"]


def test_temporal_run_line_without_early_stopping():
    from difformer.train.tasks.temporal import TemporalTask

    record = {"run": 0, "seed": 1, "best_epoch": 3, "valid": 0.5, "test_mse_paper": 0.9,
              "test_mse_standard": 0.8, "seconds": 1.0}
    assert TemporalTask.run_line(None, record).startswith("run 0 | seed 1 | best epoch 3 | ")
    assert "(stopped after 7)" in TemporalTask.run_line(None, {**record, "epochs_run": 7})
