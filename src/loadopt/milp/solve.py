"""``solve_milp``: LP bound, incumbent, then HiGHS branch-and-bound until the gap or the deadline;
every point made exact by :func:`~loadopt.milp.repair.enforce` (see :mod:`loadopt.milp`)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import InputError
from ..options import IntegerOptions, MilpOptions
from ..problem import Problem
from ..schedule import Schedule, ScheduleStatus
from .incumbent import incumbent, rel_gap
from .model import build_milp, lp_point, objective_of, to_dense
from .repair import enforce


def solve_milp(
    problem: Problem,
    options: MilpOptions | IntegerOptions | None = None,
    time_limit_s: float | None = None,
    mip_rel_gap: float | None = None,
    *,
    t0: float | None = None,
) -> Schedule:
    """Schedule ``problem`` with the MILP of ``options`` (see :mod:`loadopt.milp`).

    The time limit bounds the whole call (LP relaxation, incumbent and branch-and-bound). The
    result is always safe and satisfies every integer rule.

    Parameters
    ----------
    problem
        The compiled problem.
    options
        A :class:`~loadopt.options.MilpOptions`; an :class:`IntegerOptions` with
        ``time_limit_s`` / ``mip_rel_gap`` is the 0.1 form.
    time_limit_s
        Seconds for the whole call.
    mip_rel_gap
        Relative gap (objective with its constant) at which to stop.
    t0
        ``time.perf_counter`` at the caller's start (the time limit counts from it).

    Returns
    -------
    Schedule
        ``status`` ``optimal`` when the gap was reached, ``feasible`` on a time-out (the gap in
        ``message``), ``solver_failed_fallback`` when neither the LP nor the MIP gave a point.
    """
    from ..solvers.highs import interrupt_at, new_highs, pass_lp, run, run_until

    if isinstance(options, MilpOptions):
        if time_limit_s is not None or mip_rel_gap is not None:
            raise InputError("pass time_limit_s and mip_rel_gap inside MilpOptions")
        opts = options
    else:
        kw: dict[str, Any] = {"integer": options, "time_limit_s": time_limit_s}
        if mip_rel_gap is not None:
            kw["mip_rel_gap"] = mip_rel_gap
        opts = MilpOptions(**kw)
    integer, time_limit_s, mip_rel_gap = opts.integer, opts.time_limit_s, opts.mip_rel_gap
    t0 = time.perf_counter() if t0 is None else t0
    deadline = None if time_limit_s is None else t0 + float(time_limit_s)
    model = build_milp(problem, integer)
    inc = incumbent(model, mip_rel_gap, heuristics=opts.incumbent, deadline=deadline)
    notes = [f"LP bound {inc.bound:.6g}" if inc.bound is not None else "no LP bound"]
    x_da, obj, status = inc.x_da, inc.objective, ScheduleStatus.FEASIBLE
    gap = rel_gap(obj, inc.bound) if x_da is not None else math.inf
    if x_da is not None and gap <= mip_rel_gap:
        status = ScheduleStatus.OPTIMAL
        notes.append(
            f"incumbent ({inc.source}) within {100 * gap:.3g} % of the LP bound: "
            "branch-and-bound not needed"
        )
    else:
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0.01:
            notes.append("time limit reached before branch-and-bound")
        else:
            try:
                h = new_highs({"mip_rel_gap": mip_rel_gap, **opts.highs}, left)
                pass_lp(h, model.milp, model.integrality)
                if deadline is not None:
                    interrupt_at(h, deadline)
                if x_da is not None:
                    pt = lp_point(model, x_da)
                    h.setSolution(pt.size, np.arange(pt.size, dtype=np.int32), pt)
                res = run(h) if deadline is None else run_until(h, deadline)
                if res is None:
                    raise TimeoutError(
                        "HiGHS did not stop at the time limit (root cut "
                        "separation polls no clock); left running, abandoned"
                    )
                info = h.getInfo()
                bound = float(info.mip_dual_bound)
                if inc.bound is not None and np.isfinite(bound):
                    bound = max(bound, inc.bound)
                elif inc.bound is not None:
                    bound = inc.bound
                if res.x is not None:
                    xr = np.zeros(model.n_ext)
                    has = model.ext_col >= 0
                    xr[has] = res.x[model.ext_col[has]]
                    xd = enforce(model, xr)
                    o2 = objective_of(model, xd)
                    if x_da is None or o2 <= obj + 1e-9 * max(abs(obj), 1.0):
                        x_da, obj = xd, o2
                gap = rel_gap(obj, bound if np.isfinite(bound) else None)
                if res.status.value == "optimal" or gap <= mip_rel_gap:
                    status = ScheduleStatus.OPTIMAL
                notes.append(
                    f"HiGHS MIP: {res.message}, gap {100 * gap:.3g} %"
                    + (f" (incumbent: {inc.source})" if inc.x_da is not None else "")
                )
            except Exception as exc:  # keep the incumbent
                notes.append(f"HiGHS MIP failed: {exc}")
    method = "milp"
    if x_da is None:
        from ..fast import allocate_horizon

        status = ScheduleStatus.SOLVER_FAILED_FALLBACK
        method = "milp->fast"
        cur = allocate_horizon(problem)
        xe = np.zeros(model.n_ext)
        xe[: problem.n_vars] = problem.gather(cur)
        x_da = enforce(model, xe)
        obj = objective_of(model, x_da)
        notes.append("no LP or MIP solution: fast allocator made exact")
    elif status is ScheduleStatus.FEASIBLE:
        notes.insert(0, f"time limit: best schedule has gap {100 * gap:.3g} %")
    cur, one, pp = to_dense(model, x_da)
    n_ph = None
    if model.switchable.any():
        n_ph = np.repeat(
            problem.session_phase_mask.sum(axis=1)[:, None], problem.n_periods, axis=1
        ).astype(np.int8)
        n_ph[problem.var_session[one], problem.var_period[one]] = 1
    return Schedule(
        pp,
        cur,
        status,
        method,
        objective=obj,
        solve_time_s=time.perf_counter() - t0,
        message="; ".join(notes),
        notices=problem.notices,
        n_phases=n_ph,
    )
