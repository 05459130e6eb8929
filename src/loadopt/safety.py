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

Because ``G ≥ 0`` and ``h ≥ 0``, scaling the currents in an over-full row down by
``capacity / load`` can only lower every other row, so one projection pass fixes all rows at once;
a few more passes absorb floating-point residue, and a final pass zeroes whatever is still over
(which never happens in practice and is tested for).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .problem import ROW_KIND_NAMES, ROW_NODE_CURRENT, Problem

#: Relative margin kept below power (kW) limits so that float summation cannot exceed them.
POWER_MARGIN = 1e-9
#: Slack accepted when deciding that a solver value is already on the 0.1 A grid (solver noise).
GRID_SNAP = 1e-6


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
    rows in exact integer deci-amps, power rows in floating point. Every check is one array
    operation; :class:`Violation` objects are built only for the first ``limit`` found, so a
    schedule that breaks everything costs no more than one that breaks one limit.
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
    if len(out) >= left or not problem.G.shape[0]:
        return out
    load = problem.G @ x
    is_cur = problem.row_kind == ROW_NODE_CURRENT
    over = np.where(is_cur, load > np.floor(problem.h * 10.0), load / 10.0 > problem.h)
    for r in first(over):
        out.append(Violation(ROW_KIND_NAMES[int(problem.row_kind[r])], _row_name(problem, r),
                             int(problem.row_period[r]), float(load[r] / 10.0),
                             float(problem.h[r])))
    return out


def _row_name(problem: Problem, r: int) -> str:
    node = int(problem.row_node[r])
    if node < 0:
        return "the grid connection (import)"
    phase = int(problem.row_phase[r])
    return f"node {problem.node_ids[node]!r}" + ("" if phase < 0 else f" phase {'RST'[phase]}")
