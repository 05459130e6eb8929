"""Reference models the benchmarks compare loadopt against, built from the same instance.

``straightforward_lp`` is the model a competent engineer would write first from
docs/formulation.md, with no structural reductions and without loadopt's LP code: one column per
plugged-in (session, period), an unmet-energy slack per session that wants energy, every safety
row of the compiled problem (``G r ≤ h`` as compiled, singleton and non-binding rows included),
an energy balance row per session, import/export columns per period carrying the prices (and,
where export pays more than import, a binary meter direction: one meter never imports and
exports at once), and a peak column for a demand charge. Solved by highspy with default options,
it is the "raw HiGHS" line; built as PuLP objects and solved by CBC, the "PuLP + CBC" line.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from loadopt.lp import LinearProgram, blocks_of
from loadopt.problem import Problem


def straightforward_lp(p: Problem) -> LinearProgram:
    """Columns ``[r | u | imp | exp | peak?]``; rows ``[G | energy | balance | peak?]``."""
    o = p.objective
    if o.fairness > 0:
        raise ValueError("the reference model has no fairness column")
    V, S, T = p.n_vars, p.n_sessions, p.n_periods
    dt_h = p.period_h  # (T,) period lengths: a non-uniform horizon is modelled alike
    b_h = np.concatenate(([0.0], np.cumsum(dt_h)))
    # charge early: per kWh, hours from the horizon start to the period's middle, scaled by
    # horizon / time to departure (docs/formulation.md)
    t_mid_h = 0.5 * (b_h[:-1] + b_h[1:])[p.var_period]
    urgency = b_h[-1] / p.session_departure_h[p.var_session]
    c_r = o.charge_early_per_kwh_h * t_mid_h * urgency * p.var_kwh_per_a
    # unmet: per kWh, weighted towards finishing sessions (docs/formulation.md)
    k = o.finish_first_kwh
    pen = o.unmet_energy_per_kwh * p.session_priority
    pen = pen * (1.0 + k / np.maximum(p.session_energy_kwh, 0.5)) / (1.0 + 2.0 * k)
    kw = p.session_kw_per_a[p.var_session]
    exp_price = np.zeros(T) if p.export_price is None else p.export_price
    peak = o.demand_charge_per_kw > 0
    G = p.G.tocsr()
    m = G.shape[0]
    n_extra = S + 2 * T + peak
    blocks = [
        sp.hstack([G, sp.csr_matrix((m, n_extra))]),
        sp.hstack(
            [
                sp.csr_matrix((p.var_kwh_per_a, (p.var_session, np.arange(V))), shape=(S, V)),
                sp.identity(S),
                sp.csr_matrix((S, 2 * T + peak)),
            ]
        ),
        # imp − exp − Σ kW/A · r = base − PV
        sp.hstack(
            [
                sp.csr_matrix((-kw, (p.var_period, np.arange(V))), shape=(T, V)),
                sp.csr_matrix((T, S)),
                sp.identity(T),
                -sp.identity(T),
                sp.csr_matrix((T, peak)),
            ]
        ),
    ]
    net = p.base_load_kw - p.pv_kw
    row_lb = [np.full(m, -np.inf), p.session_energy_kwh, net]
    row_ub = [p.h, p.session_energy_kwh, net]
    if peak:  # imp_t − peak ≤ 0
        blocks.append(
            sp.hstack(
                [sp.csr_matrix((T, V + S)), sp.identity(T), sp.csr_matrix((T, T)), -np.ones((T, 1))]
            )
        )
        row_lb.append(np.full(T, -np.inf))
        row_ub.append(np.zeros(T))
    A = sp.vstack(blocks, format="csc")
    c = [c_r, pen, o.energy_cost * p.import_price * dt_h, -o.energy_cost * exp_price * dt_h]
    lb = [np.zeros(V), np.zeros(S), np.zeros(T), np.zeros(T)]
    ub = [
        p.var_ub,
        np.full(S, np.inf),
        np.full(T, np.inf),
        np.maximum(p.pv_kw - p.base_load_kw, 0.0),
    ]
    if peak:
        c.append([o.demand_charge_per_kw])
        lb.append([p.signals.peak_so_far_kw])
        ub.append([np.inf])
    per = np.arange(T)
    cols = {"r": np.arange(V), "u": np.arange(S), "imp": per, "exp": per}
    rows = {"safety": np.arange(m), "energy": np.arange(S), "balance": per}
    if peak:
        cols["peak"] = np.zeros(1, np.int64)
        rows["peak"] = per
    integrality = None
    # one meter: where export pays more than import and something can be exported, a binary
    # picks the direction (imp ≤ M·y, exp ≤ X·(1 − y)); elsewhere imp and exp never both pay
    exp_ub = ub[3]
    hi = np.flatnonzero((exp_price > p.import_price) & (exp_ub > 0)) if o.energy_cost > 0 else []
    if len(hi):
        k = len(hi)
        n0 = A.shape[1]
        big = np.maximum(net, 0.0) + np.bincount(p.var_period, kw * p.var_ub, minlength=T)
        i_imp, i_exp = V + S + hi, V + S + T + hi
        y = n0 + np.arange(k)
        ar = np.arange(k)
        meter = sp.csr_matrix(
            (
                np.concatenate([np.ones(k), -big[hi], np.ones(k), exp_ub[hi]]),
                (np.concatenate([ar, ar, k + ar, k + ar]), np.concatenate([i_imp, y, i_exp, y])),
            ),
            shape=(2 * k, n0 + k),
        )
        A = sp.vstack([sp.hstack([A, sp.csr_matrix((A.shape[0], k))]), meter], format="csc")
        row_lb.append(np.full(2 * k, -np.inf))
        row_ub.append(np.concatenate([np.zeros(k), exp_ub[hi]]))
        c.append(np.zeros(k))
        lb.append(np.zeros(k))
        ub.append(np.ones(k))
        cols["y"] = np.asarray(hi)
        rows["meter"] = np.concatenate([hi, hi])
        integrality = np.zeros(n0 + k, dtype=np.int32)
        integrality[y] = 1
    return LinearProgram(
        c=np.concatenate(c),
        col_lb=np.concatenate(lb),
        col_ub=np.concatenate(ub),
        A=A,
        row_lb=np.concatenate(row_lb),
        row_ub=np.concatenate(row_ub),
        offset=0.0,
        cols=blocks_of(cols),
        rows=blocks_of(rows),
        integrality=integrality,
    )
