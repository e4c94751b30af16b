"""An opt-in memory allocator for large graphs: ``DIFFORMER_ALLOCATOR=mimalloc``.

On a CPU, a DIFFormer-s step at 100 k-1 M nodes allocates and frees dozens of [N, h] tensors;
glibc hands each one (above its 32 MiB mmap threshold) back to the kernel when freed, so every
new one starts on fresh pages the kernel must zero: at 1 M nodes that page-fault work was a third
of the step (measured: 134 s of system time). mimalloc keeps freed memory for reuse -- with its
purge delay off (``MIMALLOC_PURGE_DELAY=-1``) it never returns it -- which removed most of that
time without raising the peak (``make bench``: scaling). glibc's own switches (no mmap, no trim)
do the same but fragment the heap: 1.8x the peak at 100 k nodes, out of memory at 1 M here.

The allocator must be loaded before the process starts (``LD_PRELOAD``), so ``train.py`` re-runs
itself once with it when the variable asks for it; worker processes inherit it. The library comes
with the ``speed`` extra (``pip install 'difformer[speed]'``: the ``cmeel-mimalloc`` wheel), or
from ``DIFFORMER_MIMALLOC=/path/to/libmimalloc.so``. Linux only.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

VARIABLE = "DIFFORMER_ALLOCATOR"
CHOICES = ("default", "mimalloc")


class AllocatorError(RuntimeError):
    """The requested allocator cannot be loaded (one line for the user)."""


def mimalloc_library() -> Path:
    """The mimalloc shared library: ``DIFFORMER_MIMALLOC``, else the cmeel-mimalloc wheel's."""
    override = os.environ.get("DIFFORMER_MIMALLOC")
    if override:
        if not Path(override).is_file():
            raise AllocatorError(f"DIFFORMER_MIMALLOC={override}: no such file")
        return Path(override)
    for key in ("purelib", "platlib"):
        lib = Path(sysconfig.get_paths()[key]) / "cmeel.prefix" / "lib"
        found = sorted(lib.glob("libmimalloc.so*"), key=lambda p: len(p.name))
        if found:
            return found[0]
    raise AllocatorError(
        f"{VARIABLE}=mimalloc needs the library: pip install "
        "'difformer[speed]' (the cmeel-mimalloc wheel), or set "
        "DIFFORMER_MIMALLOC=/path/to/libmimalloc.so"
    )


def preloaded() -> bool:
    return "mimalloc" in os.environ.get("LD_PRELOAD", "")


def requested() -> str:
    choice = os.environ.get(VARIABLE, "default") or "default"
    if choice not in CHOICES:
        raise AllocatorError(f"{VARIABLE}={choice} is not allowed; use {' or '.join(CHOICES)}")
    return choice


def reexec_if_requested(argv: list[str] | None = None) -> None:
    """With ``DIFFORMER_ALLOCATOR=mimalloc``, replace this process by the same command with
    mimalloc preloaded (once: the new process sees it loaded and goes on)."""
    if requested() == "default" or preloaded():
        return
    if not sys.platform.startswith("linux"):
        raise AllocatorError(f"{VARIABLE}=mimalloc is supported on Linux only")
    library = mimalloc_library()
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [str(library), env.get("LD_PRELOAD")]))
    env.setdefault("MIMALLOC_PURGE_DELAY", "-1")  # keep freed memory for reuse
    argv = list(sys.argv if argv is None else argv)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)


def loaded_allocator() -> str:
    """'mimalloc' when the library is mapped into this process, else 'default'."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "default"
    return "mimalloc" if "libmimalloc" in maps else "default"


if __name__ == "__main__":  # python -m difformer.system.allocator: which allocator this would use
    try:
        reexec_if_requested(["-m", "difformer.system.allocator"])
    except AllocatorError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(loaded_allocator())
