"""Fail the install if pip brought a torch other than the pinned CPU build, or CUDA wheels."""
import importlib.metadata as md
import sys

import torch

PINNED = "2.13.0"
if not torch.__version__.startswith(PINNED):
    sys.exit(f"torch {torch.__version__} installed, but {PINNED} is pinned: reinstall with "
             f"pip install torch=={PINNED}")
cuda_wheels = sorted(d.metadata["Name"] for d in md.distributions()
                     if (d.metadata["Name"] or "").lower().startswith("nvidia-"))
if cuda_wheels:
    sys.exit(f"CUDA wheels were pulled in ({', '.join(cuda_wheels)}); the install must keep "
             f"the pinned torch=={PINNED}")
print(f"environment ok: torch {torch.__version__}")
