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
  room, earliest departure first. The result satisfies every row exactly (deci-amps, the same
  capacities :func:`loadopt.safety.project` uses).
"""

from __future__ import annotations

import numpy as np

from .problem import Problem
from .safety import GRID_SNAP, row_capacity_da


def pilot_grid(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, stepped)``: ``(S, L)`` each session's EVSE levels as compiled (A, sorted, 0
    included, ``+inf`` padded; :meth:`Problem.evse_levels_of`) and ``(S,)`` whether the EVSE has
    steps (otherwise any 0.1 A value ≥ the session's minimum)."""
    levels = [problem.evse_levels_of(int(e)) for e in problem.session_evse]
    width = max((a.size for a in levels if a is not None), default=1)
    grid = np.full((len(levels), width), np.inf)
    for i, a in enumerate(levels):  # once per session, not per period
        if a is not None:
            grid[i, : a.size] = a / 10.0
    return grid, np.array([a is not None for a in levels], dtype=bool)


def down_to_pilot(
    limit: np.ndarray, grid: np.ndarray, stepped: np.ndarray, min_a: np.ndarray
) -> np.ndarray:
    """What the EVSE signals for ``limit`` (``(S,)`` or ``(S, T)`` A): the largest step at or
    below it, 0 below the session's minimum."""
    lim = np.asarray(limit, dtype=np.float64)
    two = lim.ndim == 2
    L = lim if two else lim[:, None]
    out = np.where(L + 1e-9 < min_a[:, None], 0.0, L)
    if stepped.any():
        k = (grid[:, None, :] <= L[:, :, None] + 1e-9).sum(axis=2) - 1
        rows = np.arange(grid.shape[0])[:, None]
        val = np.where(k >= 0, grid[rows, np.maximum(k, 0)], 0.0)
        val = np.where(val + 1e-9 < min_a[:, None], 0.0, val)
        out = np.where(stepped[:, None], val, out)
    return out if two else out[:, 0]


def _up_to_pilot(
    limit: np.ndarray, grid: np.ndarray, stepped: np.ndarray, min_a: np.ndarray, max_a: np.ndarray
) -> np.ndarray:
    """``(S,)``: the smallest pilot above ``limit`` (the next step; the minimum for a continuous
    EVSE below it), capped at ``max_a``; ``limit`` itself where there is none."""
    up = np.where(limit + 1e-9 < min_a, min_a, limit)
    if stepped.any():
        above = np.where(grid > limit[:, None] + 1e-9, grid, np.inf).min(axis=1)
        above = np.maximum(above, min_a)
        up = np.where(stepped, above, up)
    return np.where(up <= max_a + 1e-9, up, limit)


def round_to_pilots(problem: Problem, current: np.ndarray) -> np.ndarray:
    """``current`` (``(S, T)`` A, safe) in the EVSEs' steps (module docstring); safe, on the
    0.1 A grid."""
    cur = np.asarray(current, dtype=np.float64)
    S, T = problem.n_sessions, problem.n_periods
    if S == 0 or T == 0:
        return cur.copy()
    grid, stepped = pilot_grid(problem)
    min_a = problem.session_min_current
    down = down_to_pilot(cur, grid, stepped, min_a)
    down = np.floor(down * 10.0 + GRID_SNAP) / 10.0
    v0 = np.flatnonzero(problem.var_period == 0)
    if v0.size == 0 or problem.G.shape[0] == 0:
        return down
    sess = problem.var_session[v0]
    want = cur[sess, 0]
    got = down[sess, 0]
    ub = problem.var_ub[v0]
    up = _up_to_pilot(got, grid[sess], stepped[sess], min_a[sess], ub)
    # raise only what rounding took away (the plan wanted more than the step below gives)
    lost = (want > got + 1e-6) & (up > got + 1e-9)
    if not lost.any():
        return down
    x_da = np.floor(problem.gather(down) * 10.0 + GRID_SNAP)
    cap = row_capacity_da(problem)
    load = problem.G @ x_da
    Gc = problem.G.tocsc()
    dep = problem.session_departure_h[sess]
    for j in np.flatnonzero(lost)[np.argsort(dep[lost], kind="stable")]:
        v = int(v0[j])
        add = np.floor(up[j] * 10.0 + GRID_SNAP) - x_da[v]
        lo, hi = Gc.indptr[v], Gc.indptr[v + 1]
        rows, coef = Gc.indices[lo:hi], Gc.data[lo:hi]
        if np.all(load[rows] + coef * add <= cap[rows]):
            load[rows] += coef * add
            x_da[v] += add
    return problem.dense(x_da / 10.0)
