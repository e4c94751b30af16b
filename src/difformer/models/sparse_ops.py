"""Sparse products whose operand is built once: a CSR matrix with its transpose.

A plain ``adj @ value`` with ``value`` requiring grad makes autograd transpose ``adj`` in every
backward of every layer (on Cora, 400 of an epoch's 500 CSR conversions were those transposes),
and the official code also rebuilds the normalised adjacency in every forward. Here the matrix
is built once per graph (:class:`OperandCache`, keyed on the very ``edge_index`` tensor passed)
and its transpose once, on the first backward that needs it (:class:`SparseOperand`); every
layer's forward and backward read the same two matrices. The numbers are those of the plain
product (the same CSR kernels on the same matrices).

The same holds for bag-of-words input features (Cora's 2708 x 1433 are 98.7 % zeros): the input
layer's product runs on their CSR form, 17x fewer multiply-adds.

No framework imports: this file only needs torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Auto mode turns dense input features into CSR when at most this fraction is non-zero and the
# matrix is big enough for the product to matter (below, the dense product is as fast).
SPARSE_INPUT_DENSITY = 0.10
SPARSE_INPUT_MIN_ELEMENTS = 100_000


class SparseOperand:
    """A sparse CSR matrix and, built lazily once, its transpose (also CSR)."""

    def __init__(self, matrix: Tensor):
        if not matrix.is_sparse_csr:
            raise TypeError(f"SparseOperand needs a sparse CSR matrix, got layout {matrix.layout}")
        self.matrix = matrix
        self._transpose: Tensor | None = None

    @property
    def transpose(self) -> Tensor:
        if self._transpose is None:
            self._transpose = self.matrix.t().to_sparse_csr()
        return self._transpose

    @property
    def shape(self) -> torch.Size:
        return self.matrix.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    def __matmul__(self, dense: Tensor) -> Tensor:
        return sparse_product(self, dense)


class _Product(torch.autograd.Function):
    """``operand.matrix @ dense`` whose backward is ``operand.transpose @ grad``."""

    @staticmethod
    def forward(ctx, operand: SparseOperand, dense: Tensor) -> Tensor:  # noqa: D102
        ctx.operand = operand
        return operand.matrix @ dense

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        if not ctx.needs_input_grad[1]:
            return None, None
        return None, ctx.operand.transpose @ grad.contiguous()


def sparse_product(operand: SparseOperand, dense: Tensor) -> Tensor:
    """``A @ dense`` for a :class:`SparseOperand` A, with the prebuilt transpose in backward."""
    if dense.requires_grad and torch.is_grad_enabled():
        return _Product.apply(operand, dense)
    return operand.matrix @ dense


def same(a, b) -> bool:
    """Tensors: the same object; anything else (sizes, flags): equal."""
    return a is b if isinstance(a, Tensor) or isinstance(b, Tensor) else a == b


class OperandCache:
    """The last operand built from some tensors, reused while the *same* tensor objects at the
    same in-place version are passed again (a full-graph run passes one ``edge_index`` every
    epoch; a mini-batch step passes a new one per chunk, so each chunk builds its own once).
    It holds references to its key tensors, so an identity match cannot be a recycled address.
    Never part of a state_dict, and empty in copies and pickles of the module that holds it."""

    def __init__(self):
        self._key: tuple | None = None
        self._value = None

    def get(self, tensors: tuple, build: Callable[[], object]):
        key = tuple((t, t._version) if isinstance(t, Tensor) else (t, None) for t in tensors)
        if (
            self._key is not None
            and len(key) == len(self._key)
            and all(same(a, b) and va == vb for (a, va), (b, vb) in zip(key, self._key))
        ):
            return self._value
        value = build()
        self._key, self._value = key, value
        return value

    def __deepcopy__(self, memo) -> OperandCache:
        return OperandCache()

    def __getstate__(self) -> dict:
        return {"_key": None, "_value": None}


def wants_sparse(x: Tensor, sparse_input: bool | None) -> bool:
    """Whether the input layer should read ``x`` as CSR: ``sparse_input`` True/False forces it;
    None (auto) chooses CSR for a large 2-D float matrix with at most 10 % non-zeros."""
    if x.is_sparse_csr:
        return True
    if sparse_input is not None:
        return bool(sparse_input) and x.dim() == 2
    if (
        x.dim() != 2
        or not x.is_floating_point()
        or x.numel() < SPARSE_INPUT_MIN_ELEMENTS
        or x.requires_grad
    ):
        return False
    return int(torch.count_nonzero(x)) <= SPARSE_INPUT_DENSITY * x.numel()


def to_operand(x: Tensor) -> SparseOperand:
    return SparseOperand(x if x.is_sparse_csr else x.to_sparse_csr())


def sparse_linear(operand: SparseOperand, linear: torch.nn.Linear) -> Tensor:
    """``linear(x)`` for CSR ``x``: x W^T + b with the gradient of W from x^T (prebuilt); in
    float32 under autocast (the CSR kernels lack bf16 on CPU)."""
    with torch.autocast(linear.weight.device.type, enabled=False):
        out = sparse_product(operand, linear.weight.t())
    return out if linear.bias is None else out + linear.bias


def keep_eager_under_compile() -> None:
    """Before ``torch.compile`` (``trainer.compile``): the sparse kernels (which dynamo cannot
    trace) and the cache's identity checks (plain Python) stay eager, outside the graph.

    Applied then, not at import: ``torch.compiler.disable`` imports ``torch._dynamo``, about
    1.5 s of every start-up that never compiles. Both are looked up at call time (a module
    global and a method), so rebinding them reaches every caller."""
    global sparse_product
    if getattr(sparse_product, "_difformer_eager", False):
        return
    sparse_product = torch.compiler.disable(sparse_product)
    sparse_product._difformer_eager = True  # type: ignore[attr-defined]
    OperandCache.get = torch.compiler.disable(OperandCache.get)  # type: ignore[method-assign]
