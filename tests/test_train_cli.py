"""train.py end to end: runs, run directories, checkpoints, eval mode, bad input, sweeps."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, needs_data, train_py
from difformer.invocation import run
from difformer.config.core import ConfigError
from difformer.invocation import validate

FAST = ["trainer.runs=2", "trainer.epochs=15"]


def read_summary(run_dir):
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "run"
    proc = train_py(*FAST, f"hydra.run.dir={out}")
    return out, proc


def test_digits_run_writes_a_complete_run_directory(digits_run):
    out, proc = digits_run
    assert f"run directory: {out}" in proc.stdout
    assert "dataset digits | nodes 1797" in proc.stdout
    summary = read_summary(out)
    for key in ("metric", "test_mean", "test_std", "valid_mean", "n_runs", "runs",
                "wall_seconds", "std_ddof"):
        assert key in summary
    assert summary["metric"] == "accuracy" and summary["n_runs"] == 2 and summary["std_ddof"] == 1
    tests = [r["test"] for r in summary["runs"]]
    assert summary["test_mean"] == pytest.approx(sum(tests) / 2)
    assert summary["test_std"] == pytest.approx(abs(tests[0] - tests[1]) / 2 ** 0.5)  # ddof=1
    assert [r["seed"] for r in summary["runs"]] == [123, 124]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 15
    assert set(lines[0]) >= {"run", "epoch", "loss", "train", "valid", "test", "seconds",
                             "peak_memory_mb"}
    # the reported test score is the one at the first epoch with the best valid score
    for r in summary["runs"]:
        mine = [line for line in lines if line["run"] == r["run"]]
        best = max(line["valid"] for line in mine)
        first = next(line for line in mine if line["valid"] == best)
        assert (r["best_epoch"], r["test"]) == (first["epoch"], first["test"])
    config = (out / "config.yaml").read_text()
    assert "name: digits" in config and "${" not in config  # resolved


def test_checkpoints_describe_themselves(digits_run):
    out, _ = digits_run
    ckpt = torch.load(out / "checkpoints/run1.pt", weights_only=True)
    assert ckpt["format"] == "difformer-checkpoint" and ckpt["package_version"]
    assert ckpt["model"]["name"] == "difformer"
    assert ckpt["model"]["kwargs"]["in_channels"] == 64
    assert ckpt["model"]["kwargs"]["kernel"] == "simple"
    assert ckpt["dataset"]["config"]["name"] == "digits"
    assert ckpt["dataset"]["fingerprint"]["num_nodes"] == 1797
    assert ckpt["seed"] == 124 and ckpt["run"] == 1
    summary = read_summary(out)
    assert ckpt["metrics"]["test"] == summary["runs"][1]["test"]
    assert list(ckpt["state_dict"])[0] == "convs.0.Wk.weight"


def test_eval_mode_reproduces_the_recorded_test_metric_exactly(digits_run, tmp_path):
    out, _ = digits_run
    for run_idx in (0, 1):
        eval_dir = tmp_path / f"eval{run_idx}"
        proc = train_py("mode=eval", f"checkpoint={out}/checkpoints/run{run_idx}.pt",
                        f"hydra.run.dir={eval_dir}")
        result = json.loads((eval_dir / "eval.json").read_text())
        assert result["test"] == read_summary(out)["runs"][run_idx]["test"]
        assert result["matches_recorded"] is True and result["mismatches"] == []
        assert f"test {100 * result['test']:.2f}" in proc.stdout


def test_eval_with_another_dataset_names_what_differs(digits_run, tmp_path):
    out, _ = digits_run
    proc = train_py("mode=eval", f"checkpoint={out}/checkpoints/run0.pt", "dataset=chameleon",
                    f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "fcs.0.weight: checkpoint (64, 64) model (64, 2325)" in proc.stderr
    assert "name: checkpoint='digits' current='chameleon'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_cora_short_run_learns_and_round_trips(tmp_path):
    out = tmp_path / "cora"
    # the paper pair (8 layers, lr 1e-3) needs ~300 epochs; 2 layers at lr 0.01 learn in 100
    train_py("dataset=cora", "model=difformer_s", "trainer.runs=1", "trainer.epochs=100",
             "model.num_layers=2", "optim.lr=0.01", f"hydra.run.dir={out}")
    summary = read_summary(out)
    config = OmegaConf.load(out / "config.yaml")
    assert config.optim.weight_decay == 0.01 and config.model.dropout == 0.2  # from the pair
    assert config.model.num_layers == 2  # the command line wins
    assert summary["test_mean"] >= 0.75, summary
    train_py("mode=eval", f"checkpoint={out}/checkpoints/run0.pt",
             f"hydra.run.dir={tmp_path / 'eval'}")
    result = json.loads((tmp_path / "eval/eval.json").read_text())
    assert result["test"] == summary["runs"][0]["test"]


@pytest.mark.parametrize("override,message", [
    ("optim.lr=0", "optim.lr must be > 0, got 0"),
    ("optim.lr=-0.1", "optim.lr must be > 0, got -0.1"),
    ("model.dropout=1.5", r"model: dropout must be in \[0, 1\], got 1.5"),
    ("model.alpha=-0.2", r"model: alpha must be in \[0, 1\], got -0.2"),
    ("model.num_layers=0", "model.num_layers must be >= 1, got 0"),
    ("trainer.runs=0", "trainer.runs must be >= 1, got 0"),
    ("trainer.epochs=0", "trainer.epochs must be >= 1, got 0"),
    ("model.kernel=softmax", "model: unknown kernel 'softmax'; allowed: simple, sigmoid, simple_pernode"),
    ("checkpoint=/no/such/file.pt", "checkpoint=/no/such/file.pt: no such file"),
    ("trainer.device=tpu", "trainer.device=tpu is not allowed; use auto, cpu, cuda or cuda:N"),
    ("mode=predict", "mode=predict is not allowed; use train, eval or inspect"),
])
def test_bad_input_is_named(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(override))


def test_bad_input_is_one_line_before_any_training(tmp_path):
    proc = train_py("optim.lr=-1", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: optim.lr must be > 0, got -1"
    assert not (tmp_path / "metrics.jsonl").exists()
    proc = train_py("mode=eval", "checkpoint=missing.pt", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.stderr.strip() == "error: checkpoint=missing.pt: no such file"


def test_unknown_choice_lists_the_options(tmp_path):
    proc = train_py("dataset=coraa", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("error: dataset=coraa is not a dataset; allowed: 20news, chameleon,")
    assert ", cora, " in line and "\n" not in line
    assert not (tmp_path / "run").exists()


def test_paper_pairs_apply_and_command_line_wins(compose):
    cfg = compose("dataset=cora", "model=difformer_s")
    assert (cfg.model.num_layers, cfg.model.hidden_channels, cfg.model.dropout) == (8, 64, 0.2)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.trainer.epochs, cfg.trainer.runs) == \
        (1e-3, 0.01, 500, 5)
    cfg = compose("dataset=cora", "model=difformer_a")
    assert (cfg.model.kernel, cfg.optim.weight_decay, cfg.model.dropout) == ("sigmoid", 0.1, 0.0)
    cfg = compose("dataset=citeseer", "model=difformer_a")
    assert (cfg.model.num_layers, cfg.model.hidden_channels, cfg.optim.weight_decay) == (4, 32, 1.0)
    cfg = compose("dataset=chameleon", "model=difformer_a")
    assert (cfg.model.graph_weight, cfg.model.use_weight, cfg.trainer.runs, cfg.seed) == \
        (0.8, True, 10, 42)
    cfg = compose("dataset=cora", "model=difformer_s_pernode")
    assert (cfg.model.kernel, cfg.model.num_layers) == ("simple_pernode", 8)
    cfg = compose("dataset=cora", "model=difformer_s", "model.num_layers=3", "optim.lr=0.05")
    assert (cfg.model.num_layers, cfg.optim.lr) == (3, 0.05)


def test_same_seed_same_summary(compose, tmp_path):
    overrides = ("trainer.runs=2", "trainer.epochs=8", "trainer.progress=false")
    a = run(compose(*overrides), tmp_path / "a")
    b = run(compose(*overrides), tmp_path / "b")
    keys = ("test_mean", "test_std", "valid_mean", "runs")
    strip = lambda s: {k: ([{**r, "seconds": 0, "checkpoint": 0} for r in s[k]]  # noqa: E731
                           if k == "runs" else s[k]) for k in keys}
    assert strip(a) == strip(b)
    c = run(compose(*overrides, "seed=7"), tmp_path / "c")
    assert strip(c) != strip(a)


def test_wandb_logger_disabled_mode(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    summary = run(compose("logger=wandb", "trainer.runs=1", "trainer.epochs=2"), tmp_path)
    assert (tmp_path / "summary.json").exists() and summary["n_runs"] == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_multirun_writes_one_summary_per_job(tmp_path):
    train_py("-m", "model.num_layers=1,2", "trainer.runs=1", "trainer.epochs=2",
             f"hydra.sweep.dir={tmp_path}")
    jobs = [tmp_path / str(i) for i in (0, 1)]
    assert all((job / "summary.json").exists() for job in jobs)
    assert sorted(OmegaConf.load(job / "config.yaml").model.num_layers for job in jobs) == [1, 2]


def test_run_directories_are_unique_for_simultaneous_jobs(tmp_path):
    args = [sys.executable, str(REPO / "train.py"), "trainer.runs=1", "trainer.epochs=1",
            f"paths.output_dir={tmp_path}"]
    # one thread each: two torch processes spinning on 2 cores slow each other down badly
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    dirs = [d for d in (tmp_path / "runs").glob("*/*") if (d / "summary.json").exists()]
    assert len(dirs) == 2


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "difformer-train"
    assert script.exists()
    proc = subprocess.run([str(script), "--cfg", "job"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0 and "name: digits" in proc.stdout


def test_a_joblib_multirun_shares_the_cores(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0))
    train_py("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2",
             "trainer.runs=1", "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}")
    threads = [read_summary(tmp_path / str(i))["torch_threads"] for i in (0, 1)]
    assert threads == [max(1, cores // 2)] * 2


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_debug_configs(tmp_path):
    train_py("debug=default", f"hydra.run.dir={tmp_path / 'default'}")
    summary = read_summary(tmp_path / "default")
    assert summary["n_runs"] == 1 and "checkpoint" not in summary["runs"][0]
    lines = (tmp_path / "default/metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    train_py("debug=overfit", f"hydra.run.dir={tmp_path / 'overfit'}")
    assert read_summary(tmp_path / "overfit")["runs"][0]["train"] == 1.0  # fits its train nodes
    proc = train_py("debug=profile", f"hydra.run.dir={tmp_path / 'profile'}")
    assert "profile of 3 epoch(s)" in proc.stdout
    trace = json.loads((tmp_path / "profile/profile_trace.json").read_text())
    assert trace["traceEvents"]
    assert "aten::addmm" in (tmp_path / "profile/profile.txt").read_text()


def test_help_lists_the_choices():
    proc = train_py("--help")
    assert proc.stdout.startswith("difformer-train (train.py, python -m difformer)")
    assert "dataset: 20news, chameleon" in proc.stdout and "debug: default, overfit, profile" \
        in proc.stdout


def test_a_multiruns_report_counts_only_its_own_jobs(tmp_path, capsys):
    """A resumed sweep shares its folder with an earlier attempt: that attempt's failed job
    was reported then, so only the jobs this invocation wrote decide the exit code."""
    import json
    import os

    import pytest
    from omegaconf import OmegaConf

    from difformer.cli import MultirunReport

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    old = tmp_path / "0" / "status.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"status": "failed", "error": "ConfigError: old"}))
    os.utime(old, (1_000_000_000, 1_000_000_000))  # written long before this invocation
    report = MultirunReport()
    report.on_multirun_start(config)
    ok = tmp_path / "1" / "status.json"
    ok.parent.mkdir()
    ok.write_text(json.dumps({"status": "finished"}))
    report.on_multirun_end(config)  # the old failure alone: no exit
    assert "failed" not in capsys.readouterr().err
    new = tmp_path / "2" / "status.json"
    new.parent.mkdir()
    new.write_text(json.dumps({"status": "failed", "error": "ConfigError: new"}))
    with pytest.raises(SystemExit) as stop:
        report.on_multirun_end(config)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err == f"1 job(s) failed:\n  {tmp_path / '2'}: ConfigError: new\n"
