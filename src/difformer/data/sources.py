"""Where raw files live: a data root (read-only is fine) and a writable cache.

``data_dir`` comes from ``paths.data_dir`` (default: ``$DIFFORMER_DATA`` or ``./data``); it may
be a read-only folder such as a shared copy of the raw files, and is never written to.
Loaders that write processed files next to the raw ones (PyG) work on a copy under
``cache_dir``, where downloads also go. With ``offline``
set, a missing file is an immediate, explicit error instead of a download attempt.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .safe_pickle import check_torch_files

T = TypeVar("T")


class DatasetUnavailable(FileNotFoundError):
    """Raised when a dataset's files are missing and cannot be downloaded; ``path`` is where
    they were expected."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class DataError(ValueError):
    """A data file that cannot be used as given (missing arrays, wrong shapes, bad ids):
    reported in one line naming the file and what it needs."""


@dataclass(frozen=True)
class DataRoot:
    data_dir: Path
    cache_dir: Path
    offline: bool = False

    @classmethod
    def from_config(cls, paths) -> DataRoot:
        offline = str(paths.get("offline", False)).lower() in ("1", "true", "yes")
        return cls(
            Path(paths.data_dir).expanduser().resolve(),
            Path(paths.cache_dir).expanduser().resolve(),
            offline,
        )

    def find(self, relpath: str) -> Path | None:
        """The existing file or folder ``relpath`` under data_dir, else under cache_dir."""
        for base in (self.data_dir, self.cache_dir):
            if (base / relpath).exists():
                return base / relpath
        return None

    def writable(self, relpath: str) -> Path:
        """A folder under cache_dir holding the contents of ``relpath`` (copied once).

        data_dir is never written to (permission bits say nothing when running as root, so
        we do not rely on them). Returns the cache location when the files exist nowhere
        yet; a loader may then download into it.
        """
        src, dst = self.data_dir / relpath, self.cache_dir / relpath
        if src.exists() and dst.is_dir() and not any(p.is_file() for p in dst.rglob("*")):
            shutil.rmtree(dst, ignore_errors=True)  # left empty by a failed download
        if src.exists() and not dst.exists():
            tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            for p in [tmp, *tmp.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
            try:
                os.replace(tmp, dst)
            except OSError:  # another process finished the same copy first
                shutil.rmtree(tmp, ignore_errors=True)
                if not dst.exists():
                    raise
        return dst

    def unavailable(self, name: str, relpath: str, source: str) -> DatasetUnavailable:
        return DatasetUnavailable(
            f"dataset {name!r}: files not found at {self.data_dir / relpath} "
            f"(nor in the cache {self.cache_dir / relpath}); they come from {source}. "
            "Put them there, point DIFFORMER_DATA (or paths.data_dir=...) at a folder that "
            "holds them, or run with internet access so the loader can download them.",
            path=str(self.data_dir / relpath),
        )

    def load(
        self, name: str, relpath: str, source: str, required: list[str], loader: Callable[[], T]
    ) -> T:
        """Run ``loader`` (which may download) unless offline with ``required`` files absent.

        ``required`` are paths relative to the writable copy of ``relpath``; a failed download
        becomes a :class:`DatasetUnavailable` naming the expected path and the source.
        """
        root = self.writable(relpath)
        check_torch_files(root)  # before PyG can fall back to an unsafe unpickle
        missing = [r for r in required if not (root / r).exists()]
        if missing and self.offline:
            raise self.unavailable(name, relpath, source)
        try:
            return loader()
        except DatasetUnavailable:
            raise
        except OSError as err:  # urllib's URLError is an OSError
            if not missing:
                raise
            raise self.unavailable(name, relpath, source) from err
