"""DIFFORMER_ALLOCATOR=mimalloc (difformer.system.allocator): the command re-runs itself once with
mimalloc preloaded, trains to the same numbers, and bad settings are one clear line."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, train_py
from difformer.system.allocator import AllocatorError, mimalloc_library


def has_mimalloc() -> bool:
    try:
        mimalloc_library()
        return True
    except AllocatorError:
        return False


needs_mimalloc = pytest.mark.skipif(not has_mimalloc(), reason="the speed extra is not installed")


def allocator_of(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "difformer.system.allocator"], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
@needs_mimalloc
def test_mimalloc_is_preloaded_once_and_trains_to_the_same_numbers(tmp_path, monkeypatch):
    assert allocator_of({"DIFFORMER_ALLOCATOR": "mimalloc"}).stdout.strip() == "mimalloc"
    assert allocator_of({"DIFFORMER_ALLOCATOR": "default"}).stdout.strip() == "default"
    args = ["trainer.runs=2", "trainer.epochs=20", "model.hidden_channels=16", "threads=1"]
    summaries = {}
    for allocator in ("default", "mimalloc"):
        monkeypatch.setenv("DIFFORMER_ALLOCATOR", allocator)
        train_py(*args, f"hydra.run.dir={tmp_path / allocator}")
        summaries[allocator] = json.loads((tmp_path / allocator / "summary.json").read_text())
    assert [r["test"] for r in summaries["mimalloc"]["runs"]] == \
        [r["test"] for r in summaries["default"]["runs"]]


@pytest.mark.parametrize("env,message", [
    ({"DIFFORMER_ALLOCATOR": "jemalloc"},
     "error: DIFFORMER_ALLOCATOR=jemalloc is not allowed; use default or mimalloc"),
    ({"DIFFORMER_ALLOCATOR": "mimalloc", "DIFFORMER_MIMALLOC": "/no/libmimalloc.so"},
     "error: DIFFORMER_MIMALLOC=/no/libmimalloc.so: no such file"),
])
def test_a_bad_allocator_setting_is_one_line(env, message, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train.py"),
                           f"hydra.run.dir={tmp_path / 'r'}"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr
    assert not (tmp_path / "r").exists()
