"""An LP whose rows share no column, solved exactly without a solver.

After :func:`loadopt.lp.build_lp` has dropped every safety row that cannot bind, an
uncongested step's LP is *separable*: each column is in at most one row (a session's currents
and its unmet slack in that session's energy row), so it falls apart into one-row LPs

    min Σ_j c_j x_j   s.t.   L ≤ Σ_j a_j x_j ≤ U,   l_j ≤ x_j ≤ u_j   (a_j > 0),

each a continuous knapsack. With the activity ``s = Σ a_j x_j``, the least cost of reaching ``s``
from ``s0 = Σ a_j l_j`` is convex and piecewise linear: raise the columns in increasing order of
cost per unit of activity ``c_j / a_j``. Its minimum over ``[L, U]`` is at the activity where
that slope turns non-negative, clamped to ``[L, U]``; filling the columns in that order up to
it is an optimum (the LP dual: ``λ`` the slope there). Columns in no row sit at the bound their
cost prefers. On the JPL week two of five controller steps are separable; HiGHS spent
~0.2–0.3 ms on each, setup included, where this is a sort.

Where every column is in a row (the energy rows of an uncongested step) the work runs as one
compiled loop (:func:`_knapsack_loop`, numba through :class:`~loadopt._csr.LazyKernel`: a
counting sort by row, an insertion sort by cost within a row) with the numpy form's arithmetic
in the numpy form's order, so the two give the same bits (hypothesis test); ~0.02 ms instead of
~0.11 ms on the JPL week. Whatever the loop does not decide (an infinite bound or capacity, a
coefficient or cost that is not finite and positive, a bound of −0.0) goes to the numpy form.

Exact, not a heuristic: the same optimal objective as HiGHS to rounding
(``tests/test_separable.py`` against HiGHS on random separable LPs). Anything else — a column
in two rows, a non-positive coefficient, an infinite bound a cost pushes towards, an infeasible
row, binaries — returns ``None``, and the caller solves with HiGHS.
"""

from __future__ import annotations

import time

import numpy as np

from .._csr import LazyKernel
from ..lp import LinearProgram
from .result import SolverResult, SolverStatus

#: Activity tolerance of the feasibility checks (row units: kWh, A).
_TOL = 1e-9


def solve_separable(lp: LinearProgram) -> SolverResult | None:
    """Solve ``lp`` exactly by sorting when each of its columns is in at most one row.

    Parameters
    ----------
    lp
        A linear programme (continuous: ``lp.integrality`` None).

    Returns
    -------
    SolverResult or None
        ``optimal`` with the column values and the objective (offset included), or ``None``
        when ``lp`` is not of this form (see the module docstring): solve it with HiGHS.
    """
    t0 = time.perf_counter()
    if lp.integrality is not None and np.any(lp.integrality):
        return None
    n = int(lp.n_cols)
    if n == 0 or lp.A.nnz > n:  # more entries than columns: some column is in two rows
        return None
    A = lp.A.tocsc() if lp.A.format != "csc" else lp.A
    ptr = A.indptr
    nnz = ptr[1:] - ptr[:-1]
    if nnz.max() > 1:
        return None
    c = np.asarray(lp.c, dtype=np.float64)
    lo = np.asarray(lp.col_lb, dtype=np.float64)
    up = np.asarray(lp.col_ub, dtype=np.float64)
    r_lo = np.asarray(lp.row_lb, dtype=np.float64)
    r_hi = np.asarray(lp.row_ub, dtype=np.float64)
    if (
        A.nnz == n
        and A.data.dtype == np.float64
        # (the loop indexes these by the matrix's rows and columns without a bounds check)
        and A.shape == (r_lo.size, n)
        and lo.size == up.size == n
        and r_hi.size == r_lo.size == int(lp.n_rows)
    ):  # every column in a row
        kernel = KNAPSACK_KERNEL.get()
        if kernel is not None:
            status, x = kernel(c, lo, up, A.indices, A.data, r_lo, r_hi, int(lp.n_rows))
            if status == _SOLVED:
                return _result(lp, c, x, t0)
            if status == _NONE:
                return None
            # _UNSURE: the numpy form decides
    if np.any(lo > up) or np.any(np.isneginf(lo)) or np.isnan(c @ c + lo @ lo + up @ up):
        return None  # (NaN anywhere in c, lo, up: the squares sum to NaN)
    if np.any(r_lo > r_hi + _TOL) or np.isnan(r_lo @ r_lo + r_hi @ r_hi):
        return None  # a row no activity satisfies (or NaN): HiGHS says so properly
    x = lo.copy()
    if A.nnz == n:  # every column in a row (the energy rows of an uncongested step)
        in_row = None
        row = A.indices.astype(np.int64)
        a = A.data.astype(np.float64)
        cj, lj, uj = c, lo, up
    else:
        free = nnz == 0
        down = free & (c < 0)  # in no row: the bound the cost prefers
        if np.any(np.isposinf(up[down])):
            return None
        x[down] = up[down]
        in_row = np.flatnonzero(~free)
        if in_row.size == 0:
            if np.any(r_lo > _TOL) or np.any(r_hi < -_TOL):
                return None  # a row without columns that 0 does not satisfy: infeasible
            return _result(lp, c, x, t0)
        # CSC with one entry per such column: its row and coefficient, in column order
        row = A.indices[ptr[in_row]].astype(np.int64)
        a = A.data[ptr[in_row]].astype(np.float64)
        cj, lj, uj = c[in_row], lo[in_row], up[in_row]
    if np.any(a <= 0):
        return None
    p = cj / a  # cost per unit of activity
    m = int(lp.n_rows)
    cap = a * (uj - lj)  # activity a column can add (inf where unbounded)
    s0 = np.bincount(row, weights=a * lj, minlength=m)
    if np.isfinite(cap).all():
        s_max = s0 + np.bincount(row, weights=cap, minlength=m)
        s_prof = s0 + np.bincount(row, weights=np.where(p < 0, cap, 0.0), minlength=m)
    else:
        finite = np.isfinite(cap)
        s_max = s0 + np.bincount(row, weights=np.where(finite, cap, 0.0), minlength=m)
        s_max[np.bincount(row, weights=~finite, minlength=m) > 0] = np.inf
        gain = (p < 0) & finite
        s_prof = s0 + np.bincount(row, weights=np.where(gain, cap, 0.0), minlength=m)
        s_prof[np.bincount(row, weights=(p < 0) & ~finite, minlength=m) > 0] = np.inf
    if np.any(r_lo > s_max + _TOL) or np.any(r_hi < s0 - _TOL):
        return None  # infeasible: HiGHS says so properly
    target = np.minimum(np.maximum(s_prof, r_lo), r_hi)
    target = np.minimum(np.maximum(target, s0), s_max)
    if not np.all(np.isfinite(target)):
        return None  # unbounded
    need = target - s0  # (m,) activity to add per row, >= 0
    # per row, cheapest activity first; ties in column order (lexsort is stable)
    order = np.lexsort((p, row))
    r_o = row[order]
    take = np.minimum(cap[order], need[r_o])  # finite: never more than the row needs
    csum = np.cumsum(take)
    start = np.searchsorted(r_o, np.arange(m), side="left")[r_o]
    before = csum - take - np.where(start > 0, csum[start - 1], 0.0)
    fill = np.clip(need[r_o] - before, 0.0, take)
    xo = lj[order] + fill / a[order]
    x[order if in_row is None else in_row[order]] = np.minimum(xo, uj[order])
    return _result(lp, c, x, t0)


_SOLVED, _NONE, _UNSURE = 0, 1, 2


def _knapsack_loop(
    c: np.ndarray,
    lo: np.ndarray,
    up: np.ndarray,
    row: np.ndarray,
    a: np.ndarray,
    r_lo: np.ndarray,
    r_hi: np.ndarray,
    m: int,
) -> tuple[int, np.ndarray]:
    """:func:`solve_separable` of an LP whose every column is in exactly one row (column ``j``
    in row ``row[j]`` with coefficient ``a[j]``) in a few passes: ``(status, x)``.

    The arithmetic of the numpy form, operation by operation and in the same order (sums in
    column order per row, the running sum over the (row, cost) order with ties in column
    order), so ``x`` is the same to the bit. ``_NONE`` where the numpy form returns None,
    ``_UNSURE`` where this loop does not decide (a coefficient or cost that is not finite and
    positive, an infinite capacity, a bound of −0.0): run the numpy form.
    """
    n = c.size
    x = np.empty(n)
    for j in range(n):  # the numpy form's checks, in its order of outcomes
        if lo[j] > up[j] or lo[j] == -np.inf or c[j] != c[j] or lo[j] != lo[j] or up[j] != up[j]:
            return _NONE, x
    for i in range(m):
        if r_lo[i] != r_lo[i] or r_hi[i] != r_hi[i] or r_lo[i] > r_hi[i] + _TOL:
            return _NONE, x
    for j in range(n):
        aj, uj, lj = a[j], up[j], lo[j]
        if not (0 < aj < np.inf) or not (-np.inf < c[j] < np.inf) or uj == np.inf:
            return _UNSURE, x
        if (lj == 0 and np.signbit(lj)) or (uj == 0 and np.signbit(uj)):
            return _UNSURE, x
    p = c / a  # cost per unit of activity
    cap = a * (up - lo)
    for j in range(n):
        if not cap[j] < np.inf:  # overflow: the numpy form's infinite-capacity branch
            return _UNSURE, x
    s0 = np.zeros(m)
    t_max = np.zeros(m)
    t_prof = np.zeros(m)
    count = np.zeros(m + 1, np.int64)
    for j in range(n):
        r = row[j]
        s0[r] += a[j] * lo[j]
    for j in range(n):
        r = row[j]
        t_max[r] += cap[j]
        t_prof[r] += cap[j] if p[j] < 0 else 0.0
        count[r + 1] += 1
    need = np.empty(m)
    for i in range(m):
        s_max = s0[i] + t_max[i]
        if r_lo[i] > s_max + _TOL or r_hi[i] < s0[i] - _TOL:
            return _NONE, x  # infeasible
        t = min(max(s0[i] + t_prof[i], r_lo[i]), r_hi[i])
        t = min(max(t, s0[i]), s_max)
        if not (-np.inf < t < np.inf):
            return _NONE, x  # unbounded
        need[i] = t - s0[i]
        count[i + 1] += count[i]
    # stable counting sort by row, then by cost within the row (stable: ties in column order)
    order = np.empty(n, np.int64)
    nxt = count[:-1].copy()
    for j in range(n):
        order[nxt[row[j]]] = j
        nxt[row[j]] += 1
    for i in range(m):
        b, e = count[i], count[i + 1]
        if e - b <= 32:  # insertion sort (stable: moves only past strictly larger costs)
            for q in range(b + 1, e):
                k = order[q]
                pk = p[k]
                w = q - 1
                while w >= b and p[order[w]] > pk:
                    order[w + 1] = order[w]
                    w -= 1
                order[w + 1] = k
        else:
            seg = order[b:e].copy()
            order[b:e] = seg[np.argsort(p[seg], kind="mergesort")]
    csum = 0.0
    prefix = 0.0
    for q in range(n):
        k = order[q]
        r = row[k]
        take = min(cap[k], need[r])
        if q == 0:
            csum = take
        else:
            if r != row[order[q - 1]]:
                prefix = csum  # the running sum over the rows before
            csum = csum + take
        before = csum - take - prefix
        fill = min(max(need[r] - before, 0.0), take)
        x[k] = min(lo[k] + fill / a[k], up[k])
    return _SOLVED, x


#: :func:`_knapsack_loop` compiled (:class:`~loadopt._csr.LazyKernel`).
KNAPSACK_KERNEL = LazyKernel(_knapsack_loop)


def _result(lp: LinearProgram, c: np.ndarray, x: np.ndarray, t0: float) -> SolverResult:
    """The optimal result of column values ``x`` (objective with ``lp.offset``)."""
    obj = float(c @ x + lp.offset)
    return SolverResult(
        SolverStatus.OPTIMAL,
        x,
        obj,
        time.perf_counter() - t0,
        "separable LP solved exactly by sorting",
    )
