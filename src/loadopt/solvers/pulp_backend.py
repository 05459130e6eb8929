"""PuLP backend: the same LP, for users who want CBC, Gurobi, CPLEX… through PuLP.

Not the fast path (PuLP builds one Python object per coefficient); it exists so that the model
can be handed to any solver PuLP knows. Tests check it reaches the HiGHS objective to 1e-6.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from ..errors import SolverError
from ..lp import LinearProgram
from .result import SolverResult, SolverStatus


def build_pulp(lp: LinearProgram, integrality: np.ndarray | None = None):
    """The PuLP model of ``lp`` and its variables (in column order)."""
    try:
        import pulp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SolverError("the PuLP backend needs `pip install loadopt[pulp]`") from exc
    prob = pulp.LpProblem("loadopt", pulp.LpMinimize)
    if integrality is None:
        integrality = lp.integrality
    integ = np.zeros(lp.n_cols, dtype=bool) if integrality is None else integrality.astype(bool)
    xs = [
        pulp.LpVariable(
            f"x{j:07d}",
            lowBound=None if not np.isfinite(lo) else float(lo),
            upBound=None if not np.isfinite(up) else float(up),
            cat=pulp.LpInteger if integ[j] else pulp.LpContinuous,
        )
        for j, (lo, up) in enumerate(zip(lp.col_lb, lp.col_ub, strict=True))
    ]
    prob += pulp.lpSum(float(cj) * xs[j] for j, cj in enumerate(lp.c) if cj != 0) + lp.offset
    A = lp.A.tocsr()
    for i in range(lp.n_rows):
        s, e = A.indptr[i], A.indptr[i + 1]
        expr = pulp.lpSum(
            float(v) * xs[j] for j, v in zip(A.indices[s:e], A.data[s:e], strict=True)
        )
        rl, ru = lp.row_lb[i], lp.row_ub[i]
        if np.isfinite(rl) and np.isfinite(ru) and rl == ru:
            prob += expr == float(ru)
        else:
            if np.isfinite(ru):
                prob += expr <= float(ru)
            if np.isfinite(rl):
                prob += expr >= float(rl)
    return prob, xs


def solve_lp(
    lp: LinearProgram, time_limit_s: float | None = None, options: dict[str, Any] | None = None
) -> SolverResult:
    """Build with PuLP and solve with ``options["solver"]`` (a PuLP solver object; default CBC)."""
    import pulp

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # PuLP 3.x announces its 4.0 API on every variable; nothing for our users to act on
            warnings.simplefilter("ignore", DeprecationWarning)
            prob, xs = build_pulp(lp)
            solver = (options or {}).get("solver") or pulp.PULP_CBC_CMD(
                msg=False, timeLimit=time_limit_s
            )
            prob.solve(solver)
        st = pulp.LpStatus[prob.status]
        x = np.array([v.value() if v.value() is not None else 0.0 for v in xs], dtype=np.float64)
    except Exception as exc:
        return SolverResult(
            SolverStatus.ERROR, None, None, time.perf_counter() - t0, f"PuLP failed: {exc!r}"
        )
    status = {
        "Optimal": SolverStatus.OPTIMAL,
        "Infeasible": SolverStatus.INFEASIBLE,
        "Unbounded": SolverStatus.UNBOUNDED,
    }.get(st, SolverStatus.ERROR)
    if status != SolverStatus.OPTIMAL:
        return SolverResult(status, None, None, time.perf_counter() - t0, st)
    # PuLP reports no objective value for a constant objective (all costs 0): compute it here
    obj = float(np.dot(lp.c, x) + lp.offset)
    return SolverResult(status, x, obj, time.perf_counter() - t0, st)
