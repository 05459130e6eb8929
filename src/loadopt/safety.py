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
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .problem import (
    ROW_KIND_NAMES,
    ROW_LINE_FACET,
    ROW_NODE_CURRENT,
    ROW_PRIMARY_FACET,
    Problem,
)

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
        return (f"{self.kind} limit of {self.where} in period {self.period}: "
                f"{self.value:.6g} > {self.limit:.6g}")


def to_deciamps(x: np.ndarray) -> np.ndarray:
    """Round currents (A) down to whole deci-amps, forgiving solver noise of ``GRID_SNAP``.

    NaN and ±inf become 0: a value nobody can vouch for is not handed out.
    """
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    return np.maximum(np.floor(x * 10.0 + GRID_SNAP), 0.0)


def row_capacity_da(problem: Problem) -> np.ndarray:
    """Capacity of each safety row in the units of ``G @ deciamps``."""
    cap = np.where(problem.row_kind == ROW_NODE_CURRENT,
                   np.floor(problem.h * 10.0),
                   problem.h * 10.0 * (1.0 - POWER_MARGIN))
    return np.maximum(cap, 0.0)


def project(problem: Problem, current: np.ndarray, max_passes: int = 8,
            min_current: np.ndarray | None = None) -> np.ndarray:
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
        raise ValueError(f"schedule has shape {current.shape}, expected "
                         f"{(problem.n_sessions, problem.n_periods)} (sessions, periods)")
    x = to_deciamps(problem.gather(current))
    x = np.minimum(x, np.floor(problem.var_ub * 10.0 + GRID_SNAP))
    x = _project_da(problem, x, max_passes)
    if min_current is not None:
        min_da = np.ceil(np.asarray(min_current, dtype=np.float64) * 10.0 - GRID_SNAP)
        x = np.where(x < min_da[problem.var_session], 0.0, x)
    return problem.dense(x / 10.0)


def _project_da(problem: Problem, x: np.ndarray, max_passes: int) -> np.ndarray:
    G = problem.G
    if G.shape[0] == 0:
        return x
    cap = row_capacity_da(problem)
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


def violations(problem: Problem, current: np.ndarray, limit: int | None = None) -> list[Violation]:
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
    limit.
    """
    current = np.asarray(current, dtype=np.float64)
    S, T = problem.n_sessions, problem.n_periods
    if current.shape != (S, T):
        raise ValueError(f"schedule has shape {current.shape}, expected {(S, T)}")
    left = limit if limit else sys.maxsize
    out: list[Violation] = []
    sid = problem.session_ids

    def first(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask.ravel())[: left - len(out)]

    finite = np.nan_to_num(current, nan=0.0, posinf=0.0, neginf=0.0)
    bad = ~np.isfinite(current) | (current < 0)
    for f in first(bad):
        i, t = divmod(int(f), T)
        out.append(Violation("non-negative finite", f"session {sid[i]!r}", t,
                             float(current[i, t]), 0.0))
    if len(out) >= left:
        return out
    da = np.rint(finite * 10.0)
    off_grid = (np.abs(finite * 10.0 - da) > 1e-6) & ~bad
    for f in first(off_grid):
        i, t = divmod(int(f), T)
        out.append(Violation("0.1 A grid", f"session {sid[i]!r}", t, float(current[i, t]),
                             float(np.floor(current[i, t] * 10) / 10)))
    if len(out) >= left:
        return out
    plugged = np.zeros((S, T), dtype=bool)
    plugged[problem.var_session, problem.var_period] = True
    for f in first(~plugged & (da > 0)):
        i, t = divmod(int(f), T)
        out.append(Violation("not plugged in", f"session {sid[i]!r}", t, float(current[i, t]),
                             0.0))
    if len(out) >= left:
        return out
    x = np.maximum(problem.gather(da), 0.0)
    ub_da = np.floor(problem.var_ub * 10.0 + GRID_SNAP)
    for v in first(x > ub_da):
        out.append(Violation("max current", f"session {sid[problem.var_session[v]]!r}",
                             int(problem.var_period[v]), x[v] / 10, ub_da[v] / 10))
    if len(out) >= left:
        return out
    if problem.G.shape[0]:
        load = problem.G @ x
        is_cur = problem.row_kind == ROW_NODE_CURRENT
        # facet rows are the solvers' linear stand-in for a phasor limit: the limit itself is
        # checked below, exactly
        model = np.isin(problem.row_kind, (ROW_LINE_FACET, ROW_PRIMARY_FACET))
        over = np.where(is_cur, load > np.floor(problem.h * 10.0), load / 10.0 > problem.h)
        for r in first(over & ~model):
            out.append(Violation(ROW_KIND_NAMES[int(problem.row_kind[r])],
                                 _row_name(problem, r), int(problem.row_period[r]),
                                 float(load[r] / 10.0), float(problem.h[r])))
        if len(out) >= left:
            return out
    # a session on a reserved EVSE draws inside its reservation (counted as a fixed load)
    own = x if problem.var_reserved is None else np.where(problem.var_reserved, 0.0, x)
    mag, lim, groups = line_current_magnitudes(problem, problem.dense(own / 10.0))
    # where the base load (and reserved draw) alone is over a limit (a notice of the problem),
    # vehicles may add nothing: the line may carry that, no more
    fixed = (np.abs(problem.line_base[groups, None]) * problem.base_load_a[None, :]
             + problem.line_reserved_a[groups])
    room = np.maximum(lim, fixed)
    N = len(problem.node_ids)
    for f in first(mag > room * (1.0 + PHASOR_RTOL) + PHASOR_RTOL):
        j, t = divmod(int(f), T)
        g = int(groups[j])
        side, node, line = g // (3 * N), (g // 3) % N, g % 3
        where = (f"node {problem.node_ids[node]!r} " +
                 (f"line {'RST'[line]}" if side == 0 else f"primary line {'ABC'[line]}"))
        out.append(Violation("line current (phasor)", where, t, float(mag[j, t]),
                             float(lim[j, t])))
    return out


def line_current_magnitudes(problem: Problem, current: np.ndarray,
                            n_phases: np.ndarray | None = None
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact line-current magnitudes (A) of the lines whose limit is a phasor limit.

    Returns ``(magnitude, limit, group)``: ``(G', T)`` ``|Σ_i c_ig r_it + b_g · base_t|`` and the
    limits of the line groups ``group`` (``problem.line_exact``; see :mod:`loadopt.problem`),
    from ``current`` ``(S, T)`` A. ``n_phases`` (phase switching, ``(S, T)``): periods at 1 use
    the session's L1-only coefficients. Reserved EVSE draw is added in phase (the worst case).
    """
    groups = np.flatnonzero(problem.line_exact)
    T = problem.n_periods
    if groups.size == 0:
        z = np.zeros((0, T))
        return z, z, groups
    cur = np.nan_to_num(np.asarray(current, dtype=np.float64))
    C = problem.line_coef[:, groups]
    if n_phases is None:
        Z = C.T @ cur
    else:
        one = np.asarray(n_phases) == 1
        Z = C.T @ np.where(one, 0.0, cur) + problem.line_coef_l1[:, groups].T @ np.where(
            one, cur, 0.0)
    Z = np.asarray(Z) + problem.line_base[groups, None] * problem.base_load_a[None, :]
    return np.abs(Z) + problem.line_reserved_a[groups], problem.line_limit[groups], groups


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
