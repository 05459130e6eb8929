"""Per-problem arrays of the fast path, built once per :class:`~loadopt.problem.Problem`.

A controller calls :func:`loadopt.fast.allocate` every few seconds on the same problem, so nothing
that depends only on the problem is rebuilt per call: the safety matrix permuted period by period
(CSR and CSC, int32 indices, float64 values), the row capacities, the per-variable bounds in
deci-amps and the static orders of the policies and of the fill's floor/cap events. Cached by
problem identity (weakly: the cache entry goes when the problem does).

The safety rows are reduced once, without changing what is feasible on the 0.1 A grid
(:func:`reduce_rows`):

- a row with one variable becomes a bound on it (``hi_da``; below the session's minimum current
  the session can never be admitted, so its bound is 0 — the same outcome as the admission step);
- a row that cannot be over-full even with every variable at its bound (``G · hi_da ≤ cap``) is
  dropped: no allocation at or below the bounds can break it, and every kernel keeps
  ``x ≤ hi_da`` (checked at the end of each call);
- rows with identical coefficients (the three phase rows of a circuit whose sessions all draw
  three phases) are merged, keeping the smallest capacity;
- within a period the remaining rows are ordered longest first, so that per-variable scans meet
  the shared (usually binding) rows first.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..lp import duplicate_rows
from ..problem import ROW_NODE_CURRENT, Problem
from ..safety import GRID_SNAP, row_capacity_da
from ._kernels import SNAP_DA

#: Extra relative margin on power rows so that any summation order stays under
#: :func:`loadopt.safety.row_capacity_da` (which itself keeps 1e-9 below ``h``).
ORDER_MARGIN = 1e-12


@dataclass(frozen=True, eq=False)
class Prepared:
    """The fast path's view of one problem (see module docstring). Units: deci-amps."""

    n_sessions: int
    n_periods: int
    period_start_s: np.ndarray  #: (T,) start of each period, s from horizon start
    vptr: np.ndarray  #: (T+1,) variables of period t are perm positions vptr[t]:vptr[t+1]
    rptr: np.ndarray  #: (T+1,) reduced rows likewise
    var_perm: np.ndarray  #: (V,) problem variable at each permuted position
    row_orig: np.ndarray  #: (M',) problem row of each reduced row (the one with the smallest cap)
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    cptr: np.ndarray
    cidx: np.ndarray
    cdata: np.ndarray
    cap_fill: np.ndarray  #: (M',) capacity the fills aim at (below chk by the snap margin)
    chk: np.ndarray  #: (M',) capacity every emitted row is checked against
    ub_da: np.ndarray  #: (V,) max current, deci-amps (rounded down)
    hi_da: np.ndarray  #: (V,) ub_da, tightened by the one-variable rows (0: never admissible)
    lo_da: np.ndarray  #: (V,) minimum current, deci-amps (rounded up; ≤ hi_da)
    kwh_per_a: np.ndarray  #: (V,) kWh per A held over the variable's period
    w: np.ndarray  #: (V,) weight = session priority
    sess: np.ndarray  #: (V,) session
    dep_s: np.ndarray  #: (S,) departure, s from horizon start
    kw_per_a: np.ndarray  #: (S,)
    aptr: np.ndarray  #: (S+1,) allowed steps of session s: avals[aptr[s]:aptr[s+1]]
    avals: np.ndarray  #: deci-amps
    has_steps: bool
    fair_order: np.ndarray  #: (V,) per period, local order of admission (priority ↓, departure ↑)
    edf_order: np.ndarray  #: (V,) per period, local order (departure ↑, priority ↓)
    start_order: np.ndarray  #: (V,) per period, local order of floor levels lo_da / w ↑
    cap_order: np.ndarray  #: (V,) per period, local order of cap levels hi_da / w ↑
    row_slope0: np.ndarray  #: (M',) G · w: every variable growing
    row_cnt0: np.ndarray  #: (M',) variables per row
    row_full0: np.ndarray  #: (M',) G · hi_da
    row_floor0: np.ndarray  #: (M',) G · lo_da


_CACHE: weakref.WeakKeyDictionary[Problem, Prepared] = weakref.WeakKeyDictionary()


def prepared(problem: Problem) -> Prepared:
    """The cached :class:`Prepared` of ``problem`` (built on first use)."""
    p = _CACHE.get(problem)
    if p is None:
        p = _prepare(problem)
        _CACHE[problem] = p
    return p


def _local_order(keys: tuple[np.ndarray, ...], period: np.ndarray, vptr: np.ndarray) -> np.ndarray:
    """Per period, the local positions sorted by ``keys`` (last key primary, like lexsort)."""
    glob = np.lexsort((*keys, period))
    return (glob - vptr[period[glob]]).astype(np.int64)


def reduce_rows(
    G: sp.csr_matrix,
    cap_fill: np.ndarray,
    chk: np.ndarray,
    ub_da: np.ndarray,
    lo_da: np.ndarray,
    row_period: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reduce the safety rows (see module docstring); nothing feasible becomes infeasible.

    Returns ``(kept rows, cap_fill, chk, hi_da, lo_da)``: the rows kept (ordered by period, then
    longest first), their capacities (the smallest of each group of identical rows) and the
    tightened variable bounds in deci-amps.
    """
    G = G.tocsr()
    m = G.shape[0]
    nnz_row = np.diff(G.indptr)
    hi = ub_da.copy()
    single = np.flatnonzero(nnz_row == 1)
    if single.size:
        j = G.indices[G.indptr[single]]
        g = G.data[G.indptr[single]]
        c = cap_fill[single]
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(g > 0, np.floor(c / np.where(g > 0, g, 1.0)), np.inf)
        for _ in range(3):  # float division: step down until g·b ≤ cap exactly
            b = np.where((g > 0) & (b * g > c), b - 1.0, b)
        np.minimum.at(hi, j, np.maximum(b, 0.0))
    # a session whose bound is below its minimum current can never be admitted (paused)
    never = hi < lo_da
    hi = np.where(never, 0.0, hi)
    lo = np.where(never, 0.0, lo_da)
    # rows that hold even with every variable at its bound cannot be broken by any kernel result
    can_break = (G @ hi) > cap_fill
    if single.size:
        ok = G.data[G.indptr[single]] * hi[G.indices[G.indptr[single]]] <= cap_fill[single]
        assert ok.all(), "one-variable row bound above its capacity"
        can_break[single] = False
    cand = np.flatnonzero(can_break & (nnz_row > 0))
    rep = duplicate_rows(G[cand])
    cf = np.full(cand.size, np.inf)
    ck = np.full(cand.size, np.inf)
    np.minimum.at(cf, rep, cap_fill[cand])
    np.minimum.at(ck, rep, chk[cand])
    heads = np.flatnonzero(rep == np.arange(cand.size))
    kept = cand[heads]
    order = np.lexsort((kept, -nnz_row[kept], row_period[kept])) if kept.size else heads
    assert m == 0 or kept.size <= m
    return kept[order], cf[heads][order], ck[heads][order], hi, lo


def _prepare(problem: Problem) -> Prepared:
    S, T = problem.n_sessions, problem.n_periods
    hz = problem.horizon
    dep_s = np.asarray(problem.session_departure_s, dtype=np.float64).reshape(S)
    # variables by period, then in the admission / top-up order (priority ↓, departure ↑), so
    # that those loops walk memory in order
    vs = problem.var_session
    var_perm = np.lexsort(
        (np.arange(problem.n_vars), dep_s[vs], -problem.session_priority[vs], problem.var_period)
    )
    vper = problem.var_period[var_perm]
    vptr = np.searchsorted(vper, np.arange(T + 1)).astype(np.int64)
    G0 = problem.G.tocsr()[:, var_perm].tocsr()
    G0.sort_indices()

    chk0 = row_capacity_da(problem)
    is_cur = problem.row_kind == ROW_NODE_CURRENT
    chk0 = np.where(is_cur, chk0, chk0 * (1.0 - ORDER_MARGIN))
    rowsum = np.asarray(G0.sum(axis=1)).ravel()
    # Current rows: integer capacity, integer loads after the floor; the snap can only lift a
    # value that was within SNAP_DA of the next integer, which cannot lift an integer sum over an
    # integer capacity (fewer than 1e6 entries per row). Power rows: aim below by the snap.
    cap0 = np.where(is_cur, chk0, np.maximum(chk0 - SNAP_DA * (rowsum + 1.0) - 1e-12 * chk0, 0.0))

    sess = problem.var_session[var_perm].astype(np.int64)
    ub_da = np.floor(problem.var_ub[var_perm] * 10.0 + GRID_SNAP)
    lo0 = np.minimum(np.ceil(problem.session_min_current[sess] * 10.0 - 1e-9), ub_da)
    kept, cap_fill, chk, hi_da, lo_da = reduce_rows(G0, cap0, chk0, ub_da, lo0, problem.row_period)
    rptr = np.searchsorted(problem.row_period[kept], np.arange(T + 1)).astype(np.int64)
    G = G0[kept].tocsr()
    G.sort_indices()
    Gc = G.tocsc()
    Gc.sort_indices()
    w = problem.session_priority[sess].astype(np.float64)

    # each session's allowed levels: its EVSE's, as compiled (one snapping rule, 0 included)
    ep, ev = problem.evse_levels_ptr, problem.evse_levels_da
    se = problem.session_evse.astype(np.int64)
    counts = np.where(problem.evse_has_levels[se], ep[se + 1] - ep[se], 0).astype(np.int64)
    aptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    take = np.repeat(ep[se] - aptr[:-1], counts) + np.arange(int(counts.sum()))
    avals = ev[take].astype(np.float64)

    prio = w
    dep = dep_s[sess]
    fair_order = _local_order((dep, -prio), vper, vptr)
    edf_order = _local_order((-prio, dep), vper, vptr)
    # the fill's static event orders (same float division as the kernel: same ties)
    start_order = _local_order((lo_da / w,), vper, vptr)
    cap_order = _local_order((hi_da / w,), vper, vptr)
    i32 = np.int32
    return Prepared(
        n_sessions=S,
        n_periods=T,
        period_start_s=hz.period_bounds_s()[:-1],
        vptr=vptr,
        rptr=rptr,
        var_perm=var_perm,
        row_orig=kept,
        indptr=G.indptr.astype(i32),
        indices=G.indices.astype(i32),
        data=G.data.astype(np.float64),
        cptr=Gc.indptr.astype(i32),
        cidx=Gc.indices.astype(i32),
        cdata=Gc.data.astype(np.float64),
        cap_fill=cap_fill,
        chk=chk,
        ub_da=ub_da,
        hi_da=hi_da,
        lo_da=lo_da,
        kwh_per_a=problem.var_kwh_per_a[var_perm].copy(),
        w=w,
        sess=sess,
        dep_s=dep_s,
        kw_per_a=problem.session_kw_per_a.astype(np.float64),
        aptr=aptr,
        avals=avals,
        has_steps=bool(counts.any()),
        fair_order=fair_order,
        edf_order=edf_order,
        start_order=start_order,
        cap_order=cap_order,
        row_slope0=G @ w,
        row_cnt0=np.diff(G.indptr).astype(np.int64),
        row_full0=G @ hi_da,
        row_floor0=G @ lo_da,
    )
