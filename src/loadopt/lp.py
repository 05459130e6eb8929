"""The linear programme built from a :class:`~loadopt.problem.Problem` (see docs/formulation.md).

Columns, in this order (each a named block of :attr:`LinearProgram.cols`: ``"r"``, ``"u"``,
``"imp"``, ``"exp"``, ``"peak"``, ``"z"``):

- ``r[v]`` — per-phase current (A) of every variable that can be non-zero after
  reduction;
- ``u[i]`` — unmet energy (kWh) of every session that wants energy and can draw (default form);
- ``imp[t]``, ``exp[t]`` — grid import and export (kW), only when they carry a cost
  (energy cost, export revenue or a demand charge), and only in periods where PV can exceed the
  base load (elsewhere the import is substituted, see :func:`build_lp`);
- ``peak`` — the import peak (kW), only with a demand charge;
- ``z`` — the smallest served fraction, only with a fairness weight.

Rows: the safety rows ``G r ≤ h`` that can bind, one energy row per session
(``delivered + u = E``), and the accounting rows of the optional columns (named blocks
``"safety"``, ``"energy"``, ``"balance"``, ``"peak"``, ``"fairness"`` of
:attr:`LinearProgram.rows`). Whatever needs to know what a row or column is — the MILP, the warm
start — looks it up by name.

Structure the LP does not need is removed before the solver sees it (all vectorised):
a safety row holding a single variable becomes that variable's bound; a row that cannot bind
(``G · ub ≤ h``) is dropped; rows with the same coefficients (the R, S and T rows of a node whose
vehicles all draw three phases, a feeder with a single circuit) are merged into one with the
smallest right-hand side; a variable whose bound is zero is dropped. With
``build_lp(unmet_slack=False)`` the slack ``u`` is eliminated instead (minimising
``penalty · (E − delivered)`` is minimising ``−penalty · delivered`` plus a constant, with
``delivered ≤ E`` as the row, dropped where it cannot bind): same optimum, the form the MILP
builds on, but measured slower for the LP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .errors import InputError
from .problem import Problem


@dataclass(frozen=True, eq=False)
class Block:
    """A named, contiguous range ``[start, stop)`` of a programme's columns or rows, and what
    each of its entries stands for: ``index[k]`` is entry ``start + k``'s key in the block's
    own space (a problem variable, a session, a period, a row of ``G`` …; see
    :class:`LinearProgram`)."""

    start: int
    stop: int
    index: np.ndarray

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def positions(self) -> np.ndarray:
        """The column (or row) numbers of the block."""
        return np.arange(self.start, self.stop)


def blocks_of(sizes: dict[str, np.ndarray], start: int = 0) -> dict[str, Block]:
    """Consecutive blocks from ``name -> index array`` (in order), the first at ``start``."""
    out = {}
    for name, idx in sizes.items():
        idx = np.asarray(idx, dtype=np.int64)
        out[name] = Block(start, start + idx.size, idx)
        start += idx.size
    return out


@dataclass(frozen=True, eq=False)
class LinearProgram:
    """``min c·x + offset  s.t.  row_lb ≤ A x ≤ row_ub,  col_lb ≤ x ≤ col_ub`` (A in CSC), with
    a registry of named column and row blocks (linopy-style: name → range + key array), so that
    what a column or row stands for is looked up by name, never by position.

    Column blocks of :func:`build_lp` (absent when not built): ``"r"`` currents (key: problem
    variable), ``"u"`` unmet energy (session), ``"imp"`` / ``"exp"`` grid import / export
    (period), ``"peak"`` (0), ``"z"`` the smallest served fraction (0). Row blocks:
    ``"safety"`` (row of the problem's ``G``), ``"energy"`` (session), ``"balance"`` (period),
    ``"peak"`` (period), ``"fairness"`` (session). The MILP adds its own
    (:mod:`loadopt.milp.model`).
    """

    c: np.ndarray
    col_lb: np.ndarray
    col_ub: np.ndarray
    A: sp.csc_matrix
    row_lb: np.ndarray
    row_ub: np.ndarray
    offset: float
    cols: dict[str, Block]
    rows: dict[str, Block]

    @property
    def n_cols(self) -> int:
        return self.c.size

    @property
    def n_rows(self) -> int:
        return self.row_lb.size

    @property
    def var_of_col(self) -> np.ndarray:
        """Problem variable of each current column (the ``"r"`` block's keys)."""
        return self.cols["r"].index

    def col_positions(self, name: str) -> np.ndarray | None:
        """Column numbers of block ``name``, or None when the programme has no such block."""
        b = self.cols.get(name)
        return None if b is None else b.positions

    def row_positions(self, name: str) -> np.ndarray | None:
        """Row numbers of block ``name``, or None when the programme has no such block."""
        b = self.rows.get(name)
        return None if b is None else b.positions

    def currents(self, problem: Problem, x: np.ndarray) -> np.ndarray:
        """Per-variable currents (A) of the problem from a column vector of this LP."""
        if x.shape != (self.n_cols,):
            raise InputError(f"solution has shape {x.shape}, the LP has {self.n_cols} columns")
        r = np.zeros(problem.n_vars)
        b = self.cols["r"]
        r[b.index] = x[b.slice]
        return r


def objective_coefficients(problem: Problem) -> tuple[np.ndarray, float]:
    """Cost per A of each problem variable, and the constant (unmet penalty of all energy).

    Per kWh delivered: ``−unmet · priority`` (energy delivered is energy not unmet) plus
    ``charge_early · hours from horizon start to the period's middle · H / D``, where ``H`` is the
    horizon and ``D`` the time to the session's departure (at most ``H``): delay costs more for a
    vehicle that leaves sooner, so among equals the one leaving first is served first. Energy
    cost sits on the import columns, not here.
    """
    o = problem.objective
    pen = o.unmet_energy_per_kwh * problem.session_priority
    hz = problem.horizon
    if hz.uniform:
        t_mid_h = (problem.var_period + 0.5) * problem.step_h
        span_h = problem.n_periods * problem.step_h
    else:
        b = hz.period_bounds_s() / 3600.0
        t_mid_h = 0.5 * (b[:-1] + b[1:])[problem.var_period]
        span_h = b[-1]
    urgency = span_h / problem.session_departure_h
    per_kwh = (-pen[problem.var_session]
               + o.charge_early_per_kwh_h * t_mid_h * urgency[problem.var_session])
    offset = float(np.sum(pen * problem.session_energy_kwh))
    return per_kwh * problem.var_kwh_per_a, offset


def build_lp(problem: Problem, unmet_slack: bool = True,
             eliminate_import: bool | None = None) -> LinearProgram:
    """Build the reduced LP of ``problem`` as arrays (no Python loop over variables or rows).

    ``unmet_slack``: keep the unmet energy as a priced column ``u`` per session that wants
    energy, with the energy row as an equality ``Σ kWh/A · r + u = E`` (the default), instead of
    eliminating it into the currents' costs (``False``: what the MILP builds on). Same optimum;
    with the slack HiGHS' dual simplex was up to 5× faster on congested sites
    (docs/benchmarks.md). The ``u`` columns come right after the current columns.

    ``eliminate_import`` (default: as ``unmet_slack``): in periods where the base load is at
    least the PV output, the import ``base − PV + Σ kW/A · r`` cannot be negative and nothing
    can be exported, so it is substituted instead of an import column and a balance row: its
    price goes onto the currents and its constant part into the offset (same optimum; measured
    up to 2× fewer dual simplex iterations across the benchmark family, docs/benchmarks.md).
    The ``"imp"``/``"exp"`` columns and ``"balance"`` rows then exist (keyed by period) only
    for the other periods; a ``"peak"`` row of a substituted period holds
    ``Σ kW/A · r − peak ≤ −(base − PV)``. The MILP builds without it.
    """
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
    # keep only the rows that can bind with every variable at its bound
    keep_row = np.flatnonzero((nnz > 1) & ((G @ ub) > h * (1 + 1e-12)))
    G_red = G[keep_row]
    h_red = h[keep_row]

    # sessions that want nothing: their variables are fixed at 0
    S = problem.n_sessions
    E = problem.session_energy_kwh
    ub[E[problem.var_session] <= 0] = 0.0
    cols = np.flatnonzero(ub > 0)
    n_r = cols.size
    G_red = G_red[:, cols]
    nz_rows = np.diff(G_red.indptr) > 0
    g_rows = keep_row[nz_rows]
    G_red, h_red, kept = _dedupe_rows(G_red[nz_rows], h_red[nz_rows])
    g_rows = g_rows[kept]

    vs = problem.var_session[cols]
    wants = (E > 0) & (np.bincount(vs, minlength=S) > 0)  # wants energy and can draw
    c_all, offset = objective_coefficients(problem)
    if unmet_slack:
        # delivered + u = E for each such session, the penalty on u instead of on the currents;
        # the penalty of a session that cannot draw at all stays a constant
        u_sess = np.flatnonzero(wants)
        pen = o.unmet_energy_per_kwh * problem.session_priority
        c_all = c_all + pen[problem.var_session] * problem.var_kwh_per_a
        offset = float(np.sum(np.where(wants, 0.0, pen * E)))
        e_sess = u_sess
    else:
        # delivered ≤ E, only where the bounds alone would allow more than wanted
        u_sess = np.zeros(0, np.int64)
        kwh_ub = np.bincount(vs, problem.var_kwh_per_a[cols] * ub[cols], minlength=S)
        e_sess = np.flatnonzero(wants & (kwh_ub > E * (1 + 1e-12)))
    sess_row = np.full(S, -1)
    sess_row[e_sess] = np.arange(e_sess.size)
    kwh = problem.var_kwh_per_a[cols]
    in_e = np.flatnonzero(sess_row[vs] >= 0)

    rows = _Rows()
    g = G_red.tocoo()
    rows.add(g.row, g.col, g.data, -np.inf, h_red, "safety", g_rows)
    E_rhs = problem.session_energy_kwh[e_sess]
    n = n_r + u_sess.size
    u_cols = n_r + np.arange(u_sess.size)
    if unmet_slack:
        rows.add(np.concatenate([sess_row[vs][in_e], np.arange(e_sess.size)]),
                 np.concatenate([in_e, u_cols]),
                 np.concatenate([kwh[in_e], np.ones(u_sess.size)]), E_rhs, E_rhs, "energy",
                 e_sess)
    else:
        rows.add(sess_row[vs][in_e], in_e, kwh[in_e], -np.inf, E_rhs, "energy", e_sess)
    c = [c_all[cols], (o.unmet_energy_per_kwh * problem.session_priority)[u_sess]]
    # §14a floors (feasible by construction: compile projected them through G)
    # (a problem extended by the MILP's phase-switching twins has more variables: no floors)
    floor = problem.var_floor_a
    r_lb = (np.minimum(floor[cols], ub[cols]) if floor is not None
            and floor.size == problem.n_vars else np.zeros(n_r))
    col_lb = [r_lb, np.zeros(u_sess.size)]
    col_ub = [ub[cols], problem.session_energy_kwh[u_sess]]

    price_matters = o.energy_cost > 0 and (
        np.any(problem.import_price != 0)
        or (problem.export_price is not None and np.any(problem.export_price != 0)))
    need_imp = price_matters or o.demand_charge_per_kw > 0
    imp_cols = exp_cols = None
    peak_col = z_col = None
    periods = np.arange(T)
    if eliminate_import is None:
        eliminate_import = unmet_slack
    if need_imp:
        vt = problem.var_period[cols]
        kw = problem.session_kw_per_a[vs]
        net = problem.base_load_kw - problem.pv_kw
        dt = problem.period_h
        imp_price = o.energy_cost * problem.import_price * dt
        # where the base load covers PV, import = net + EV kW is never negative and nothing can
        # be exported: substitute it (its cost onto the currents, the net part into the offset)
        # instead of a column and a balance row per period
        sub = (net >= 0) if eliminate_import else np.zeros(T, dtype=bool)
        in_sub = sub[vt]
        c[0] = c[0] + np.where(in_sub, imp_price[vt] * kw, 0.0)
        offset += float(np.sum(imp_price[sub] * net[sub]))
        periods = np.flatnonzero(~sub)
        k = periods.size
        # imp − exp − Σ kW/A · r = base − PV   (kW, per period kept)
        imp_cols, exp_cols = n + np.arange(k), n + k + np.arange(k)
        n += 2 * k
        pos = np.full(T, -1)
        pos[periods] = np.arange(k)
        on = np.flatnonzero(~in_sub)
        rows.add(np.concatenate([pos[vt[on]], np.arange(k), np.arange(k)]),
                 np.concatenate([on, imp_cols, exp_cols]),
                 np.concatenate([-kw[on], np.ones(k), -np.ones(k)]), net[periods],
                 net[periods], "balance", periods)
        c.append(imp_price[periods])
        exp_price = (np.zeros(T) if problem.export_price is None else problem.export_price)
        c.append(-o.energy_cost * exp_price[periods] * dt[periods])
        col_lb += [np.zeros(k), np.zeros(k)]
        col_ub += [np.full(k, np.inf),
                   np.maximum(problem.pv_kw - problem.base_load_kw, 0.0)[periods]]
        if o.demand_charge_per_kw > 0:
            # imp_t − peak ≤ 0, or with the import substituted Σ kW/A · r − peak ≤ −net_t
            peak_col = n
            n += 1
            ps = np.flatnonzero(sub)
            ps_pos = np.full(T, -1)
            ps_pos[ps] = np.arange(ps.size)
            on = np.flatnonzero(in_sub)
            rows.add(np.concatenate([np.arange(k), ps_pos[vt[on]] + k, np.arange(T)]),
                     np.concatenate([imp_cols, on, np.full(T, peak_col)]),
                     np.concatenate([np.ones(k), kw[on], -np.ones(T)]), -np.inf,
                     np.concatenate([np.zeros(k), -net[ps]]), "peak",
                     np.concatenate([periods, ps]))
            c.append(np.array([o.demand_charge_per_kw]))
            col_lb.append(np.array([problem.signals.peak_so_far_kw]))
            col_ub.append(np.array([np.inf]))
    if o.fairness > 0:
        # z · E_i − delivered_i ≤ 0 for every session that wants energy and can draw
        z_col = n
        n += 1
        want = np.flatnonzero(wants)
        row_of = np.full(S, -1)
        row_of[want] = np.arange(want.size)
        m = np.flatnonzero(row_of[vs] >= 0)
        rows.add(np.concatenate([row_of[vs][m], np.arange(want.size)]),
                 np.concatenate([m, np.full(want.size, z_col)]),
                 np.concatenate([-kwh[m], problem.session_energy_kwh[want]]),
                 -np.inf, np.zeros(want.size), "fairness", want)
        c.append(np.array([-o.fairness]))
        col_lb.append(np.zeros(1))
        col_ub.append(np.ones(1))

    # soft grid signals (docs/grid-signals.md): a setpoint on the net import and an export cap,
    # each priced per kWh of deviation (one row per period that has one)
    soft: dict[str, np.ndarray] = {}
    if ((problem.setpoint_kw is not None and np.isfinite(problem.setpoint_kw).any())
            or (problem.export_cap_kw is not None and np.isfinite(problem.export_cap_kw).any())):
        n, soft = _soft_grid_rows(problem, rows, c, col_lb, col_ub, n, cols)

    A, row_lb, row_ub, row_blocks = rows.build(n)
    col_keys: dict[str, np.ndarray] = {"r": cols}
    if unmet_slack:
        col_keys["u"] = u_sess
    if imp_cols is not None:
        col_keys["imp"] = col_keys["exp"] = periods
    if peak_col is not None:
        col_keys["peak"] = np.zeros(1, np.int64)
    if z_col is not None:
        col_keys["z"] = np.zeros(1, np.int64)
    col_keys.update(soft)
    return LinearProgram(
        c=np.concatenate(c), col_lb=np.concatenate(col_lb), col_ub=np.concatenate(col_ub),
        A=A, row_lb=row_lb, row_ub=row_ub, offset=offset, cols=blocks_of(col_keys),
        rows=row_blocks)


def _soft_grid_rows(problem: Problem, rows: _Rows, c: list, col_lb: list, col_ub: list, n: int,
                    cols: np.ndarray) -> tuple[int, dict[str, np.ndarray]]:
    """Rows and columns of the soft grid signals; returns the new column count and the column
    blocks (``"sp_up"``, ``"sp_down"``, ``"xc"``, keyed by period) in order. Row blocks
    ``"grid_setpoint"`` and ``"grid_export"`` (keyed by period).

    Net import ``m_t = Σ kW/A · r + B_t + R_t − PV_t`` (``R``: reserved EVSE draw). Setpoint
    ``s_t``: ``Σ kW/A · r − d⁺_t + d⁻_t = s_t − B_t − R_t + PV_t``, costing
    ``penalty · Δ · (d⁺ + d⁻)``. Export cap ``x_t`` (export = −m_t): ``−Σ kW/A · r − e_t ≤ x_t +
    B_t + R_t − PV_t``, costing ``penalty · Δ · e_t``; only where it can bind (PV − B − R > x).
    Both always feasible: they never compete with a safety row, only with the objective.
    """
    T = problem.n_periods
    dt = problem.period_h
    vs = problem.var_session[cols]
    vt = problem.var_period[cols]
    kw = problem.session_kw_per_a[vs]
    if problem.var_reserved is not None and problem.var_reserved.size == problem.n_vars:
        # reserved draw is counted in R, not per variable
        kw = np.where(problem.var_reserved[cols], 0.0, kw)
    res_kw = np.zeros(T)
    if problem.evse_reserved_a is not None and problem.evse_reserved_a.size:
        volt = problem.evse_voltage_v
        res_kw = (problem.evse_reserved_a.sum(axis=1) * volt[:, None] / 1000.0).sum(axis=0)
    fixed = problem.base_load_kw + res_kw - problem.pv_kw
    out: dict[str, np.ndarray] = {}
    sp = problem.setpoint_kw
    if sp is not None and np.isfinite(sp).any():
        per = np.flatnonzero(np.isfinite(sp))
        k = per.size
        row_of = np.full(T, -1)
        row_of[per] = np.arange(k)
        m = np.flatnonzero(row_of[vt] >= 0)
        up, down = n + np.arange(k), n + k + np.arange(k)
        n += 2 * k
        rhs = sp[per] - fixed[per]
        rows.add(np.concatenate([row_of[vt][m], np.arange(k), np.arange(k)]),
                 np.concatenate([m, up, down]),
                 np.concatenate([kw[m], -np.ones(k), np.ones(k)]), rhs, rhs, "grid_setpoint",
                 per)
        assert problem.setpoint_penalty is not None  # compiled with the setpoints
        pen = problem.setpoint_penalty[per] * dt[per]
        c += [pen, pen]
        col_lb += [np.zeros(k), np.zeros(k)]
        col_ub += [np.full(k, np.inf), np.full(k, np.inf)]
        out.update(sp_up=per, sp_down=per)
    xc = problem.export_cap_kw
    if xc is not None:
        per = np.flatnonzero(np.isfinite(xc) & (-fixed > xc))
        if per.size:
            k = per.size
            row_of = np.full(T, -1)
            row_of[per] = np.arange(k)
            m = np.flatnonzero(row_of[vt] >= 0)
            e = n + np.arange(k)
            n += k
            rows.add(np.concatenate([row_of[vt][m], np.arange(k)]), np.concatenate([m, e]),
                     np.concatenate([-kw[m], -np.ones(k)]), -np.inf, xc[per] + fixed[per],
                     "grid_export", per)
            assert problem.export_penalty is not None  # compiled with the caps
            c.append(problem.export_penalty[per] * dt[per])
            col_lb.append(np.zeros(k))
            col_ub.append(np.full(k, np.inf))
            out.update(xc=per)
    return n, out


class _Rows:
    """Named blocks of rows as COO triplets (block-local row numbers, global columns), then one
    CSC matrix and the row-block registry."""

    def __init__(self) -> None:
        self.m = 0
        self.trip: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.index: dict[str, np.ndarray] = {}

    def add(self, r, c, v, lb, ub, name: str, index: np.ndarray) -> None:
        k = np.asarray(index).size
        self.trip.append((np.asarray(r, np.int64) + self.m, np.asarray(c, np.int64),
                          np.asarray(v, np.float64)))
        self.lb.append(np.broadcast_to(np.asarray(lb, np.float64), (k,)))
        self.ub.append(np.broadcast_to(np.asarray(ub, np.float64), (k,)))
        self.index[name] = np.asarray(index, np.int64)
        self.m += k

    def build(self, n_cols: int) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray,
                                           dict[str, Block]]:
        r, c, v = (np.concatenate(x) for x in zip(*self.trip, strict=True))
        A = sp.csc_matrix((v, (r, c)), shape=(self.m, n_cols))
        A.sort_indices()
        return A, np.concatenate(self.lb), np.concatenate(self.ub), blocks_of(self.index)


def _dedupe_rows(G: sp.csr_matrix, h: np.ndarray
                 ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Merge rows of ``G r ≤ h`` that have identical coefficients, keeping the smallest ``h``.

    Returns the merged rows, their right-hand sides and the indices of the rows kept.
    """
    if G.shape[0] < 2:
        return G, h, np.arange(G.shape[0])
    G = G.tocsr()
    rep = duplicate_rows(G)
    h_min = np.full(G.shape[0], np.inf)
    np.minimum.at(h_min, rep, h)
    keep = np.flatnonzero(rep == np.arange(G.shape[0]))
    return G[keep], h_min[keep], keep


def duplicate_rows(G: sp.csr_matrix) -> np.ndarray:
    """For each row of ``G``, the lowest-index row with exactly the same coefficients (itself if
    none).

    Rows are grouped by a random projection of their coefficients (identical rows give bitwise
    identical sums), then each row is compared exactly with its group's representative; a row
    that only collided in the hash stays apart. Used by the LP and by the fast path.
    """
    m = G.shape[0]
    if m < 2:
        return np.arange(m)
    key = G @ np.random.default_rng(12345).random(G.shape[1])
    order = np.argsort(key, kind="stable")  # the lowest row index of a group comes first
    new_group = np.ones(m, dtype=bool)
    new_group[1:] = np.diff(key[order]) != 0
    head = order[np.flatnonzero(new_group)]
    rep = np.empty(m, dtype=np.int64)
    rep[order] = head[np.cumsum(new_group) - 1]
    dup = np.flatnonzero(rep != np.arange(m))  # compare only rows with a twin
    diff = (G[dup] - G[rep[dup]]).tocsr()
    differs = np.diff(diff.indptr) > 0
    if differs.any():  # explicit zeros left by the subtraction do not make rows differ
        differs &= np.asarray(abs(diff).max(axis=1).todense()).ravel() > 0
    rep[dup[differs]] = dup[differs]
    return rep
