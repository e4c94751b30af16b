"""Shared fixtures. Tests never download: the data root is ../shared/data (the CI layout)
or $DIFFORMER_DATA, the cache a per-session temporary folder, and DIFFORMER_OFFLINE=1."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DATA_DIR = Path(os.environ.get("DIFFORMER_DATA") or SHARED_DATA)


@pytest.fixture(scope="session", autouse=True)
def offline_data_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("data-cache")
    saved = {k: os.environ.get(k) for k in ("DIFFORMER_DATA", "DIFFORMER_CACHE",
                                             "DIFFORMER_OFFLINE", "WANDB_MODE",
                                             "DIFFORMER_CURVES", "DIFFORMER_PARALLEL_RUNS")}
    # curves.png costs ~1 s of matplotlib per run; tests/test_loggers.py turns it back on
    # the runs of a test train in its own process (trainer.parallel_runs defaults to auto for
    # users): two pytest workers already fill the cores; the parallel tests set it themselves
    os.environ.update(DIFFORMER_DATA=str(DATA_DIR), DIFFORMER_CACHE=str(cache),
                      DIFFORMER_OFFLINE="1", WANDB_MODE="disabled", DIFFORMER_CURVES="0",
                      DIFFORMER_PARALLEL_RUNS="1")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def needs_data(*relpaths):
    """Skip when the offline raw files are absent (they are present in CI)."""
    missing = [p for p in relpaths if not (DATA_DIR / p).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"no offline data at {DATA_DIR}: {missing}")


def train_py(*args, cwd=None, check=True, timeout=600):
    """Run ``python train.py ARGS`` as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def compose():
    """Compose configs/train.yaml in-process with overrides (no Hydra run directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from difformer.config.core import CONFIG_DIR

    def _compose(*overrides):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose("train", overrides=list(overrides))
    return _compose
