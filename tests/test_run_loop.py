"""The shared run loop under real use: kills and resume, failures, non-finite losses,
progress off a terminal, reproducible single runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, needs_data, train_py

TIMING = ("seconds", "wall_seconds", "checkpoint", "run_dir")


def comparable(summary: dict) -> dict:
    """A summary without wall-clock fields and paths."""
    out = {k: v for k, v in summary.items() if k not in TIMING}
    out["runs"] = [{k: v for k, v in r.items() if k not in TIMING} for r in summary["runs"]]
    return out


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(*args) -> subprocess.CompletedProcess:
    """Run to the end with the same thread count as :func:`start` (float sums depend on it)."""
    proc = start(*args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out, err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_epoch(run_dir: Path, run: int, epoch: int, proc, timeout: float = 240) -> None:
    """Poll metrics.jsonl until run ``run`` has logged epoch ``epoch``."""
    deadline = time.time() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists():
            text = metrics.read_text()
            # only whole lines: the writer may be half-way through the last one
            for line in text[:text.rfind("\n") + 1].splitlines():
                record = json.loads(line)
                if record["run"] == run and record["epoch"] >= epoch:
                    return
        if proc.poll() is not None:
            raise AssertionError(f"finished before run {run} epoch {epoch}:\n"
                                 f"{proc.stdout.read()}\n{proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the run to progress")


CASES = {
    "fullgraph": ["trainer.runs=3", "trainer.epochs=150", "model.hidden_channels=16"],
    "minibatch": ["trainer=minibatch", "trainer.batch_size=600", "trainer.runs=3",
                  "trainer.epochs=60", "model.hidden_channels=16", "model.dropout=0.2"],
    # graph: the shuffling generator and the plateau scheduler's state cross the resume too
    "graph": ["dataset=tu", "model=gated_gt", "model.hidden_channels=16", "model.num_layers=2",
              "trainer.runs=3", "trainer.epochs=12", "optim.plateau_patience=1",
              "trainer.eval_train=false"],
    "temporal": ["dataset=chickenpox", "model=difformer_s", "trainer.runs=3",
                 "trainer.epochs=15", "trainer.patience=6", "model.dropout=0.2"],
}


@pytest.mark.parametrize("case", [
    "fullgraph",  # the default tier's kill-and-resume case; the others run in make test-slow
    pytest.param("minibatch", marks=pytest.mark.slow),
    pytest.param("graph", marks=[pytest.mark.slow,
                                 needs_data("TUDataset/ENZYMES/raw/ENZYMES_A.txt")]),
    pytest.param("temporal", marks=[pytest.mark.slow, needs_data(
        "pytorch_geometric_temporal/dataset/chickenpox.json")])])
def test_sigterm_then_resume_equals_an_uninterrupted_run(case, tmp_path):
    args = [*CASES[case], "trainer.progress=false"]
    reference = tmp_path / "reference"
    finish(*args, f"hydra.run.dir={reference}")
    stopped = tmp_path / "stopped"
    proc = start(*args, f"hydra.run.dir={stopped}")
    wait_for_epoch(stopped, run=1, epoch=3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    assert "stopped by SIGTERM in run 1, after epoch" in err
    assert f"run the same command again (or add resume={stopped}) to continue" in err
    assert read(stopped / "status.json")["status"] == "interrupted"
    assert not (stopped / "summary.json").exists()
    assert (stopped / "checkpoints/run0_last.pt").exists()   # run 0 kept, finished
    proc = finish(*args, f"hydra.run.dir={stopped}")
    assert "run 1: resuming after epoch" in proc.stdout
    assert "run 0 |" not in proc.stdout  # the finished run is not trained again
    assert comparable(read(stopped / "summary.json")) == comparable(read(reference / "summary.json"))
    # the metrics log reads as if never interrupted
    lines = lambda d: [{k: v for k, v in json.loads(x).items()  # noqa: E731
                        if k not in ("seconds", "peak_memory_mb")}
                       for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert lines(stopped) == lines(reference)
    assert read(stopped / "status.json")["status"] == "finished"


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_sigkill_resumes_from_the_periodic_last_checkpoint(tmp_path):
    args = [*CASES["fullgraph"], "trainer.progress=false", "trainer.checkpoint_every=5"]
    reference = tmp_path / "reference"
    finish(*args, f"hydra.run.dir={reference}")
    killed = tmp_path / "killed"
    proc = start(*args, f"hydra.run.dir={killed}")
    wait_for_epoch(killed, run=1, epoch=12, proc=proc)
    proc.kill()
    proc.wait()
    # resume=PATH: the run directory's own overrides, continued there
    proc = finish(f"resume={killed}")
    assert "run 1: resuming after epoch" in proc.stdout
    assert comparable(read(killed / "summary.json")) == comparable(read(reference / "summary.json"))


def test_an_exception_inside_the_loop_reaches_console_and_status(tmp_path):
    """A failure injected in epoch 2 (a full disk, say) is reported as itself: one line on the
    console, the exception and its traceback in status.json."""
    inject = ("import sys, difformer.train.tasks.node as t, difformer.cli as cli\n"
              "orig = t.FullGraphEpoch.train_epoch\n"
              "def boom(self, epoch, progress=None):\n"
              "    if epoch == 2: raise OSError(28, 'No space left on device')\n"
              "    return orig(self, epoch, progress)\n"
              "t.FullGraphEpoch.train_epoch = boom\n"
              "sys.argv = ['train.py'] + sys.argv[1:]\n"
              "cli.main()\n")
    proc = subprocess.run([sys.executable, "-c", inject, "trainer.runs=1", "trainer.epochs=5",
                           f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1
    assert proc.stderr == (  # one line on the console; the traceback goes to status.json
        "error: no space left on the device: a file of the run (OSError); the files already "
        "written are intact: fix it and run the same command again to resume\n")
    status = read(tmp_path / "status.json")
    assert status["status"] == "failed"
    assert status["error"] == "OSError: [Errno 28] No space left on device"
    assert any("boom" in line for line in status["traceback"])
    assert not (tmp_path / "summary.json").exists()


def test_a_non_finite_loss_stops_the_run_without_a_result(tmp_path):
    proc = train_py("optim.lr=1e6", "trainer.runs=2", "trainer.epochs=20",
                    f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: run 0, epoch 2: the training loss is nan (last finite "
                                "loss ")
    assert errors[0].endswith("at epoch 1); lower optim.lr or check the data")
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "checkpoints/run0.pt").exists()
    assert read(tmp_path / "status.json")["error"].startswith("NonFiniteLoss: run 0, epoch 2")


def test_heartbeat_lines_off_a_terminal(tmp_path):
    proc = train_py("trainer.runs=2", "trainer.epochs=6", "trainer.log_every=2",
                    f"hydra.run.dir={tmp_path}")
    beats = [line for line in proc.stdout.splitlines() if " | epoch " in line]
    assert [b.split(" | ")[:2] for b in beats] == [
        ["run 0 (1/2)", f"epoch {e - 1} ({e}/6)"] for e in (2, 4, 6)] + [
        ["run 1 (2/2)", f"epoch {e - 1} ({e}/6)"] for e in (2, 4, 6)]
    assert all("| loss " in b and "| valid " in b and "| best " in b and "s/epoch | ETA" in b
               for b in beats)


def test_heartbeat_inside_long_minibatch_epochs():
    from difformer.train.lifecycle import Progress
    import io

    stream = io.StringIO()
    progress = Progress(0, 1, 3, 0, True, None, 0.0, stream=stream)
    report = progress.step(epoch=0)
    for step in range(1, 4):
        report(step, 4)
    assert stream.getvalue().splitlines() == [f"run 0 (1/1) | epoch 0 (1/3) | step {s}/4"
                                              for s in (1, 2, 3)]


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_one_run_reproduces_alone_with_split_seed(tmp_path):
    common = ["dataset=cora", "model=difformer_s", "model.num_layers=2", "trainer.epochs=20",
              "trainer.progress=false"]
    both = train_py(*common, "seed=123", "trainer.runs=2", f"hydra.run.dir={tmp_path / 'a'}")
    alone = train_py(*common, "seed=124", "trainer.runs=1", "dataset.split_seed=123",
                     f"hydra.run.dir={tmp_path / 'b'}")
    assert both.returncode == alone.returncode == 0
    run1 = comparable(read(tmp_path / "a/summary.json"))["runs"][1]
    single = comparable(read(tmp_path / "b/summary.json"))["runs"][0]
    assert {**single, "run": 1} == run1
    # without split_seed, seed=124 also moves Cora's shared split: another run
    other = train_py(*common, "seed=124", "trainer.runs=1", f"hydra.run.dir={tmp_path / 'c'}")
    assert other.returncode == 0
    assert comparable(read(tmp_path / "c/summary.json"))["runs"][0]["split_fingerprint"] != \
        run1["split_fingerprint"]


def test_aggregate_counts_each_seed_once_and_lists_failures(tmp_path):
    from difformer.reproduction import aggregate

    proc = train_py("-m", "seed=1,2", "trainer.runs=2", "trainer.epochs=3",
                    f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0
    (tmp_path / "9").mkdir()
    (tmp_path / "9/status.json").write_text(json.dumps({
        "status": "failed", "error": "RuntimeError: boom"}))
    out = subprocess.run([sys.executable, str(REPO / "scripts/aggregate.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    # digits draws run r's split from seed + r: job seed=1's run 1 is job seed=2's run 0
    assert "the jobs' seeds overlap; counted once: seed 2 in" in out.stderr
    assert f"failed: {tmp_path / '9'}: RuntimeError: boom" in out.stderr
    rows = aggregate.aggregate(aggregate.collect(tmp_path))
    assert [(r["n"], r["jobs"]) for r in rows] == [(3, 2)]
    tests = {r["seed"]: r["test"] for j in aggregate.collect(tmp_path)
             for r in j["summary"]["runs"]}
    assert rows[0]["test_mean"] == pytest.approx(sum(tests.values()) / 3)


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_a_schedulers_checkpoint_signal_saves_then_hands_over(tmp_path):
    """As submitit does under hydra/launcher=slurm: a Python handler waits for SIGUSR2 (it
    requeues the job). The run saves its last checkpoint at the epoch's end, then calls it."""
    args = [*CASES["fullgraph"], "trainer.progress=false"]
    wrapper = ("import signal, sys, json, pathlib\n"
               "def requeue(signum, frame):\n"
               f"    pathlib.Path('{tmp_path}/requeued').write_text(str(signum))\n"
               "    sys.exit(-1)\n"
               "signal.signal(signal.SIGUSR2, requeue)\n"
               "sys.argv = ['train.py'] + sys.argv[1:]\n"
               "from difformer.cli import main\nmain()\n")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", wrapper, *args, f"hydra.run.dir={run_dir}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for_epoch(run_dir, run=1, epoch=3, proc=proc)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=120)
    assert (tmp_path / "requeued").read_text() == str(int(signal.SIGUSR2))
    assert "stopped by SIGUSR2 in run 1, after epoch" in err
    import torch

    last = torch.load(run_dir / "checkpoints/run1_last.pt", weights_only=True)
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert last["epoch"] == max(r["epoch"] for r in logged if r["run"] == 1)
    proc = train_py(*args, f"hydra.run.dir={run_dir}")  # the requeued job
    assert f"run 1: resuming after epoch {last['epoch']}" in proc.stdout


def test_evaluation_schedule_is_the_official_one():
    """Pokec's pair: 500 epochs, every 9th from 0 -> 0, 9, ..., 495 (56 evaluations), not 499."""
    from types import SimpleNamespace

    from difformer.train.tasks.node import NodeTask

    def schedule(eval_last):
        task = SimpleNamespace(trainer=SimpleNamespace(eval_step=9, eval_last=eval_last))
        return [e for e in range(500) if NodeTask.evaluates_at(task, e, 500)]

    assert schedule(None) == list(range(0, 500, 9)) and len(schedule(None)) == 56
    assert schedule(True) == list(range(0, 500, 9)) + [499]


def test_the_loops_adam_equals_the_per_tensor_adam_bit_for_bit():
    """train/common.adam (foreach) against torch's per-tensor Adam over 20 steps of a
    DIFFormer with weight decay: every parameter bit-identical."""
    import copy

    import torch

    from difformer.models import DIFFormer
    from difformer.train.common import adam

    torch.manual_seed(0)
    ours = DIFFormer(30, 16, 4, num_layers=3, dropout=0.0)
    plain = copy.deepcopy(ours)
    opts = [adam(ours.parameters(), 1e-2, 0.01),
            torch.optim.Adam(plain.parameters(), lr=1e-2, weight_decay=0.01, foreach=False)]
    assert opts[0].defaults["foreach"] is True
    x, y = torch.randn(50, 30), torch.randint(0, 4, (50,))
    ei = torch.arange(50).repeat(2, 1)
    for _ in range(20):
        for model, opt in zip((ours, plain), opts):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x, ei), y).backward()
            opt.step()
    for (name, a), b in zip(ours.named_parameters(), plain.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@pytest.mark.parametrize("extra,signals,says", [
    ([], 2, "stopped by SIGTERM twice: stopped at once: the last checkpoint saved before it is "
            "kept; run the same command again"),
    (["trainer.save_checkpoints=false"], 1,
     "after epoch {epoch}: no checkpoint is kept (trainer.save_checkpoints=false): a rerun "
     "starts over\n"),
])
def test_what_a_stop_says_of_the_checkpoint_is_true(tmp_path, extra, signals, says):
    """A second SIGTERM stops at once (recorded as interrupted, not as a failure), and a run
    that keeps no checkpoint never claims one was saved."""
    args = ["model.hidden_channels=256", "model.num_layers=6", "trainer.runs=1",
            "trainer.epochs=400", "trainer.progress=false", *extra, f"hydra.run.dir={tmp_path}"]
    proc = start(*args)
    wait_for_epoch(tmp_path, run=0, epoch=2, proc=proc)
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    status = read(tmp_path / "status.json")
    assert status["status"] == "interrupted" and status["signal"] == 15
    if "{epoch}" in says:
        last = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        says = says.format(epoch=last[-1]["epoch"])
        assert not (tmp_path / "checkpoints").exists()
    assert says in err, err
