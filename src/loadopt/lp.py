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
- ``z`` — the smallest served fraction, only with a fairness weight;
- ``y`` — binary meter direction, only in periods where export pays more than import and
  something can be exported (with or without storage: otherwise the LP would import and export
  at once for fake revenue); see docs/formulation.md, "Storage";
- with batteries and V2G sessions (``problem.storage``): ``"bc"`` battery charge and ``"d"``
  discharge (A), ``"e"`` energy states (kWh, unit × period), ``"w"`` V2G target slacks (kWh),
  and binaries only where they are needed — ``"zx"`` (charge/discharge exclusivity, where doing
  both could pay: :func:`exclusive_periods`); see docs/formulation.md, "Storage".

Rows: the safety rows ``G r ≤ h`` that can bind, one energy row per session
(``delivered + u = E``), and the accounting rows of the optional columns (named blocks
``"safety"``, ``"energy"``, ``"balance"``, ``"peak"``, ``"fairness"`` of
:attr:`LinearProgram.rows`). Whatever needs to know what a row or column is — the MILP, the warm
start — looks it up by name.

Structure the LP does not need is removed before the solver sees it (no Python loop over
variables or rows): a safety row holding a single variable becomes that variable's bound; a row
that cannot bind (``G · ub ≤ h``) is dropped; rows with the same coefficients (the R, S and T
rows of a node whose vehicles all draw three phases, a feeder with a single circuit) are merged
into one with the smallest right-hand side; a variable whose bound is zero is dropped. The scan
of the safety rows and the search for identical rows run as compiled loops once a process
builds LPs often (:class:`~loadopt._csr.LazyKernel`; their numpy forms before, with the same
result, except that the compiled search also merges twins that the numpy form's hash grouping
leaves apart after a collision).
A problem in which nobody can draw gets its empty LP without any of this. With
``build_lp(unmet_slack=False)`` the slack ``u`` is eliminated instead (minimising
``penalty · (E − delivered)`` is minimising ``−penalty · delivered`` plus a constant, with
``delivered ≤ E`` as the row, dropped where it cannot bind): same optimum, the form the MILP
builds on, but measured slower for the LP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._csr import LazyKernel, csc_from_coo, csr, entry_rows, take_map, take_rows
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
    #: 1 where a column is integer (the storage binaries); None = a pure LP.
    integrality: np.ndarray | None = None

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

    def currents(self, problem: Problem, x: np.ndarray) -> np.ndarray:
        """Per-variable currents (A) of the problem from a column vector of this LP."""
        if x.shape != (self.n_cols,):
            raise InputError(f"solution has shape {x.shape}, the LP has {self.n_cols} columns")
        r = np.zeros(problem.n_vars)
        b = self.cols["r"]
        r[b.index] = x[b.slice]
        return r

    def flows(self, problem: Problem, x: np.ndarray) -> Flows:
        """Charge currents, V2G discharge and battery flows (A) from a column vector."""
        r = self.currents(problem, x)
        st = problem.storage
        S, T = problem.n_sessions, problem.n_periods
        if st is None or "d" not in self.cols:
            return Flows(problem.dense(r), None, None, None)
        B = st.n_batteries
        n_sd = st.dv_ub.size - st.bc_ub.size
        d = x[self.cols["d"].slice]
        dis = np.zeros((S, T))
        dis[st.unit_session[st.dv_unit[:n_sd]], st.dv_period[:n_sd]] = d[:n_sd]
        b_c = np.zeros((B, T))
        b_c[st.bc_battery, st.bc_period] = x[self.cols["bc"].slice]
        b_d = np.zeros((B, T))
        b_d[st.bc_battery, st.bc_period] = d[n_sd:]
        return Flows(problem.dense(r), dis, b_c, b_d)


@dataclass(frozen=True)
class Flows:
    """What a solver decided, before :mod:`loadopt.safety` (A per phase): ``current`` (S, T)
    charge, ``discharge`` (S, T), ``battery_charge_a`` / ``battery_discharge_a`` (B, T)."""

    current: np.ndarray
    discharge: np.ndarray | None
    battery_charge_a: np.ndarray | None
    battery_discharge_a: np.ndarray | None


def unmet_penalty(problem: Problem) -> np.ndarray:
    """``(S,)`` cost per kWh a session wanted and did not get: ``unmet_energy_per_kwh ·
    priority · w(E)``, ``E`` the energy it still wants (kWh) and, with ``k =
    finish_first_kwh``, ``w(E) = (1 + k / max(E, 0.5)) / (1 + k / 0.5)``.

    ``w`` (:attr:`~loadopt.objective.Objective.finish_first_kwh`) makes a kWh that completes a
    session worth a little more than one that does not: when the limits force a choice, the
    plan finishes cars instead of leaving many slightly short — the LP relaxation of the
    number of sessions served (``Σ delivered / E``), added to the energy term, not in place of
    it (docs/formulation.md). ``w ≤ 1`` (1 for a session within 0.5 kWh of full, down to
    ``1 / (1 + 2k)`` for a large one), so the penalty never rises above ``unmet_energy_per_kwh``
    and never outbids a grid signal's penalty priced at it.
    """
    o = problem.objective
    pen = o.unmet_energy_per_kwh * problem.session_priority
    k = o.finish_first_kwh
    if k > 0:
        pen = pen * (1.0 + k / np.maximum(problem.session_energy_kwh, 0.5)) / (1.0 + k / 0.5)
    return pen


def objective_coefficients(
    problem: Problem, pen: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Cost per A of each problem variable, and the constant (unmet penalty of all energy).

    Per kWh delivered: ``−unmet · priority`` (energy delivered is energy not unmet) plus
    ``charge_early · hours from horizon start to the period's middle · H / D``, where ``H`` is the
    horizon and ``D`` the time to the session's departure (at most ``H``): delay costs more for a
    vehicle that leaves sooner, so among equals the one leaving first is served first. Energy
    cost sits on the import columns, not here. ``pen``: :func:`unmet_penalty` of the problem
    when the caller has it already.
    """
    o = problem.objective
    pen = unmet_penalty(problem) if pen is None else pen
    hz = problem.horizon
    if hz.uniform:
        t_mid_h = (problem.var_period + 0.5) * problem.step_h
        span_h = problem.n_periods * problem.step_h
    else:
        b = hz.period_bounds_s() / 3600.0
        t_mid_h = 0.5 * (b[:-1] + b[1:])[problem.var_period]
        span_h = b[-1]
    urgency = span_h / problem.session_departure_h
    per_kwh = (
        -pen[problem.var_session]
        + o.charge_early_per_kwh_h * t_mid_h * urgency[problem.var_session]
    )
    offset = float(np.sum(pen * problem.session_energy_kwh))
    return per_kwh * problem.var_kwh_per_a, offset


def build_lp(
    problem: Problem, unmet_slack: bool = True, eliminate_import: bool | None = None
) -> LinearProgram:
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
    V = problem.n_vars
    st = problem.storage
    need_imp = _needs_import(problem)
    if st is None and not (problem.var_ub > 0).any() and not _has_extra_columns(problem, need_imp):
        # nobody can draw (no session plugged in, or none with room): no column, no row
        return _without_columns(problem, unmet_slack)
    # with storage the safety rows also hold battery charging (≥ 0) and discharge credit (≤ 0)
    K = G if st is None else sp.hstack([G, st.Gb, -st.Cd]).tocsr()
    ub_all = (
        problem.var_ub.copy()
        if st is None
        else np.concatenate([problem.var_ub, st.bc_ub, st.dv_ub])
    )

    keep_row = _scan_rows(K, h, ub_all, positive_only=st is not None)
    ub = ub_all[:V]

    # sessions that want nothing: their variables are fixed at 0 (V2G sessions may still
    # charge to give back later)
    S = problem.n_sessions
    E = problem.session_energy_kwh
    bidir = np.zeros(S, dtype=bool) if st is None else st.session_unit >= 0
    sated = E[problem.var_session] <= 0
    ub[sated if st is None else sated & ~bidir[problem.var_session]] = 0.0
    cols = np.flatnonzero(ub > 0)
    n_r = cols.size
    n_st = 0 if st is None else st.bc_ub.size + st.dv_ub.size
    # the rows kept, on the columns kept (the currents that can be non-zero, every storage
    # column), without the rows left empty, duplicates merged: as arrays (scipy's fancy
    # indexing costs more than the work at a controller step's sizes)
    if keep_row.size:
        new_col = np.full(V + n_st, -1, dtype=np.int64)
        new_col[cols] = np.arange(n_r)
        new_col[V:] = n_r + np.arange(n_st)
        rp, rc, rd, nz_rows = take_map(K.indptr, K.indices, K.data, keep_row, new_col)
        g_rows = keep_row[nz_rows]
        rp, rc, rd, h_red, kept = _dedupe_row_arrays(rp, rc, rd, h[g_rows], n_r + n_st)
        g_rows = g_rows[kept]
    else:  # no safety row can bind (an uncongested step)
        rp, rc, rd = np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0)
        h_red, g_rows = np.zeros(0), keep_row

    vs = problem.var_session[cols]
    # wants energy and can draw (V2G sessions: a target row on the energy state instead)
    wants = (E > 0) & (np.bincount(vs, minlength=S) > 0)
    if st is not None:
        wants &= ~bidir
    pen_all = unmet_penalty(problem)
    c_all, offset = objective_coefficients(problem, pen_all)
    if unmet_slack:
        # delivered + u = E for each such session, the penalty on u instead of on the currents;
        # the penalty of a session that cannot draw at all stays a constant
        u_sess = np.flatnonzero(wants)
        pen = pen_all
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

    if st is not None:  # V2G: no reward per kWh charged, the target slack carries the penalty
        bv = bidir[problem.var_session]
        c_all = c_all.copy()
        if not unmet_slack:
            c_all[bv] += (pen_all[problem.var_session] * problem.var_kwh_per_a)[bv]
        offset -= float(np.sum(pen_all[bidir] * E[bidir]))

    # §14a floors (feasible by construction: compile projected them through G)
    # (a problem extended by the MILP's phase-switching twins has more variables: no floors)
    floor = problem.var_floor_a
    r_lb = (
        np.minimum(floor[cols], ub[cols])
        if floor is not None and floor.size == problem.n_vars
        else np.zeros(n_r)
    )
    if (
        st is None
        and unmet_slack
        and not g_rows.size
        and not need_imp
        and o.fairness <= 0
        and in_e.size == n_r
        and not _soft_signals(problem)
    ):
        # an uncongested step: the currents and unmet slacks, the energy rows only
        lp = _energy_rows_lp(
            problem, cols, ub, r_lb, c_all, pen_all, u_sess, sess_row, offset, g_rows
        )
        if lp is not None:
            return lp
    rows = _Rows()
    n0 = n_r + u_sess.size  # storage columns start here
    g_col = rc if n_st == 0 else np.where(rc < n_r, rc, rc - n_r + n0)
    rows.add(entry_rows(rp) if rd.size else rc, g_col, rd, -np.inf, h_red, "safety", g_rows)
    E_rhs = problem.session_energy_kwh[e_sess]
    n = n_r + u_sess.size
    u_cols = n_r + np.arange(u_sess.size)
    if unmet_slack:
        rows.add(
            np.concatenate([sess_row[vs][in_e], np.arange(e_sess.size)]),
            np.concatenate([in_e, u_cols]),
            np.concatenate([kwh[in_e], np.ones(u_sess.size)]),
            E_rhs,
            E_rhs,
            "energy",
            e_sess,
        )
    else:
        rows.add(sess_row[vs][in_e], in_e, kwh[in_e], -np.inf, E_rhs, "energy", e_sess)
    c = [c_all[cols], pen_all[u_sess]]
    col_lb = [r_lb, np.zeros(u_sess.size)]
    col_ub = [ub[cols], problem.session_energy_kwh[u_sess]]
    col_keys: dict[str, np.ndarray] = {"r": cols}
    if unmet_slack:
        col_keys["u"] = u_sess
    integer: list[np.ndarray] = []
    if st is not None:
        n = _storage_blocks(
            problem,
            rows,
            c,
            col_lb,
            col_ub,
            n,
            cols,
            ub_all[V : V + st.bc_ub.size],
            ub_all[V + st.bc_ub.size :],
            pen_all,
            col_keys,
            integer,
        )

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
        # instead of a column and a balance row per period (not with storage: discharge can
        # make the import negative anywhere)
        sub = (net >= 0) if eliminate_import and st is None else np.zeros(T, dtype=bool)
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
        b_r, b_c, b_v = [pos[vt[on]]], [on], [-kw[on]]
        exp_ub = np.maximum(problem.pv_kw - problem.base_load_kw, 0.0)
        exp_price = np.zeros(T) if problem.export_price is None else problem.export_price
        if st is not None:  # every period kept (pos is the identity)
            # + battery charging, − discharge (kW); export can grow by every discharge
            Us = st.n_units - st.n_batteries
            kw_d = st.unit_kw_per_a[st.dv_unit]
            b_r += [st.bc_period, st.dv_period]
            b_c += [col_keys_pos(col_keys, "bc"), col_keys_pos(col_keys, "d")]
            b_v += [-st.unit_kw_per_a[Us + st.bc_battery], kw_d]
            exp_ub = exp_ub + np.bincount(st.dv_period, kw_d * st.dv_ub, minlength=T)
        rows.add(
            np.concatenate([*b_r, np.arange(k), np.arange(k)]),
            np.concatenate([*b_c, imp_cols, exp_cols]),
            np.concatenate([*b_v, np.ones(k), -np.ones(k)]),
            net[periods],
            net[periods],
            "balance",
            periods,
        )
        c.append(imp_price[periods])
        c.append(-o.energy_cost * exp_price[periods] * dt[periods])
        col_lb += [np.zeros(k), np.zeros(k)]
        col_ub += [np.full(k, np.inf), exp_ub[periods]]
        col_keys["imp"] = col_keys["exp"] = periods
        if o.energy_cost > 0:
            # imp and exp are one meter: where export pays more than import the LP would run
            # both up at once (a non-convex bill: EVs "charged from the grid" while all the PV
            # is sold), so a binary picks the direction there — with storage or without
            hi = np.flatnonzero((exp_price > problem.import_price) & (exp_ub > 0))
            if hi.size:
                imp_ub = np.maximum(net, 0.0) + np.bincount(vt, kw * ub[cols], minlength=T)
                if st is not None:
                    imp_ub += np.bincount(
                        st.bc_period, st.unit_kw_per_a[Us + st.bc_battery] * st.bc_ub, minlength=T
                    )
                kh = hi.size
                y = n + np.arange(kh)
                n += kh
                ar = np.arange(kh)
                rows.add(
                    np.concatenate([ar, ar, kh + ar, kh + ar]),
                    # imp/exp columns exist only for the periods kept (pos: period -> column)
                    np.concatenate([imp_cols[pos[hi]], y, exp_cols[pos[hi]], y]),
                    np.concatenate([np.ones(kh), -imp_ub[hi], np.ones(kh), exp_ub[hi]]),
                    -np.inf,
                    np.concatenate([np.zeros(kh), exp_ub[hi]]),
                    "meter_direction",
                    np.concatenate([hi, hi]),
                )
                c.append(np.zeros(kh))
                col_lb.append(np.zeros(kh))
                col_ub.append(np.ones(kh))
                col_keys["y"] = hi
                integer.append(y)
        if o.demand_charge_per_kw > 0:
            # imp_t − peak ≤ 0, or with the import substituted Σ kW/A · r − peak ≤ −net_t
            peak_col = n
            n += 1
            ps = np.flatnonzero(sub)
            ps_pos = np.full(T, -1)
            ps_pos[ps] = np.arange(ps.size)
            on = np.flatnonzero(in_sub)
            rows.add(
                np.concatenate([np.arange(k), ps_pos[vt[on]] + k, np.arange(T)]),
                np.concatenate([imp_cols, on, np.full(T, peak_col)]),
                np.concatenate([np.ones(k), kw[on], -np.ones(T)]),
                -np.inf,
                np.concatenate([np.zeros(k), -net[ps]]),
                "peak",
                np.concatenate([periods, ps]),
            )
            c.append(np.array([o.demand_charge_per_kw]))
            col_lb.append(np.array([problem.signals.peak_so_far_kw]))
            col_ub.append(np.array([np.inf]))
            col_keys["peak"] = np.zeros(1, np.int64)
    if o.fairness > 0:
        # z · E_i − delivered_i ≤ 0 for every session that wants energy and can draw
        z_col = n
        n += 1
        want = np.flatnonzero(wants)
        row_of = np.full(S, -1)
        row_of[want] = np.arange(want.size)
        m = np.flatnonzero(row_of[vs] >= 0)
        rows.add(
            np.concatenate([row_of[vs][m], np.arange(want.size)]),
            np.concatenate([m, np.full(want.size, z_col)]),
            np.concatenate([-kwh[m], problem.session_energy_kwh[want]]),
            -np.inf,
            np.zeros(want.size),
            "fairness",
            want,
        )
        c.append(np.array([-o.fairness]))
        col_lb.append(np.zeros(1))
        col_ub.append(np.ones(1))
        col_keys["z"] = np.zeros(1, np.int64)

    # soft grid signals (docs/grid-signals.md): a setpoint on the net import and an export cap,
    # each priced per kWh of deviation (one row per period that has one)
    soft: dict[str, np.ndarray] = {}
    if _soft_signals(problem):
        n, soft = _soft_grid_rows(
            problem,
            rows,
            c,
            col_lb,
            col_ub,
            n,
            cols,
            blocks_of(col_keys) if st is not None else None,
        )

    A, row_lb, row_ub, row_blocks = rows.build(n)
    col_keys.update(soft)
    integrality = None
    if integer:
        integrality = np.zeros(n, dtype=np.int32)
        integrality[np.concatenate(integer)] = 1
    return LinearProgram(
        c=np.concatenate(c),
        col_lb=np.concatenate(col_lb),
        col_ub=np.concatenate(col_ub),
        A=A,
        row_lb=row_lb,
        row_ub=row_ub,
        offset=offset,
        cols=blocks_of(col_keys),
        rows=row_blocks,
        integrality=integrality,
    )


def _scan_rows_loop(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    h: np.ndarray,
    ub: np.ndarray,
    positive_only: bool,
) -> np.ndarray:
    """:func:`_scan_rows` in two passes over the CSR arrays (the arithmetic of its numpy form,
    entry by entry in row order, as scipy's product does)."""
    m = indptr.size - 1
    for i in range(m):
        p = indptr[i]
        if indptr[i + 1] - p == 1 and data[p] > 0:
            j = indices[p]
            v = h[i] / data[p]
            if v < ub[j] or v != v:  # np.minimum: NaN wins
                ub[j] = v
    keep = np.empty(m, np.int64)
    k = 0
    for i in range(m):
        if indptr[i + 1] - indptr[i] > 1:
            s = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                a = data[p]
                if not positive_only or a > 0 or a != a:
                    s += a * ub[indices[p]]
            if s > h[i] * (1 + 1e-12):
                keep[k] = i
                k += 1
    return keep[:k]


#: :func:`_scan_rows_loop` compiled (:class:`~loadopt._csr.LazyKernel`).
SCAN_ROWS_KERNEL = LazyKernel(_scan_rows_loop)


def _scan_rows(K: sp.csr_matrix, h: np.ndarray, ub: np.ndarray, positive_only: bool) -> np.ndarray:
    """The rows of ``K r ≤ h`` that can bind, after the singleton rows became bounds.

    A row holding one variable with a positive coefficient lowers that variable's bound in
    ``ub`` (in place) to ``h / coefficient``; a row of two or more entries is kept (its index
    returned, ascending) where ``K · ub > h (1 + 1e-12)``, over the positive entries only with
    ``positive_only`` (storage: discharge credits cannot make a row bind).
    """
    kernel = SCAN_ROWS_KERNEL.get()
    if (
        kernel is not None
        and K.data.dtype == np.float64
        and ub.dtype == np.float64
        # (the loop indexes ``ub`` and ``h`` without bounds checks)
        and K.shape == (h.size, ub.size)
        and h.ndim == ub.ndim == 1
    ):
        return kernel(
            K.indptr, K.indices, K.data, h.astype(np.float64, copy=False), ub, positive_only
        )
    nnz = np.diff(K.indptr)
    single = np.flatnonzero(nnz == 1)
    if single.size:
        idx = K.indptr[single]
        pos = K.data[idx] > 0
        col, coef = K.indices[idx][pos], K.data[idx][pos]
        np.minimum.at(ub, col, h[single][pos] / coef)
    K_pos = K.maximum(0) if positive_only else K
    return np.flatnonzero((nnz > 1) & ((K_pos @ ub) > h * (1 + 1e-12)))


def _needs_import(problem: Problem) -> bool:
    """Whether the LP prices the grid import: energy prices that are not all 0, or a demand
    charge."""
    o = problem.objective
    price_matters = o.energy_cost > 0 and (
        bool(problem.import_price.any())
        or (problem.export_price is not None and bool(problem.export_price.any()))
    )
    return price_matters or o.demand_charge_per_kw > 0


def _soft_signals(problem: Problem) -> bool:
    """Whether the problem has a soft grid setpoint or export cap in some period."""
    return (problem.setpoint_kw is not None and bool(np.isfinite(problem.setpoint_kw).any())) or (
        problem.export_cap_kw is not None and bool(np.isfinite(problem.export_cap_kw).any())
    )


def _has_extra_columns(problem: Problem, need_imp: bool) -> bool:
    """Whether :func:`build_lp` may add columns besides the currents and the unmet slacks
    (import/export, peak, fairness, soft grid signals; storage is checked apart)."""
    return need_imp or problem.objective.fairness > 0 or _soft_signals(problem)


def _energy_rows_lp(
    problem: Problem,
    cols: np.ndarray,
    ub: np.ndarray,
    r_lb: np.ndarray,
    c_all: np.ndarray,
    pen: np.ndarray,
    u_sess: np.ndarray,
    sess_row: np.ndarray,
    offset: float,
    g_rows: np.ndarray,
) -> LinearProgram | None:
    """:func:`build_lp` (default form) of a problem whose LP has only the current columns
    ``cols`` (each in its session's energy row), the unmet slacks ``u_sess`` and the energy rows:
    no storage, no safety row that can bind, no import, fairness or soft-grid columns. The
    arrays the general build makes, set up directly (one entry per column, in column order);
    None where that does not apply (no current column, int32 overflow)."""
    n_r, n_u = cols.size, u_sess.size
    n = n_r + n_u
    if n_r == 0 or n >= 2**31 - 1:
        return None
    E_rhs = problem.session_energy_kwh[u_sess]
    vs = problem.var_session[cols]
    A = sp.csc_matrix(
        (
            np.concatenate([problem.var_kwh_per_a[cols], np.ones(n_u)]),
            np.concatenate([sess_row[vs], np.arange(n_u)]).astype(np.int32),
            np.arange(n + 1, dtype=np.int32),
        ),
        shape=(n_u, n),
    )
    A.has_sorted_indices = True
    return LinearProgram(
        c=np.concatenate([c_all[cols], pen[u_sess]]),
        col_lb=np.concatenate([r_lb, np.zeros(n_u)]),
        col_ub=np.concatenate([ub[cols], E_rhs]),
        A=A,
        row_lb=E_rhs.copy(),
        row_ub=E_rhs.copy(),
        offset=offset,
        cols={"r": Block(0, n_r, cols), "u": Block(n_r, n, u_sess)},
        rows={"safety": Block(0, 0, g_rows), "energy": Block(0, n_u, u_sess)},
    )


def _without_columns(problem: Problem, unmet_slack: bool) -> LinearProgram:
    """:func:`build_lp` of a problem without storage or extra columns in which no variable can
    be non-zero: no column and no row, every session's energy unmet at its penalty (the
    offset), the same blocks as the general build."""
    if problem.n_sessions == 0:  # nobody plugged in: nothing unmet
        offset = 0.0
    elif unmet_slack:
        offset = float(np.sum(unmet_penalty(problem) * problem.session_energy_kwh))
    else:
        offset = objective_coefficients(problem)[1]
    none_i, none_f = np.zeros(0, np.int64), np.zeros(0)
    A = sp.csc_matrix((none_f, np.zeros(0, np.int32), np.zeros(1, np.int32)), shape=(0, 0))
    A.has_sorted_indices = True  # as csc_from_coo makes it
    none = Block(0, 0, none_i)
    return LinearProgram(
        c=none_f,
        col_lb=none_f.copy(),
        col_ub=none_f.copy(),
        A=A,
        row_lb=none_f.copy(),
        row_ub=none_f.copy(),
        offset=offset,
        cols={"r": none, "u": none} if unmet_slack else {"r": none},
        rows={"safety": none, "energy": none},
    )


def col_keys_pos(col_keys: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Column numbers of block ``name`` of the (ordered) keys registered so far."""
    return blocks_of(col_keys)[name].positions


def _soft_grid_rows(
    problem: Problem,
    rows: _Rows,
    c: list,
    col_lb: list,
    col_ub: list,
    n: int,
    cols: np.ndarray,
    blocks: dict[str, Block] | None = None,
) -> tuple[int, dict[str, np.ndarray]]:
    """Rows and columns of the soft grid signals; returns the new column count and the column
    blocks (``"sp_up"``, ``"sp_down"``, ``"xc"``, keyed by period) in order. Row blocks
    ``"grid_setpoint"`` and ``"grid_export"`` (keyed by period).

    Net import ``m_t = Σ kW/A · r + B_t + R_t − PV_t`` (``R``: reserved EVSE draw). Setpoint
    ``s_t``: ``Σ kW/A · r − d⁺_t + d⁻_t = s_t − B_t − R_t + PV_t``, costing
    ``penalty · Δ · (d⁺ + d⁻)``. Export cap ``x_t`` (export = −m_t): ``−Σ kW/A · r − e_t ≤ x_t +
    B_t + R_t − PV_t``, costing ``penalty · Δ · e_t``; only where it can bind (PV − B − R > x).
    Both always feasible: they never compete with a safety row, only with the objective.
    With storage (``blocks`` the column blocks so far) the net import also counts battery
    charging (+) and discharge (−).
    """
    T = problem.n_periods
    dt = problem.period_h
    vs = problem.var_session[cols]
    vt = problem.var_period[cols]
    kw = problem.session_kw_per_a[vs]
    if problem.var_reserved is not None and problem.var_reserved.size == problem.n_vars:
        # reserved draw is counted in R, not per variable
        kw = np.where(problem.var_reserved[cols], 0.0, kw)
    col_of = np.arange(kw.size)
    dis_kw = np.zeros(T)
    st = problem.storage
    if st is not None and blocks is not None and "d" in blocks:
        Us = st.n_units - st.n_batteries
        kw_d = st.unit_kw_per_a[st.dv_unit]
        vt = np.concatenate([vt, st.bc_period, st.dv_period])
        col_of = np.concatenate([col_of, blocks["bc"].positions, blocks["d"].positions])
        kw = np.concatenate([kw, st.unit_kw_per_a[Us + st.bc_battery], -kw_d])
        dis_kw = np.bincount(st.dv_period, kw_d * st.dv_ub, minlength=T).astype(np.float64)
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
        rows.add(
            np.concatenate([row_of[vt][m], np.arange(k), np.arange(k)]),
            np.concatenate([col_of[m], up, down]),
            np.concatenate([kw[m], -np.ones(k), np.ones(k)]),
            rhs,
            rhs,
            "grid_setpoint",
            per,
        )
        assert problem.setpoint_penalty is not None  # compiled with the setpoints
        pen = problem.setpoint_penalty[per] * dt[per]
        c += [pen, pen]
        col_lb += [np.zeros(k), np.zeros(k)]
        col_ub += [np.full(k, np.inf), np.full(k, np.inf)]
        out.update(sp_up=per, sp_down=per)
    xc = problem.export_cap_kw
    if xc is not None:
        per = np.flatnonzero(np.isfinite(xc) & (-fixed + dis_kw > xc))
        if per.size:
            k = per.size
            row_of = np.full(T, -1)
            row_of[per] = np.arange(k)
            m = np.flatnonzero(row_of[vt] >= 0)
            e = n + np.arange(k)
            n += k
            rows.add(
                np.concatenate([row_of[vt][m], np.arange(k)]),
                np.concatenate([col_of[m], e]),
                np.concatenate([-kw[m], -np.ones(k)]),
                -np.inf,
                xc[per] + fixed[per],
                "grid_export",
                per,
            )
            assert problem.export_penalty is not None  # compiled with the caps
            c.append(problem.export_penalty[per] * dt[per])
            col_lb.append(np.zeros(k))
            col_ub.append(np.full(k, np.inf))
            out.update(xc=per)
    return n, out


def exclusive_periods(problem: Problem) -> np.ndarray:
    """``(U, T)`` bool: where charging and discharging one unit at once could pay.

    Doing both in one period moves energy through the unit's losses at a constant battery
    state: charging ``x`` grid kWh and discharging ``y = η_c η_d x`` imports ``x (1 − η_c η_d)``
    more for nothing but heat and costs ``δ y`` of degradation (``δ`` per grid kWh
    discharged). Every other term of the objective is worse or unchanged (more import never
    helps a peak, a cap or a target). So it pays only where the marginal price of energy ``π``
    is negative enough::

        w_c · π · (1 − η_c η_d) + δ · η_c η_d < 0,   π = min(import price, export price)

    (export price 0 when exports earn nothing). Only there does :func:`build_lp` add a binary
    per unit and period; elsewhere the LP optimum never needs both, and a tie is netted by
    :func:`loadopt.safety.project_storage` without changing the net import.
    """
    st = problem.storage
    if st is None:
        return np.zeros((0, problem.n_periods), dtype=bool)
    o = problem.objective
    exp = np.zeros(problem.n_periods) if problem.export_price is None else problem.export_price
    pi = np.minimum(problem.import_price, exp)
    loss = 1.0 - st.unit_eta_c * st.unit_eta_d
    pay = (
        o.energy_cost * pi[None, :] * loss[:, None]
        + (st.unit_degradation * st.unit_eta_c * st.unit_eta_d)[:, None]
    )
    return pay < -1e-12


def _storage_blocks(
    problem: Problem,
    rows: _Rows,
    c: list,
    col_lb: list,
    col_ub: list,
    n: int,
    cols: np.ndarray,
    bc_ub: np.ndarray,
    dv_ub: np.ndarray,
    pen: np.ndarray,
    col_keys: dict[str, np.ndarray],
    integer: list[np.ndarray],
) -> int:
    """Append the storage columns and their rows (docs/formulation.md, "Storage").

    Columns: battery charge ``c_b`` (A), discharge ``d`` (A), energy state ``e`` (kWh, bounded
    by each unit's floor and ceiling), the V2G target slack ``w`` (kWh, priced like unmet
    energy) and, only where :func:`exclusive_periods` says it could pay, a binary ``z`` per
    unit and period (``charge ≤ ub · z``, ``discharge ≤ ub · (1 − z)``). Rows: export direction
    ``Gx d ≤ hx`` (those that can bind), the energy balance of every unit and period
    ``e_t − e_{t−1} − η_c kWh/A · charge + kWh/A / η_d · d = [t = 0] e_0`` and the targets
    ``e_{T−1} + w ≥ E``. Column blocks ``"bc"`` (key: battery-charge column of
    ``problem.storage``), ``"d"`` (discharge column), ``"e"`` (unit · T + period), ``"w"``
    (session), ``"zx"`` (unit · T + period); row blocks ``"export"`` (export row),
    ``"energy_state"`` (unit · T + period), ``"v2g_target"`` (session), ``"exclusive"``.
    Returns the new column count.
    """
    st = problem.storage
    assert st is not None
    T = problem.n_periods
    U, B = st.n_units, st.n_batteries
    Us = U - B
    Vb, Vd = st.bc_ub.size, st.dv_ub.size
    bc0, d0 = n, n + Vb
    e0 = d0 + Vd
    w0 = e0 + U * T
    n = w0 + Us
    e_col = e0 + np.arange(U * T).reshape(U, T)
    # columns
    c += [
        np.zeros(Vb),
        st.unit_degradation[st.dv_unit] * st.dv_kwh_per_a,
        np.zeros(U * T),
        pen[st.unit_session[:Us]],
    ]
    term = np.zeros((U, T))
    term[:, -1] = -st.unit_terminal_value
    c[-2] = term.ravel()
    col_lb += [np.zeros(Vb), np.zeros(Vd), np.repeat(st.unit_emin_kwh, T), np.zeros(Us)]
    col_ub += [bc_ub, dv_ub, np.repeat(st.unit_emax_kwh, T), np.full(Us, np.inf)]
    # export rows that can bind
    Gx = st.Gx
    keep = np.flatnonzero((Gx @ dv_ub) > st.hx * (1 + 1e-12))
    if keep.size:
        gx = Gx[keep].tocoo()
        rows.add(gx.row, d0 + gx.col, gx.data, -np.inf, st.hx[keep], "export", keep)
    # energy state rows, one per unit and period
    cv = np.flatnonzero(st.session_unit[problem.var_session[cols]] >= 0)  # V2G charge columns
    u_cv = st.session_unit[problem.var_session[cols[cv]]]
    t_cv = problem.var_period[cols[cv]]
    u_bc = Us + st.bc_battery
    kwh_bc = st.unit_kw_per_a[u_bc] * problem.period_h[st.bc_period]
    prev = e_col[:, :-1].ravel()
    r_prev = (np.arange(U)[:, None] * T + np.arange(1, T)[None, :]).ravel()
    rr = np.concatenate(
        [
            np.arange(U * T),
            r_prev,
            u_cv * T + t_cv,
            u_bc * T + st.bc_period,
            st.dv_unit * T + st.dv_period,
        ]
    )
    cc = np.concatenate([e_col.ravel(), prev, cv, bc0 + np.arange(Vb), d0 + np.arange(Vd)])
    vv = np.concatenate(
        [
            np.ones(U * T),
            -np.ones(r_prev.size),
            -st.unit_eta_c[u_cv] * problem.var_kwh_per_a[cols[cv]],
            -st.unit_eta_c[u_bc] * kwh_bc,
            st.dv_kwh_per_a / st.unit_eta_d[st.dv_unit],
        ]
    )
    rhs = np.zeros((U, T))
    rhs[:, 0] = st.unit_e0_kwh
    rows.add(rr, cc, vv, rhs.ravel(), rhs.ravel(), "energy_state", np.arange(U * T))
    # V2G targets: e_{T-1} + w ≥ E
    if Us:
        rows.add(
            np.concatenate([np.arange(Us), np.arange(Us)]),
            np.concatenate([e_col[:Us, -1], w0 + np.arange(Us)]),
            np.ones(2 * Us),
            st.unit_target_kwh[:Us],
            np.inf,
            "v2g_target",
            st.unit_session[:Us],
        )
    # exclusivity binaries where doing both could pay
    pays = exclusive_periods(problem)
    z_cols = np.zeros(0, np.int64)
    if pays.any():
        dv_of = np.full((U, T), -1, np.int64)
        dv_of[st.dv_unit, st.dv_period] = np.arange(Vd)
        ch_of = np.full((U, T), -1, np.int64)
        ch_of[u_cv, t_cv] = cv
        ch_of[u_bc, st.bc_period] = bc0 + np.arange(Vb)
        ch_ub = np.zeros((U, T))
        ch_ub[u_cv, t_cv] = col_ub[0][cv]
        ch_ub[u_bc, st.bc_period] = bc_ub
        uu, tt = np.nonzero(pays & (dv_of >= 0) & (ch_of >= 0))
        k = uu.size
        if k:
            z_cols = n + np.arange(k)
            n += k
            c.append(np.zeros(k))
            col_lb.append(np.zeros(k))
            col_ub.append(np.ones(k))
            ar = np.arange(k)
            # charge − ub_c z ≤ 0 ;  d + ub_d z ≤ ub_d
            rows.add(
                np.concatenate([ar, ar, k + ar, k + ar]),
                np.concatenate([ch_of[uu, tt], z_cols, d0 + dv_of[uu, tt], z_cols]),
                np.concatenate([np.ones(k), -ch_ub[uu, tt], np.ones(k), dv_ub[dv_of[uu, tt]]]),
                -np.inf,
                np.concatenate([np.zeros(k), dv_ub[dv_of[uu, tt]]]),
                "exclusive",
                np.concatenate([uu * T + tt, uu * T + tt]),
            )
    col_keys.update(bc=np.arange(Vb), d=np.arange(Vd), e=np.arange(U * T), w=st.unit_session[:Us])
    if z_cols.size:
        col_keys["zx"] = uu * T + tt
        integer.append(z_cols)
    return n


@dataclass(frozen=True)
class RelaxedStart:
    """A starting point for the simplex: the LP's optimum without its safety rows.

    Without the safety rows (and without balance or peak rows) the LP of :func:`build_lp` falls
    apart into one small problem per session — deliver ``E`` at the least cost or leave it unmet
    at the penalty — solved greedily: each session fills its cheapest periods first (cost per
    kWh), up to its energy, while a kWh costs less than leaving it unmet. As a basis: per energy
    row the one column filled in part (or the unmet slack ``u``), the cheaper columns at their
    upper bound, per balance row the import (the export where the relaxed point exports), every
    other row's slack. Lower triangular after a permutation, so never singular; where the LP
    has no balance or peak rows it is dual feasible for the full LP (the safety rows' duals are
    0) and the dual simplex only has to repair the safety rows it overloads. With balance or peak
    rows their coupling is ignored (currents in periods where PV can exceed the base load look
    free), so it is a start, not that optimum.

    ``overload``: Σ excess / Σ limit over the safety rows the relaxed point exceeds (0 when it
    exceeds none) — how far the relaxed point is from feasible; see
    :func:`loadopt.solvers.highs.relaxed_basis` for the rule that uses it.
    """

    col_basic: np.ndarray  #: bool per column
    col_upper: np.ndarray  #: bool per column: nonbasic at its upper bound
    row_basic: np.ndarray  #: bool per row: its slack basic
    x: np.ndarray  #: the relaxed point (currents and unmet energy; import, export, peak at 0)
    overload: float


#: The blocks :func:`relaxed_start` understands (the plain LP of :func:`build_lp`, no storage,
#: soft grid signals or fairness).
_START_COLS = frozenset({"r", "u", "imp", "exp", "peak"})
_START_ROWS = frozenset({"safety", "energy", "balance", "peak"})


def relaxed_start(lp: LinearProgram) -> RelaxedStart | None:
    """The greedy optimum of ``lp`` without its safety rows as a basis (:class:`RelaxedStart`),
    or None when ``lp`` is not the plain unmet-slack form of :func:`build_lp` (storage, soft
    grid rows, fairness, the MILP, ``unmet_slack=False``). Arrays only: the current columns
    sorted by (energy row, cost per kWh)."""
    cols, rows = lp.cols, lp.rows
    if (
        lp.integrality is not None
        or not {"r", "u"} <= cols.keys() <= _START_COLS
        or not {"energy"} <= rows.keys() <= _START_ROWS
    ):
        return None
    rb, ub_, e = cols["r"], cols["u"], rows["energy"]
    if not np.array_equal(ub_.index, e.index):  # one unmet slack per energy row, same order
        return None
    A = lp.A if lp.A.format == "csc" else lp.A.tocsc()
    n_e = e.size
    # each current column's entry in its energy row (its kWh per A), straight from the CSC arrays
    lo, hi = A.indptr[rb.start], A.indptr[rb.stop]
    r_row = A.indices[lo:hi]
    in_e = (r_row >= e.start) & (r_row < e.stop)
    j = np.repeat(np.arange(rb.size), np.diff(A.indptr[rb.start : rb.stop + 1]))[in_e]
    er = r_row[in_e] - e.start
    kwh = A.data[lo:hi][in_e]
    ok = kwh > 0
    j, er, kwh = j[ok], er[ok], kwh[ok]
    c_kwh = lp.c[rb.start + j] / kwh
    by_cost = np.argsort(c_kwh, kind="stable")
    order = by_cost[np.argsort(er[by_cost], kind="stable")]  # by energy row, cheapest kWh first
    j, er, kwh, c_kwh = j[order], er[order], kwh[order], c_kwh[order]
    cap = kwh * lp.col_ub[rb.start + j]  # kWh each column can deliver
    if not np.all(np.isfinite(cap)):
        return None
    cum = np.cumsum(cap)
    first = np.searchsorted(er, np.arange(n_e))
    before = np.concatenate([[0.0], cum])[first]  # kWh of the rows sorted before this one
    E = lp.row_ub[e.slice]
    # a kWh is worth buying while it costs less than leaving it unmet: a prefix of each row
    worth = c_kwh < lp.c[ub_.slice][er]
    worth_end = first + np.bincount(er, worth, minlength=n_e)
    # the column where the row's cumulative kWh reaches E (searched in the global running sum)
    reach = np.maximum(np.searchsorted(cum, before + E * (1 - 1e-9), side="left"), first)
    partial = reach < worth_end
    full_end = np.where(partial, reach, worth_end)
    full = np.arange(j.size) < full_end[er]

    n, m = lp.n_cols, lp.n_rows
    col_basic = np.zeros(n, dtype=bool)
    col_upper = np.zeros(n, dtype=bool)
    row_basic = np.ones(m, dtype=bool)
    col_upper[rb.start + j[full]] = True
    col_basic[rb.start + j[reach[partial]]] = True
    col_basic[ub_.start + np.flatnonzero(~partial)] = True  # unmet energy, or exactly filled
    row_basic[e.slice] = False
    x = np.where(col_upper, lp.col_ub, 0.0)
    filled = np.bincount(er[full], cap[full], minlength=n_e)
    m_col = rb.start + j[reach[partial]]
    x[m_col] = (E[partial] - filled[partial]) / kwh[reach[partial]]
    x[ub_.slice] = np.where(partial, 0.0, np.maximum(E - filled, 0.0))  # unmet energy (kWh)
    act = A @ x
    if "balance" in rows:
        bal = rows["balance"]
        if "imp" not in cols or not np.array_equal(cols["imp"].index, bal.index):
            return None
        # imp − exp − Σ kW/A · r = net: the import basic, or the export where the point exports
        need = lp.row_ub[bal.slice] - act[bal.slice]
        exports = (need < 0) & ("exp" in cols)
        row_basic[bal.slice] = False
        col_basic[cols["imp"].start + np.flatnonzero(~exports)] = True
        if exports.any():
            col_basic[cols["exp"].start + np.flatnonzero(exports)] = True
    overload = 0.0
    if "safety" in rows and rows["safety"].size:
        sb = rows["safety"]
        h = lp.row_ub[sb.slice]
        excess = act[sb.slice] - h
        over = excess > 1e-9 * np.maximum(1.0, np.abs(h))
        if over.any():
            overload = float(excess[over].sum() / max(np.abs(h[over]).sum(), 1e-12))
    return RelaxedStart(col_basic, col_upper, row_basic, x, overload)


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
        index = np.asarray(index, np.int64)
        k = index.size
        if len(r):
            r = np.asarray(r, np.int64)
            self.trip.append(
                (r + self.m if self.m else r, np.asarray(c, np.int64), np.asarray(v, np.float64))
            )
        self.lb.append(_per_row(lb, k))
        self.ub.append(_per_row(ub, k))
        self.index[name] = index
        self.m += k

    def build(self, n_cols: int) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, dict[str, Block]]:
        if len(self.trip) == 1:
            r, c, v = self.trip[0]
        elif self.trip:
            r, c, v = (np.concatenate(x) for x in zip(*self.trip, strict=True))
        else:
            r, c, v = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        A = _csc_one_per_column(r, c, v, (self.m, n_cols))
        if A is None:
            A = csc_from_coo(r, c, v, (self.m, n_cols))
        return A, np.concatenate(self.lb), np.concatenate(self.ub), blocks_of(self.index)


def _csc_one_per_column(
    r: np.ndarray, c: np.ndarray, v: np.ndarray, shape: tuple[int, int]
) -> sp.csc_matrix | None:
    """:func:`~loadopt._csr.csc_from_coo` of triplets whose columns strictly ascend (at most one
    entry per column, in column order: an uncongested step's LP, energy rows only): the CSC
    arrays are the triplets themselves. None where the columns do not strictly ascend."""
    m, n = shape
    if not c.size or max(m, n) >= 2**31 - 1 or not (c[1:] > c[:-1]).all():
        return None
    if c.size == n and c[-1] == n - 1:  # every column (the strictly ascending 0 … n − 1)
        ptr = np.arange(n + 1, dtype=np.int32)
    else:
        ptr = np.searchsorted(c, np.arange(n + 1)).astype(np.int32)
    A = sp.csc_matrix((v, r.astype(np.int32), ptr), shape=shape)
    A.has_sorted_indices = True
    return A


def _per_row(bound, k: int) -> np.ndarray:
    """A row bound (a number, or one per row) as ``(k,)`` float64."""
    b = np.asarray(bound, np.float64)
    if b.ndim == 0:
        return np.full(k, float(b))
    return b if b.shape == (k,) else np.broadcast_to(b, (k,))


#: Above this many entries :func:`_dedupe_row_arrays` compares rows with scipy (measured: the
#: array form wins on a controller step's LPs, scipy on 10⁵-entry day-ahead ones).
_DEDUPE_ARRAYS_MAX_NNZ = 20_000


def _dedupe_row_arrays(
    ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, h: np.ndarray, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge rows of ``G r ≤ h`` (canonical CSR arrays) that have identical coefficients,
    keeping the smallest ``h``: ``(ptr, idx, val, h, kept)``, ``kept`` the indices of the rows
    kept."""
    m = ptr.size - 1
    if m < 2:
        return ptr, idx, val, h, np.arange(m)
    kernel = DUPLICATE_ROWS_KERNEL.get()
    rep = None
    if kernel is not None and val.dtype == np.float64:
        rep, no_zeros = kernel(ptr, idx, val, val.view(np.uint64))
        if not no_zeros:
            rep = None
    if rep is None:
        if val.size > _DEDUPE_ARRAYS_MAX_NNZ or (val == 0).any():
            # large (scipy's compiled row arithmetic is faster there) or with explicit zeros
            # (compared as scipy does: they do not make rows differ)
            rep = duplicate_rows(csr(ptr, idx, val, (m, n_cols)))
        else:
            rep = _duplicate_row_arrays(ptr, idx, val, n_cols)
    keep = np.flatnonzero(rep == np.arange(m))
    if keep.size == m:
        return ptr, idx, val, h, keep
    h_min = np.full(m, np.inf)
    np.minimum.at(h_min, rep, h)
    ptr, idx, val = take_rows(ptr, idx, val, keep)
    return ptr, idx, val, h_min[keep], keep


def _duplicate_rows_loop(
    ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, bits: np.ndarray
) -> tuple[np.ndarray, bool]:
    """:func:`duplicate_rows` of canonical CSR arrays (``bits``: the values' IEEE bits) in one
    pass: each row is hashed (its column indices and value bits) into an open-addressing table
    of the rows met so far that had no duplicate, and compared exactly with the rows of its
    hash; identical index and value sequences (``==``: NaN never equal). ``(rep, True)``, or
    ``(…, False)`` at the first explicit zero (compared as scipy does elsewhere: a zero does not
    make rows differ)."""
    m = ptr.size - 1
    size = 1
    while size < 2 * m:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)
    row_hash = np.empty(m, np.uint64)
    rep = np.empty(m, np.int64)
    mul = np.uint64(0x9E3779B97F4A7C15)
    for i in range(m):
        b, e = ptr[i], ptr[i + 1]
        hv = np.uint64(e - b) * mul
        for q in range(b, e):
            if val[q] == 0:
                return rep, False
            hv = (hv ^ np.uint64(idx[q])) * mul
            hv = (hv ^ bits[q]) * mul
            hv = hv ^ (hv >> np.uint64(29))
        row_hash[i] = hv
        slot = hv & mask
        rep[i] = i
        while True:
            j = table[slot]
            if j < 0:
                table[slot] = i
                break
            if row_hash[j] == hv and ptr[j + 1] - ptr[j] == e - b:
                same = True
                d = ptr[j] - b
                for q in range(b, e):
                    if idx[q] != idx[q + d] or val[q] != val[q + d]:
                        same = False
                        break
                if same:
                    rep[i] = j
                    break
            slot = (slot + np.uint64(1)) & mask
    return rep, True


#: :func:`_duplicate_rows_loop` compiled (:class:`~loadopt._csr.LazyKernel`).
DUPLICATE_ROWS_KERNEL = LazyKernel(_duplicate_rows_loop)


def _row_hash_weights(n_cols: int) -> np.ndarray:
    """The fixed random weights whose dot product with a row's coefficients is its hash."""
    return np.random.default_rng(12345).random(n_cols)


def _hash_groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rep, dup)``: for each row the lowest-index row with the same hash ``key``, and the rows
    whose ``rep`` is another row (to be compared exactly)."""
    m = key.size
    order = np.argsort(key, kind="stable")  # the lowest row index of a group comes first
    new_group = np.ones(m, dtype=bool)
    new_group[1:] = np.diff(key[order]) != 0
    head = order[np.flatnonzero(new_group)]
    rep = np.empty(m, dtype=np.int64)
    rep[order] = head[np.cumsum(new_group) - 1]
    return rep, np.flatnonzero(rep != np.arange(m))


def _duplicate_row_arrays(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, n_cols: int):
    """:func:`duplicate_rows` of the canonical CSR arrays of a matrix without explicit zeros
    (identical rows are identical index and value sequences)."""
    m = ptr.size - 1
    row = entry_rows(ptr)
    key = np.bincount(row, val * _row_hash_weights(n_cols)[idx], minlength=m)
    rep, dup = _hash_groups(key)
    if dup.size:
        a, b = dup, rep[dup]
        cnt = ptr[a + 1] - ptr[a]
        differs = cnt != ptr[b + 1] - ptr[b]
        same = np.flatnonzero(~differs)
        c = cnt[same]
        j = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        pa, pb = np.repeat(ptr[a[same]], c) + j, np.repeat(ptr[b[same]], c) + j
        bad = (idx[pa] != idx[pb]) | (val[pa] != val[pb])
        differs[same] = np.bincount(np.repeat(np.arange(same.size), c), bad, same.size) > 0
        rep[dup[differs]] = dup[differs]
    return rep


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
    key = G @ _row_hash_weights(G.shape[1])
    rep, dup = _hash_groups(key)
    if not dup.size:
        return rep
    diff = (G[dup] - G[rep[dup]]).tocsr()
    differs = np.diff(diff.indptr) > 0
    if differs.any():  # explicit zeros left by the subtraction do not make rows differ
        differs &= np.asarray(abs(diff).max(axis=1).todense()).ravel() > 0
    rep[dup[differs]] = dup[differs]
    return rep
