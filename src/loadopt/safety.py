"""Make any schedule safe to emit, and prove that it is.

Two rules from OCPP and physics meet here:

- OCPP carries limits with one decimal place (``limit`` is ``multipleOf 0.1`` in the 2.x
  schemas), and a limit may only ever be rounded *down*.
- Every safety row of the problem (``G @ r <= h``, see :mod:`loadopt.problem`) must hold on the
  rounded values exactly.

Inside this module currents are integer *deci-amps* (0.1 A), so that the current rows are checked
in exact integer arithmetic (three cars at 0.1 A on a 0.3 A limit must pass; in binary floating
point 0.1 + 0.1 + 0.1 > 0.3). Power rows (kW) are checked in floating point against ``h``; the
projection aims at ``h · (1 − 1e-9)`` so that summation order can never tip a sum over.

Line currents whose branches are not in phase (line-to-line EVSEs, delta/wye primaries) are
phasor limits; ``G`` holds their linear inner approximation (facets, :mod:`loadopt.wiring`), so a
schedule that satisfies ``G r ≤ h`` is exactly safe, and :func:`violations` checks the phasor
magnitudes themselves.

Because ``G ≥ 0`` and ``h ≥ 0``, scaling the currents in an over-full row down by
``capacity / load`` can only lower every other row, so one projection pass fixes all rows at once;
a few more passes absorb floating-point residue, and a final pass zeroes whatever is still over
(which never happens in practice and is tested for).

With batteries and V2G sessions (:class:`~loadopt.problem.Storage`) the same holds in both
directions, per period in time order (:func:`project_storage`): discharge is first cut to the
energy above each unit's floor and scaled under the export rows (entries ≥ 0, discharge only),
then charge is cut to the room below each unit's ceiling and scaled under the import rows with
that period's discharge held (discharge is credited on site-import rows only, so lowering charge
never breaks a row); the energy states then move on to the next period. Each step only lowers
the columns it touches, and a period's decisions depend only on the energy reached before it, so
one sweep is exact.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from ._csr import LazyKernel
from .errors import InputError
from .problem import (
    ROW_KIND_NAMES,
    ROW_LINE_FACET,
    ROW_NODE_CURRENT,
    ROW_PRIMARY_FACET,
    Problem,
)
from .wiring import zonotope_max_abs

try:  # scipy's compiled sparse kernels (private module; the public product is the fallback)
    from scipy.sparse._sparsetools import csc_matvecs as _csc_matvecs
except ImportError:  # pragma: no cover - other scipy layouts
    _csc_matvecs = None

#: Energy-state tolerance (kWh) of the check: float sums over a horizon.
SOC_TOL_KWH = 1e-6

#: Relative margin kept below power (kW) limits so that float summation cannot exceed them.
POWER_MARGIN = 1e-9
#: Slack accepted when deciding that a solver value is already on the 0.1 A grid (solver noise).
GRID_SNAP = 1e-6
#: Relative floating-point slack of the exact phasor check (complex sums of irrational
#: coefficients cannot be checked in integers).
PHASOR_RTOL = 1e-9


@dataclass(frozen=True)
class Violation:
    """One limit broken by a schedule: which, where, by how much (A or kW)."""

    kind: str
    where: str
    period: int
    value: float
    limit: float

    def __str__(self) -> str:
        return (
            f"{self.kind} limit of {self.where} in period {self.period}: "
            f"{self.value:.6g} > {self.limit:.6g}"
        )


_T = TypeVar("_T")


def problem_memo(problem: Problem, key: str, build: Callable[[Problem], _T]) -> _T:
    """``build(problem)``, computed once per problem and kept on it (like its
    ``cached_property`` values; a :func:`dataclasses.replace` copy starts without it).

    For what the checks and the controller's pilot step derive from a problem alone, several
    times per step. What is kept must not be changed by the caller (arrays are made read-only).

    Parameters
    ----------
    problem
        The problem (immutable: what is derived from it stays true).
    key
        A name for what ``build`` derives (one per builder).
    build
        ``problem -> value``, called on the first request only.

    Returns
    -------
    object
        ``build(problem)``.
    """
    memo = problem.__dict__.setdefault("_memo", {})
    try:
        return memo[key]
    except KeyError:
        out = memo[key] = build(problem)
        for a in out if isinstance(out, tuple) else (out,):
            if isinstance(a, np.ndarray):
                a.setflags(write=False)
        return out


def to_deciamps(x: np.ndarray) -> np.ndarray:
    """Round currents (A) down to whole deci-amps, forgiving solver noise of ``GRID_SNAP``.

    NaN and ±inf become 0: a value nobody can vouch for is not handed out.
    """
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    return np.maximum(np.floor(x * 10.0 + GRID_SNAP), 0.0)


def row_capacity_da(problem: Problem) -> np.ndarray:
    """Capacity of each safety row in the units of ``G @ deciamps``."""
    return _capacity(problem.h, problem.row_kind)


def project(
    problem: Problem,
    current: np.ndarray,
    max_passes: int = 8,
    min_current: np.ndarray | None = None,
) -> np.ndarray:
    """Return a feasible ``(S, T)`` schedule on the 0.1 A grid, at or below ``current`` everywhere.

    ``current`` may come from any solver, a user or a heuristic. Values are rounded down to
    0.1 A, clipped to ``[0, max current]`` and to zero where the session is not plugged in; then
    every variable under an over-full safety row is scaled down by that row's ``capacity / load``
    (the smallest such factor among its rows) and rounded down again. A schedule that already
    satisfies every limit on the 0.1 A grid comes back unchanged.

    ``min_current`` (``(S,)`` A, optional; IEC 61851: below its minimum a vehicle pauses): a
    value that ends up between 0 and the session's minimum (rounded up to 0.1 A) is set to 0 —
    the session is paused instead of trickling. Zeroing only lowers loads (``G ≥ 0``), so every
    guarantee above still holds.
    """
    current = np.asarray(current, dtype=np.float64)
    if current.shape != (problem.n_sessions, problem.n_periods):  # a wider array would be cut
        raise InputError(
            f"schedule has shape {current.shape}, expected "
            f"{(problem.n_sessions, problem.n_periods)} (sessions, periods)"
        )
    if min_current is not None:
        min_current = _session_minima(problem, min_current)
    if problem.storage is not None:  # energy ceilings apply to charging too
        return project_storage(problem, current, min_current=min_current, max_passes=max_passes)[0]
    ub_da = _frozen_memo(problem, "ub_da", _ub_da, problem.var_ub)
    kernel = _PROJECT_KERNEL.get()
    if kernel is not None and problem.G.format == "csr" and _rows_fit(problem):
        use_min = min_current is not None
        out, done = kernel(
            np.ascontiguousarray(current),
            problem._var_flat,
            ub_da,
            problem.G.indptr,
            problem.G.indices,
            problem.G.data,
            _frozen_memo(problem, "cap", row_capacity_da, problem.h),
            max_passes,
            _NO_MIN if min_current is None else _min_da(min_current),
            problem.var_session,
            use_min,
        )
        if done:  # (else: the passes as written, from the start)
            return out
    x = to_deciamps(problem.gather(current))
    x = np.minimum(x, ub_da)
    x = _project_da(problem, x, max_passes)
    if min_current is not None:
        x = np.where(x < _min_da(min_current)[problem.var_session], 0.0, x)
    return problem.dense(x / 10.0)


def _session_minima(problem: Problem, min_current: np.ndarray) -> np.ndarray:
    """``min_current`` as ``(S,)`` float64 A, or :class:`InputError` (one value per session:
    the compiled passes index it by session without a bounds check)."""
    try:
        out = np.asarray(min_current, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"min_current must be numbers, got {type(min_current).__name__}") from None
    if out.shape != (problem.n_sessions,):
        raise InputError(
            f"min_current has shape {out.shape}, expected ({problem.n_sessions},) (one per session)"
        )
    return out


def _rows_fit(problem: Problem) -> bool:
    """Whether the safety rows' arrays fit the variables (``G`` ``(M, V)``, ``h`` and
    ``row_kind`` ``(M,)``, ``var_ub`` ``(V,)``): the compiled passes index them without bounds
    checks, so a problem whose arrays do not fit goes to the numpy forms, which refuse it."""
    M, V = problem.G.shape
    return (
        V == problem.n_vars
        and problem.var_ub.shape == (V,)
        and problem.var_period.shape == (V,)
        and problem.h.shape == (M,)
        and problem.row_kind.shape == (M,)
    )


def _lines_fit(problem: Problem) -> bool:
    """Whether the line arrays fit (``line_coef`` ``(S, K)``, ``line_exact`` / ``line_base``
    ``(K,)``, ``line_limit`` / ``line_reserved_a`` ``(K, T)``, ``base_load_a`` ``(T,)``,
    ``var_reserved`` ``(V,)``), for the compiled screen as :func:`_rows_fit`."""
    K = problem.line_exact.size
    T = problem.n_periods
    res = problem.var_reserved
    return (
        problem.line_coef.shape == (problem.n_sessions, K)
        and problem.line_exact.shape == (K,)
        and problem.line_base.shape == (K,)
        and problem.line_limit.shape == (K, T)
        and problem.line_reserved_a.shape == (K, T)
        and problem.base_load_a.shape == (T,)
        and (res is None or res.shape == (problem.n_vars,))
    )


def _line_groups(problem: Problem) -> np.ndarray:
    """The lines checked as phasors (``flatnonzero(line_exact)``), kept on the problem only
    where ``line_exact`` is read-only (:func:`_frozen_memo`: a flag changed in place is read)."""
    return _frozen_memo(
        problem, "line_groups", lambda p: np.flatnonzero(p.line_exact), problem.line_exact
    )


def _min_da(min_current: np.ndarray) -> np.ndarray:
    """``(S,)`` the sessions' minimum currents in whole deci-amps (rounded up)."""
    return np.ceil(np.asarray(min_current, dtype=np.float64) * 10.0 - GRID_SNAP)


_NO_MIN = np.zeros(0)


def _project_loop(
    cur: np.ndarray,
    var_flat: np.ndarray,
    ub_da: np.ndarray,
    g_ptr: np.ndarray,
    g_idx: np.ndarray,
    g_data: np.ndarray,
    cap: np.ndarray,
    max_passes: int,
    min_da: np.ndarray,
    var_session: np.ndarray,
    use_min: bool,
) -> tuple[np.ndarray, bool]:
    """:func:`project` of ``cur`` (``(S, T)`` A, C order) for a problem without storage, by the
    same arithmetic: :func:`to_deciamps`, the maxima, :func:`_shrink`'s passes (each row summed
    in order from 0 as scipy's ``csr_matvec``; a column scaled by the largest ``1 − cap/load`` of
    the over-full rows it is in), the minima; the ``(S, T)`` result and ``True``. ``False``
    (result unused) where the passes do not settle or a row holds a column twice (scipy's
    maximum would add such entries first): the caller runs the numpy form."""
    S, T = cur.shape
    V = var_flat.size
    flat = cur.ravel()
    x = np.empty(V)
    for v in range(V):
        c = flat[var_flat[v]]
        if not np.isfinite(c):
            c = 0.0
        d = np.floor(c * 10.0 + GRID_SNAP)
        if d < 0.0:
            d = 0.0
        x[v] = d if d < ub_da[v] else ub_da[v]
    M = cap.size
    load = np.empty(M)
    col_shrink = np.zeros(V)
    settled = M == 0
    for n in range(max_passes + 1 if M else 0):
        any_over = False
        for r in range(M):
            s = 0.0
            for k in range(g_ptr[r], g_ptr[r + 1]):
                s += g_data[k] * x[g_idx[k]]
            load[r] = s
            if s > cap[r]:
                any_over = True
        if not any_over:
            settled = True
            break
        if n == max_passes:
            break
        col_shrink[:] = 0.0
        for r in range(M):
            if load[r] > cap[r]:
                shrink = 1.0 - cap[r] / load[r]
                prev = -1
                for k in range(g_ptr[r], g_ptr[r + 1]):
                    j = g_idx[k]
                    if j <= prev:
                        return np.zeros((S, T)), False
                    prev = j
                    if shrink > col_shrink[j]:
                        col_shrink[j] = shrink
        for v in range(V):
            if col_shrink[v] > 0.0:
                x[v] = np.floor(x[v] * (1.0 - col_shrink[v]))
    if not settled:
        return np.zeros((S, T)), False
    out = np.zeros(S * T)
    for v in range(V):
        xv = x[v]
        if use_min and xv < min_da[var_session[v]]:
            xv = 0.0
        out[var_flat[v]] = xv / 10.0
    return out.reshape(S, T), True


_PROJECT_KERNEL = LazyKernel(_project_loop)


def _project_da(problem: Problem, x: np.ndarray, max_passes: int) -> np.ndarray:
    if problem.G.shape[0] == 0:
        return x
    # kept on a compiled problem: the controller's pilot step reads the same capacities
    return _shrink(
        problem.G, _frozen_memo(problem, "cap", row_capacity_da, problem.h), x, max_passes
    )


def _frozen_memo(
    problem: Problem, key: str, build: Callable[[Problem], np.ndarray], source: np.ndarray
) -> np.ndarray:
    """:func:`problem_memo` where the array it is derived from is read-only (a compiled
    problem's), else computed afresh: the projection never relies on a value kept from an array
    someone could still change."""
    if source.flags.writeable:
        return build(problem)
    return problem_memo(problem, key, build)


def _ub_da(problem: Problem) -> np.ndarray:
    """``(V,)`` each variable's maximum in whole deci-amps."""
    return np.floor(problem.var_ub * 10.0 + GRID_SNAP)


def _shrink(G: sp.csr_matrix, cap: np.ndarray, x: np.ndarray, max_passes: int) -> np.ndarray:
    """Scale the columns under every row of ``G x ≤ cap`` that is over (``G ≥ 0``, deci-amps)."""
    for _ in range(max_passes):
        load = G @ x
        over = np.flatnonzero(load > cap)
        if over.size == 0:
            return x
        shrink = 1.0 - cap[over] / load[over]  # in (0, 1]
        M = G[over]
        M.data = np.repeat(shrink, np.diff(M.indptr))
        col_shrink = np.asarray(M.max(axis=0).todense()).ravel()
        x = np.floor(x * (1.0 - col_shrink))
    load = G @ x
    over = np.flatnonzero(load > cap)
    if over.size:  # last resort: nothing under a still-violated row may draw
        x = x.copy()
        x[np.unique(G[over].indices)] = 0.0
    return x


def _capacity(h: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Capacity (units of ``G @ deciamps``) of rows with limits ``h`` of kinds ``kind``: whole
    deci-amps below a current limit, ``POWER_MARGIN`` below a power one, never negative."""
    kernel = _CAPACITY_KERNEL.get()
    if kernel is not None and h.ndim == 1 and h.dtype == np.float64 and kind.shape == h.shape:
        return kernel(h, kind)
    cap = np.where(kind == ROW_NODE_CURRENT, np.floor(h * 10.0), h * 10.0 * (1.0 - POWER_MARGIN))
    return np.maximum(cap, 0.0)


def _capacity_loop(h: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """:func:`_capacity` row by row (the same operations; NaN stays NaN)."""
    out = np.empty(h.size)
    for r in range(h.size):
        c = np.floor(h[r] * 10.0) if kind[r] == ROW_NODE_CURRENT else h[r] * 10.0 * _POWER_KEEP
        out[r] = 0.0 if c < 0.0 else c
    return out


_POWER_KEEP = 1.0 - POWER_MARGIN
_CAPACITY_KERNEL = LazyKernel(_capacity_loop)


def _by_period(period: np.ndarray, T: int) -> list[np.ndarray]:
    """Indices of ``period`` grouped by value ``0..T-1``."""
    order = np.argsort(period, kind="stable")
    cuts = np.searchsorted(period[order], np.arange(T + 1))
    return [order[cuts[t] : cuts[t + 1]] for t in range(T)]


def _dense_input(a: np.ndarray | None, shape: tuple[int, int], what: str) -> np.ndarray:
    if a is None:
        return np.zeros(shape)
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        raise InputError(f"{what} has shape {a.shape}, expected {shape}")
    return a


def project_storage(
    problem: Problem,
    current: np.ndarray,
    discharge: np.ndarray | None = None,
    battery_charge_a: np.ndarray | None = None,
    battery_discharge_a: np.ndarray | None = None,
    *,
    min_current: np.ndarray | None = None,
    max_passes: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`project` for a problem with batteries or V2G sessions, both directions.

    Inputs (any solver's, A per phase): ``current`` ``(S, T)`` charge, ``discharge`` ``(S, T)``
    (≥ 0), ``battery_charge_a`` / ``battery_discharge_a`` ``(B, T)`` (≥ 0); ``None`` = 0.
    Returns ``(current, discharge, battery_a)`` on the 0.1 A grid, each at or below its input in
    magnitude (rounding toward zero both ways), with ``battery_a`` signed (+ charge, − discharge):

    1. round toward zero, clip to the columns' bounds (discharge exists only where a column does:
       bidirectional session on a bidirectional EVSE, plugged in, outside reservations);
    2. a unit both charging and discharging in a period is netted (same kW per A, so its net
       import is unchanged; no inverter does both at once);
    3. per period in time order: discharge ≤ energy above the floor (× discharge efficiency),
       export rows by scaling; charge ≤ room below the ceiling (÷ charge efficiency), import rows
       by scaling with the period's discharge credit on site-import rows held; ``min_current``
       pauses charge below a session's minimum; the energy states move on.
    """
    st = problem.storage
    if st is None:
        raise InputError("project_storage needs a problem with batteries or V2G sessions")
    S, T, B = problem.n_sessions, problem.n_periods, st.n_batteries
    current = _dense_input(current, (S, T), "schedule")
    discharge = _dense_input(discharge, (S, T), "discharge")
    b_c = _dense_input(battery_charge_a, (B, T), "battery_charge_a")
    b_d = _dense_input(battery_discharge_a, (B, T), "battery_discharge_a")
    V, Vb, Vd = problem.n_vars, st.bc_ub.size, st.dv_ub.size
    n_sd = Vd - Vb  # session discharge columns come first, then batteries' (same order as bc)
    Us = st.n_units - B

    x = np.concatenate(
        [
            np.minimum(
                to_deciamps(problem.gather(current)), np.floor(problem.var_ub * 10.0 + GRID_SNAP)
            ),
            np.minimum(
                to_deciamps(b_c[st.bc_battery, st.bc_period]), np.floor(st.bc_ub * 10.0 + GRID_SNAP)
            ),
        ]
    )
    xd = np.concatenate(
        [
            to_deciamps(discharge[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]]),
            to_deciamps(b_d[st.bc_battery, st.bc_period]),
        ]
    )
    xd = np.minimum(xd, np.floor(st.dv_ub * 10.0 + GRID_SNAP))
    # net a unit's charge against its discharge in the same period
    pc = np.flatnonzero(st.var_dv >= 0)
    pcol = np.concatenate([pc, V + np.arange(Vb)])
    pdis = np.concatenate([st.var_dv[pc], n_sd + np.arange(Vb)])
    m = np.minimum(x[pcol], xd[pdis])
    x[pcol] -= m
    xd[pdis] -= m

    K = sp.hstack([problem.G, st.Gb]).tocsr()
    cap_imp = row_capacity_da(problem)
    cap_x = _capacity(st.hx, st.x_kind)
    Cd = st.Cd.tocsr()
    unit_of_col = np.concatenate([st.session_unit[problem.var_session], Us + st.bc_battery])
    kwh_col = np.concatenate(
        [
            problem.var_kwh_per_a,
            problem.period_h[st.bc_period] * st.unit_kw_per_a[Us + st.bc_battery],
        ]
    )
    col_period = np.concatenate([problem.var_period, st.bc_period])
    min_da = None
    if min_current is not None:
        min_da = _min_da(_session_minima(problem, min_current))
    rows_t = _by_period(problem.row_period, T)
    xrows_t = _by_period(st.x_period, T)
    cols_t = _by_period(col_period, T)
    dv_t = _by_period(st.dv_period, T)
    e = st.unit_e0_kwh.astype(np.float64).copy()
    U = st.n_units
    inner = 1.0 - 1e-12
    for t in range(T):
        d = dv_t[t]
        if d.size:
            u = st.dv_unit[d]
            room = np.maximum(e[u] - st.unit_emin_kwh[u], 0.0)
            xd[d] = np.minimum(
                xd[d], np.floor(room * st.unit_eta_d[u] / st.dv_kwh_per_a[d] * 10.0 * inner)
            )
            if xrows_t[t].size:
                xd = _shrink(st.Gx[xrows_t[t]], cap_x[xrows_t[t]], xd, max_passes)
        c = cols_t[t]
        cu = c[unit_of_col[c] >= 0]
        u = unit_of_col[cu]
        out_kwh = np.bincount(
            st.dv_unit[d],
            xd[d] / 10.0 * st.dv_kwh_per_a[d] / st.unit_eta_d[st.dv_unit[d]],
            minlength=U,
        )
        head = np.maximum(st.unit_emax_kwh[u] - e[u] + out_kwh[u], 0.0)
        x[cu] = np.minimum(x[cu], np.floor(head / (st.unit_eta_c[u] * kwh_col[cu]) * 10.0 * inner))
        r = rows_t[t]
        if r.size:
            x = _shrink(K[r], cap_imp[r] + Cd[r] @ xd, x, max_passes)
        if min_da is not None:
            cs = c[c < V]
            x[cs] = np.where(x[cs] < min_da[problem.var_session[cs]], 0.0, x[cs])
        e += np.bincount(u, st.unit_eta_c[u] * kwh_col[cu] * x[cu] / 10.0, minlength=U)
        e -= out_kwh
    cur = problem.dense(x[:V] / 10.0)
    dis = np.zeros((S, T))
    dis[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]] = xd[:n_sd] / 10.0
    bat = np.zeros((B, T))
    bat[st.bc_battery, st.bc_period] = (x[V:] - xd[n_sd:]) / 10.0
    return cur, dis, bat


def session_kwh_per_a(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(S, T)`` grid kWh one ampere per phase moves over each period: charging (every session)
    and discharging (V2G sessions where they may discharge, 0 elsewhere)."""
    S, T = problem.n_sessions, problem.n_periods
    kwh_s = np.zeros((S, T))
    kwh_s[problem.var_session, problem.var_period] = problem.var_kwh_per_a
    dkwh = np.zeros((S, T))
    st = problem.storage
    if st is not None and st.dv_unit.size:
        n_sd = st.dv_unit.size - st.bc_ub.size
        dkwh[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]] = st.dv_kwh_per_a[:n_sd]
    return kwh_s, dkwh


def soc_path(
    problem: Problem,
    current: np.ndarray,
    discharge: np.ndarray | None = None,
    battery_a: np.ndarray | None = None,
) -> np.ndarray:
    """``(U, T + 1)`` energy state (kWh in the battery) of every storage unit if the limits are
    drawn: column 0 is now, column ``t + 1`` the end of period ``t``."""
    st = problem.storage
    if st is None:
        return np.zeros((0, problem.n_periods + 1))
    S, T, B = problem.n_sessions, problem.n_periods, st.n_batteries
    Us = st.n_units - B
    cur = _dense_input(current, (S, T), "schedule")
    dis = _dense_input(discharge, (S, T), "discharge")
    bat = _dense_input(battery_a, (B, T), "battery_a")
    kwh_s, dkwh = session_kwh_per_a(problem)
    dt = problem.period_h[None, :]
    kw_b = st.unit_kw_per_a[Us:, None]
    eta_c, eta_d = st.unit_eta_c[:, None], st.unit_eta_d[:, None]
    cin = np.vstack(
        [cur[st.unit_session[:Us]] * kwh_s[st.unit_session[:Us]], np.maximum(bat, 0.0) * kw_b * dt]
    )
    dout = np.vstack(
        [dis[st.unit_session[:Us]] * dkwh[st.unit_session[:Us]], np.maximum(-bat, 0.0) * kw_b * dt]
    )
    step = eta_c * cin - dout / eta_d
    return st.unit_e0_kwh[:, None] + np.concatenate(
        [np.zeros((st.n_units, 1)), np.cumsum(step, axis=1)], axis=1
    )


_NONE = np.zeros(0, dtype=np.intp)
_NONE.setflags(write=False)


def violations(
    problem: Problem,
    current: np.ndarray,
    limit: int | None = None,
    *,
    discharge: np.ndarray | None = None,
    battery_a: np.ndarray | None = None,
) -> list[Violation]:
    """The limits that ``current`` (``(S, T)`` A) breaks, as it would be emitted; at most ``limit``
    of them (``None`` or 0: all).

    Checks, in this order: values are ≥ 0 and finite, on the 0.1 A grid, zero where the session is
    not plugged in, at most the session's maximum current; and every safety row (node/phase
    current, node power, site import under grid limit and demand-response caps) holds — current
    rows in exact integer deci-amps, power rows in floating point. Line currents whose branches
    are not in phase (line-to-line EVSEs, delta/wye primaries, :mod:`loadopt.wiring`) are checked
    as exact phasor magnitudes (relative slack :data:`PHASOR_RTOL`), not by their facet rows.
    Every check is one array operation; :class:`Violation` objects are built only for the first
    ``limit`` found, so a schedule that breaks everything costs no more than one that breaks one
    limit. On a charge-only problem a compiled pass over the same checks, with the same
    arithmetic (:func:`_passes_loop`), answers first: it clears only a schedule every check
    passes, anything else is checked as described here.

    With storage (``discharge`` ``(S, T)`` A ≥ 0, ``battery_a`` ``(B, T)`` A signed, + charge):
    discharge only where allowed and within its limit, no session both charging and
    discharging, import rows with battery charging and discharge credit on site-import rows,
    export rows (discharge plus PV) and every unit's energy state within its floor and ceiling.
    """
    S, T = problem.n_sessions, problem.n_periods
    try:
        current = np.asarray(current, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"schedule currents must be numbers, got {type(current).__name__}"
        ) from None
    if current.shape != (S, T):
        raise InputError(f"schedule has shape {current.shape}, expected {(S, T)}")
    if problem.storage is None and _passes(problem, current):
        return []  # (the screen clears only schedules the checks below clear)
    left = limit if limit else sys.maxsize
    out: list[Violation] = []
    sid = problem.session_ids

    def first(mask: np.ndarray) -> np.ndarray:
        if not mask.any():  # the common case: cheaper than finding nothing
            return _NONE
        return np.flatnonzero(mask.ravel())[: left - len(out)]

    fin = np.isfinite(current)
    finite = np.where(fin, current, 0.0)
    bad = ~fin | (current < 0)
    for f in first(bad):
        i, t = divmod(int(f), T)
        out.append(
            Violation("non-negative finite", f"session {sid[i]!r}", t, float(current[i, t]), 0.0)
        )
    if len(out) >= left:
        return out
    da = np.rint(finite * 10.0)
    off_grid = (np.abs(finite * 10.0 - da) > 1e-6) & ~bad
    for f in first(off_grid):
        i, t = divmod(int(f), T)
        out.append(
            Violation(
                "0.1 A grid",
                f"session {sid[i]!r}",
                t,
                float(current[i, t]),
                float(np.floor(current[i, t] * 10) / 10),
            )
        )
    if len(out) >= left:
        return out
    plugged, ub_da, is_cur, model, h_da = (
        _check_facts(problem)  # limits someone can still change: nothing kept
        if problem.h.flags.writeable or problem.var_ub.flags.writeable
        else problem_memo(problem, "violations", _check_facts)
    )
    for f in first(~plugged & (da > 0)):
        i, t = divmod(int(f), T)
        out.append(Violation("not plugged in", f"session {sid[i]!r}", t, float(current[i, t]), 0.0))
    if len(out) >= left:
        return out
    x = np.maximum(problem.gather(da), 0.0)
    for v in first(x > ub_da):
        out.append(
            Violation(
                "max current",
                f"session {sid[problem.var_session[v]]!r}",
                int(problem.var_period[v]),
                x[v] / 10,
                ub_da[v] / 10,
            )
        )
    if len(out) >= left:
        return out
    st = problem.storage
    xb = xd = None
    if st is not None:
        out.extend(_storage_input_violations(problem, da, discharge, battery_a))
        n_sd = st.dv_ub.size - st.bc_ub.size
        dis = np.nan_to_num(_dense_input(discharge, (S, T), "discharge"))
        bat = np.nan_to_num(_dense_input(battery_a, (st.n_batteries, T), "battery_a"))
        xd = np.concatenate(
            [
                np.rint(dis[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]] * 10.0),
                np.rint(np.maximum(-bat, 0.0)[st.bc_battery, st.bc_period] * 10.0),
            ]
        )
        xb = np.rint(np.maximum(bat, 0.0)[st.bc_battery, st.bc_period] * 10.0)
        if len(out) >= left:
            return out[:left]
    if problem.G.shape[0]:
        load = problem.G @ x
        if st is not None:
            load = load + st.Gb @ xb - st.Cd @ xd
        # facet rows (``model``) are the solvers' linear stand-in for a phasor limit: the limit
        # itself is checked below, exactly
        over = np.where(is_cur, load > h_da, load / 10.0 > problem.h)
        for r in first(over & ~model):
            out.append(
                Violation(
                    ROW_KIND_NAMES[int(problem.row_kind[r])],
                    _row_name(problem, r),
                    int(problem.row_period[r]),
                    float(load[r] / 10.0),
                    float(problem.h[r]),
                )
            )
        if len(out) >= left:
            return out
    # a session on a reserved EVSE draws inside its reservation (counted as a fixed load)
    own = x if problem.var_reserved is None else np.where(problem.var_reserved, 0.0, x)
    if st is None:
        mag, lim, groups = line_current_magnitudes(problem, problem.dense(own / 10.0))
        fixed_a = problem.base_load_a[None, :]
    else:
        assert xd is not None and xb is not None
        dis_da = np.zeros((S, T))
        n_sd = st.dv_ub.size - st.bc_ub.size
        dis_da[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]] = xd[:n_sd]
        bat_da = np.zeros((st.n_batteries, T))
        bat_da[st.bc_battery, st.bc_period] = xb - xd[n_sd:]
        mag, lim, groups = line_current_worst(
            problem, problem.dense(own / 10.0), dis_da / 10.0, bat_da / 10.0
        )
        fixed_a = np.maximum(problem.base_load_a, _pv_a(problem))[None, :]
    # where the base load (and reserved draw) alone is over a limit (a notice of the problem),
    # vehicles may add nothing: the line may carry that, no more
    fixed = np.abs(problem.line_base[groups, None]) * fixed_a + problem.line_reserved_a[groups]
    room = np.maximum(lim, fixed)
    N = len(problem.node_ids)
    for f in first(mag > room * (1.0 + PHASOR_RTOL) + PHASOR_RTOL):
        j, t = divmod(int(f), T)
        g = int(groups[j])
        side, node, line = g // (3 * N), (g // 3) % N, g % 3
        where = f"node {problem.node_ids[node]!r} " + (
            f"line {'RST'[line]}" if side == 0 else f"primary line {'ABC'[line]}"
        )
        out.append(Violation("line current (phasor)", where, t, float(mag[j, t]), float(lim[j, t])))
    if st is None or len(out) >= left:
        return out
    if st.Gx.shape[0]:
        load = st.Gx @ xd
        is_cur = st.x_kind == ROW_NODE_CURRENT
        over = np.where(is_cur, load > np.floor(st.hx * 10.0), load / 10.0 > st.hx)
        # facet rows model a phasor limit, checked exactly above (both directions at once)
        over &= ~np.isin(st.x_kind, (ROW_LINE_FACET, ROW_PRIMARY_FACET))
        for r in first(over):
            node = int(st.x_node[r])
            where = (
                "the grid connection"
                if node < 0
                else f"node {problem.node_ids[node]!r}"
                + ("" if st.x_phase[r] < 0 else f" phase {'RST'[int(st.x_phase[r])]}")
            )
            out.append(
                Violation(
                    f"export {ROW_KIND_NAMES[int(st.x_kind[r])]}",
                    where,
                    int(st.x_period[r]),
                    float(load[r] / 10.0),
                    float(st.hx[r]),
                )
            )
    e = soc_path(problem, finite, dis, bat)
    names = _unit_names(problem)
    for f in first(e[:, 1:] < st.unit_emin_kwh[:, None] - SOC_TOL_KWH):
        u, k = divmod(int(f), T)
        out.append(
            Violation(
                "energy floor (negative: below)",
                names[u],
                k,
                float(e[u, k + 1]),
                float(st.unit_emin_kwh[u]),
            )
        )
    for f in first(e[:, 1:] > st.unit_emax_kwh[:, None] + SOC_TOL_KWH):
        u, k = divmod(int(f), T)
        out.append(
            Violation("energy ceiling", names[u], k, float(e[u, k + 1]), float(st.unit_emax_kwh[u]))
        )
    return out


def _passes_loop(
    cur: np.ndarray,
    var_flat: np.ndarray,
    ub_da: np.ndarray,
    reserved: np.ndarray,
    g_ptr: np.ndarray,
    g_idx: np.ndarray,
    g_data: np.ndarray,
    row_kind: np.ndarray,
    h: np.ndarray,
    c_ptr: np.ndarray,
    c_idx: np.ndarray,
    c_data: np.ndarray,
    exact: np.ndarray,
    line_base: np.ndarray,
    abs_base: np.ndarray,
    base_a: np.ndarray,
    reserved_a: np.ndarray,
    line_limit: np.ndarray,
) -> bool:
    """Whether the charge-only :func:`violations` of ``cur`` (``(S, T)`` A, C order) finds
    nothing, by the same arithmetic in one pass: values finite, ≥ 0 and on the 0.1 A grid
    (``rint``), zero where not plugged in (``var_flat``), at most ``ub_da``; every row of ``G``
    but the facet rows (each row summed in order from 0, as scipy's ``csr_matvec``), current
    rows against ``floor(10 h)``, power rows ``load / 10 > h``; the phasor lines (``exact``)
    summed over the sessions in order as ``C.T @ cur`` does, their magnitude (``hypot``) taken
    ``1e-12`` high against the check's ``max(limit, fixed) (1 + rtol) + rtol`` (``fixed`` from
    ``abs_base``, ``(G', 1)`` NumPy's ``|line_base|`` of the exact lines): a different ``hypot``
    than NumPy's can only make it stricter. ``False`` whenever any check might fire."""
    S, T = cur.shape
    n = S * T
    flat = cur.ravel()
    da = np.empty(n)
    for f in range(n):
        c = flat[f]
        if not np.isfinite(c) or c < 0:
            return False
        c10 = c * 10.0
        d = np.rint(c10)
        if np.abs(c10 - d) > 1e-6:
            return False
        da[f] = d
    plugged = np.zeros(n, np.bool_)
    V = var_flat.size
    for v in range(V):
        plugged[var_flat[v]] = True
    for f in range(n):
        if da[f] > 0 and not plugged[f]:
            return False
    x = np.empty(V)
    for v in range(V):
        x[v] = da[var_flat[v]]  # (≥ 0: a negative value returned False above)
        if x[v] > ub_da[v]:
            return False
    for r in range(row_kind.size):
        kind = row_kind[r]
        if kind == ROW_LINE_FACET or kind == ROW_PRIMARY_FACET:  # their phasor limit: below
            continue
        s = 0.0
        for k in range(g_ptr[r], g_ptr[r + 1]):
            s += g_data[k] * x[g_idx[k]]
        if kind == ROW_NODE_CURRENT:
            if s > np.floor(h[r] * 10.0):
                return False
        elif s / 10.0 > h[r]:
            return False
    K = exact.size
    group_of = np.full(K, -1, np.int64)
    n_groups = 0
    for k in range(K):
        if exact[k]:
            group_of[k] = n_groups
            n_groups += 1
    if n_groups == 0:
        return True
    own = np.zeros(n)
    for v in range(V):
        if not reserved[v]:
            own[var_flat[v]] = x[v] / 10.0
    re = np.zeros((n_groups, T))
    im = np.zeros((n_groups, T))
    for i in range(S):
        for k in range(c_ptr[i], c_ptr[i + 1]):
            g = group_of[c_idx[k]]
            if g < 0:
                continue
            a = c_data[k]
            for t in range(T):
                xv = own[i * T + t]
                re[g, t] += a.real * xv
                im[g, t] += a.imag * xv
    for k in range(K):
        g = group_of[k]
        if g < 0:
            continue
        b = line_base[k]
        for t in range(T):
            z = math.hypot(re[g, t] + b.real * base_a[t], im[g, t] + b.imag * base_a[t])
            fixed = abs_base[g, 0] * base_a[t] + reserved_a[k, t]
            lim = line_limit[k, t]
            room = lim if lim >= fixed else fixed
            if z * (1.0 + 1e-12) + reserved_a[k, t] > room * _PHASOR_KEEP + PHASOR_RTOL:
                return False
    return True


_PHASOR_KEEP = 1.0 + PHASOR_RTOL
_PASSES_KERNEL = LazyKernel(_passes_loop)


def _no_reservation(n: int) -> np.ndarray:
    """``(n,)`` False, read-only like a compiled problem's ``var_reserved`` (one compiled
    signature of the screen for both)."""
    out = np.zeros(n, np.bool_)
    out.setflags(write=False)
    return out


def _passes(problem: Problem, current: np.ndarray) -> bool:
    """The compiled screen of :func:`violations` for a problem without storage
    (:func:`_passes_loop`): ``True`` only where every check passes; ``False`` also where it does
    not run (no numba yet, unusual matrix formats): the checks then run as written."""
    kernel = _PASSES_KERNEL.get()
    if kernel is None:
        return False
    G, C = problem.G, problem.line_coef
    if G.format != "csr" or C.format != "csr" or C.dtype != np.complex128:
        return False
    if not problem_memo(problem, "arrays_fit", lambda p: _rows_fit(p) and _lines_fit(p)):
        return False
    groups = _line_groups(problem)
    reserved = problem.var_reserved
    # |line_base| of the exact lines as the check computes it (the same array, the same loop)
    abs_base = np.abs(problem.line_base[groups, None])
    return bool(
        kernel(
            np.ascontiguousarray(current),
            problem._var_flat,
            _frozen_memo(problem, "ub_da", _ub_da, problem.var_ub),
            _no_reservation(problem.n_vars) if reserved is None else reserved,
            G.indptr,
            G.indices,
            G.data,
            problem.row_kind,
            problem.h,
            C.indptr,
            C.indices,
            C.data,
            problem.line_exact,
            problem.line_base,
            abs_base,
            problem.base_load_a,
            problem.line_reserved_a,
            problem.line_limit,
        )
    )


def _check_facts(
    problem: Problem,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`violations` derives from the problem alone: ``(plugged (S, T), ub_da (V,),
    is_cur (M,), model (M,), h_da (M,))`` — where a session is plugged in, each variable's
    maximum in deci-amps, which rows are current rows, which are facet rows (their phasor limit
    is checked exactly instead), the current rows' capacities in deci-amps."""
    plugged = np.zeros((problem.n_sessions, problem.n_periods), dtype=bool)
    plugged[problem.var_session, problem.var_period] = True
    return (
        plugged,
        _frozen_memo(problem, "ub_da", _ub_da, problem.var_ub),
        problem.row_kind == ROW_NODE_CURRENT,
        (problem.row_kind == ROW_LINE_FACET) | (problem.row_kind == ROW_PRIMARY_FACET),
        np.floor(problem.h * 10.0),
    )


def _unit_names(problem: Problem) -> list[str]:
    st = problem.storage
    assert st is not None
    return [
        f"session {problem.session_ids[i]!r}" if i >= 0 else f"battery {st.battery_ids[b]!r}"
        for i, b in zip(st.unit_session.tolist(), st.unit_battery.tolist(), strict=True)
    ]


def _storage_input_violations(
    problem: Problem,
    charge_da: np.ndarray,
    discharge: np.ndarray | None,
    battery_a: np.ndarray | None,
) -> list[Violation]:
    """Discharge and battery values: finite, ≥ 0 (discharge), on the grid, allowed, in bounds,
    never both directions at once."""
    st = problem.storage
    assert st is not None
    out: list[Violation] = []
    S, T, B = problem.n_sessions, problem.n_periods, st.n_batteries
    sid = problem.session_ids
    dis = _dense_input(discharge, (S, T), "discharge")
    bat = _dense_input(battery_a, (B, T), "battery_a")
    bad = ~np.isfinite(dis) | (dis < 0)
    for i, t in zip(*np.nonzero(bad), strict=True):
        out.append(
            Violation(
                "discharge non-negative finite",
                f"session {sid[i]!r}",
                int(t),
                float(dis[i, t]),
                0.0,
            )
        )
    for b, t in zip(*np.nonzero(~np.isfinite(bat)), strict=True):
        out.append(
            Violation("finite", f"battery {st.battery_ids[b]!r}", int(t), float(bat[b, t]), 0.0)
        )
    for arr, names in (
        (np.nan_to_num(dis), [f"session {s!r} discharge" for s in sid]),
        (np.nan_to_num(bat), [f"battery {b!r}" for b in st.battery_ids]),
    ):
        off = np.abs(arr * 10.0 - np.rint(arr * 10.0)) > 1e-6
        for i, t in zip(*np.nonzero(off), strict=True):
            out.append(
                Violation(
                    "0.1 A grid",
                    names[i],
                    int(t),
                    float(arr[i, t]),
                    float(np.trunc(arr[i, t] * 10) / 10),
                )
            )
    n_sd = st.dv_ub.size - st.bc_ub.size
    ub = np.zeros((S, T))
    ub[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]] = st.dv_ub[:n_sd]
    d_da = np.rint(np.nan_to_num(dis) * 10.0)
    for i, t in zip(*np.nonzero(d_da > np.floor(ub * 10.0 + GRID_SNAP)), strict=True):
        out.append(
            Violation(
                "max discharge current" if ub[i, t] > 0 else "discharge allowed",
                f"session {sid[i]!r}",
                int(t),
                d_da[i, t] / 10,
                ub[i, t],
            )
        )
    both = (d_da > 0) & (charge_da > 0)
    for i, t in zip(*np.nonzero(both), strict=True):
        out.append(
            Violation(
                "charge and discharge at once",
                f"session {sid[i]!r}",
                int(t),
                float(d_da[i, t] / 10),
                0.0,
            )
        )
    b_da = np.rint(np.nan_to_num(bat) * 10.0)
    c_ub = np.zeros((B, T))
    c_ub[st.bc_battery, st.bc_period] = np.floor(st.bc_ub * 10.0 + GRID_SNAP)
    d_ub = np.zeros((B, T))
    d_ub[st.bc_battery, st.bc_period] = np.floor(st.dv_ub[n_sd:] * 10.0 + GRID_SNAP)
    for b, t in zip(*np.nonzero(b_da > c_ub), strict=True):
        out.append(
            Violation(
                "max charge",
                f"battery {st.battery_ids[b]!r}",
                int(t),
                b_da[b, t] / 10,
                c_ub[b, t] / 10,
            )
        )
    for b, t in zip(*np.nonzero(-b_da > d_ub), strict=True):
        out.append(
            Violation(
                "max discharge",
                f"battery {st.battery_ids[b]!r}",
                int(t),
                -b_da[b, t] / 10,
                d_ub[b, t] / 10,
            )
        )
    return out


def line_current_magnitudes(
    problem: Problem, current: np.ndarray, n_phases: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact line-current magnitudes (A) of the lines whose limit is a phasor limit.

    Returns ``(magnitude, limit, group)``: ``(G', T)`` ``|Σ_i c_ig r_it + b_g · base_t|`` and the
    limits of the line groups ``group`` (``problem.line_exact``; see :mod:`loadopt.problem`),
    from ``current`` ``(S, T)`` A. ``n_phases`` (phase switching, ``(S, T)``): periods at 1 use
    the session's L1-only coefficients. Reserved EVSE draw is added in phase (the worst case).
    """
    groups = _line_groups(problem)
    T = problem.n_periods
    if groups.size == 0:
        z = np.zeros((0, T))
        return z, z, groups
    cur = np.asarray(current, dtype=np.float64)
    if not np.isfinite(cur).all():
        cur = np.nan_to_num(cur)
    C = problem.line_coef
    if n_phases is None:
        # every line's sum, then the exact ones: cheaper than slicing the sparse columns, and
        # the same sums (each line's terms are added in session order either way)
        Z = _transposed_product(C, cur)[groups]
    else:
        C = C[:, groups]
        one = np.asarray(n_phases) == 1
        Z = C.T @ np.where(one, 0.0, cur) + problem.line_coef_l1[:, groups].T @ np.where(
            one, cur, 0.0
        )
    Z = np.asarray(Z) + problem.line_base[groups, None] * problem.base_load_a[None, :]
    return np.abs(Z) + problem.line_reserved_a[groups], problem.line_limit[groups], groups


def _transposed_product(C: sp.csr_matrix, cur: np.ndarray) -> np.ndarray:
    """``C.T @ cur`` (``C`` CSR ``(S, K)``, ``cur`` ``(S, T)``) by scipy's own CSC kernel on
    ``C``'s arrays — the product ``C.T @ cur`` computes, entry for entry, without building the
    transposed matrix object (its format checks cost more than the sums at a step's sizes)."""
    if (
        _csc_matvecs is None
        or C.format != "csr"
        or cur.ndim != 2
        or C.indptr.dtype != C.indices.dtype
    ):
        return np.asarray(C.T @ cur)
    S, K = C.shape
    out = np.zeros((K, cur.shape[1]), dtype=np.result_type(C.dtype, cur.dtype))
    x = np.ascontiguousarray(cur, dtype=out.dtype)
    _csc_matvecs(K, S, cur.shape[1], C.indptr, C.indices, C.data, x.ravel(), out.ravel())
    return out


def _pv_a(problem: Problem) -> np.ndarray:
    """(T,) per-phase current (A) of the PV output's period maximum (balanced, feeding in)."""
    st = problem.storage
    if st is None:
        return np.zeros(problem.n_periods)
    return st.pv_max_kw * 1000.0 / (3.0 * problem.site.voltage_v)


def line_current_worst(
    problem: Problem, current: np.ndarray, discharge: np.ndarray, battery_a: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`line_current_magnitudes` with storage: the largest magnitude any instant reaches.

    Signed currents (``current`` and ``discharge`` ``(S, T)`` A ≥ 0, ``battery_a`` ``(B, T)`` A,
    + charging): at any instant each unit draws its value or stops, the base load (its period
    maximum) and the PV output (its period maximum, feeding in where the base load is) are on
    or off. The largest ``|z|`` over all those instants is the largest over the vertices of the
    zonotope ``Σ_i [0, v_i]`` (``v_i`` each unit's phasor, the base load's, the PV output's):
    :func:`loadopt.wiring.zonotope_max_abs`, which the OCPP transition guard
    (:class:`loadopt.ocpp.guard.SiteLimits`) uses too.
    """
    st = problem.storage
    groups = np.flatnonzero(problem.line_exact)
    T = problem.n_periods
    if groups.size == 0:
        z = np.zeros((0, T))
        return z, z, groups
    cur = np.nan_to_num(np.asarray(current, dtype=np.float64))
    dis = np.nan_to_num(np.asarray(discharge, dtype=np.float64))
    parts = [problem.line_coef[:, groups]]
    amps = [cur - dis]
    if st is not None and st.bat_line_coef is not None and st.n_batteries:
        parts.append(st.bat_line_coef[:, groups])
        amps.append(np.nan_to_num(np.asarray(battery_a, dtype=np.float64)))
    C = sp.vstack(parts).tocsc()  # (K, G') complex
    A = np.vstack(amps)  # (K, T) signed A
    base = problem.line_base[groups]
    fixed = np.vstack([problem.base_load_a, -_pv_a(problem)])  # (2, T) along the base phasor
    mag = np.zeros((groups.size, T))
    for j in range(groups.size):
        rows = C.indices[C.indptr[j] : C.indptr[j + 1]]
        c = np.concatenate([C.data[C.indptr[j] : C.indptr[j + 1]], np.full(2, base[j])])
        mag[j] = zonotope_max_abs(c, np.vstack([A[rows], fixed]))
    return mag + problem.line_reserved_a[groups], problem.line_limit[groups], groups


def _row_name(problem: Problem, r: int) -> str:
    node = int(problem.row_node[r])
    if node < 0:
        return "the grid connection (import)"
    phase = int(problem.row_phase[r])
    kind = int(problem.row_kind[r])
    if kind == ROW_PRIMARY_FACET:
        return f"node {problem.node_ids[node]!r} primary line {'ABC'[phase]}"
    name = f"node {problem.node_ids[node]!r}" + ("" if phase < 0 else f" phase {'RST'[phase]}")
    return name if kind != ROW_LINE_FACET else name + f" (facet {int(problem.row_facet[r])})"
