"""The console, kept (issue #25): train.log holds exactly what the console showed, workers'
lines included; what is about to run is said first; one run numbering, one missing-std mark."""
import os
import subprocess
import sys

import pytest

from conftest import REPO


def console(*args, env=None) -> str:
    """stdout and stderr together, in the order they were written."""
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300, env=env or {**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


@pytest.mark.parametrize("extra", [[], pytest.param(["trainer.parallel_runs=2"], marks=pytest.mark.slow)],
                         ids=["one", "workers"])
def test_train_log_is_the_console(tmp_path, extra):
    shown = console("trainer.runs=2", "trainer.epochs=3", "trainer.log_every=1", *extra,
                    f"hydra.run.dir={tmp_path}")
    assert (tmp_path / "train.log").read_text() == shown
    lines = shown.splitlines()
    assert lines[0] == f"run directory: {tmp_path}"
    assert lines[1] == "mode train | dataset digits | model difformer | trainer auto: 2 run(s) x " \
                       "3 epochs"
    assert any("run 1 | seed 124 | best epoch " in line for line in lines)
    if not extra:  # run and epoch numbers from 0, their counts in parentheses
        assert "run 1 (2/2) | epoch 2 (3/3) | loss " in shown
    else:  # each worker's lines, relayed through the parent
        assert any(line.startswith("[worker 1] run 1 | seed 124") for line in lines)


@pytest.mark.slow  # moved from the default tier to keep make test under 10 minutes
def test_a_missing_std_reads_n_a(tmp_path):
    shown = console("trainer.runs=1", "trainer.epochs=2", "trainer.progress=false",
                    f"hydra.run.dir={tmp_path}")
    assert "accuracy over 1 run(s): test " in shown and " ± n/a | valid " in shown
    assert "nan" not in shown


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_the_default_trains_the_runs_in_parallel_on_a_cpu(tmp_path):
    """What a user gets without flags (the tests pin DIFFORMER_PARALLEL_RUNS=1): the runs
    balanced over the cores (trainer.parallel_runs=auto), one thread each, with the same
    seeds; a single run stays in one process."""
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFORMER_PARALLEL_RUNS",
                                                             "OMP_NUM_THREADS")}
    shown = console("trainer.runs=3", "trainer.epochs=2", f"hydra.run.dir={tmp_path / 'a'}",
                    env={**env, "OMP_NUM_THREADS": "2"})
    assert "parallel_runs: auto" in (tmp_path / "a/config.yaml").read_text()
    assert "worker 1: runs 1" in shown and "[worker 2] run 2 | seed 125 | " in shown
    shown = console("trainer.runs=1", "trainer.epochs=2", f"hydra.run.dir={tmp_path / 'b'}",
                    env=env)
    assert "worker" not in shown
