"""Past one machine, on real engines: an Optuna study on a PostgreSQL server fed by two sweep
processes at once (one killed mid-trial and restarted), a SLURM job requeued at its time limit,
and torchrun over two nodes joined by a c10d rendezvous. ``make test-cluster`` (in ``.ci/run``)
runs them after installing the services; elsewhere a missing service skips its test."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from services import postgres_server, slurm_cluster, wait_for

pytestmark = pytest.mark.cluster


def sweep_cmd(storage: str, sweep_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "-m", "hydra/sweeper=difformer_optuna",
            "hydra/sweeper/sampler=random", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=6",
            "hydra.sweeper.heartbeat_seconds=1", "hydra.sweeper.grace_seconds=5",
            "optim.lr=tag(log,interval(1e-3,1e-1))", "model.dropout=interval(0.0,0.5)",
            "trainer.runs=1", "trainer.epochs=150", "threads=1",
            f"hydra.sweep.dir={sweep_dir}", *extra]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def trial_dirs(log: Path) -> list[str]:
    return [line.split(": ", 1)[1].strip() for line in log.read_text().splitlines()
            if line.startswith("run directory: ")]


def check_shared_study(storage: str, sweep_dir: Path, logs: list[Path], killed: str) -> None:
    import optuna

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    states = sorted(t.state.name for t in trials)
    # exactly the requested number of trials, all finished; the killed one recorded as failed
    assert len(trials) == 6 and "RUNNING" not in states and "WAITING" not in states, states
    by_dir = {str(sweep_dir / str(t.number)): t for t in trials}
    assert by_dir[killed].state.name == "FAIL"
    assert "no heartbeat" in by_dir[killed].system_attrs["difformer_failed"]
    assert states.count("COMPLETE") == 5
    # no trial ran twice: every job directory was started by exactly one process, once
    started = [d for log in logs for d in trial_dirs(log)]
    assert sorted(started) == sorted(set(started)) and set(started) == set(by_dir), started
    # the best value is the best finished trial's, as its job's summary.json recorded it
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    for t in complete:
        summary = json.loads((sweep_dir / str(t.number) / "summary.json").read_text())
        assert t.value == pytest.approx(summary["valid_mean"])
    assert study.best_value == max(t.value for t in complete)


def test_two_sweeps_feed_one_postgres_study_and_survive_a_killed_process(tmp_path):
    with postgres_server() as url:
        sweep_dir, logs = tmp_path / "sweep", [tmp_path / f"{n}.log" for n in "abc"]
        first = start(sweep_cmd(url, sweep_dir), logs[0])
        second = start(sweep_cmd(url, sweep_dir), logs[1])
        try:
            # kill the second process in the middle of its first trial (an epoch logged)
            victim = wait_for(lambda: trial_dirs(logs[1]), 180, "the second sweep's first trial")
            metrics = Path(victim[0]) / "metrics.jsonl"
            wait_for(lambda: metrics.exists() and metrics.read_text().strip(), 180,
                     "its first epoch")
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
            third = start(sweep_cmd(url, sweep_dir), logs[2])  # the same command again
            assert first.wait(timeout=600) == 0, logs[0].read_text()[-3000:]
            assert third.wait(timeout=600) == 0, logs[2].read_text()[-3000:]
        finally:
            for proc in (first, second):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
        check_shared_study(url, sweep_dir, logs, victim[0])
        assert yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def test_two_sweeps_feed_one_journal_study(tmp_path):
    """The journal file: the storage for many machines without a database server."""
    storage = f"journal://{tmp_path}/study.log"
    sweep_dir, logs = tmp_path / "sweep", [tmp_path / f"{n}.log" for n in "abc"]
    first = start(sweep_cmd(storage, sweep_dir), logs[0])
    second = start(sweep_cmd(storage, sweep_dir), logs[1])
    victim = wait_for(lambda: trial_dirs(logs[1]), 180, "the second sweep's first trial")
    metrics = Path(victim[0]) / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().strip(), 180, "its first epoch")
    os.killpg(second.pid, signal.SIGKILL)
    second.wait()
    third = start(sweep_cmd(storage, sweep_dir), logs[2])
    assert first.wait(timeout=600) == 0, logs[0].read_text()[-3000:]
    assert third.wait(timeout=600) == 0, logs[2].read_text()[-3000:]
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    check_shared_study(JournalStorage(JournalFileBackend(f"{tmp_path}/study.log")), sweep_dir,
                       logs, victim[0])


def test_a_slurm_sweep_is_requeued_at_its_time_limit_and_resumes_in_place(tmp_path):
    """Real sbatch/srun: job 0 trains longer than its 1-minute limit, gets SIGUSR2 before it,
    saves, is requeued by submitit and resumes in the same run directory; job 1 fits."""
    with slurm_cluster() as env:
        sweep = tmp_path / "sweep"
        cmd = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm",
               "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=40",
               "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
               "hydra.launcher.mem_gb=1", "trainer.epochs=1500,60", "trainer.runs=1",
               "threads=1", "trainer.progress=false", f"hydra.sweep.dir={sweep}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO,
                              env={**env, "HYDRA_FULL_ERROR": "0"})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        logs = {p.name: p.read_text() for p in sweep.glob(".submitit/*/*_log.*")}
        job_logs = "".join(logs.values())
        assert "stopped by SIGUSR2 in run 0" in job_logs, job_logs[-3000:]
        assert "Requeued job" in job_logs and "run 0: resuming after epoch" in job_logs
        for job in ("0", "1"):
            assert json.loads((sweep / job / "status.json").read_text())["status"] in (
                "finished", "running"), job  # running: signalled while it wrote its summary
        # the requeued job's result equals an uninterrupted run's
        ref = tmp_path / "uninterrupted"
        subprocess.run([sys.executable, str(REPO / "train.py"), "trainer.epochs=1500",
                        "trainer.runs=1", "threads=1", "trainer.progress=false",
                        f"hydra.run.dir={ref}"], check=True, capture_output=True, cwd=REPO,
                       timeout=600)
        keys = ("seed", "best_epoch", "train", "valid", "test")
        got = json.loads((sweep / "0" / "summary.json").read_text())["runs"]
        want = json.loads((ref / "summary.json").read_text())["runs"]
        assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in want]
        assert (sweep / "1" / "summary.json").exists()


def torchrun(*launch: str, run_dir: Path, epochs: int = 150) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch, str(REPO / "train.py"),
            "dataset=cora", "trainer=minibatch", "trainer.batch_size=700", "trainer.runs=1",
            f"trainer.epochs={epochs}", "trainer.checkpoint_every=1", "model.num_layers=2",
            "trainer.progress=false", f"hydra.run.dir={run_dir}"]


def two_nodes(port: int, run_dir: Path, logs: list[Path], epochs: int = 150):
    procs = []
    for node in range(2):
        launch = ("--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
                  "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                  "--rdzv_id=difformer-test", "--max_restarts=0")
        procs.append(subprocess.Popen(
            torchrun(*launch, run_dir=run_dir, epochs=epochs), cwd=REPO,
            stdout=logs[node].open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}))
        if node == 0:  # node 0's agent hosts the rendezvous store: the one we never kill
            wait_for(lambda: not free(port), 60, "node 0's rendezvous store", step=0.2)
    return procs


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun's workers run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def runs_of(run_dir: Path) -> list[dict]:
    keys = ("seed", "best_epoch", "train", "valid", "test")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    return [{k: r[k] for k in keys} for r in summary["runs"]]


@pytest.mark.skipif(not (REPO.parent / "shared/data/Planetoid/Cora/raw/ind.cora.x").exists()
                    and not os.environ.get("DIFFORMER_DATA"), reason="no Cora files")
def test_torchrun_over_two_nodes_equals_one_node_and_a_killed_node_resumes(tmp_path):
    from services import free_port

    one = tmp_path / "one-node"
    ref = subprocess.run(torchrun("--standalone", "--nproc_per_node=2", run_dir=one), cwd=REPO,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ref.returncode == 0, ref.stderr[-3000:]
    # two nodes (two torchrun agents) joined by a c10d rendezvous: the same result
    two, logs = tmp_path / "two-nodes", [tmp_path / f"node{i}.log" for i in range(2)]
    procs = two_nodes(free_port(), two, logs)
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert runs_of(two) == runs_of(one)
    # node 1 killed mid-run: the job ends with one line on node 0; the same commands resume
    killed, logs = tmp_path / "killed", [tmp_path / f"k-node{i}.log" for i in range(2)]
    procs = two_nodes(free_port(), killed, logs)
    try:
        metrics = killed / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 5, 300,
                 "five epochs")
        for pid in [procs[1].pid, *descendants(procs[1].pid)]:  # the node: agent and worker
            os.kill(pid, signal.SIGKILL)
        assert procs[0].wait(timeout=300) != 0
    finally:
        for proc in procs:
            for pid in [proc.pid, *descendants(proc.pid)] if proc.poll() is None else []:
                os.kill(pid, signal.SIGKILL)
    ours = [line for line in logs[0].read_text().splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "resume" in ours[0], logs[0].read_text()[-3000:]
    procs = two_nodes(free_port(), killed, [tmp_path / f"r-node{i}.log" for i in range(2)])
    for proc in procs:
        assert proc.wait(timeout=600) == 0, (tmp_path / "r-node0.log").read_text()[-3000:]
    assert "resuming after epoch" in (tmp_path / "r-node0.log").read_text()
    assert runs_of(killed) == runs_of(one)
