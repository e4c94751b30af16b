"""Reading pickles found in data and cache folders without running their code.

Two formats we must read are pickles: the authors' SimCLR ``features.pkl`` (numpy arrays in a
dict) and scikit-learn's 20 Newsgroups cache (a zlib-compressed pickle that sklearn itself
unpickles). A pickle can name any callable; this unpickler accepts only numpy's array
reconstruction and scikit-learn's ``Bunch``, so a planted file fails with
:class:`UnsafeDataFile` instead of running.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path


class UnsafeDataFile(RuntimeError):
    """A file in a data or cache folder that would run code when loaded."""


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("sklearn.utils._bunch", "Bunch"),
    ("sklearn.utils", "Bunch"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("collections", "OrderedDict"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
        return super().find_class(module, name)


def safe_loads(payload: bytes, source: Path):
    try:
        return _Restricted(io.BytesIO(payload)).load()
    except (pickle.UnpicklingError, AttributeError, EOFError, ValueError) as err:
        raise UnsafeDataFile(
            f"{source} is not a plain data pickle ({err}); it was not "
            "loaded. Delete it if it is a cache, or replace it with the "
            "published file"
        ) from err


def safe_load(path: Path):
    """A pickle holding only numpy arrays, lists, dicts and numbers."""
    return safe_loads(Path(path).read_bytes(), Path(path))


def check_zlib_pickle(path: Path) -> None:
    """Check a zlib-compressed pickle (sklearn's dataset caches) before sklearn loads it."""
    try:
        payload = codecs.decode(Path(path).read_bytes(), "zlib_codec")
    except Exception as err:  # noqa: BLE001 - not zlib: sklearn would fail on it too
        raise UnsafeDataFile(f"{path} is not a zlib-compressed cache: {err}") from err
    safe_loads(payload, Path(path))


def check_torch_files(folder: Path) -> None:
    """Every ``processed/*.pt`` under ``folder`` must load with ``weights_only=True``: PyG
    falls back to a full unpickle when that fails, which would run a planted file's code."""
    import torch
    import torch_geometric.data  # noqa: F401 - registers PyG's classes as safe globals

    for path in sorted(Path(folder).rglob("processed/*.pt")):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise UnsafeDataFile(
                f"{path} does not load as weights-only torch data ({reason}); "
                "it was not loaded. Delete the processed folder to rebuild "
                "it from the raw files"
            ) from err


def _storage_from_bytes(payload: bytes):
    """``torch.storage._load_from_bytes`` with torch's weights-only loader (the bytes are a
    ``torch.save`` of one storage)."""
    import torch

    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


class _TensorPickle(_Restricted):
    """Also admits torch tensors pickled with the plain ``pickle`` module (ZINC's raw files):
    the tensor rebuild and its storage, read by torch's weights-only loader."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            import torch._utils

            return torch._utils._rebuild_tensor_v2
        return super().find_class(module, name)


def safe_load_tensors(path: Path):
    """A plain pickle of lists/dicts of numbers, numpy arrays and torch tensors."""
    path = Path(path)
    try:
        return _TensorPickle(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, AttributeError, EOFError, ValueError) as err:
        raise UnsafeDataFile(
            f"{path} is not a plain data pickle ({err}); it was not "
            "loaded. Delete it if it is a cache, or replace it with the "
            "published file"
        ) from err
