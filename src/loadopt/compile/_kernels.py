"""The per-step assembly of the safety rows as one compiled loop (numba).

:func:`loadopt.compile.rows._assemble_rows` turns a row template and one step's variables into
``G`` in CSR. Its numpy form takes about ten passes over the entries and a scipy CSC → CSR
conversion; at a controller step's sizes (10,000–80,000 entries) that is most of the compile.
The kernel here does the same in two passes over the entries (count the entries of every row,
then fill them in variable order, so every row comes out sorted by column) with no temporary
per entry. It is compiled with ``numba.njit(cache=True)`` once a process compiles often
(:data:`KERNEL`, a :class:`loadopt._csr.LazyKernel`), where numba is importable and
``LOADOPT_DISABLE_NUMBA`` is not set; otherwise the numpy form runs. Both give the same matrix,
entry for entry (tests/test_compile_arrays.py).
"""

from __future__ import annotations

import numpy as np

from .._csr import LazyKernel


def assemble_csr(
    ptr: np.ndarray,
    idx: np.ndarray,
    val: np.ndarray,
    unit: np.ndarray,
    period: np.ndarray,
    free: np.ndarray,
    finite: np.ndarray,
    T: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The safety rows as CSR: ``(indptr, indices, data, rows)``.

    Variable ``v`` (of unit ``unit[v]`` in period ``period[v]``, with entries only where
    ``free[v]``) enters row ``idx[j]·T + period[v]`` with coefficient ``val[j]`` for every
    template entry ``j`` of its unit (``ptr[u] ≤ j < ptr[u + 1]``) whose row is ``finite``.
    ``rows`` are the row ids that got an entry (ascending, the rows of the result); column
    indices are the variables, ascending within every row (int32, as scipy's conversion gives
    for these sizes).
    """
    n_full = finite.size
    # entries per row id, then (in place) the next free slot of each present row: one int32
    # array over the row ids (large sites have ~10⁶ of them; most empty)
    nxt = np.zeros(n_full, np.int32)
    for v in range(unit.size):
        if free[v]:
            u, t = unit[v], period[v]
            for j in range(ptr[u], ptr[u + 1]):
                r = idx[j] * T + t
                if finite[r]:
                    nxt[r] += 1
    n = 0
    for r in range(n_full):
        if nxt[r] > 0:
            n += 1
    rows = np.empty(n, np.int64)
    indptr = np.empty(n + 1, np.int32)
    indptr[0] = 0
    k = 0
    acc = 0
    for r in range(n_full):
        c = nxt[r]
        if c > 0:
            rows[k] = r
            nxt[r] = acc
            acc += c
            k += 1
            indptr[k] = acc
    indices = np.empty(acc, np.int32)
    data = np.empty(acc, np.float64)
    for v in range(unit.size):
        if free[v]:
            u, t = unit[v], period[v]
            for j in range(ptr[u], ptr[u + 1]):
                r = idx[j] * T + t
                if finite[r]:
                    p = nxt[r]
                    indices[p] = v
                    data[p] = val[j]
                    nxt[r] = p + 1
    return indptr, indices, data, rows


#: :func:`assemble_csr` compiled when a process compiles often (:class:`loadopt._csr.LazyKernel`).
KERNEL = LazyKernel(assemble_csr)
