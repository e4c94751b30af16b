"""Files a run writes: atomically where a crash must not leave a half-written file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; outputs get the mode any other file of the user would get, so
# colleagues sharing a results folder on a cluster can read them.
FILE_MODE = 0o666 & ~_umask()


def _atomic(path: Path, write) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: a crash, a kill or a full disk leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # a full disk inside torch.save surfaces as a RuntimeError whose context is the
        # OSError: report the OSError, with the file it was writing
        cause = err if isinstance(err, OSError) else err.__context__
        if isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(cause.errno, cause.strerror, str(path)) from err
        raise


def _finite(obj):
    """JSON has no NaN: undefined values (e.g. the std of one run) become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    data = json.dumps(_finite(obj), indent=2, sort_keys=False).encode() + b"\n"
    _atomic(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    data = text.encode()
    _atomic(path, lambda f: f.write(data))


def save_torch(path: Path, obj) -> None:
    import torch  # start-up time: the command line imports this module long before torch

    _atomic(path, lambda f: torch.save(obj, f))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (none when it does not exist). A last line cut short
    (a kill or a full disk in the middle of an append) is dropped: the run that wrote it
    logs that epoch again when it resumes."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            if number == len(lines):  # no newline after it: the torn tail of an append
                break
            raise ValueError(f"{path}, line {number}: not a JSON record ({err})") from err
    return records


def repair_tail(path: Path) -> None:
    """Cut a JSON-lines file back to its last complete line (after a torn append)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class JsonlWriter:
    """Appends one JSON object per line, flushed at once so a crash loses nothing written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)  # never append after half a line
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(_finite(record)) + "\n")  # one write of one whole line
        self._f.flush()

    def keep(self, predicate) -> None:
        """Rewrite the file (atomically) with only the records ``predicate`` accepts."""
        self._f.close()
        records = read_jsonl(self.path)
        kept = [r for r in records if predicate(r)]
        if len(kept) != len(records):
            write_text(self.path, "".join(json.dumps(_finite(r)) + "\n" for r in kept))
        self._f = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._f.close()
