"""One parallel run's process: ``python -m difformer.worker <worker dir>``.

Started by :class:`difformer.train.parallel_runs.Workers` (``trainer.parallel_runs=K``); it runs
the invocation in ``<worker dir>/job.yaml`` (the parent's resolved settings with this worker's
runs and threads) and records why it stopped, as the command line would.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from .invocation import record_failure, run
from .runs.rundir import JOB
from .system.processes import die_with_parent
from .train.lifecycle import Interrupted


def main(argv: list[str]) -> int:
    die_with_parent()  # the parent asked: end when it ends, even by SIGKILL
    wdir = Path(argv[0])
    cfg = OmegaConf.load(wdir / JOB)
    try:
        run(cfg, wdir)  # type: ignore[arg-type]  # job.yaml is a mapping
    except Interrupted as err:
        record_failure(wdir, cfg, err)  # type: ignore[arg-type]
        print(
            f"worker {wdir.name} stopped by {err}: its last checkpoint is saved",
            file=sys.stderr,
            flush=True,
        )
        return err.exit_code
    except BaseException as err:
        record_failure(wdir, cfg, err)  # type: ignore[arg-type]
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
