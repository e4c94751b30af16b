"""A regular (non-editable) install works on its own: configs ship inside the wheel, and the
console script and ``python -m difformer`` run from any directory."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_the_wheel_runs_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   capture_output=True, timeout=300)
    wheel = next(wheels.glob("difformer-*.whl"))
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    # the new environment sees our dependencies (torch, PyG, Hydra, ...) but not the checkout
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    Path(purelib, "_difformer_test_deps.pth").write_text(deps + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import difformer.config.core as c; "
                            "print(c.CONFIG_DIR)"], cwd=work, env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert where.startswith(purelib) and where.endswith("difformer/configs"), where
    for command in ([str(env_dir / "bin" / "difformer-train")], [str(python), "-m", "difformer"]):
        run_dir = work / Path(command[-1]).name
        proc = subprocess.run([*command, "trainer.runs=1", "trainer.epochs=2",
                               f"hydra.run.dir={run_dir}"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["n_runs"] == 1 and summary["dataset"] == "digits"
