"""Report the torch build an install ended up with; never block one.

On this project's CI machine the Makefile pins the local CPU build (torch==2.13.0); a GPU
machine keeps its CUDA build. Prints what it found, and warns (exit 0) when the pinned CPU build
was expected (DIFFORMER_EXPECT_TORCH) but another one is there.
"""
import os
import sys

import torch

cuda = torch.version.cuda
build = f"CUDA {cuda}" if cuda else "CPU"
devices = torch.cuda.device_count() if cuda else 0
print(f"environment: torch {torch.__version__} ({build} build"
      + (f", {devices} GPU(s) visible" if cuda else "") + f"), Python {sys.version.split()[0]}")
expected = os.environ.get("DIFFORMER_EXPECT_TORCH")
if expected and not torch.__version__.startswith(expected):
    print(f"warning: expected torch {expected} (DIFFORMER_EXPECT_TORCH), found "
          f"{torch.__version__}", file=sys.stderr)
