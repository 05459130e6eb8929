"""``solve(problem) -> Schedule``: the one entry point for every method and backend.

Whatever happens inside — optimal, time-out, solver crash, infeasible model — what comes out has
been through :func:`loadopt.safety.project` and satisfies every limit; ``status`` and ``method``
say how it was produced.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np

from .lp import build_lp
from .problem import Problem
from .safety import project
from .schedule import Schedule, ScheduleStatus
from .solvers.result import SolverResult, SolverStatus

Method = Literal["lp", "fast", "milp", "auto"]
Backend = Literal["highs", "pulp"]


def fallback_currents(problem: Problem) -> np.ndarray:
    """A safe schedule without an optimiser: the fast path's weighted max-min fair allocation
    (:func:`loadopt.fast.allocate_horizon`), period by period over the horizon.

    Used when the solver fails or times out without a feasible point.
    """
    from .fast import allocate_horizon

    return allocate_horizon(problem)


def solve(
    problem: Problem,
    method: Method = "lp",
    backend: Backend = "highs",
    time_limit_s: float | None = None,
    options: dict[str, Any] | None = None,
    *,
    policy: str = "fair",
    integer: Any = None,
    mip_rel_gap: float = 0.01,
) -> Schedule:
    """Schedule ``problem``.

    ``method="lp"`` solves the LP of docs/formulation.md with ``backend`` (``"highs"`` through
    highspy, the default and fast path; ``"pulp"`` for CBC or any solver PuLP drives, passed as
    ``options={"solver": ...}``). ``time_limit_s`` bounds the solver's time. ``options`` go to
    HiGHS as ``setOptionValue`` pairs.

    ``method="milp"`` solves the MILP of :mod:`loadopt.milp` (minimum current, discrete steps,
    caps on sessions charging at once, minimum run/pause, 1p/3p switching) chosen by
    ``integer`` (a :class:`loadopt.milp.IntegerOptions`; default: minimum current and discrete
    steps), stopping at ``mip_rel_gap``. ``method="auto"``: the MILP when an integer feature is
    asked for (``integer`` given, or an EVSE with ``allowed_currents`` or ``phase_switching``),
    else the LP.

    The returned :class:`~loadopt.schedule.Schedule` is always safe; its ``status`` is
    ``optimal``, ``feasible``, or a ``*_fallback`` that says why the fallback was used.
    """
    t0 = time.perf_counter()
    if method == "fast":  # policy: "fair" | "edf" | "llf", see loadopt.fast
        from .fast import allocate_horizon

        cur = project(problem, allocate_horizon(problem, policy))
        return Schedule(problem, cur, ScheduleStatus.FEASIBLE, "fast",
                        solve_time_s=time.perf_counter() - t0, notices=problem.notices)
    if method in ("milp", "auto"):
        from .milp import solve_milp, wants_integers

        if method == "milp" or wants_integers(problem, integer):
            if backend != "highs":
                raise ValueError(f"the MILP runs on HiGHS only, not backend {backend!r}")
            return solve_milp(problem, integer, time_limit_s, mip_rel_gap, options, t0)
        method = "lp"
    if method != "lp":
        raise ValueError(f"unknown method {method!r}; use 'lp', 'fast', 'milp' or 'auto'")
    lp = build_lp(problem)
    if backend == "highs":
        from .solvers.highs import LP_OPTIONS, solve_lp

        options = {**LP_OPTIONS, **(options or {})}
    elif backend == "pulp":
        from .solvers.pulp_backend import solve_lp
    else:
        raise ValueError(f"unknown backend {backend!r}; use 'highs' or 'pulp'")
    if lp.n_cols == 0:  # nobody can draw: nothing to optimise (HiGHS calls this an error)
        res = SolverResult(SolverStatus.OPTIMAL, np.zeros(0), lp.offset, 0.0, "empty model")
    else:
        res = solve_lp(lp, time_limit_s=time_limit_s, options=options)
    return _finish(problem, res, lambda x: lp.currents(problem, x), f"lp-{backend}", t0)


def _finish(problem: Problem, res: SolverResult, to_vars, method: str, t0: float) -> Schedule:
    """Turn a solver result into a safe schedule, falling back where the solver gave nothing.

    Nothing raised here may reach a control loop: a solver vector that cannot be mapped back
    falls back to the fast path, and a fast path that fails hands out 0 A (always safe).
    """
    message = f"{res.status.value}: {res.message}"
    if res.x is not None and res.status in (SolverStatus.OPTIMAL, SolverStatus.TIME_LIMIT):
        try:
            cur = project(problem, problem.dense(to_vars(res.x)))
        except Exception as exc:  # a malformed solver vector: treat as a solver failure
            res = SolverResult(SolverStatus.ERROR, None, None, res.time_s, repr(exc))
            message = f"solver output unusable: {exc!r}"
        else:
            status = (ScheduleStatus.OPTIMAL if res.status == SolverStatus.OPTIMAL
                      else ScheduleStatus.FEASIBLE)
            return Schedule(problem, cur, status, method, objective=res.objective,
                            solve_time_s=time.perf_counter() - t0, message=res.message,
                            notices=problem.notices)
    status = (ScheduleStatus.TIME_LIMIT_FALLBACK if res.status == SolverStatus.TIME_LIMIT
              else ScheduleStatus.SOLVER_FAILED_FALLBACK)
    try:
        cur = project(problem, fallback_currents(problem))
    except Exception as exc:
        cur = problem.dense(np.zeros(problem.n_vars))
        message += f"; fast path failed too ({exc!r}): every limit is 0 A"
    return Schedule(problem, cur, status, f"{method}->fast", solve_time_s=time.perf_counter() - t0,
                    message=message, notices=problem.notices)
