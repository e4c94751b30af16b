"""The console, kept: everything a command prints (stdout and stderr, its parallel workers'
lines included) also goes to ``train.log`` in its run directory, so the run directory holds
what the user saw.

Our output is plain ``print`` lines rather than ``logging`` records: the same lines must reach a
terminal unchanged and be readable by tests in-process, and a tee gives the file exactly the
console's text. Hydra's own job logging writes into the same ``train.log`` (appended, one
line at a time, so the two never interleave within a line).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO


class Tee:
    """A text stream that writes to ``stream`` and appends to ``log``."""

    def __init__(self, stream: IO[str], log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        try:
            self.log.write(text)
            self.log.flush()
        except (OSError, ValueError):  # a full disk or a closed log: the console goes on
            pass
        return n

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # progress bars follow the real terminal
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def __getattr__(self, name):
        return getattr(self.stream, name)


class ConsoleLog:
    """``with ConsoleLog(run_dir / "train.log"):`` tees sys.stdout and sys.stderr into the file
    (created on the first line written, so a command refused before printing leaves none)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self.saved: tuple | None = None
        self.file: IO[str] | None = None

    def _open(self) -> IO[str]:
        if self.file is None:  # (never creates the folder: a refused command's is gone)
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed on exit
        return self.file

    def __enter__(self) -> ConsoleLog:
        if self.enabled:
            self.saved = (sys.stdout, sys.stderr)
            lazy = _LazyFile(self._open)
            sys.stdout = Tee(sys.stdout, lazy)
            sys.stderr = Tee(sys.stderr, lazy)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            sys.stdout, sys.stderr = self.saved
            self.saved = None
        if self.file is not None:
            self.file.close()
            self.file = None


class _LazyFile:
    def __init__(self, opener):
        self.opener = opener

    def write(self, text: str) -> None:
        self.opener().write(text)  # an OSError here is caught by Tee.write

    def flush(self) -> None:
        self.opener().flush()
