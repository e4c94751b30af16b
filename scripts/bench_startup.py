"""Start-up benchmarks (make bench; results in bench/startup_results.json).

  import      ``from difformer.models import DIFFormer`` in a fresh interpreter, beside
              ``import torch`` alone, alternated rounds: the library's own cost beyond torch
              (target: at most 1.0 s)
  first_line  ``python train.py`` from its start to its first console line (the run directory
              and what is about to run), beside ``python -c pass``: the start-up a user waits
              through (target: at most 2 s beyond Python's own start)

Each figure is the median of the rounds; run it on an idle machine (other processes on the same
cores change both sides unequally).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def seconds(argv: list[str], until_line: bool = False) -> float:
    """Wall seconds of ``argv`` in a fresh process: to its exit, or to its first stdout line
    (then it is stopped)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    if until_line:
        assert proc.stdout is not None
        proc.stdout.readline()
        elapsed = time.perf_counter() - start
        proc.kill()
        proc.wait()
        return elapsed
    proc.communicate()
    return time.perf_counter() - start


def alternated(a: list[str], b: list[str], rounds: int, until_line: bool = False):
    """Medians of ``a`` and ``b`` timed in alternation (a, b, a, b, ...)."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(seconds(a))
        tb.append(seconds(b, until_line))
    return statistics.median(ta), statistics.median(tb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "bench" / "startup_results.json"))
    args = parser.parse_args(argv)
    py = sys.executable
    torch_s, ours_s = alternated([py, "-c", "import torch"],
                                 [py, "-c", "import torch; from difformer.models import DIFFormer"],
                                 args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        python_s, first_s = alternated(
            [py, "-c", "pass"],
            [py, str(REPO / "train.py"), "trainer.epochs=1", "trainer.runs=1",
             f"hydra.run.dir={tmp}/run"], args.rounds, until_line=True)
    import torch

    results = {
        "measured": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "rounds": args.rounds,
        "import": {"torch_s": torch_s, "torch_and_difformer_s": ours_s,
                   "beyond_torch_s": ours_s - torch_s, "target_s": 1.0},
        "first_line": {"python_s": python_s, "train_py_s": first_s,
                       "beyond_python_s": first_s - python_s, "target_s": 2.0},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"import: DIFFormer costs {ours_s - torch_s:.2f} s beyond torch ({torch_s:.2f} s) "
          "(target <= 1.0 s)")
    print(f"first line of train.py: {first_s:.2f} s, {first_s - python_s:.2f} s beyond "
          f"Python's start ({python_s:.2f} s) (target <= 2.0 s)")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
