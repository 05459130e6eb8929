"""Pilots an EVSE can signal: its discrete steps and its minimum current.

IEC 61851-1 signals the current limit by the control pilot's duty cycle; an EVSE offers a set of
limits (``Evse.allowed_currents``, e.g. 0/8/16/24/32 A, or whole amps 6–32 A) and a vehicle
pauses below its minimum (about 6 A). A limit between two steps is *taken* as the step below it,
and a limit below the minimum as 0 — the capacity above it is lost.

- :func:`pilot_grid` / :func:`down_to_pilot`: what an EVSE signals for a limit (vectorised).
- :func:`round_to_pilots`: a schedule in the EVSEs' steps, for the controller (the
  *rounding-aware* planner step): every period rounded down to a pilot (always safe: ``G ≥ 0``),
  then in period 0 — the one acted upon — sessions whose plan fell between two steps or below
  their minimum are raised to the next pilot where every safety row of that period still has
  room, earliest departure first. The room is what the rows hold after the sessions' rounded
  currents *and* the storage flows of the schedule (battery charging loads its rows; a
  discharge is never counted as room: a raise never relies on a battery or a vehicle giving
  back). The result satisfies every row exactly (deci-amps, the same capacities
  :func:`loadopt.safety.project` uses).
- :func:`pilot_fixings`: where that give-back could not raise a session that the plan wanted
  nearer its next pilot than the one below (the gap between 0 and a 6 A minimum, an 8 A step),
  the period-0 bounds of a re-solve: those sessions held at least at their next pilot (earliest
  departure first, as long as the held currents fit every row by themselves), the ones nearer
  the pilot below held at most there — so the LP re-plans everyone else around the decisions
  (the controller's *rounding-aware LP*: plan, fix the pilots, re-solve the remainder).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ._csr import LazyKernel, entry_rows, take_rows
from .problem import Problem
from .safety import GRID_SNAP, _frozen_memo, problem_memo, row_capacity_da


@dataclass(frozen=True, eq=False)
class _Grid:
    """A problem's pilots: ``stepped`` (``(S,)`` whether the EVSE has steps), ``sets`` the
    distinct level sets of the site's EVSEs (:func:`_level_sets`) and ``set_of`` (``(S,)``)
    each session's (-1: continuous EVSE); ``grid`` of :func:`pilot_grid` on request."""

    stepped: np.ndarray
    sets: np.ndarray
    set_of: np.ndarray

    @classmethod
    def of(cls, problem: Problem) -> _Grid:
        e = np.asarray(problem.session_evse, dtype=np.int64)
        has = np.asarray(problem.evse_has_levels, dtype=bool)[e]
        evse_set, sets = _level_sets(problem)
        set_of = np.where(has, evse_set[e], -1)
        for a in (has, set_of):
            a.setflags(write=False)  # shared by every call on this problem
        return cls(has, sets, set_of)

    @cached_property
    def grid(self) -> np.ndarray:
        """``(S, L)`` each session's levels (A, sorted, ``+inf`` padded to the widest set in
        use)."""
        has, sets, set_of = self.stepped, self.sets, self.set_of
        n = np.isfinite(sets).sum(axis=1)[set_of] if has.any() else np.zeros(has.size, int)
        width = int(n[has].max()) if has.any() else 1
        grid = np.full((has.size, width), np.inf)
        grid[has] = sets[set_of[has], :width]
        grid.setflags(write=False)
        return grid


#: The distinct level sets of the EVSEs of a site, by its compiled levels (they change with the
#: site, not from step to step); a few sites at most.
_LEVEL_SETS: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def _level_sets(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(evse_set, sets)``: each EVSE's row in ``sets`` (``(K, W)`` its distinct level sets, A,
    sorted, ``+inf`` padded; -1 for a continuous EVSE)."""
    a0, a1, a2 = arrays = (problem.evse_has_levels, problem.evse_levels_ptr, problem.evse_levels_da)
    # a controller's problems share the site's (read-only) arrays: known by identity (the
    # entry holds them, so their ids are not reused while it is kept)
    frozen = not (a0.flags.writeable or a1.flags.writeable or a2.flags.writeable)
    if frozen:
        got_id = _LEVEL_SETS_BY_ID.get((id(a0), id(a1), id(a2)))
        if got_id is not None:
            k0, k1, k2 = got_id[0]
            if k0 is a0 and k1 is a1 and k2 is a2:
                return got_id[1]
    has = np.asarray(problem.evse_has_levels, dtype=bool)
    ptr = np.asarray(problem.evse_levels_ptr, dtype=np.int64)
    lv = np.asarray(problem.evse_levels_da)
    key = b"|".join([has.tobytes(), ptr.tobytes(), lv.dtype.str.encode(), lv.tobytes()])
    got = _LEVEL_SETS.get(key)
    if got is not None:
        if frozen:
            _keep_by_id(arrays, got)
        return got
    index: dict[bytes, int] = {}
    rows: list[np.ndarray] = []
    evse_set = np.full(has.size, -1, dtype=np.int64)
    for k in np.flatnonzero(has):  # once per EVSE of a site, not per step
        a = lv[ptr[k] : ptr[k + 1]]
        evse_set[k] = index.setdefault(a.tobytes(), len(rows))
        if evse_set[k] == len(rows):
            rows.append(a / 10.0)
    width = max((a.size for a in rows), default=1)
    sets = np.full((len(rows), width), np.inf)
    for i, a in enumerate(rows):
        sets[i, : a.size] = a
    evse_set.setflags(write=False)
    sets.setflags(write=False)
    if len(_LEVEL_SETS) >= 64:
        _LEVEL_SETS.clear()
    _LEVEL_SETS[key] = (evse_set, sets)
    if frozen:
        _keep_by_id(arrays, (evse_set, sets))
    return evse_set, sets


#: :data:`_LEVEL_SETS` by the identity of a problem's read-only level arrays.
_LEVEL_SETS_BY_ID: dict[tuple[int, ...], tuple[tuple, tuple[np.ndarray, np.ndarray]]] = {}


def _keep_by_id(arrays: tuple, value: tuple[np.ndarray, np.ndarray]) -> None:
    if len(_LEVEL_SETS_BY_ID) >= 64:  # (cleared, not popped: safe beside other threads)
        _LEVEL_SETS_BY_ID.clear()
    _LEVEL_SETS_BY_ID[(id(arrays[0]), id(arrays[1]), id(arrays[2]))] = (arrays, value)


def _grid(problem: Problem) -> _Grid:
    return problem_memo(problem, "grid", _Grid.of)


def pilot_grid(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, stepped)``: ``(S, L)`` each session's EVSE levels as compiled (A, sorted, 0
    included, ``+inf`` padded; :meth:`Problem.evse_levels_of`) and ``(S,)`` whether the EVSE has
    steps (otherwise any 0.1 A value ≥ the session's minimum). Computed once per problem."""
    g = _grid(problem)
    return g.grid, g.stepped


def down_to_pilot(
    limit: np.ndarray, grid: np.ndarray, stepped: np.ndarray, min_a: np.ndarray
) -> np.ndarray:
    """What the EVSE signals for ``limit`` (``(S,)`` or ``(S, T)`` A): the largest step at or
    below it, 0 below the session's minimum."""
    stepped = np.asarray(stepped, dtype=bool)
    set_of = np.full(stepped.size, -1, dtype=np.int64)
    sets = np.zeros((0, grid.shape[1]))
    if stepped.any():
        g = grid[stepped]
        if (g == g[0]).all():  # one kind of EVSE (the common case): no sort needed
            sets, inv = g[:1], np.zeros(g.shape[0], dtype=np.int64)
        else:
            sets, inv = np.unique(g, axis=0, return_inverse=True)
        set_of[stepped] = inv.ravel()
    return _down(limit, sets, set_of, min_a)


def _down(limit: np.ndarray, sets: np.ndarray, set_of: np.ndarray, min_a: np.ndarray) -> np.ndarray:
    """:func:`down_to_pilot` with the stepped sessions' levels as distinct rows ``sets`` (sorted,
    ``+inf`` padded) and ``set_of`` (``(S,)``, -1 continuous): one binary search per level set
    (the count of levels ``≤ limit + 1e-9``, as a comparison with every level would give)."""
    lim = np.asarray(limit, dtype=np.float64)
    two = lim.ndim == 2
    L = lim if two else lim[:, None]
    stepped = set_of >= 0
    every = bool(stepped.size) and bool(stepped.all())
    out = None if every else np.where(L + 1e-9 < min_a[:, None], 0.0, L)
    if stepped.any():
        x = L + 1e-9
        nan = np.isnan(x)  # NaN is ≤ no level
        if every and (set_of == set_of[0]).all():  # one kind of EVSE: no row selection
            val = _level_at_most(x, nan, sets[set_of[0]])
        else:
            val = np.zeros(L.shape)
            for k in np.unique(set_of[stepped]):  # once per level set in use, not per session
                rows = np.flatnonzero(set_of == k)
                val[rows] = _level_at_most(x[rows], nan[rows], sets[k])
        val = np.where(val + 1e-9 < min_a[:, None], 0.0, val)
        out = val if out is None else np.where(stepped[:, None], val, out)
    assert out is not None
    return out if two else out[:, 0]


def _level_at_most(x: np.ndarray, nan: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The largest of ``levels`` (sorted) that is ``≤ x``, 0 where none is (or ``x`` is NaN)."""
    j = np.searchsorted(levels, x, side="right")
    j[nan] = 0
    return np.concatenate(([0.0], levels))[j]


def _up(
    limit: np.ndarray, sets: np.ndarray, set_of: np.ndarray, min_a: np.ndarray, max_a: np.ndarray
) -> np.ndarray:
    """``(S,)``: the smallest pilot above ``limit`` (the next step; the minimum for a continuous
    EVSE below it), capped at ``max_a``; ``limit`` itself where there is none. Level sets as in
    :func:`_down`: one binary search per level set (the first level ``> limit + 1e-9``)."""
    up = np.where(limit + 1e-9 < min_a, min_a, limit)
    stepped = set_of >= 0
    if stepped.any():
        x = limit + 1e-9
        if stepped.all() and (set_of == set_of[0]).all():  # one kind of EVSE
            above = _level_above(x, sets[set_of[0]])
        else:
            above = np.full(limit.shape, np.inf)
            for k in np.unique(set_of[stepped]):
                rows = np.flatnonzero(set_of == k)
                above[rows] = _level_above(x[rows], sets[k])
        above = np.maximum(above, min_a)
        up = np.where(stepped, above, up)
    return np.where(up <= max_a + 1e-9, up, limit)


def _level_above(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The smallest of ``levels`` (sorted) that is ``> x``, ``+inf`` where none is (or ``x`` is
    NaN: NaN sorts last)."""
    return np.concatenate((levels, [np.inf]))[np.searchsorted(levels, x, side="right")]


def _down_at_loop(
    lim: np.ndarray, sess: np.ndarray, set_of: np.ndarray, sets: np.ndarray, min_a: np.ndarray
) -> np.ndarray:
    """:func:`_down` of ``lim`` (``(n,)`` A, of sessions ``sess``) element by element."""
    out = np.empty(lim.size)
    W = sets.shape[1]
    for i in range(lim.size):
        s = sess[i]
        k = set_of[s]
        m = min_a[s]
        if k < 0:
            v = 0.0 if lim[i] + 1e-9 < m else lim[i]
        else:
            x = lim[i] + 1e-9
            v = 0.0
            if x == x:
                lo, hi = 0, W
                while lo < hi:
                    mid = (lo + hi) // 2
                    if sets[k, mid] <= x:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo > 0:
                    v = sets[k, lo - 1]
            if v + 1e-9 < m:
                v = 0.0
        out[i] = v
    return out


def _up_at_loop(
    lim: np.ndarray,
    sess: np.ndarray,
    set_of: np.ndarray,
    sets: np.ndarray,
    min_a: np.ndarray,
    max_a: np.ndarray,
) -> np.ndarray:
    """:func:`_up` of ``lim`` (``(n,)`` A, of sessions ``sess``, capped at ``max_a``
    ``(n,)``) element by element."""
    out = np.empty(lim.size)
    W = sets.shape[1]
    for i in range(lim.size):
        s = sess[i]
        k = set_of[s]
        m = min_a[s]
        if k < 0:
            u = m if lim[i] + 1e-9 < m else lim[i]
        else:
            x = lim[i] + 1e-9
            lo, hi = 0, W
            if x != x:  # NaN sorts last: above every level
                lo = W
            while lo < hi:
                mid = (lo + hi) // 2
                if sets[k, mid] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            above = sets[k, lo] if lo < W else np.inf
            u = above if above >= m else m
        out[i] = u if u <= max_a[i] + 1e-9 else lim[i]
    return out


def _down_of(lim: np.ndarray, sess: np.ndarray, g: _Grid, min_a: np.ndarray) -> np.ndarray:
    """:func:`_down` of ``lim`` (``(n,)`` A) for the sessions ``sess``."""
    kernel = _DOWN_AT_KERNEL.get()
    if kernel is not None:
        return kernel(lim, sess, g.set_of, g.sets, min_a)
    return _down(lim, g.sets, g.set_of[sess], min_a[sess])


def _up_of(
    lim: np.ndarray, sess: np.ndarray, g: _Grid, min_a: np.ndarray, max_a: np.ndarray
) -> np.ndarray:
    """:func:`_up` of ``lim`` (``(n,)`` A) for the sessions ``sess``, capped at ``max_a``."""
    kernel = _UP_AT_KERNEL.get()
    if kernel is not None:
        return kernel(lim, sess, g.set_of, g.sets, min_a, max_a)
    return _up(lim, g.sets, g.set_of[sess], min_a[sess], max_a)


def _period0(problem: Problem) -> np.ndarray:
    """The variables of period 0 (the one acted upon)."""
    return problem_memo(problem, "v0", lambda p: np.flatnonzero(p.var_period == 0))


def _columns0(problem: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, rows, coef)``: the safety rows of each period-0 variable ``v0[j]`` (row
    numbers ``rows[lo[j]:hi[j]]``, ascending, and their coefficients), the columns of ``G`` the
    give-back raises. A safety row holds the variables of its own period only (one row per
    limit and period, :mod:`loadopt.problem`), so they are read from the period-0 rows alone."""
    G = problem.G
    v0 = _period0(problem)
    rows0 = _rows0(problem)
    kernel = _COLUMNS_KERNEL.get()
    if kernel is not None:
        pos = np.full(G.shape[1], -1, dtype=np.int64)
        pos[v0] = np.arange(v0.size)
        return kernel(G.indptr, G.indices, G.data, rows0, pos, v0.size)
    ptr, col, coef = take_rows(G.indptr, G.indices, G.data, rows0)
    row = rows0[entry_rows(ptr)]
    order = np.argsort(col, kind="stable")  # by column, rows ascending within one
    col = col[order]
    lo = np.searchsorted(col, v0, side="left")
    hi = np.searchsorted(col, v0, side="right")
    return lo, hi, row[order], coef[order]


def _rows0(problem: Problem) -> np.ndarray:
    """The safety rows of period 0 (ascending)."""
    return problem_memo(problem, "rows0", lambda p: np.flatnonzero(p.row_period == 0))


def _columns_loop(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    rows: np.ndarray,
    pos: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_columns0` as one counting sort: the entries of the CSR rows ``rows``
    (ascending) by column position ``pos[col]`` (``0 ≤ pos < n``; -1: left out), rows
    ascending within a column."""
    cnt = np.zeros(n + 1, np.int64)
    for r in rows:
        for k in range(indptr[r], indptr[r + 1]):
            j = pos[indices[k]]
            if j >= 0:
                cnt[j + 1] += 1
    for j in range(n):
        cnt[j + 1] += cnt[j]
    nxt = cnt[:-1].copy()
    out_row = np.empty(cnt[n], np.int64)
    out_coef = np.empty(cnt[n], np.float64)
    for r in rows:
        for k in range(indptr[r], indptr[r + 1]):
            j = pos[indices[k]]
            if j >= 0:
                out_row[nxt[j]] = r
                out_coef[nxt[j]] = data[k]
                nxt[j] += 1
    return cnt[:-1].copy(), cnt[1:].copy(), out_row, out_coef


def _rows_dot_loop(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """``(G @ x)[rows]`` of the CSR ``G``: each row's entries summed in order from 0, as
    scipy's ``csr_matvec`` does (the same floating-point sums)."""
    out = np.zeros(indptr.size - 1)
    for r in rows:
        s = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            s += data[k] * x[indices[k]]
        out[r] = s
    return out


def _take_room_loop(
    js: np.ndarray,
    add: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    row: np.ndarray,
    coef: np.ndarray,
    load: np.ndarray,
    cap: np.ndarray,
) -> np.ndarray:
    """:func:`_take_room` for the period-0 variables ``js`` in turn (``add[i]`` deci-amps for
    ``js[i]``): whether each was placed (``load`` updated in place)."""
    placed = np.zeros(js.size, np.bool_)
    for i in range(js.size):
        j = js[i]
        ok = True
        for k in range(lo[j], hi[j]):
            if not load[row[k]] + coef[k] * add[i] <= cap[row[k]]:
                ok = False
                break
        if ok:
            for k in range(lo[j], hi[j]):
                load[row[k]] = load[row[k]] + coef[k] * add[i]
            placed[i] = True
    return placed


#: The loops above compiled (:class:`loadopt._csr.LazyKernel`: once a process steps often, where
#: numba is importable); otherwise their numpy forms run, with the same results.
_COLUMNS_KERNEL = LazyKernel(_columns_loop)
_ROWS_DOT_KERNEL = LazyKernel(_rows_dot_loop)
_TAKE_ROOM_KERNEL = LazyKernel(_take_room_loop)
_DOWN_AT_KERNEL = LazyKernel(_down_at_loop)
_UP_AT_KERNEL = LazyKernel(_up_at_loop)


def _load0_da(problem: Problem, x_da: np.ndarray, battery_a: np.ndarray | None) -> np.ndarray:
    """``(R,)`` the load of ``x_da`` (``(V,)`` deci-amps) with the batteries' charging
    (:func:`_storage_load_da`) on every safety row of period 0 — the only rows the give-back
    reads (:func:`_columns0`); 0 on the others."""
    G = problem.G
    kernel = _ROWS_DOT_KERNEL.get()
    if kernel is None:
        load = np.asarray(G @ x_da, dtype=np.float64)
    else:
        load = kernel(G.indptr, G.indices, G.data, _rows0(problem), x_da)
    st = problem.storage
    if st is not None and battery_a is not None and st.bc_ub.size:
        load = load + _storage_load_da(problem, battery_a)
    return load


def _place(
    problem: Problem, js: np.ndarray, add: np.ndarray, load: np.ndarray, cap: np.ndarray
) -> np.ndarray:
    """Raise the period-0 variables ``js`` (positions in :func:`_period0`) in turn by ``add``
    deci-amps each where every row they are in keeps room (:func:`_take_room`; ``load`` updated
    in place): ``(len(js),)`` whether each was."""
    cols = problem_memo(problem, "columns0", _columns0)
    kernel = _TAKE_ROOM_KERNEL.get()
    if kernel is not None:
        return kernel(js, add, *cols, load, cap)
    placed = np.zeros(js.size, dtype=bool)
    for i, j in enumerate(js.tolist()):
        placed[i] = _take_room(cols, j, add[i], load, cap)
    return placed


def _storage_load_da(problem: Problem, battery_a: np.ndarray | None) -> np.ndarray:
    """``(R,)`` what the batteries' charging puts on each safety row (``G @ deciamps`` units,
    rounded up); discharge counts nothing (never relied upon as room)."""
    st = problem.storage
    if st is None or battery_a is None or st.bc_ub.size == 0:
        return np.zeros(problem.G.shape[0])
    bat = np.nan_to_num(np.asarray(battery_a, dtype=np.float64))
    xb = np.ceil(np.maximum(bat, 0.0)[st.bc_battery, st.bc_period] * 10.0 - GRID_SNAP)
    return np.asarray(st.Gb @ np.maximum(xb, 0.0), dtype=np.float64)


def _take_room(
    cols: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    j: int,
    add_da: float,
    load: np.ndarray,
    cap: np.ndarray,
) -> bool:
    """Raise period-0 variable ``j`` (:func:`_columns0` ``cols``) by ``add_da`` deci-amps on
    the rows' ``load`` (in place) when every row it is in stays within ``cap`` (deci-amps,
    :func:`loadopt.safety.row_capacity_da`); ``False``, and nothing changed, otherwise."""
    lo, hi, row, coef = cols
    a, b = lo[j], hi[j]
    rows = row[a:b]
    new = load[rows] + coef[a:b] * add_da
    if not (new <= cap[rows]).all():
        return False
    load[rows] = new
    return True


def rounded_down(problem: Problem, current: np.ndarray) -> np.ndarray:
    """``current`` (``(S, T)`` A) with every period rounded down to a pilot
    (:func:`down_to_pilot` on the problem's kept grid), then down to the 0.1 A grid: safe
    whenever ``current`` is (``G ≥ 0``)."""
    g = _grid(problem)
    cur = np.asarray(current, dtype=np.float64)
    kernel = _DOWN_AT_KERNEL.get()
    if kernel is not None and cur.ndim == 2 and cur.shape[0] == g.set_of.size:
        S, T = cur.shape  # the compiled search, element by element over the sessions' rows
        sess = np.repeat(np.arange(S, dtype=np.int64), T)
        flat = np.ascontiguousarray(cur).reshape(-1)
        down = kernel(flat, sess, g.set_of, g.sets, problem.session_min_current).reshape(S, T)
    else:
        down = _down(cur, g.sets, g.set_of, problem.session_min_current)
    return np.floor(down * 10.0 + GRID_SNAP) / 10.0


def round_to_pilots(
    problem: Problem, current: np.ndarray, *, battery_a: np.ndarray | None = None
) -> np.ndarray:
    """``current`` (``(S, T)`` A, safe) in the EVSEs' steps (module docstring); safe, on the
    0.1 A grid. ``battery_a``: the schedule's ``(B, T)`` battery flows (A, + charge), whose
    charging takes room from the give-back."""
    cur = np.asarray(current, dtype=np.float64)
    S, T = problem.n_sessions, problem.n_periods
    if S == 0 or T == 0:
        return cur.copy()
    g = _grid(problem)
    min_a = problem.session_min_current
    down = rounded_down(problem, cur)
    v0 = _period0(problem)
    if v0.size == 0 or problem.G.shape[0] == 0:
        return down
    sess = problem.var_session[v0]
    want = cur[sess, 0]
    got = down[sess, 0]
    ub = problem.var_ub[v0]
    up = _up_of(got, sess, g, min_a, ub)
    # raise only what rounding took away (the plan wanted more than the step below gives)
    lost = (want > got + 1e-6) & (up > got + 1e-9)
    if not lost.any():
        return down
    x_da = np.floor(problem.gather(down) * 10.0 + GRID_SNAP)
    cap = _frozen_memo(problem, "cap", row_capacity_da, problem.h)
    load = _load0_da(problem, x_da, battery_a)
    dep = problem.session_departure_h[sess]
    js = np.flatnonzero(lost)[np.argsort(dep[lost], kind="stable")]
    # each variable is visited once: what it is raised by is known before the loop
    add = np.floor(up[js] * 10.0 + GRID_SNAP) - x_da[v0[js]]
    placed = _place(problem, js, add, load, cap)
    x_da[v0[js[placed]]] += add[placed]
    return problem.dense(x_da / 10.0)


def pilot_fixings(
    problem: Problem,
    planned: np.ndarray,
    rounded: np.ndarray,
    *,
    battery_a: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Period-0 bounds of a rounding-aware re-solve ``(floor_a, ub_a, h)`` — for
    ``Problem.var_floor_a``, ``var_ub`` (``(V,)`` A) and the rows' right-hand sides ``h`` — or
    ``None`` when none is needed (module docstring). ``planned``: the plan (``(S, T)`` A);
    ``rounded``: :func:`round_to_pilots` of it.

    A session is held at its next pilot when the plan wanted at least half-way up to it and
    the give-back could not raise it; sessions are taken earliest departure first while the
    held currents (with what the give-back raised and the batteries' planned charging) fit
    every row; the others nearer their pilot below than above are held at most there. A
    held session that needs less energy than its pilot delivers in period 0 (it will be full
    before the period ends) is floored at what fills it, and the rest of its pilot is taken
    off the right-hand side of its rows: the EVSE signals the whole pilot, so the rows must
    carry it, but the LP's energy row cannot. Floors and the lowered ``h`` are feasible by
    construction (``G · floor ≤ h``, ``h ≥ 0``), so the re-solve always has a solution."""
    S, T = problem.n_sessions, problem.n_periods
    v0 = _period0(problem)
    if S == 0 or T == 0 or v0.size == 0:
        return None
    g = _grid(problem)
    min_a = problem.session_min_current
    sess = problem.var_session[v0]
    want = np.asarray(planned, dtype=np.float64)[sess, 0]
    got = np.asarray(rounded, dtype=np.float64)[sess, 0]
    ub0 = problem.var_ub[v0]
    below = _down_of(want, sess, g, min_a)
    above = _up_of(below, sess, g, min_a, ub0)
    gap = (above > below + 1e-9) & (want > below + 1e-6)
    if not gap.any():
        return None
    nearer_up = gap & (want - below >= 0.5 * (above - below))
    hold = nearer_up & (got + 1e-9 < above)
    if not hold.any():
        return None
    floor = (
        np.zeros(problem.n_vars)
        if problem.var_floor_a is None
        else np.array(problem.var_floor_a, dtype=np.float64)
    )
    ub = np.array(problem.var_ub, dtype=np.float64)
    # what the give-back raised stays raised (it fitted, with the batteries' charging)
    raised = gap & (got > below + 1e-9)
    floor[v0[raised]] = np.maximum(floor[v0[raised]], got[raised])
    cap = _frozen_memo(problem, "cap", row_capacity_da, problem.h)
    load = _load0_da(problem, np.ceil(floor * 10.0 - GRID_SNAP), battery_a)
    dep = problem.session_departure_h[sess]
    js = np.flatnonzero(hold)[np.argsort(dep[hold], kind="stable")]
    # each variable is visited once: its step up is known before the loop (none: skipped)
    add = np.ceil(above[js] * 10.0 - GRID_SNAP) - np.ceil(floor[v0[js]] * 10.0 - GRID_SNAP)
    js, add = js[add > 0], add[add > 0]
    placed = _place(problem, js, add, load, cap)
    if not placed.any():
        return None
    floor[v0[js[placed]]] = above[js[placed]]
    down_only = gap & ~nearer_up & ~raised
    ub[v0[down_only]] = np.maximum(below[down_only], floor[v0[down_only]])
    # a session full within period 0: its energy row caps what the LP can give it there
    fill = np.divide(
        problem.session_energy_kwh[sess],
        problem.var_kwh_per_a[v0],
        out=np.full(v0.size, np.inf),
        where=problem.var_kwh_per_a[v0] > 0,
    )
    fill = np.floor(fill * 10.0 * (1.0 - 1e-9)) / 10.0
    over = floor[v0] > fill
    h = np.array(problem.h, dtype=np.float64)
    if over.any():
        extra = np.zeros(problem.n_vars)
        extra[v0[over]] = floor[v0[over]] - fill[over]
        floor[v0[over]] = fill[over]
        # (only period-0 columns are lowered: only period-0 rows hold them, :func:`_columns0`)
        h = np.maximum(h - _load0_da(problem, extra, None), 0.0)
    return floor, ub, h
