"""The fast path's discharge policy: batteries and V2G sessions without an optimiser.

:func:`plan_storage` turns a problem with storage (:class:`~loadopt.problem.Storage`) into
charge, discharge and battery currents in milliseconds, for ``solve(method="fast")`` and the
solver fallback. It never needs the optimiser and it is always safe: whatever it proposes goes
through :func:`loadopt.safety.project_storage` (both directions of every limit, energy floors and
ceilings, rounding toward zero).

Policy (vectorised over periods, one short loop over storage units):

1. The cars' plan without storage: :func:`loadopt.fast.allocate_horizon` (charge only).
2. The value of a grid kWh in each period: the import price where the site imports in that plan,
   the export price (0 when exports earn nothing) where it exports; plus the unmet-energy
   penalty where the site-import row (grid contract, demand-response / grid-operator caps on the
   connection) binds while a car still wants energy — discharge there lets cars charge instead of
   being curtailed.
3. Per unit, pairs ``(discharge period, recharge period)``: discharge periods by value, highest
   first, against recharge periods by value over ``η_c·η_d``, lowest first; a pair is kept while
   ``value_d − degradation > value_c / (η_c·η_d)`` (a battery: and more than its terminal value
   per kWh). The discharge is the unit's full current; the recharge is what puts that energy back
   (``1/(η_c·η_d)`` grid kWh per grid kWh out), capped by the unit's current and by the slack every
   safety row has left in that period after the cars' plan (it never takes capacity from a car),
   and the discharge is cut to what was put back — so a V2G car ends with at least the energy the
   charge-only plan gives it (at most one cycle of a unit's usable band is paired). A battery
   also gives what it holds above its floor without a recharge where a grid kWh is worth more
   than the stored energy's terminal value (``÷ η_d``), highest value first.
4. The cars again (step 1) with the site-import rows raised by the discharge credit and every row
   lowered by the recharge load; the recharge is added on top.
5. :func:`~loadopt.safety.project_storage`. A V2G session that ends below both its target and
   what the charge-only plan gave it (the projection cut a recharge at its ceiling) gets no
   discharge and the plan is made again without it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..problem import ROW_SITE_IMPORT, Problem
from ..safety import _by_period, project_storage, soc_path

#: Energy tolerance (kWh) of the target check in step 5.
TARGET_TOL_KWH = 1e-6


def plan_storage(
    problem: Problem, policy: str = "fair"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(current, discharge, battery_a)`` for a problem with storage (module docstring), on the
    0.1 A grid and safe both ways: ``current`` and ``discharge`` ``(S, T)`` A ≥ 0, ``battery_a``
    ``(B, T)`` A signed (+ charging)."""
    from . import allocate_horizon

    st = problem.storage
    if st is None:
        raise InputError("plan_storage needs a problem with batteries or V2G sessions")
    B = st.n_batteries
    cur0 = allocate_horizon(problem, policy)  # type: ignore[arg-type]
    base = project_storage(problem, cur0, min_current=problem.session_min_current)
    e_base = soc_path(problem, *base)[:, -1]
    value = _value(problem, cur0)
    keep = np.ones(st.n_units, dtype=bool)
    out = base
    for _ in range(2):
        dis_col, add = _pairs(problem, cur0, value, keep)
        if not dis_col.any():
            return base
        out = _with_storage(problem, policy, cur0, dis_col, add)
        e_end = soc_path(problem, out[0], out[1], out[2])[:, -1]
        Us = st.n_units - B
        short = np.zeros(st.n_units, dtype=bool)
        short[:Us] = e_end[:Us] < np.minimum(st.unit_target_kwh[:Us], e_base[:Us]) - TARGET_TOL_KWH
        if not short.any():
            return out
        keep &= ~short
    return out if keep.any() else base


def _value(problem: Problem, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(buy, sell)``, (T,) each: what one more grid kWh consumed costs and what one more fed
    in earns in each period (currency/kWh; step 2 of the module docstring)."""
    o = problem.objective
    T = problem.n_periods
    x = problem.gather(cur)
    kw_s = problem.session_kw_per_a[problem.var_session]
    kw = np.bincount(problem.var_period, kw_s * x, minlength=T)
    net = problem.base_load_kw - problem.pv_kw + kw
    imp = problem.import_price
    exp = np.zeros(T) if problem.export_price is None else problem.export_price
    exp = np.minimum(exp, imp)  # one meter: feeding in never earns more than importing costs
    buy = o.energy_cost * np.where(net >= 0, imp, exp)  # PV surplus: its export is forgone
    sell = o.energy_cost * np.where(net > 0, imp, exp)  # an import offset, else an export
    # where the connection's cap binds while some car is short, discharge frees room for it
    rows = np.flatnonzero(problem.row_kind == ROW_SITE_IMPORT)
    if rows.size:
        binds = problem.G[rows] @ x >= problem.h[rows] * (1.0 - 1e-6) - 1e-9
        delivered = np.bincount(
            problem.var_session, problem.var_kwh_per_a * x, minlength=problem.n_sessions
        )
        short = problem.session_energy_kwh - delivered > 1e-3
        if short.any():
            wanting = np.zeros(T, dtype=bool)
            wanting[problem.var_period[short[problem.var_session]]] = True
            t = problem.row_period[rows[binds]]
            t = t[wanting[t]]
            prio = float(np.max(problem.session_priority, initial=1.0))
            sell[t] += o.unmet_energy_per_kwh * prio
            buy[t] += o.unmet_energy_per_kwh * prio  # charging there would curtail a car
    return buy, sell


def _pairs(
    problem: Problem,
    cur: np.ndarray,
    value: tuple[np.ndarray, np.ndarray],
    keep: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Discharge per discharge column (A) and the wanted recharge per charge column (A): ``add``
    has ``"var"`` (V,) for sessions' variables and ``"bc"`` (Vb,) for battery charge columns."""
    st = problem.storage
    assert st is not None
    V, Vb, Vd = problem.n_vars, st.bc_ub.size, st.dv_ub.size
    B = st.n_batteries
    Us = st.n_units - B
    dis = np.zeros(Vd)
    add_var, add_bc = np.zeros(V), np.zeros(Vb)
    room_var = np.maximum(problem.var_ub - problem.gather(cur), 0.0)
    var_unit = st.session_unit[problem.var_session]
    eta = st.unit_eta_c * st.unit_eta_d
    U = st.n_units
    d_of = _by_period(st.dv_unit, U)  # discharge columns of each unit (one sort, not U scans)
    v_of = _by_period(np.where(var_unit >= 0, var_unit, U), U + 1)
    for u in np.flatnonzero(keep):
        d = d_of[u]
        if d.size == 0:
            continue
        if u < Us:
            c = v_of[u]
            if problem.var_reserved is not None:
                c = c[~problem.var_reserved[c]]
            c_period, c_ub, c_kwh = problem.var_period[c], room_var[c], problem.var_kwh_per_a[c]
        else:
            c = np.flatnonzero(st.bc_battery == u - Us)
            c_period, c_ub = st.bc_period[c], st.bc_ub[c]
            c_kwh = problem.period_h[c_period] * st.unit_kw_per_a[u]
        free = c_ub > 0  # no room left in the cars' plan: no recharge there
        c, c_period, c_ub, c_kwh = c[free], c_period[free], c_ub[free], c_kwh[free]
        vd = value[1][st.dv_period[d]] - st.unit_degradation[u]
        vc = value[0][c_period] / eta[u]
        od, oc = np.argsort(-vd, kind="stable"), np.argsort(vc, kind="stable")
        k = min(od.size, oc.size)
        od, oc = od[:k], oc[:k]
        ok = (vd[od] > vc[oc] + 1e-12) & (st.dv_period[d[od]] != c_period[oc])
        # a pair only while each one before it pays (sorted: profits fall)
        n = int(np.argmin(ok)) if not ok.all() else k
        if n == 0:
            continue
        od, oc = od[:n], oc[:n]
        x_kwh = st.dv_ub[d[od]] * st.dv_kwh_per_a[d[od]]  # grid kWh out, full current
        back_kwh = np.minimum(x_kwh / eta[u], c_ub[oc] * c_kwh[oc])  # grid kWh to put it back
        x_kwh = back_kwh * eta[u]
        # at most one cycle of the usable band (battery kWh)
        band = st.unit_emax_kwh[u] - st.unit_emin_kwh[u]
        within = np.cumsum(x_kwh / st.unit_eta_d[u]) <= band + 1e-9
        od, oc, x_kwh, back_kwh = od[within], oc[within], x_kwh[within], back_kwh[within]
        with np.errstate(divide="ignore", invalid="ignore"):
            dis[d[od]] = np.where(st.dv_kwh_per_a[d[od]] > 0, x_kwh / st.dv_kwh_per_a[d[od]], 0.0)
            back_a = np.where(c_kwh[oc] > 0, back_kwh / c_kwh[oc], 0.0)
        if u < Us:
            add_var[c[oc]] = back_a
        else:
            add_bc[c[oc]] = back_a
    _unpaired(problem, value[1], keep, dis, add_bc)
    return dis, {"var": add_var, "bc": add_bc}


def _unpaired(
    problem: Problem, sell: np.ndarray, keep: np.ndarray, dis: np.ndarray, add_bc: np.ndarray
) -> None:
    """Batteries also give what they hold above their floor, without a recharge, where a grid
    kWh is worth more than the energy kept (its terminal value, ``÷ η_d``): the highest-value
    free discharge periods first (in place on ``dis``)."""
    st = problem.storage
    assert st is not None
    Us = st.n_units - st.n_batteries
    charging = np.zeros((st.n_batteries, problem.n_periods), dtype=bool)
    charging[st.bc_battery, st.bc_period] = add_bc > 0
    for u in np.flatnonzero(keep[Us:]) + Us:
        d = np.flatnonzero((st.dv_unit == u) & (dis == 0))
        d = d[~charging[u - Us, st.dv_period[d]]]
        v = sell[st.dv_period[d]] - st.unit_degradation[u]
        d = d[v > st.unit_terminal_value[u] / st.unit_eta_d[u] + 1e-12]
        if d.size == 0:
            continue
        d = d[np.argsort(-sell[st.dv_period[d]], kind="stable")]
        held = max(st.unit_e0_kwh[u] - st.unit_emin_kwh[u], 0.0) * st.unit_eta_d[u]  # grid kWh
        full = st.dv_ub[d] * st.dv_kwh_per_a[d]
        take = np.clip(held - (np.cumsum(full) - full), 0.0, full)
        with np.errstate(divide="ignore", invalid="ignore"):
            dis[d] = np.where(st.dv_kwh_per_a[d] > 0, take / st.dv_kwh_per_a[d], 0.0)


def _with_storage(
    problem: Problem,
    policy: str,
    cur0: np.ndarray,
    dis: np.ndarray,
    add: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 3 (fit the recharge into the slack), 4 and 5's projection."""
    from . import allocate_horizon

    st = problem.storage
    assert st is not None
    S, T, B = problem.n_sessions, problem.n_periods, st.n_batteries
    Us = st.n_units - B
    V = problem.n_vars
    n_sd = st.dv_ub.size - st.bc_ub.size
    x0 = problem.gather(cur0)
    # the recharge fits under every row's slack after the cars' plan (no car loses capacity)
    K = sp.hstack([problem.G, st.Gb]).tocsr()
    want = np.concatenate([add["var"], add["bc"]])
    slack = np.maximum(problem.h - problem.G @ x0, 0.0)
    got = _fit(K, slack, want)
    frac = np.divide(got, want, out=np.ones_like(want), where=want > 0)
    # the discharge of each unit and period is cut to what its paired recharge put back: pairs
    # were built column to column, so scale per unit by the unit's worst pair
    col_unit = np.concatenate([st.session_unit[problem.var_session], Us + st.bc_battery])
    worst = np.ones(st.n_units)
    has = want > 0
    np.minimum.at(worst, col_unit[has], frac[has])
    dis = dis * worst[st.dv_unit]
    got = np.where(has, want * worst[col_unit], 0.0)
    # the cars again, with the discharge credit on site-import rows and the recharge reserved
    h2 = np.maximum(problem.h + st.Cd @ dis - K @ got, 0.0)
    cur = allocate_horizon(dataclasses.replace(problem, h=h2), policy)  # type: ignore[arg-type]
    cur = cur + problem.dense(got[:V])
    dis_s = np.zeros((S, T))
    dis_s[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]] = dis[:n_sd]
    bc = np.zeros((B, T))
    bc[st.bc_battery, st.bc_period] = got[V:]
    bd = np.zeros((B, T))
    bd[st.bc_battery, st.bc_period] = dis[n_sd:]
    return project_storage(problem, cur, dis_s, bc, bd, min_current=problem.session_min_current)


def _fit(K: sp.csr_matrix, slack: np.ndarray, want: np.ndarray) -> np.ndarray:
    """``x ≤ want`` with ``K x ≤ slack`` (``K ≥ 0``): every column under an over-full row is
    scaled by that row's ``slack / load`` (the smallest such factor among its rows), one pass,
    the way :func:`loadopt.safety.project` scales."""
    if K.shape[0] == 0:
        return want.copy()
    load = K @ want
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(load > slack, slack / load, 1.0)
    M = K.tocsc()
    per = np.ones(want.size)
    col_of = np.repeat(np.arange(M.shape[1]), np.diff(M.indptr))  # column of each entry
    np.minimum.at(per, col_of, f[M.indices])
    return want * np.clip(per, 0.0, 1.0)
