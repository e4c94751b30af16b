"""Child processes of the table and search scripts.

``scripts/reproduce.py`` and ``scripts/search_baselines.py`` train in a child ``train.py -m``.
A job scheduler (or ``kill``) stops a job with a SIGTERM to the process it started, the script;
passed on, the child stops at the end of its epoch with its last checkpoint saved, and the next
invocation resumes it. Not passed on, the training went on with nobody waiting for it. SIGINT
is not passed on: a Ctrl-C in a terminal reaches the whole process group already, and a second
one would make the child stop without its checkpoint.
"""

from __future__ import annotations

import signal
import subprocess
import threading


def call(cmd: list[str], **popen_kwargs) -> int:
    """``subprocess.call`` that passes a SIGTERM it receives on to the child."""
    proc = subprocess.Popen(cmd, **popen_kwargs)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()  # retried after the handler runs (PEP 475)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def stopped_by(code: int) -> int | None:
    """The stop signal a child ended with: 143/130 when it stopped by itself at an epoch's end
    with its checkpoint saved, -15/-2 when the signal came before it had installed its handler
    (still starting: nothing of it to lose); None for any other exit."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if code in (128 + sig, -sig):
            return int(sig)
    return None
