"""Compressed-row arithmetic on plain ``(indptr, indices, data)`` arrays.

A controller step builds and slices dozens of small sparse matrices (10 to 80,000 entries);
at those sizes scipy's per-call work (index dtype and format checks, fancy-indexing dispatch,
format conversions) costs more than the arithmetic. The compiler and the LP builder therefore
gather, filter and concatenate rows here with a few numpy passes each, and make a scipy matrix
only where one is handed on. Every function keeps a canonical input canonical (indices sorted
within a row, no duplicates, no explicit zeros unless the input had them).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import scipy.sparse as sp


def entry_rows(indptr: np.ndarray) -> np.ndarray:
    """The row of every entry of a compressed matrix with row pointer ``indptr``."""
    return np.repeat(np.arange(indptr.size - 1), np.diff(indptr))


def pointer(counts: np.ndarray) -> np.ndarray:
    """Row pointer (int64) of rows holding ``counts`` entries each."""
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def take_rows(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of the rows ``rows`` (in that order, repeats allowed)."""
    start = indptr[rows]
    cnt = indptr[rows + 1] - start
    ptr = pointer(cnt)
    pos = np.arange(ptr[-1]) + np.repeat(start - ptr[:-1], cnt)
    return ptr, indices[pos], data[pos]


def keep_entries(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same rows with only the entries ``keep`` (bool per entry)."""
    n = indptr.size - 1
    ptr = pointer(np.bincount(entry_rows(indptr)[keep], minlength=n))
    return ptr, indices[keep], data[keep]


def hstack_rows(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise concatenation of matrices with the same rows: ``parts`` are ``(indptr, indices,
    data, column offset)``, their columns in disjoint ranges ascending with the parts (so sorted
    rows stay sorted). ``(indptr, indices, data)``: int64, int64, the parts' common data type."""
    kernel = HSTACK_KERNEL.get()
    dtype = np.result_type(*(p[2] for p in parts))
    if kernel is not None and dtype == np.float64:
        return kernel(
            np.stack([np.asarray(p[0], dtype=np.int64) for p in parts]),
            np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts]),
            np.concatenate([np.asarray(p[2], dtype=np.float64) for p in parts]),
            np.array([p[3] for p in parts], dtype=np.int64),
        )
    counts = np.stack([np.diff(p[0]) for p in parts])  # (parts, rows)
    ptr = pointer(counts.sum(axis=0))
    before = np.cumsum(counts, axis=0) - counts  # entries of earlier parts in the row
    dest = [
        np.arange(p[0][-1]) + np.repeat(ptr[:-1] + before[k] - p[0][:-1], counts[k])
        for k, p in enumerate(parts)
    ]
    nnz = int(ptr[-1])
    idx = np.empty(nnz, dtype=np.int64)
    val = np.empty(nnz, dtype=np.result_type(*(p[2] for p in parts)))
    for d, p in zip(dest, parts, strict=True):
        idx[d] = p[1] + p[3]
        val[d] = p[2]
    return ptr, idx, val


def _scipy_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """:func:`csr` by scipy's constructor (the reference the direct form must match)."""
    m = sp.csr_matrix((data, indices, indptr), shape=shape)
    m.has_sorted_indices = True
    return m


_INT32_MAX = int(np.iinfo(np.int32).max)


def _direct_ok() -> bool:
    """Whether scipy's ``csr_matrix`` keeps exactly the attributes :func:`csr` sets directly
    (checked once per process on a small matrix: a scipy whose internals differ gets its own
    constructor)."""
    try:
        ref = _scipy_csr(np.array([0, 1, 3]), np.array([0, 1, 2]), np.ones(3), (2, 4))
        got = _csr_direct(np.array([0, 1, 3]), np.array([0, 1, 2]), np.ones(3), (2, 4))
    except Exception:  # pragma: no cover - a scipy without these attributes
        return False
    keys = set(vars(ref))
    return (
        keys == set(vars(got))
        and keys == {"_shape", "maxprint", "indices", "indptr", "data", "_has_sorted_indices"}
        and all(
            type(getattr(ref, k)) is type(getattr(got, k))
            and (
                getattr(ref, k).dtype == getattr(got, k).dtype
                if isinstance(getattr(ref, k), np.ndarray)
                else getattr(ref, k) == getattr(got, k)
            )
            for k in keys
        )
    )


def _csr_direct(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    m = sp.csr_matrix.__new__(sp.csr_matrix)
    m._shape = (int(shape[0]), int(shape[1]))
    m.maxprint = _MAXPRINT
    m.indices = indices.astype(np.int32, copy=False)
    m.indptr = indptr.astype(np.int32, copy=False)
    m.data = data
    m._has_sorted_indices = True
    return m


def _unpruned(a: np.ndarray) -> bool:
    """scipy keeps ``a`` (a view of it) rather than copying it: it does not view less than half
    of a larger array (``scipy.sparse._compressed._prune_array``)."""
    b = a[: a.size].base  # what scipy looks at: the base of its slice
    return b is None or a.size >= b.size // 2


_MAXPRINT = sp.csr_matrix((1, 1)).maxprint
_DIRECT = _direct_ok()


def csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """A scipy CSR matrix of canonical arrays (marked canonical: scipy need not check).

    The result is what ``scipy.sparse.csr_matrix((data, indices, indptr), shape)`` gives (int32
    indices, ``data`` itself, sorted indices), set up directly where the arrays are exactly
    sized 1-D integer/numeric arrays that fit int32: scipy's constructor checks and converts for
    ~20 µs, more than a controller step's arithmetic on most of its matrices. Anything else goes
    through scipy."""
    n_rows, n_cols = shape
    if (
        _DIRECT
        and type(data) is np.ndarray
        and type(indices) is np.ndarray
        and type(indptr) is np.ndarray
        and indptr.ndim == 1
        and indices.ndim == 1
        and data.ndim == 1
        and indptr.dtype.kind == "i"
        and indices.dtype.kind == "i"
        and indptr.size == n_rows + 1
        and indices.size == data.size
        and 0 <= n_rows <= _INT32_MAX
        and 0 <= n_cols <= _INT32_MAX
        and indices.size <= _INT32_MAX
        and int(indptr[0]) == 0
        and int(indptr[-1]) == indices.size
        and _unpruned(data)
        and (indices.dtype != np.int32 or _unpruned(indices))
    ):
        return _csr_direct(indptr, indices, data, shape)
    return _scipy_csr(indptr, indices, data, shape)


def _coo_to_csc_loop(
    r: np.ndarray, c: np.ndarray, v: np.ndarray, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Counting sort of COO triplets by column, entries of a column in input order:
    ``(indptr, indices, data, canonical)``, ``canonical`` False where some column's rows are not
    strictly ascending (the result then is not what scipy's conversion gives)."""
    nnz = r.size
    ptr = np.zeros(n_cols + 1, np.int64)
    for k in range(nnz):
        ptr[c[k] + 1] += 1
    for j in range(n_cols):
        ptr[j + 1] += ptr[j]
    nxt = ptr[:-1].copy()
    indices = np.empty(nnz, np.int32)
    data = np.empty(nnz, np.float64)
    for k in range(nnz):
        j = c[k]
        p = nxt[j]
        indices[p] = r[k]
        data[p] = v[k]
        nxt[j] = p + 1
    for j in range(n_cols):
        for p in range(ptr[j] + 1, ptr[j + 1]):
            if indices[p] <= indices[p - 1]:
                return ptr.astype(np.int32), indices, data, False
    return ptr.astype(np.int32), indices, data, True


class LazyKernel:
    """A loop compiled by numba (``njit(cache=True)``) when a process needs it often.

    Numba is imported, and the loop compiled or loaded from its cache, only once the process has
    asked for the kernel ``after`` times (a controller compiles every step; a one-shot compile
    does not pay numba's import, ~0.1–0.3 s, nor a first compilation, ~0.5 s), or at once when
    numba is already imported. :meth:`get` returns None until then, and always where numba is
    missing or ``LOADOPT_DISABLE_NUMBA`` is set: the caller runs its numpy form, which gives the
    same result. Arguments numba cannot type (an array in non-native byte order) run the loop
    interpreted (:func:`_or_interpreted`).
    """

    def __init__(self, func: Any, after: int = 8) -> None:
        self.func = func
        self.after = after
        self.asked = 0
        self.kernel: Any = None
        self.done = False

    def get(self, force: bool = False) -> Any:
        """The compiled kernel, or None (not yet needed often enough, or no numba)."""
        if self.done:
            return self.kernel
        self.asked += 1
        if not force and self.asked < self.after and "numba" not in sys.modules:
            return None
        self.done = True
        if os.environ.get("LOADOPT_DISABLE_NUMBA", "").strip() in ("", "0"):
            try:
                from numba import njit
            except ImportError:  # numba missing: the numpy form runs
                return None
            self.kernel = _or_interpreted(njit(cache=True, nogil=True)(self.func), self.func)
        return self.kernel


def _or_interpreted(compiled: Any, func: Any) -> Any:
    """``compiled`` where numba can type the arguments, else the same loop interpreted (an
    argument numba has no compiled form for — an array in non-native byte order, an object
    array — must not stop the caller: the loop's Python run gives the same result, slowly)."""
    from numba.core.errors import NumbaError

    def call(*args: Any) -> Any:
        try:
            return compiled(*args)
        except NumbaError:
            return func(*args)

    return call


#: :func:`_coo_to_csc_loop` compiled (:class:`LazyKernel`).
COO_KERNEL = LazyKernel(_coo_to_csc_loop)


def _take_map_loop(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`take_map` in one pass."""
    total = 0
    for i in range(rows.size):
        total += indptr[rows[i] + 1] - indptr[rows[i]]
    idx = np.empty(total, np.int64)
    val = np.empty(total, np.float64)
    ptr = np.empty(rows.size + 1, np.int64)
    which = np.empty(rows.size, np.int64)
    ptr[0] = 0
    k = 0
    p = 0
    for i in range(rows.size):
        r = rows[i]
        start = p
        for j in range(indptr[r], indptr[r + 1]):
            c = cols[indices[j]]
            if c >= 0:
                idx[p] = c
                val[p] = data[j]
                p += 1
        if p > start:
            which[k] = i
            k += 1
            ptr[k] = p
    return ptr[: k + 1], idx[:p], val[:p], which[:k]


#: :func:`_take_map_loop` compiled (:class:`LazyKernel`).
TAKE_MAP_KERNEL = LazyKernel(_take_map_loop)


def _hstack_rows_loop(
    ptrs: np.ndarray, idx: np.ndarray, val: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`hstack_rows` in one pass: ``ptrs`` (K, rows + 1) the parts' row pointers,
    ``idx`` / ``val`` their entries one part after the other, ``offsets`` (K,) their column
    offsets."""
    K, n1 = ptrs.shape
    n = n1 - 1
    start = np.zeros(K, np.int64)  # where each part's entries begin in idx / val
    for k in range(1, K):
        start[k] = start[k - 1] + ptrs[k - 1, n]
    ptr = np.empty(n + 1, np.int64)
    ptr[0] = 0
    total = 0
    for k in range(K):
        total += ptrs[k, n]
    out_i = np.empty(total, np.int64)
    out_v = np.empty(total, np.float64)
    p = 0
    for r in range(n):
        for k in range(K):
            for j in range(ptrs[k, r], ptrs[k, r + 1]):
                out_i[p] = idx[start[k] + j] + offsets[k]
                out_v[p] = val[start[k] + j]
                p += 1
        ptr[r + 1] = p
    return ptr, out_i, out_v


#: :func:`_hstack_rows_loop` compiled (:class:`LazyKernel`).
HSTACK_KERNEL = LazyKernel(_hstack_rows_loop)


def take_map(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows ``rows`` of a canonical CSR matrix (float64 data) with their columns renumbered
    by ``cols`` (int64, −1: dropped) and the rows left empty dropped: ``(indptr, indices, data,
    which)``, ``which`` the positions in ``rows`` of the rows kept (int64 arrays)."""
    kernel = TAKE_MAP_KERNEL.get()
    if kernel is not None:
        return kernel(indptr, indices, data, rows.astype(np.int64, copy=False), cols)
    ptr, idx, val = take_rows(indptr, indices, data, rows)
    idx = cols[idx]
    ptr, idx, val = keep_entries(ptr, idx, val, idx >= 0)
    nz = np.diff(ptr) > 0
    return np.r_[0, ptr[1:][nz]], idx, val, np.flatnonzero(nz)


def csc_from_coo(
    r: np.ndarray, c: np.ndarray, v: np.ndarray, shape: tuple[int, int]
) -> sp.csc_matrix:
    """``scipy.sparse.csc_matrix((v, (r, c)), shape)`` with sorted indices, the same matrix
    entry for entry: by one compiled counting pass where every column's rows come in ascending
    order without repeats (the LP builder's row blocks), else by scipy (which sorts and sums
    duplicates)."""
    m, n = shape
    kernel = COO_KERNEL.get()
    if kernel is not None and max(r.size, m, n) < 2**31 - 1:
        ptr, idx, val, ok = kernel(
            r.astype(np.int64, copy=False),
            c.astype(np.int64, copy=False),
            v.astype(np.float64, copy=False),
            n,
        )
        if ok:
            out = sp.csc_matrix((val, idx, ptr), shape=shape)
            out.has_sorted_indices = True
            return out
    out = sp.csc_matrix((v, (r, c)), shape=shape)
    out.sort_indices()
    return out
