"""Per-problem arrays of the fast path, built once per :class:`~loadopt.problem.Problem`.

A controller calls :func:`loadopt.fast.allocate` every few seconds on the same problem, so nothing
that depends only on the problem is rebuilt per call: the safety matrix permuted period by period
(CSR and CSC, int32 indices, float64 values), the row capacities, the per-variable bounds in
deci-amps and the static orders of the policies. Cached by problem identity (weakly: the cache
entry goes when the problem does).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

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
    step_s: float
    vptr: np.ndarray  #: (T+1,) variables of period t are perm positions vptr[t]:vptr[t+1]
    rptr: np.ndarray  #: (T+1,) rows likewise
    var_perm: np.ndarray  #: (V,) problem variable at each permuted position
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    cptr: np.ndarray
    cidx: np.ndarray
    cdata: np.ndarray
    cap_fill: np.ndarray  #: (M,) capacity the fills aim at (below chk by the snap margin)
    chk: np.ndarray  #: (M,) capacity every emitted row is checked against
    ub_da: np.ndarray  #: (V,) max current, deci-amps (rounded down)
    lo_da: np.ndarray  #: (V,) minimum current, deci-amps (rounded up)
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


def _prepare(problem: Problem) -> Prepared:
    S, T = problem.n_sessions, problem.n_periods
    var_perm = np.argsort(problem.var_period, kind="stable")
    vper = problem.var_period[var_perm]
    vptr = np.searchsorted(vper, np.arange(T + 1)).astype(np.int64)
    row_perm = np.argsort(problem.row_period, kind="stable")
    rptr = np.searchsorted(problem.row_period[row_perm], np.arange(T + 1)).astype(np.int64)
    G = problem.G.tocsr()[row_perm][:, var_perm].tocsr()
    G.sort_indices()
    Gc = G.tocsc()
    Gc.sort_indices()

    chk = row_capacity_da(problem)[row_perm]
    is_cur = (problem.row_kind == ROW_NODE_CURRENT)[row_perm]
    chk = np.where(is_cur, chk, chk * (1.0 - ORDER_MARGIN))
    rowsum = np.asarray(G.sum(axis=1)).ravel()
    # Current rows: integer capacity, integer loads after the floor; the snap can only lift a
    # value that was within SNAP_DA of the next integer, which cannot lift an integer sum over an
    # integer capacity (fewer than 1e6 entries per row). Power rows: aim below by the snap.
    cap_fill = np.where(is_cur, chk,
                        np.maximum(chk - SNAP_DA * (rowsum + 1.0) - 1e-12 * chk, 0.0))

    sess = problem.var_session[var_perm].astype(np.int64)
    ub_da = np.floor(problem.var_ub[var_perm] * 10.0 + GRID_SNAP)
    lo_da = np.minimum(np.ceil(problem.session_min_current[sess] * 10.0 - 1e-9), ub_da)
    w = problem.session_priority[sess].astype(np.float64)

    hz = problem.horizon
    dep_s = np.array([hz.seconds_from_start(s.departure) for s in problem.sessions],
                     dtype=np.float64).reshape(S)
    steps = [problem.site.evses[int(e)].allowed_currents for e in problem.session_evse]
    counts = np.array([0 if a is None else len(a) for a in steps], dtype=np.int64)
    aptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    avals = np.array([np.floor(v * 10.0 + GRID_SNAP) for a in steps if a for v in a],
                     dtype=np.float64)

    prio = w
    dep = dep_s[sess]
    fair_order = _local_order((dep, -prio), vper, vptr)
    edf_order = _local_order((-prio, dep), vper, vptr)
    i32 = np.int32
    return Prepared(
        n_sessions=S, n_periods=T, step_s=float(hz.step_s), vptr=vptr, rptr=rptr,
        var_perm=var_perm, indptr=G.indptr.astype(i32), indices=G.indices.astype(i32),
        data=G.data.astype(np.float64), cptr=Gc.indptr.astype(i32),
        cidx=Gc.indices.astype(i32), cdata=Gc.data.astype(np.float64), cap_fill=cap_fill,
        chk=chk, ub_da=ub_da, lo_da=lo_da, kwh_per_a=problem.var_kwh_per_a[var_perm].copy(),
        w=w, sess=sess, dep_s=dep_s, kw_per_a=problem.session_kw_per_a.astype(np.float64),
        aptr=aptr, avals=avals, has_steps=bool(counts.any()), fair_order=fair_order,
        edf_order=edf_order,
    )
