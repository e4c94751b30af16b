"""Child processes of the table and search scripts.

``scripts/reproduce.py`` and ``scripts/search_baselines.py`` train in a child ``train.py -m``.
A job scheduler (or ``kill``) stops a job with a SIGTERM to the process it started, the script;
passed on, the child stops at the end of its epoch with its last checkpoint saved, and the next
invocation resumes it. Not passed on, the training went on with nobody waiting for it. SIGINT
is not passed on: a Ctrl-C in a terminal reaches the whole process group already, and a second
one would make the child stop without its checkpoint.

A SIGKILL cannot be passed on: every child is started with :func:`die_with_parent`, so the
kernel sends it a SIGTERM when its parent dies, whatever killed the parent, and a rerun never
finds an orphan still training the same cell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1  # linux/prctl.h


PARENT_ENV = "DIFFORMER_DIE_WITH_PARENT"  # set by the parent to its pid


def child_env(env: dict | None = None) -> dict:
    """The environment of a child that should end with this process (:func:`die_with_parent`)."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """At a child's start, when its parent asked (:func:`child_env`): have the kernel send
    it a SIGTERM when the parent dies, whatever killed the parent (Linux's PR_SET_PDEATHSIG;
    elsewhere nothing). It then stops at its epoch's end with its last checkpoint saved, as
    on any SIGTERM. Done in the child itself, not in a ``preexec_fn``, which is unsafe in a
    parent with threads."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def call(cmd: list[str], **popen_kwargs) -> int:
    """``subprocess.call`` that passes a SIGTERM it receives on to the child, and whose child
    ends when this process dies (:func:`die_with_parent`)."""
    popen_kwargs["env"] = child_env(popen_kwargs.get("env"))
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
