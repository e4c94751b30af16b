"""The speed benchmark stays runnable (its figures live in the README, not in tests)."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, needs_data


@pytest.mark.slow
@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_bench_speed_runs_quick(tmp_path):
    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, str(REPO / "scripts/bench_speed.py"), "--quick",
                    "--no-compile", "--out", str(out)], check=True, capture_output=True,
                   timeout=900)
    results = json.loads(out.read_text())
    assert results["cora_s"]["official_seconds"] > 0 and results["cora_s"]["ours_seconds"] > 0
    assert [r["nodes"] for r in results["scaling"]][:2] == [2_000, 20_000]
    assert results["sgformer"][0]["speedup"] > 0
