"""``solve(problem) -> Schedule``: the one entry point for every method and backend.

Whatever happens inside — optimal, time-out, solver crash, infeasible model — what comes out has
been through :func:`loadopt.safety.project` and satisfies every limit; ``status`` and ``method``
say how it was produced.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np

from .lp import Flows, build_lp
from .options import (
    AutoOptions,
    FastOptions,
    IntegerOptions,
    Method,
    MilpOptions,
    SolveOptions,
    as_options,
)
from .problem import Problem
from .safety import project, project_storage
from .schedule import Schedule, ScheduleStatus
from .solvers.result import SolverResult, SolverStatus
from .solvers.warm import WarmStart


def fallback_currents(problem: Problem) -> np.ndarray:
    """A safe schedule without an optimiser: the fast path's weighted max-min fair allocation
    (:func:`loadopt.fast.allocate_horizon`), period by period over the horizon.

    Used when the solver fails or times out without a feasible point.
    """
    from .fast import allocate_horizon

    return allocate_horizon(problem)


def solve(
    problem: Problem,
    options: SolveOptions | str | dict[str, Any] | None = None,
    *,
    warm_start: WarmStart | None = None,
    method: Method | None = None,
    backend: Literal["highs", "pulp"] | None = None,
    time_limit_s: float | None = None,
    policy: str | None = None,
    integer: IntegerOptions | None = None,
    mip_rel_gap: float | None = None,
) -> Schedule:
    """Schedule ``problem``: the one way to a :class:`~loadopt.schedule.Schedule`.

    Parameters
    ----------
    problem
        The compiled problem (:func:`loadopt.compile_problem`).
    options
        How to solve: :class:`~loadopt.options.LpOptions` (the default: the LP of
        docs/formulation.md on HiGHS), :class:`~loadopt.options.MilpOptions` (minimum current,
        discrete steps, caps, run/pause, 1p/3p switching), :class:`~loadopt.options.AutoOptions`
        (the MILP when an integer feature is asked for, else the LP) or
        :class:`~loadopt.options.FastOptions` (the numba allocator, no optimiser).
    warm_start
        A :class:`~loadopt.solvers.warm.WarmStart` carried across calls (rolling horizon): the
        HiGHS LP starts from the previous optimal basis mapped onto this problem. Ignored by the
        other methods.
    method, backend, time_limit_s, policy, integer, mip_rel_gap
        The 0.1 keyword forms, still accepted: turned into the options object by
        :func:`loadopt.options.as_options`. A keyword that does not apply to the method is an
        error; so is mixing them with an options object.

    Returns
    -------
    Schedule
        Always safe (through :func:`loadopt.safety.project`); ``status`` is ``optimal``,
        ``feasible``, or a ``*_fallback`` that says why the fast path was used.
    """
    if not isinstance(problem, Problem):
        from .errors import InputError

        raise InputError(
            f"solve() needs a Problem (from compile_problem), got {type(problem).__name__}"
        )
    opts = as_options(
        options,
        method=method,
        backend=backend,
        time_limit_s=time_limit_s,
        policy=policy,
        integer=integer,
        mip_rel_gap=mip_rel_gap,
    )
    t0 = time.perf_counter()
    if isinstance(opts, FastOptions):
        from .fast import allocate_horizon

        extra: dict[str, Any] = {}
        if problem.storage is not None:  # batteries and V2G: the fast discharge policy
            from .fast.storage import plan_storage

            cur, dis, bat = plan_storage(problem, opts.policy)
            extra = dict(discharge=dis, battery_a=bat)
        else:
            cur = project(problem, allocate_horizon(problem, opts.policy))
        return Schedule(
            problem,
            cur,
            ScheduleStatus.FEASIBLE,
            "fast",
            solve_time_s=time.perf_counter() - t0,
            notices=problem.notices,
            **extra,
        )
    if isinstance(opts, AutoOptions):
        from .milp import wants_integers

        opts = opts.milp if wants_integers(problem, opts.milp.integer) else opts.lp
    if isinstance(opts, MilpOptions):
        from .milp import solve_milp

        if problem.storage is not None:
            if problem.evse_phase_switching[problem.session_evse].any():
                return _milp_charge_only(problem, opts, t0)
            from .milp.storage import solve_milp_storage

            return solve_milp_storage(problem, opts, t0)
        return solve_milp(problem, opts, t0=t0)
    lp = build_lp(problem)
    label = f"lp-{opts.backend}"
    separable = None
    if opts.backend == "highs" and opts.separable and lp.n_cols and lp.integrality is None:
        from .solvers.separable import solve_separable

        try:  # uncongested: no solver needed (None otherwise)
            separable = solve_separable(lp)
        except Exception:  # only a shortcut: HiGHS solves it
            separable = None
    if lp.n_cols == 0 and warm_start is None:  # nobody can draw (HiGHS calls it an error)
        res = SolverResult(SolverStatus.OPTIMAL, np.zeros(0), lp.offset, 0.0, "empty model")
    elif separable is not None:
        res, label = separable, "lp-separable"
    elif opts.backend == "highs":
        from .solvers.highs import LP_OPTIONS, solve_lp

        highs = {**LP_OPTIONS, **opts.highs}
        # a basis is an LP's: a model with binaries (one meter, exclusivity) is solved cold
        if warm_start is not None and lp.integrality is None:
            res = warm_start.solve(problem, lp, highs, opts.time_limit_s)
            if warm_start.mode != "empty":
                label = f"lp-highs-{warm_start.mode}"
        else:
            res = solve_lp(lp, time_limit_s=opts.time_limit_s, options=highs, start=True)
    else:
        from .solvers.pulp_backend import solve_lp as solve_pulp

        pulp = {"solver": opts.pulp_solver} if opts.pulp_solver is not None else None
        res = (
            SolverResult(SolverStatus.OPTIMAL, np.zeros(0), lp.offset, 0.0, "empty model")
            if lp.n_cols == 0
            else solve_pulp(lp, time_limit_s=opts.time_limit_s, options=pulp)
        )
    to_vars = (
        (lambda x: lp.flows(problem, x))
        if problem.storage is not None
        else (lambda x: lp.currents(problem, x))
    )
    return _finish(problem, res, to_vars, label, t0)


def _milp_charge_only(problem: Problem, opts: MilpOptions, t0: float) -> Schedule:
    """The MILP on a problem with batteries or V2G sessions *and* 1p/3p switching (not modelled
    with storage, :mod:`loadopt.milp.storage`): it plans charging only (batteries idle, nothing
    discharges), projected on the full problem so that every energy ceiling and both directions
    of every limit hold; the schedule's message says so."""
    import dataclasses

    from .milp import solve_milp

    sched = solve_milp(dataclasses.replace(problem, storage=None), opts, t0=t0)
    note = (
        "the MILP plans charging only with 1p/3p switching: batteries idle, no V2G "
        "discharge (method='lp' plans both directions)"
    )
    if sched.n_phases is not None:  # phase switching: its own phase-resolved problem
        return dataclasses.replace(sched, message=f"{sched.message}; {note}")
    cur = project(problem, sched.current, min_current=problem.session_min_current)
    return dataclasses.replace(
        sched, problem=problem, current=cur, message=f"{sched.message}; {note}"
    )


def _finish(problem: Problem, res: SolverResult, to_vars, method: str, t0: float) -> Schedule:
    """Turn a solver result into a safe schedule, falling back where the solver gave nothing.

    Nothing raised here may reach a control loop: a solver vector that cannot be mapped back
    falls back to the fast path, and a fast path that fails hands out 0 A (always safe).
    """
    message = f"{res.status.value}: {res.message}"
    extra: dict = {}
    if res.x is not None and res.status in (SolverStatus.OPTIMAL, SolverStatus.TIME_LIMIT):
        try:
            out = to_vars(res.x)
            if isinstance(out, Flows):  # batteries and V2G: both directions
                cur, dis, bat = project_storage(
                    problem,
                    out.current,
                    out.discharge,
                    out.battery_charge_a,
                    out.battery_discharge_a,
                )
                extra = dict(discharge=dis, battery_a=bat)
            else:
                cur = project(problem, problem.dense(out))
        except Exception as exc:  # a malformed solver vector: treat as a solver failure
            res = SolverResult(SolverStatus.ERROR, None, None, res.time_s, repr(exc))
            message = f"solver output unusable: {exc!r}"
        else:
            status = (
                ScheduleStatus.OPTIMAL
                if res.status == SolverStatus.OPTIMAL
                else ScheduleStatus.FEASIBLE
            )
            return Schedule(
                problem,
                cur,
                status,
                method,
                objective=res.objective,
                solve_time_s=time.perf_counter() - t0,
                message=res.message,
                notices=problem.notices,
                **extra,
            )
    status = (
        ScheduleStatus.TIME_LIMIT_FALLBACK
        if res.status == SolverStatus.TIME_LIMIT
        else ScheduleStatus.SOLVER_FAILED_FALLBACK
    )
    extra = {}
    try:
        if problem.storage is not None:  # the fast discharge policy (safe both ways)
            from .fast.storage import plan_storage

            cur, dis, bat = plan_storage(problem)
            extra = dict(discharge=dis, battery_a=bat)
        else:
            cur = project(problem, fallback_currents(problem))
    except Exception as exc:
        cur = problem.dense(np.zeros(problem.n_vars))
        extra = {}
        message += f"; fast path failed too ({exc!r}): every limit is 0 A"
    return Schedule(
        problem,
        cur,
        status,
        f"{method}->fast",
        solve_time_s=time.perf_counter() - t0,
        message=message,
        notices=problem.notices,
        **extra,
    )
