"""The MILP on a problem with batteries or V2G sessions: storage columns and integer rules in one
model (see docs/formulation.md, "Storage" and "The MILP with storage").

:func:`build_milp` already carries the LP's storage block (battery charge ``bc``, discharge
``d``, energy states ``e``, V2G target slacks ``w``) and its binaries — charge/discharge
exclusivity ``zx`` only in the (unit, period) pairs where doing both could pay
(:func:`loadopt.lp.exclusive_periods`), the meter direction only where export pays more than
import — next to the MILP's own integer columns on the charge currents (minimum current,
discrete steps, caps, run lengths). HiGHS solves that model; the point is then made exact:

1. the storage flows through :func:`~loadopt.safety.project_storage` (both directions, energy
   floors in time order with the MIP's charging);
2. the charge currents through :func:`~loadopt.milp.repair.enforce` on the problem seen with those
   flows held (site-import rows raised by the discharge credit, every row lowered by battery
   charging and by discharge on coupled phasor rows; V2G sessions wanting what the MIP charged
   them), so every integer rule holds;
3. everything through :func:`~loadopt.safety.project_storage` once more (it only cuts a V2G car's
   charge at its V2X ceiling: safety never depends on steps 1–2).

1p/3p switching with storage is not modelled here (its twin columns would need twin discharge
columns); :func:`loadopt.solve` plans such problems charge-only and says so.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..options import MilpOptions
from ..problem import Problem
from ..safety import project_storage
from ..schedule import Schedule, ScheduleStatus
from .model import build_milp
from .repair import enforce


def solve_milp_storage(problem: Problem, opts: MilpOptions, t0: float) -> Schedule:
    """Schedule a storage ``problem`` with the MILP of ``opts`` (module docstring). Always safe;
    on a solver failure or a time-out without a point, the fast discharge policy."""
    from ..solvers.highs import interrupt_at, new_highs, pass_lp, run, run_until

    st = problem.storage
    assert st is not None
    deadline = None if opts.time_limit_s is None else t0 + float(opts.time_limit_s)
    model = build_milp(problem, opts.integer)
    if model.switchable.any():
        raise ValueError("the storage MILP does not model 1p/3p switching")
    x = None
    objective: float | None = None
    message = ""
    status = ScheduleStatus.FEASIBLE
    try:
        left = None if deadline is None else max(deadline - time.perf_counter(), 0.01)
        h = new_highs({"mip_rel_gap": opts.mip_rel_gap, **opts.highs}, left)
        pass_lp(h, model.milp, model.integrality)
        if deadline is not None:
            interrupt_at(h, deadline)
        res = run(h) if deadline is None else run_until(h, deadline)
        if res is None:
            raise TimeoutError("HiGHS did not stop at the time limit; abandoned")
        x = res.x
        objective = res.objective
        gap = float(h.getInfo().mip_gap)
        if res.status.value == "optimal":
            status = ScheduleStatus.OPTIMAL
        message = f"HiGHS MIP with storage: {res.message}, gap {100 * gap:.3g} %"
    except Exception as exc:
        message = f"HiGHS MIP with storage failed: {exc}"
    if x is None:
        from ..fast.storage import plan_storage

        cur, dis, bat = plan_storage(problem)
        return Schedule(
            problem,
            cur,
            ScheduleStatus.SOLVER_FAILED_FALLBACK,
            "milp->fast",
            solve_time_s=time.perf_counter() - t0,
            message=message + "; the fast discharge policy instead",
            notices=problem.notices,
            discharge=dis,
            battery_a=bat,
        )
    fl = model.lp.flows(problem, x[: model.lp.n_cols])
    # 1. the storage flows, with the MIP's charging before them (energy floors in time order)
    _, dis, bat = project_storage(
        problem,
        fl.current,
        fl.discharge,
        fl.battery_charge_a,
        fl.battery_discharge_a,
    )
    # 2. the integer rules on the charge currents, with those flows held
    held = _held(problem, fl.current, dis, bat)
    xr = np.zeros(model.n_ext)
    has = model.ext_col >= 0
    xr[has] = x[model.ext_col[has]]
    x_da = enforce(dataclasses.replace(model, problem=held), xr)
    cur = problem.dense(x_da[: problem.n_vars] / 10.0)
    # 3. both directions and every energy bound, exactly
    cur, dis, bat = project_storage(
        problem,
        cur,
        dis,
        np.maximum(bat, 0.0),
        np.maximum(-bat, 0.0),
        min_current=model.session_min,
    )
    return Schedule(
        problem,
        cur,
        status,
        "milp",
        objective=objective,
        solve_time_s=time.perf_counter() - t0,
        message=message,
        notices=problem.notices,
        discharge=dis,
        battery_a=bat,
    )


def _held(problem: Problem, current: np.ndarray, dis: np.ndarray, bat: np.ndarray) -> Problem:
    """The charge-only view of ``problem`` with the storage flows ``dis`` (S, T) and ``bat``
    (B, T, signed) held: every import row's right-hand side moved by them, and V2G sessions
    wanting at least what ``current`` charges them (to cover what they give back)."""
    st = problem.storage
    assert st is not None
    n_sd = st.dv_ub.size - st.bc_ub.size
    xd = np.concatenate(
        [
            dis[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]],
            np.maximum(-bat, 0.0)[st.bc_battery, st.bc_period],
        ]
    )
    xb = np.maximum(bat, 0.0)[st.bc_battery, st.bc_period]
    h = np.maximum(problem.h + st.Cd @ xd - st.Gb @ xb, 0.0)
    kwh = np.bincount(
        problem.var_session,
        problem.var_kwh_per_a * problem.gather(np.maximum(current, 0.0)),
        minlength=problem.n_sessions,
    )
    energy = np.where(
        st.session_unit >= 0,
        np.maximum(problem.session_energy_kwh, kwh),
        problem.session_energy_kwh,
    )
    return dataclasses.replace(problem, h=h, storage=None, session_energy_kwh=energy)
