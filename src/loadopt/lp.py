"""The linear programme built from a :class:`~loadopt.problem.Problem` (see docs/formulation.md).

Columns, in this order:

- ``r[v]`` — per-phase current (A) of every variable that can be non-zero after
  reduction;
- ``imp[t]``, ``exp[t]`` — grid import and export (kW), only when they carry a cost
  (energy cost, export revenue or a demand charge);
- ``peak`` — the import peak (kW), only with a demand charge;
- ``z`` — the smallest served fraction, only with a fairness weight.

Rows: the safety rows ``G r ≤ h`` that can bind, one energy row per session that could otherwise
be over-served, and the accounting rows of the optional columns.

Structure the LP does not need is removed before the solver sees it (all vectorised):
a safety row holding a single variable becomes that variable's bound; a row that cannot bind
(``G · ub ≤ h``) is dropped, and so is an energy row that cannot bind; rows with the same
coefficients (the R, S and T rows of a node whose vehicles all draw three phases, a feeder
with a single circuit) are merged into one with the smallest right-hand side; a variable whose
bound is zero is dropped. The energy slack is eliminated: minimising
``penalty · (E − delivered)`` is minimising ``−penalty · delivered`` plus a constant, with
``delivered ≤ E`` as the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .problem import Problem

#: Names of the ``LinearProgram.row_block`` codes.
ROW_BLOCKS = ("safety", "energy", "balance", "peak", "fairness")


@dataclass(frozen=True, eq=False)
class LinearProgram:
    """``min c·x + offset  s.t.  row_lb ≤ A x ≤ row_ub,  col_lb ≤ x ≤ col_ub`` (A in CSC)."""

    c: np.ndarray
    col_lb: np.ndarray
    col_ub: np.ndarray
    A: sp.csc_matrix
    row_lb: np.ndarray
    row_ub: np.ndarray
    offset: float
    var_of_col: np.ndarray  #: problem variable index of each of the first ``n_r`` columns
    n_r: int
    imp_cols: np.ndarray | None
    exp_cols: np.ndarray | None
    peak_col: int | None
    z_col: int | None
    #: Where each row comes from (for warm starts that map a basis across steps):
    #: ``row_block`` is one of ``ROW_BLOCKS`` and ``row_index`` the index in that block's space —
    #: the problem's safety row (``G``), the session (energy, fairness) or the period (balance,
    #: peak). ``None`` for programmes built elsewhere.
    row_block: np.ndarray | None = None
    row_index: np.ndarray | None = None

    @property
    def n_cols(self) -> int:
        return self.c.size

    @property
    def n_rows(self) -> int:
        return self.row_lb.size

    def currents(self, problem: Problem, x: np.ndarray) -> np.ndarray:
        """Per-variable currents (A) of the problem from a column vector of this LP."""
        if x.shape != (self.n_cols,):
            raise ValueError(f"solution has shape {x.shape}, the LP has {self.n_cols} columns")
        r = np.zeros(problem.n_vars)
        r[self.var_of_col] = x[: self.n_r]
        return r


def objective_coefficients(problem: Problem) -> tuple[np.ndarray, float]:
    """Cost per A of each problem variable, and the constant (unmet penalty of all energy).

    Per kWh delivered: ``−unmet · priority`` (energy delivered is energy not unmet) plus
    ``charge_early · hours from horizon start to the period's middle``. Energy cost sits on the
    import columns, not here.
    """
    o = problem.objective
    pen = o.unmet_energy_per_kwh * problem.session_priority
    t_mid_h = (problem.var_period + 0.5) * problem.step_h
    per_kwh = -pen[problem.var_session] + o.charge_early_per_kwh_h * t_mid_h
    offset = float(np.sum(pen * problem.session_energy_kwh))
    return per_kwh * problem.var_kwh_per_a, offset


def build_lp(problem: Problem) -> LinearProgram:
    """Build the reduced LP of ``problem`` as arrays (no Python loop over variables or rows)."""
    o = problem.objective
    T = problem.n_periods
    G, h = problem.G, problem.h
    ub = problem.var_ub.copy()

    # singleton safety rows are bounds
    nnz = np.diff(G.indptr)
    single = np.flatnonzero(nnz == 1)
    if single.size:
        idx = G.indptr[single]
        col, coef = G.indices[idx], G.data[idx]
        np.minimum.at(ub, col, h[single] / coef)
    # a row that binds at ub only... keep rows that can bind
    keep_row = np.flatnonzero((nnz > 1) & ((G @ ub) > h * (1 + 1e-12)))
    G_red = G[keep_row]
    h_red = h[keep_row]

    # energy rows: Σ kWh/A · r ≤ E, only where the bound alone allows more than wanted
    S = problem.n_sessions
    kwh_ub = np.bincount(problem.var_session, problem.var_kwh_per_a * ub, minlength=S)
    e_keep = kwh_ub > problem.session_energy_kwh * (1 + 1e-12)
    # sessions that want nothing: their variables are fixed at 0
    ub[problem.session_energy_kwh[problem.var_session] <= 0] = 0.0

    cols = np.flatnonzero(ub > 0)
    n_r = cols.size
    c_all, offset = objective_coefficients(problem)
    G_red = G_red[:, cols]
    nz_rows = np.diff(G_red.indptr) > 0
    g_rows = keep_row[nz_rows]
    G_red, h_red, kept = _dedupe_rows(G_red[nz_rows], h_red[nz_rows])
    g_rows = g_rows[kept]

    e_sess = np.flatnonzero(e_keep)
    sess_row = np.full(S, -1)
    sess_row[e_sess] = np.arange(e_sess.size)
    vs = problem.var_session[cols]
    in_e = sess_row[vs] >= 0
    E_rows = sp.csr_matrix(
        (problem.var_kwh_per_a[cols][in_e], (sess_row[vs][in_e], np.flatnonzero(in_e))),
        shape=(e_sess.size, n_r),
    )

    blocks_A = [G_red, E_rows]
    row_block = [np.zeros(g_rows.size, np.int8), np.ones(e_sess.size, np.int8)]
    row_index = [g_rows, e_sess]
    lbs = [np.full(h_red.size, -np.inf), np.full(e_sess.size, -np.inf)]
    ubs = [h_red, problem.session_energy_kwh[e_sess]]
    c = [c_all[cols]]
    col_lb = [np.zeros(n_r)]
    col_ub = [ub[cols]]
    n = n_r

    price_matters = o.energy_cost > 0 and (
        np.any(problem.import_price != 0)
        or (problem.export_price is not None and np.any(problem.export_price != 0)))
    need_imp = price_matters or o.demand_charge_per_kw > 0
    imp_cols = exp_cols = None
    peak_col = z_col = None
    if need_imp:
        # imp − exp − Σ kW/A · r = base − PV   (kW, per period)
        imp_cols = n + np.arange(T)
        exp_cols = n + T + np.arange(T)
        n += 2 * T
        vt = problem.var_period[cols]
        kw = problem.session_kw_per_a[vs]
        bal = sp.hstack([
            sp.csr_matrix((-kw, (vt, np.arange(n_r))), shape=(T, n_r)),
            sp.identity(T, format="csr"), -sp.identity(T, format="csr"),
        ], format="csr")
        blocks_A = [sp.hstack([b, sp.csr_matrix((b.shape[0], 2 * T))], format="csr")
                    for b in blocks_A]
        blocks_A.append(bal)
        row_block.append(np.full(T, 2, np.int8))
        row_index.append(np.arange(T))
        net = problem.base_load_kw - problem.pv_kw
        lbs.append(net)
        ubs.append(net)
        dt = problem.step_h
        c.append(o.energy_cost * problem.import_price * dt)
        exp_price = (np.zeros(T) if problem.export_price is None else problem.export_price)
        c.append(-o.energy_cost * exp_price * dt)
        col_lb += [np.zeros(T), np.zeros(T)]
        col_ub += [np.full(T, np.inf), np.maximum(problem.pv_kw - problem.base_load_kw, 0.0)]
        if o.demand_charge_per_kw > 0:
            peak_col = n
            n += 1
            blocks_A = [sp.hstack([b, sp.csr_matrix((b.shape[0], 1))], format="csr")
                        for b in blocks_A]
            pk = sp.hstack([sp.csr_matrix((T, n_r)), sp.identity(T, format="csr"),
                            sp.csr_matrix((T, T)), sp.csr_matrix(-np.ones((T, 1)))],
                           format="csr")
            blocks_A.append(pk)
            row_block.append(np.full(T, 3, np.int8))
            row_index.append(np.arange(T))
            lbs.append(np.full(T, -np.inf))
            ubs.append(np.zeros(T))
            c.append(np.array([o.demand_charge_per_kw]))
            col_lb.append(np.array([problem.signals.peak_so_far_kw]))
            col_ub.append(np.array([np.inf]))
    if o.fairness > 0:
        # z · E_i − delivered_i ≤ 0 for every session that wants energy and can draw
        z_col = n
        n += 1
        want = np.flatnonzero((problem.session_energy_kwh > 0)
                              & (np.bincount(vs, minlength=S) > 0))
        row_of = np.full(S, -1)
        row_of[want] = np.arange(want.size)
        m = row_of[vs] >= 0
        Fr = sp.csr_matrix((-problem.var_kwh_per_a[cols][m], (row_of[vs][m], np.flatnonzero(m))),
                           shape=(want.size, n_r))
        width = n - 1 - n_r
        Fz = sp.csr_matrix(problem.session_energy_kwh[want][:, None])
        blocks_A = [sp.hstack([b, sp.csr_matrix((b.shape[0], 1))], format="csr")
                    for b in blocks_A]
        blocks_A.append(sp.hstack([Fr, sp.csr_matrix((want.size, width)), Fz], format="csr"))
        lbs.append(np.full(want.size, -np.inf))
        ubs.append(np.zeros(want.size))
        row_block.append(np.full(want.size, 4, np.int8))
        row_index.append(want)
        c.append(np.array([-o.fairness]))
        col_lb.append(np.zeros(1))
        col_ub.append(np.ones(1))

    A = sp.vstack(blocks_A, format="csc") if blocks_A else sp.csc_matrix((0, n))
    A.sort_indices()
    return LinearProgram(
        c=np.concatenate(c), col_lb=np.concatenate(col_lb), col_ub=np.concatenate(col_ub),
        A=A, row_lb=np.concatenate(lbs), row_ub=np.concatenate(ubs), offset=offset,
        var_of_col=cols, n_r=n_r, imp_cols=imp_cols, exp_cols=exp_cols, peak_col=peak_col,
        z_col=z_col, row_block=np.concatenate(row_block),
        row_index=np.concatenate(row_index).astype(np.int64),
    )


def _dedupe_rows(G: sp.csr_matrix, h: np.ndarray
                 ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Merge rows of ``G r ≤ h`` that have identical coefficients, keeping the smallest ``h``.

    Returns the merged rows, their right-hand sides and the indices of the rows kept.

    Rows are grouped by a random projection of their coefficients (identical rows give bitwise
    identical sums), then each row is compared exactly with its group's representative; a row
    that only collided in the hash stays apart.
    """
    if G.shape[0] < 2:
        return G, h, np.arange(G.shape[0])
    rng = np.random.default_rng(12345)
    G = G.tocsr()
    key = G @ rng.random(G.shape[1])
    order = np.argsort(key, kind="stable")
    new_group = np.ones(order.size, dtype=bool)
    new_group[1:] = np.diff(key[order]) != 0
    head = order[np.flatnonzero(new_group)]  # a representative row of each group
    rep = np.empty(order.size, dtype=np.int64)
    rep[order] = head[np.cumsum(new_group) - 1]
    diff = G - G[rep]
    same = np.diff(diff.tocsr().indptr) == 0
    same |= np.asarray(abs(diff).max(axis=1).todense()).ravel() == 0
    rep = np.where(same, rep, np.arange(G.shape[0]))
    h_min = np.full(G.shape[0], np.inf)
    np.minimum.at(h_min, rep, h)
    keep = np.flatnonzero(rep == np.arange(G.shape[0]))
    return G[keep], h_min[keep], keep
