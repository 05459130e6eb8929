"""The per-step assembly of the safety rows as one compiled loop (numba).

:func:`loadopt.compile.rows._assemble_rows` turns a row template and one step's variables into
``G`` in CSR. Its numpy form takes about ten passes over the entries and a scipy CSC → CSR
conversion; at a controller step's sizes (10,000–80,000 entries) that is most of the compile.
The kernels here do the same in one pass (:func:`assemble_csr_by_group`: row after row, from
the template by group) or two (:func:`assemble_csr`: count the entries of every row, then fill
them in variable order, so every row comes out sorted by column) with no temporary per entry.
They are compiled with ``numba.njit(cache=True)`` once a process compiles often (:data:`KERNEL`,
:data:`KERNEL_BY_GROUP`, :class:`loadopt._csr.LazyKernel`), where numba is importable and
``LOADOPT_DISABLE_NUMBA`` is not set; otherwise the numpy form runs. All give the same matrix,
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


def assemble_csr_by_group(
    ct_ptr: np.ndarray,
    ct_unit: np.ndarray,
    ct_val: np.ndarray,
    groups: np.ndarray,
    unit_cnt: np.ndarray,
    unit: np.ndarray,
    period: np.ndarray,
    free: np.ndarray,
    finite: np.ndarray,
    T: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`assemble_csr` from the template by group: the units with an entry in group
    ``groups[k]`` are ``ct_unit[ct_ptr[k]:ct_ptr[k + 1]]`` (ascending) with coefficients
    ``ct_val``; ``unit_cnt[u]`` is unit ``u``'s number of entries.

    One pass that writes ``G`` row after row (row ``g·T + t``: the variable of every unit of
    group ``g`` in period ``t``), no counting pass and no scattered writes. Row ``g·T + t``'s
    entries come out in unit order, which is variable order when the variables are sorted by
    ``(unit, period)`` (a compile's: the sessions' variables session-major, then the battery
    columns battery-major); otherwise (or two variables of one unit and period) it returns
    None and :func:`assemble_csr` runs. The same arrays as :func:`assemble_csr`.
    """
    n_units = unit_cnt.size
    var_of = np.full(n_units * T, -1, np.int32)  # the free variable of each (unit, period)
    last = -1
    cap = 0
    for v in range(unit.size):
        key = unit[v] * T + period[v]
        if key <= last:
            return None
        last = key
        if free[v]:
            var_of[key] = v
            cap += unit_cnt[unit[v]]
    indices = np.empty(cap, np.int32)
    data = np.empty(cap, np.float64)
    rows = np.empty(groups.size * T, np.int64)
    indptr = np.empty(groups.size * T + 1, np.int32)
    indptr[0] = 0
    p = 0
    k = 0
    for gi in range(groups.size):
        lo = ct_ptr[gi]
        hi = ct_ptr[gi + 1]
        for t in range(T):
            r = groups[gi] * T + t
            if not finite[r]:
                continue
            start = p
            for e in range(lo, hi):
                v = var_of[ct_unit[e] * T + t]
                if v >= 0:
                    indices[p] = v
                    data[p] = ct_val[e]
                    p += 1
            if p > start:
                rows[k] = r
                k += 1
                indptr[k] = p
    # exactly sized arrays (the CSR matrix holds them as they are)
    return indptr[: k + 1].copy(), indices[:p].copy(), data[:p].copy(), rows[:k].copy()


def template_by_group(
    ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, on: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A row template ``(ptr, idx, val)`` (units × groups, canonical) on the groups ``on``, by
    group: ``(ptr, unit, val, groups, unit_cnt)`` as :func:`assemble_csr_by_group` takes it
    (a counting sort by group, stable: units ascending within a group; int64 and float64)."""
    U = ptr.size - 1
    n_groups = on.size
    per_group = np.zeros(n_groups, np.int64)
    unit_cnt = np.zeros(U, np.int64)
    for u in range(U):
        for j in range(ptr[u], ptr[u + 1]):
            g = idx[j]
            if on[g]:
                per_group[g] += 1
                unit_cnt[u] += 1
    n_present = 0
    for g in range(n_groups):
        if per_group[g] > 0:
            n_present += 1
    groups = np.empty(n_present, np.int64)
    gptr = np.empty(n_present + 1, np.int64)
    nxt = np.empty(n_groups, np.int64)  # the next slot of each group
    gptr[0] = 0
    k = 0
    acc = 0
    for g in range(n_groups):
        if per_group[g] > 0:
            groups[k] = g
            nxt[g] = acc
            acc += per_group[g]
            k += 1
            gptr[k] = acc
    units = np.empty(acc, np.int64)
    vals = np.empty(acc, np.float64)
    for u in range(U):
        for j in range(ptr[u], ptr[u + 1]):
            g = idx[j]
            if on[g]:
                q = nxt[g]
                units[q] = u
                vals[q] = val[j]
                nxt[g] = q + 1
    return gptr, units, vals, groups, unit_cnt


#: :func:`assemble_csr` compiled when a process compiles often (:class:`loadopt._csr.LazyKernel`).
KERNEL = LazyKernel(assemble_csr)
#: :func:`assemble_csr_by_group` compiled likewise.
KERNEL_BY_GROUP = LazyKernel(assemble_csr_by_group)
#: :func:`template_by_group` compiled likewise.
KERNEL_TEMPLATE = LazyKernel(template_by_group)
