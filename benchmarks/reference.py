"""Reference models the benchmarks compare loadopt against, built from the same instance.

``straightforward_lp`` is the model a competent engineer would write first from the formulation
of docs/formulation.md, with no structural reductions: one column per plugged-in (session,
period), an unmet-energy slack per session, every safety row, an energy balance row per
session, import columns carrying the price. Solved by highspy with default options, it is the
"raw HiGHS" line.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from loadopt.lp import LinearProgram, blocks_of, objective_coefficients
from loadopt.problem import Problem


def straightforward_lp(p: Problem) -> LinearProgram:
    V, S, T = p.n_vars, p.n_sessions, p.n_periods
    o = p.objective
    c_r, _ = objective_coefficients(p)
    # undo the slack elimination: r pays only the charge-early term, u pays the penalty
    c_r = c_r + o.unmet_energy_per_kwh * p.session_priority[p.var_session] * p.var_kwh_per_a
    pen = o.unmet_energy_per_kwh * p.session_priority
    kw = p.session_kw_per_a[p.var_session]
    G = p.G.tocsr()
    m = G.shape[0]
    # [r | u | imp]
    A_safety = sp.hstack([G, sp.csr_matrix((m, S + T))])
    A_energy = sp.hstack([sp.csr_matrix((p.var_kwh_per_a, (p.var_session, np.arange(V))),
                                        shape=(S, V)), sp.identity(S), sp.csr_matrix((S, T))])
    A_bal = sp.hstack([sp.csr_matrix((-kw, (p.var_period, np.arange(V))), shape=(T, V)),
                       sp.csr_matrix((T, S)), sp.identity(T)])
    A = sp.vstack([A_safety, A_energy, A_bal], format="csc")
    net = p.base_load_kw - p.pv_kw
    return LinearProgram(
        c=np.concatenate([c_r, pen, o.energy_cost * p.import_price * p.step_h]),
        col_lb=np.concatenate([np.zeros(V), np.zeros(S), np.zeros(T)]),
        col_ub=np.concatenate([p.var_ub, np.full(S, np.inf), np.full(T, np.inf)]),
        A=A,
        row_lb=np.concatenate([np.full(m, -np.inf), p.session_energy_kwh, net]),
        row_ub=np.concatenate([p.h, p.session_energy_kwh, np.full(T, np.inf)]),
        offset=0.0,
        cols=blocks_of({"r": np.arange(V), "u": np.arange(S), "imp": np.arange(T)}),
        rows=blocks_of({"safety": np.arange(m), "energy": np.arange(S),
                        "balance": np.arange(T)}),
    )
