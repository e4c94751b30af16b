"""trainer.parallel_runs: a cell's runs in worker processes give the sequential summary, the
same files, and survive a SIGTERM (resume)."""
import json
import signal
import time

import pytest
from omegaconf import OmegaConf

from test_run_loop import comparable, finish, read, start, wait_for_epoch

ARGS = ["trainer.runs=3", "trainer.epochs=150", "model.hidden_channels=16", "model.dropout=0.2",
        "trainer.progress=false"]


def metrics(run_dir):
    return [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "peak_memory_mb")}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # moved from the default tier to keep make test under 10 minutes
def test_parallel_runs_equal_the_sequential_runs_and_resume_after_sigterm(tmp_path):
    reference = tmp_path / "sequential"
    finish(*ARGS, "threads=1", f"hydra.run.dir={reference}")  # 1 thread per run, as below
    parallel = tmp_path / "parallel"
    proc = start(*ARGS, "trainer.parallel_runs=2", "threads=2", f"hydra.run.dir={parallel}")
    wait_for_epoch(parallel / "workers/worker0", run=0, epoch=3, proc=proc)
    proc.send_signal(signal.SIGTERM)  # to the parent only: it passes it on
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    assert "stopped by SIGTERM in worker(s) 0, 1" in err
    assert read(parallel / "status.json")["status"] == "interrupted"
    assert (parallel / "workers/worker0/checkpoints/run0_last.pt").exists()
    proc = finish(*ARGS, "trainer.parallel_runs=2", "threads=2", f"hydra.run.dir={parallel}")
    assert "run 0: resuming after epoch" in proc.stdout
    assert "worker 0: runs 0, 2 with 1 thread(s)" in proc.stdout
    # the workers start before the parent loads its data (their start-up overlaps its own)
    assert proc.stdout.index("worker 1: runs") < proc.stdout.index("\ndataset ")
    assert comparable(read(parallel / "summary.json")) | {"torch_threads": 1} == \
        comparable(read(reference / "summary.json"))
    assert metrics(parallel) == metrics(reference)
    assert sorted(p.name for p in (parallel / "checkpoints").iterdir()) == \
        sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert not (parallel / "workers").exists()
    # finished: a third invocation does nothing
    again = finish(*ARGS, "trainer.parallel_runs=2", "threads=2", f"hydra.run.dir={parallel}")
    assert "already finished with the same settings" in again.stdout


def test_a_failing_worker_is_named_and_nothing_is_collected(compose, tmp_path):
    from difformer.train.loggers import NullLogger
    from difformer.system.processes import stopped_by
    from difformer.train.parallel_runs import Workers

    cfg = compose("trainer.runs=3", "trainer.epochs=2", "model.hidden_channels=0")
    try:
        Workers(OmegaConf.to_container(cfg, resolve=True), tmp_path, 3, 2, threads=2).finish(NullLogger())
    except RuntimeError as err:
        message = str(err)
    else:
        raise AssertionError("the workers' failure was not reported")
    assert message == (f"worker 0 (runs 0, 2) exited with code 1; its files are in "
                       f"{tmp_path / 'workers/worker0'} (the other workers' finished runs are "
                       "kept; run again to continue)")
    assert "hidden_channels must be >= 1" in \
        read(tmp_path / "workers/worker0/status.json")["error"]
    assert not (tmp_path / "checkpoints").exists()
    assert [stopped_by(c) for c in (143, 130, -15, -2, 1, 0)] == [15, 2, 15, 2, None, None]


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_a_sequential_attempt_continues_in_parallel_workers(tmp_path):
    reference = tmp_path / "sequential"
    finish(*ARGS, "threads=1", f"hydra.run.dir={reference}")
    switched = tmp_path / "switched"
    proc = start(*ARGS, "threads=1", f"hydra.run.dir={switched}")
    wait_for_epoch(switched, run=1, epoch=3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    again = finish(*ARGS, "trainer.parallel_runs=2", "threads=2", f"hydra.run.dir={switched}")
    assert "run 1: resuming after epoch" in again.stdout  # in worker 1, from the handed-over file
    assert "run 0 |" not in again.stdout  # finished before the switch
    assert comparable(read(switched / "summary.json")) | {"torch_threads": 1} == \
        comparable(read(reference / "summary.json"))
    assert metrics(switched) == metrics(reference)


def test_parallel_runs_without_checkpoints_still_collect_the_runs(tmp_path):
    # the workers' last checkpoints carry the runs back, so they are written regardless
    run_dir = tmp_path / "r"
    finish("trainer.runs=2", "trainer.epochs=3", "model.hidden_channels=8",
           "trainer.parallel_runs=2", "trainer.save_checkpoints=false", "threads=2",
           "trainer.progress=false", f"hydra.run.dir={run_dir}")
    summary = read(run_dir / "summary.json")
    assert summary["n_runs"] == 2 and [r["run"] for r in summary["runs"]] == [0, 1]


def container(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def test_workers_leave_the_cells_curves_to_the_parent(compose):
    from difformer.train.parallel_runs import worker_config

    job = worker_config(container(compose("logger=[jsonl,csv]")), [0, 2], 1)
    assert job.logger.jsonl.curves is False and "csv" in job.logger
    assert worker_config(container(compose()), [1], 1).logger.jsonl.curves is False


def test_a_parent_failing_while_its_workers_train_stops_them(compose, tmp_path, monkeypatch):
    """The workers start before the parent loads its data; when that load fails, the parent
    passes SIGTERM on to them, waits, and raises: they stop at an epoch's end with their last
    checkpoints saved (the same command resumes them)."""
    import difformer.modes.train as runner
    from difformer.invocation import run
    from difformer.train.parallel_runs import worker_dir

    started = []

    def failing_load(*args, **kwargs):
        started.append(sorted(p.name for p in (tmp_path / "workers").iterdir()))
        logged = worker_dir(tmp_path, 0) / "metrics.jsonl"
        deadline = time.time() + 240
        while not (logged.exists() and logged.read_text().count("\n") >= 2):
            assert time.time() < deadline, "worker 0 never trained"
            time.sleep(0.05)
        raise OSError("disk gone")

    monkeypatch.setattr(runner, "load_data", failing_load)
    cfg = compose("trainer.runs=2", "trainer.epochs=5000", "model.hidden_channels=8",
                  "trainer.parallel_runs=2", "threads=2", "trainer.progress=false")
    try:
        run(cfg, tmp_path)
    except OSError as err:
        assert str(err) == "disk gone"
    else:
        raise AssertionError("the parent's failure was not raised")
    assert started == [["worker0", "worker1"]]
    for k in (0, 1):
        status = read(worker_dir(tmp_path, k) / "status.json")
        assert status["status"] == "interrupted", status
        # (what the folder holds, should this fail again: it failed once on CI, not since)
        files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        assert (worker_dir(tmp_path, k) / f"checkpoints/run{k}_last.pt").exists(), (status, files)


def test_auto_picks_the_fewest_workers_that_keep_every_core_busy():
    import torch

    from difformer.modes.train import parallel_workers
    from difformer.config.settings import TrainerSettings
    from difformer.train.parallel_runs import balanced_workers

    cases = {(5, 2): 3, (4, 2): 2, (3, 2): 3, (10, 4): 5, (9, 4): 5, (8, 4): 4, (2, 8): 2,
             (1, 8): 1, (5, 1): 1, (6, 3): 3, (7, 3): 4}
    assert {case: balanced_workers(*case) for case in cases} == cases
    auto = TrainerSettings(name="fullgraph", epochs=1, runs=5, parallel_runs="auto")
    assert parallel_workers(auto, torch.device("cuda")) == 1  # one process drives a GPU
    fixed = TrainerSettings(name="fullgraph", epochs=1, runs=5, parallel_runs=4)
    assert parallel_workers(fixed, torch.device("cpu")) == 4


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_auto_on_two_threads_trains_three_runs_in_three_workers(tmp_path):
    run_dir = tmp_path / "r"
    proc = finish("trainer.runs=3", "trainer.epochs=3", "model.hidden_channels=8",
                  "trainer.parallel_runs=auto", "threads=2", "trainer.progress=false",
                  f"hydra.run.dir={run_dir}")
    for k in range(3):
        assert f"worker {k}: runs {k} with 1 thread(s)" in proc.stdout
    assert [r["run"] for r in read(run_dir / "summary.json")["runs"]] == [0, 1, 2]
