"""The MILP model: the integer columns and rows added to the LP (see :mod:`loadopt.milp`), and
the maps between its columns and the problem's variables."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..lp import Block, LinearProgram, build_lp
from ..options import IntegerOptions
from ..problem import ROW_NODE_CURRENT, Problem
from .slots import level_groups, next_slot, prev_slot

#: HiGHS integrality codes.
_CONT, _INT, _SEMI = 0, 1, 2


def wants_integers(problem: Problem, opts: IntegerOptions | None) -> bool:
    """Whether the problem or ``opts`` asks for an integer feature (``method="auto"``).

    Options given explicitly always count; otherwise discrete steps or phase switching on an EVSE
    of a session do. The minimum current alone (every EVSE has one) does not: the LP stays the
    default unless integers are asked for.

    Parameters
    ----------
    problem
        The compiled problem.
    opts
        Integer options given, or ``None``.

    Returns
    -------
    bool
    """
    if opts is not None:
        return True
    e = problem.session_evse
    return bool(np.any(problem.evse_has_levels[e] | problem.evse_phase_switching[e]))


@dataclass(frozen=True, eq=False)
class MilpModel:
    """The MILP as arrays plus the maps back to the problem.

    *Extended variables* ``e`` are the problem variables ``0..V−1`` followed by the 1-phase
    twins of switchable ones (``ext_var[e]`` is the problem variable of the twin).
    Columns: the LP's columns, then ``u`` (on/off), ``n`` (step counts), ``y`` (level
    binaries), ``s`` (starts), ``q``/``d`` (phase state / switch).
    """

    problem: Problem
    lp: LinearProgram  #: the LP of the (twinned) problem; its bound is the MILP's LP bound
    milp: LinearProgram  #: the full MILP (same first columns as ``lp``)
    integrality: np.ndarray
    ext_var: np.ndarray  #: (E,) problem variable of each extended variable
    ext_twin: np.ndarray  #: (E,) bool, 1-phase twin
    ext_col: np.ndarray  #: (E,) LP column or −1 (variable fixed at 0)
    ext_min_da: np.ndarray  #: (E,) smallest non-zero current in deci-amps (0 = no minimum)
    ext_u: np.ndarray  #: (E,) column of ``u`` or −1
    session_min: np.ndarray  #: (S,) A, minimum for safety.project (0 = none)
    levels_da: list[np.ndarray | None]  #: per session: allowed non-zero levels (deci-amps)
    step: dict[str, np.ndarray]  #: step form: ext, a0_da, d_da, n col, n max
    expl: dict[str, np.ndarray]  #: explicit levels: ext (per y col), level (A), y col
    s_cols: np.ndarray | None  #: (V,) start column per problem variable (slot), or None
    q_cols: np.ndarray | None  #: (V,) phase-state column per slot (−1 where none)
    d_cols: np.ndarray | None
    caps: tuple[tuple[int, int], ...]  #: (node index, K)
    min_run: int
    min_pause: int
    max_switches: int
    switchable: np.ndarray  #: (S,) bool
    rot0: np.ndarray  #: (S,) site phase of each session's EVSE L1
    twin_G: sp.csc_matrix | None  #: (M, V) safety columns of every variable drawn on 1 phase
    prev: np.ndarray  #: (V,) the session's slot in the previous period, −1 (:mod:`.slots`)
    nxt: np.ndarray  #: (V,) the session's slot in the next period, −1
    groups: tuple[tuple[np.ndarray, np.ndarray], ...]  #: sessions by level set (:mod:`.slots`)

    @property
    def n_ext(self) -> int:
        return self.ext_var.size


def _session_levels(problem: Problem, opts: IntegerOptions) -> list[np.ndarray | None]:
    """Allowed non-zero currents per session in deci-amps (None = continuous above the minimum):
    the EVSE's levels as compiled (:func:`loadopt.compile.snap_levels_da`) within the session's
    minimum and maximum."""
    lo = (
        np.ceil(problem.session_min_current * 10 - 1e-6)
        if opts.min_current
        else np.ones(problem.n_sessions)
    )
    hi = np.floor(problem.session_max_current * 10 + 1e-6)
    out: list[np.ndarray | None] = []
    for i, e in enumerate(problem.session_evse):
        lv = problem.evse_levels_of(int(e)) if opts.discrete else None
        out.append(None if lv is None else lv[(lv >= max(lo[i], 1)) & (lv <= hi[i])])
    return out


def build_milp(problem: Problem, opts: IntegerOptions | None = None) -> MilpModel:
    """Build the MILP of ``problem`` (see the module docstring), vectorised over variables.

    Parameters
    ----------
    problem
        The compiled problem.
    opts
        Which integer rules (:class:`~loadopt.options.IntegerOptions`); default from the EVSEs.

    Returns
    -------
    MilpModel
        Columns, rows (named blocks) and what maps them back to currents.
    """
    opts = opts or IntegerOptions()
    S, V = problem.n_sessions, problem.n_vars
    node_index = {n: k for k, n in enumerate(problem.node_ids)}
    caps = []
    for nid, k in opts.max_charging.items():
        if nid not in node_index:
            raise InputError(f"max_charging: node {nid!r} is not a node of the site")
        if k < 0:
            raise InputError(f"max_charging: node {nid!r} has a negative cap {k}")
        caps.append((node_index[nid], int(k)))
    rot0 = problem.evse_site_phases[problem.session_evse, 0].astype(np.int64).reshape(S)
    switchable = problem.evse_phase_switching[problem.session_evse] & opts.phase_switching
    switchable &= problem.session_phase_mask.sum(axis=1) == 3

    # --- twins of switchable variables --------------------------------------------------------
    tw_vars = np.flatnonzero(switchable[problem.var_session])
    twin_G = None
    work = problem
    if tw_vars.size:
        twin_G = _twin_columns(problem, rot0)
        G_ext = sp.hstack([problem.G, twin_G[:, tw_vars]], format="csr")
        kwh = problem.var_kwh_per_a
        work = dataclasses.replace(
            problem,
            var_session=np.concatenate([problem.var_session, problem.var_session[tw_vars]]),
            var_period=np.concatenate([problem.var_period, problem.var_period[tw_vars]]),
            var_ub=np.concatenate([problem.var_ub, problem.var_ub[tw_vars]]),
            var_kwh_per_a=np.concatenate([kwh, kwh[tw_vars] / 3.0]),
            G=G_ext,
        )
    lp = build_lp(work, unmet_slack=False)  # the MILP maps currents to columns itself
    if tw_vars.size:
        lp = _link_twins(_fix_twin_balance(lp, V), V, tw_vars)
    ext_var = np.concatenate([np.arange(V), tw_vars])
    ext_twin = np.arange(ext_var.size) >= V
    E = ext_var.size
    ext_col = np.full(E, -1, dtype=np.int64)
    rb = lp.cols["r"]
    ext_col[rb.index] = rb.positions
    has_col = ext_col >= 0
    ext_sess = problem.var_session[ext_var]
    ub = np.zeros(E)
    ub[has_col] = lp.col_ub[ext_col[has_col]]

    # --- which sessions need integers ---------------------------------------------------------
    levels = _session_levels(problem, opts)
    min_a = problem.session_min_current if opts.min_current else np.zeros(S)
    min_da_s = np.ceil(min_a * 10 - 1e-6)
    disc_s = np.array([lv is not None for lv in levels], dtype=bool).reshape(S)
    under_cap = np.zeros(S, dtype=bool)
    if caps:
        anc = problem.session_anc.tocsc()
        for k, _ in caps:
            under_cap[anc[:, k].indices] = True
    timed = opts.min_run_periods > 1 or opts.min_pause_periods > 1
    need_u = (min_da_s > 0) | disc_s | switchable | under_cap | timed
    semi_s = np.zeros(S, dtype=bool)
    if opts.formulation == "semicontinuous":
        semi_s = (min_da_s > 0) & ~disc_s & ~switchable & ~under_cap & (not timed)
        need_u &= ~semi_s
    # smallest non-zero current: the minimum, else 0.1 A (so that u = 1 ⇔ r > 0 as emitted)
    min_da_s_eff = np.where(need_u | semi_s, np.maximum(min_da_s, 1.0), 0.0)
    for i in np.flatnonzero(disc_s):
        lv = levels[i]
        min_da_s_eff[i] = lv[0] if lv is not None and lv.size else np.inf

    n = lp.n_cols
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rlb: list[np.ndarray] = []
    rub: list[np.ndarray] = []
    c_ext: list[np.ndarray] = []
    lb_ext: list[np.ndarray] = []
    ub_ext: list[np.ndarray] = []
    int_ext: list[np.ndarray] = []
    m = lp.n_rows

    col_blocks: dict[str, Block] = {}
    row_blocks: dict[str, Block] = {}

    def add_cols(k: int, lo, hi, integ, name: str, key: np.ndarray) -> np.ndarray:
        """``k`` columns as the block ``name`` (``key``: what each stands for)."""
        nonlocal n
        idx = n + np.arange(k)
        col_blocks[name] = Block(n, n + k, np.asarray(key, dtype=np.int64))
        n += k
        c_ext.append(np.zeros(k))
        lb_ext.append(np.broadcast_to(np.asarray(lo, float), (k,)).copy())
        ub_ext.append(np.broadcast_to(np.asarray(hi, float), (k,)).copy())
        int_ext.append(np.full(k, integ, dtype=np.int32))
        return idx

    def add_rows(
        r_local: np.ndarray,
        cc: np.ndarray,
        vv: np.ndarray,
        lo,
        hi,
        k: int,
        name: str,
        key: np.ndarray | None = None,
    ) -> None:
        """``k`` rows as the block ``name`` (``key``: what each stands for; default 0..k−1)."""
        nonlocal m
        row_blocks[name] = Block(
            m, m + k, np.arange(k) if key is None else np.asarray(key, dtype=np.int64)
        )
        rows.append(m + r_local)
        cols.append(cc)
        vals.append(vv)
        rlb.append(np.broadcast_to(np.asarray(lo, float), (k,)).copy())
        rub.append(np.broadcast_to(np.asarray(hi, float), (k,)).copy())
        m += k

    # --- u and the linking rows ---------------------------------------------------------------
    e_u = np.flatnonzero(need_u[ext_sess] & has_col)
    ext_u = np.full(E, -1, dtype=np.int64)
    min_e = min_da_s_eff[ext_sess] / 10.0  # A
    u_hi = (ub[e_u] >= min_e[e_u] - 1e-9).astype(float)
    ext_u[e_u] = add_cols(e_u.size, 0.0, u_hi, _INT, "on", e_u)
    k = e_u.size
    ar = np.arange(k)
    # r − ub·u ≤ 0
    add_rows(
        np.r_[ar, ar],
        np.r_[ext_col[e_u], ext_u[e_u]],
        np.r_[np.ones(k), -ub[e_u]],
        -np.inf,
        0.0,
        k,
        "on_upper",
        e_u,
    )
    cont = e_u[~disc_s[ext_sess[e_u]]]
    k = cont.size
    ar = np.arange(k)
    # r − min·u ≥ 0
    add_rows(
        np.r_[ar, ar],
        np.r_[ext_col[cont], ext_u[cont]],
        np.r_[np.ones(k), -min_e[cont]],
        0.0,
        np.inf,
        k,
        "on_lower",
        cont,
    )

    # --- discrete levels ----------------------------------------------------------------------
    step: dict[str, np.ndarray] = {k_: np.zeros(0, np.int64) for k_ in ("ext", "n")}
    step.update(a0=np.zeros(0), d=np.zeros(0), nmax=np.zeros(0))
    expl: dict[str, np.ndarray] = {
        "ext": np.zeros(0, np.int64),
        "level": np.zeros(0),
        "y": np.zeros(0, np.int64),
    }
    disc_e = e_u[disc_s[ext_sess[e_u]]]
    if disc_e.size:
        arith = np.zeros(S, dtype=bool)
        a0 = np.zeros(S)
        dd = np.ones(S)
        for i in np.flatnonzero(disc_s):
            lv = levels[i]
            if lv is None or lv.size == 0:
                arith[i] = True
                a0[i], dd[i] = 1e9, 1.0  # nothing allowed: u is fixed at 0 below
            elif lv.size == 1 or np.all(np.diff(lv) == lv[1] - lv[0]):
                arith[i] = True
                a0[i] = lv[0]
                dd[i] = lv[1] - lv[0] if lv.size > 1 else 1.0
        se = disc_e[arith[ext_sess[disc_e]]]
        if se.size:
            s_ = ext_sess[se]
            a0e, de = a0[s_] / 10.0, dd[s_] / 10.0
            nmax = np.floor((ub[se] - a0e) / de + 1e-9)
            nmax = np.where(ub[se] >= a0e - 1e-9, np.maximum(nmax, 0), 0)
            single = np.array(
                [levels[i] is not None and levels[i].size <= 1 for i in s_], dtype=bool
            ).reshape(se.size)
            nmax[single] = 0
            ncol = add_cols(se.size, 0.0, nmax, _INT, "steps", se)
            k = se.size
            ar = np.arange(k)
            # r − a0·u − d·n = 0 ;  n − nmax·u ≤ 0
            add_rows(
                np.r_[ar, ar, ar],
                np.r_[ext_col[se], ext_u[se], ncol],
                np.r_[np.ones(k), -a0e, -de],
                0.0,
                0.0,
                k,
                "step_value",
                se,
            )
            add_rows(
                np.r_[ar, ar],
                np.r_[ncol, ext_u[se]],
                np.r_[np.ones(k), -nmax],
                -np.inf,
                0.0,
                k,
                "step_count",
                se,
            )
            step = {"ext": se, "a0": a0[s_], "d": dd[s_], "n": ncol, "nmax": nmax}
        xe = disc_e[~arith[ext_sess[disc_e]]]
        if xe.size:
            xl = [lv for lv in (levels[i] for i in ext_sess[xe]) if lv is not None]
            cnt = np.array([lv.size for lv in xl], dtype=np.int64)
            y_ext = np.repeat(xe, cnt)
            y_lvl = np.concatenate(xl) / 10.0
            ycol = add_cols(
                y_ext.size, 0.0, (y_lvl <= ub[y_ext] + 1e-9).astype(float), _INT, "levels", y_ext
            )
            k = xe.size
            ar = np.arange(k)
            yrow = np.repeat(ar, cnt)
            # r − Σ a_k y_k = 0 ;  Σ y_k − u = 0
            add_rows(
                np.r_[ar, yrow],
                np.r_[ext_col[xe], ycol],
                np.r_[np.ones(k), -y_lvl],
                0.0,
                0.0,
                k,
                "level_value",
                xe,
            )
            add_rows(
                np.r_[yrow, ar],
                np.r_[ycol, ext_u[xe]],
                np.r_[np.ones(y_ext.size), -np.ones(k)],
                0.0,
                0.0,
                k,
                "level_choice",
                xe,
            )
            expl = {"ext": y_ext, "level": y_lvl, "y": ycol}

    # --- on indicator per slot (problem variable): o[v] = Σ u of its extended variables --------
    eu = np.flatnonzero(ext_u >= 0)
    o_rows, o_cols = ext_var[eu], ext_u[eu]
    if tw_vars.size:  # at most one of the 3-phase and 1-phase variables is on
        both = np.flatnonzero(np.bincount(o_rows, minlength=V) > 1)
        sel = np.isin(o_rows, both)
        rl = np.searchsorted(both, o_rows[sel])
        add_rows(rl, o_cols[sel], np.ones(rl.size), -np.inf, 1.0, both.size, "one_way", both)

    def o_rows_of(slot_rows: np.ndarray, slot_of_row: np.ndarray, coef: float = 1.0):
        """Triplets adding ``coef · o[slot]`` to each local row (slot_of_row[k] for row k)."""
        order = np.argsort(o_rows, kind="stable")
        sr, sc = o_rows[order], o_cols[order]
        starts = np.searchsorted(sr, slot_of_row, "left")
        ends = np.searchsorted(sr, slot_of_row, "right")
        cnt = ends - starts
        rr = np.repeat(slot_rows, cnt)
        idx = np.repeat(starts - np.cumsum(np.r_[0, cnt[:-1]]), cnt) + np.arange(cnt.sum())
        return rr, sc[idx], np.full(rr.size, coef)

    # --- caps on sessions charging at once ----------------------------------------------------
    if caps:
        anc = problem.session_anc.tocsc()
        T = problem.n_periods
        for node, K in caps:
            under = np.zeros(S, dtype=bool)
            under[anc[:, node].indices] = True
            slots = np.flatnonzero(under[problem.var_session])
            rr, cc, vv = o_rows_of(problem.var_period[slots], slots)
            add_rows(
                rr, cc, vv, -np.inf, float(K), T, f"cap {problem.node_ids[node]}", np.arange(T)
            )

    # --- minimum run / pause --------------------------------------------------------------------
    s_cols = None
    prev = prev_slot(problem)
    nxt = next_slot(prev)
    if timed:
        has_u_slot = np.zeros(V, dtype=bool)
        has_u_slot[o_rows] = True
        s_cols = add_cols(V, 0.0, 1.0, _CONT, "starts", np.arange(V))
        ar = np.arange(V)
        # o[v] − o[prev] − s[v] ≤ 0
        r1, c1, v1 = o_rows_of(ar, ar, 1.0)
        hp = np.flatnonzero(prev >= 0)
        r2, c2, v2 = o_rows_of(hp, prev[hp], -1.0)
        add_rows(
            np.r_[r1, r2, ar],
            np.r_[c1, c2, s_cols],
            np.r_[v1, v2, -np.ones(V)],
            -np.inf,
            0.0,
            V,
            "start",
            ar,
        )
        if opts.min_run_periods > 1:  # Σ_{k=t−L+1..t} s_k − o_t ≤ 0
            rr, cc = [ar], [s_cols]
            back = ar.copy()
            for _ in range(opts.min_run_periods - 1):
                ok = back >= 0
                back = np.where(ok, prev[np.maximum(back, 0)], -1)
                ok = back >= 0
                rr.append(ar[ok])
                cc.append(s_cols[back[ok]])
            r1, c1, v1 = o_rows_of(ar, ar, -1.0)
            rr_ = np.concatenate(rr)
            add_rows(
                np.r_[rr_, r1],
                np.r_[np.concatenate(cc), c1],
                np.r_[np.ones(rr_.size), v1],
                -np.inf,
                0.0,
                V,
                "min_run",
                ar,
            )
        if opts.min_pause_periods > 1:  # o[prev(t)] + Σ_{k=t..t+L−1} s_k ≤ 1
            rows_j = hp
            loc = np.arange(hp.size)
            rr, cc = [loc], [s_cols[rows_j]]
            fwd = rows_j.copy()
            for _ in range(opts.min_pause_periods - 1):
                fwd = np.where(fwd >= 0, nxt[np.maximum(fwd, 0)], -1)
                ok = fwd >= 0
                rr.append(loc[ok])
                cc.append(s_cols[fwd[ok]])
            r1, c1, v1 = o_rows_of(loc, prev[rows_j], 1.0)
            rr_ = np.concatenate(rr)
            add_rows(
                np.r_[rr_, r1],
                np.r_[np.concatenate(cc), c1],
                np.r_[np.ones(rr_.size), v1],
                -np.inf,
                1.0,
                hp.size,
                "min_pause",
                hp,
            )

    # --- phase-switch count -------------------------------------------------------------------
    q_cols = d_cols = None
    if tw_vars.size and opts.max_phase_switches is not None:
        sw_slots = np.flatnonzero(switchable[problem.var_session])
        q_cols = np.full(V, -1, dtype=np.int64)
        q_cols[sw_slots] = add_cols(sw_slots.size, 0.0, 1.0, _INT, "phase_state", sw_slots)
        d_cols = np.full(V, -1, dtype=np.int64)
        d_cols[sw_slots] = add_cols(sw_slots.size, 0.0, 1.0, _CONT, "phase_switch", sw_slots)
        three = np.flatnonzero((ext_u >= 0) & ~ext_twin & switchable[ext_sess])
        one = np.flatnonzero((ext_u >= 0) & ext_twin)
        k = three.size
        ar = np.arange(k)
        add_rows(
            np.r_[ar, ar],
            np.r_[ext_u[three], q_cols[ext_var[three]]],
            np.r_[np.ones(k), -np.ones(k)],
            -np.inf,
            0.0,
            k,
            "three_phase_state",
            three,
        )  # u3 ≤ q
        k = one.size
        ar = np.arange(k)
        add_rows(
            np.r_[ar, ar],
            np.r_[ext_u[one], q_cols[ext_var[one]]],
            np.r_[np.ones(k), np.ones(k)],
            -np.inf,
            1.0,
            k,
            "one_phase_state",
            one,
        )  # u1 ≤ 1 − q
        hp = sw_slots[prev[sw_slots] >= 0]
        k = hp.size
        ar = np.arange(k)
        for sign, nm in ((1.0, "switch_up"), (-1.0, "switch_down")):  # ±(q_t − q_{t−1}) ≤ d_t
            add_rows(
                np.r_[ar, ar, ar],
                np.r_[q_cols[hp], q_cols[prev[hp]], d_cols[hp]],
                np.r_[np.full(k, sign), np.full(k, -sign), -np.ones(k)],
                -np.inf,
                0.0,
                k,
                nm,
                hp,
            )
        sw_s = np.flatnonzero(switchable)
        loc = np.searchsorted(sw_s, problem.var_session[hp])
        add_rows(
            loc,
            d_cols[hp],
            np.ones(k),
            -np.inf,
            float(opts.max_phase_switches),
            sw_s.size,
            "max_switches",
            sw_s,
        )

    # --- semi-continuous columns ----------------------------------------------------------------
    col_lb = lp.col_lb.copy()
    # the LP's own binaries (meter direction; storage exclusivity) stay binaries
    integ0 = (
        np.zeros(lp.n_cols, dtype=np.int32)
        if lp.integrality is None
        else np.asarray(lp.integrality, dtype=np.int32).copy()
    )
    sc_e = np.flatnonzero(semi_s[ext_sess] & has_col)
    if sc_e.size:
        col_lb[ext_col[sc_e]] = min_e[sc_e]
        integ0[ext_col[sc_e]] = _SEMI
        # a semi-continuous column whose bound is below its minimum can only be 0
        low = sc_e[ub[sc_e] < min_e[sc_e] - 1e-9]
        col_lb[ext_col[low]] = 0.0
        integ0[ext_col[low]] = _CONT

    A_lp = lp.A.tocoo()
    if rows:
        R = np.concatenate([A_lp.row, *rows])
        C = np.concatenate([A_lp.col, *cols])
        D = np.concatenate([A_lp.data, *vals])
    else:
        R, C, D = A_lp.row, A_lp.col, A_lp.data
    A = sp.csc_matrix((D, (R, C)), shape=(m, n))
    A.sum_duplicates()
    A.sort_indices()
    sc_ub = lp.col_ub.copy()
    if sc_e.size:
        low = sc_e[ub[sc_e] < min_e[sc_e] - 1e-9]
        sc_ub[ext_col[low]] = 0.0
    milp = LinearProgram(
        c=np.concatenate([lp.c, *c_ext]),
        col_lb=np.concatenate([col_lb, *lb_ext]),
        col_ub=np.concatenate([sc_ub, *ub_ext]),
        A=A,
        row_lb=np.concatenate([lp.row_lb, *rlb]),
        row_ub=np.concatenate([lp.row_ub, *rub]),
        offset=lp.offset,
        cols={**lp.cols, **col_blocks},
        rows={**lp.rows, **row_blocks},
    )
    ext_min_da = np.where(need_u[ext_sess] | semi_s[ext_sess], min_da_s_eff[ext_sess], 0.0)
    return MilpModel(
        problem=problem,
        lp=lp,
        milp=milp,
        integrality=np.concatenate([integ0, *int_ext]),
        ext_var=ext_var,
        ext_twin=ext_twin,
        ext_col=ext_col,
        ext_min_da=ext_min_da,
        ext_u=ext_u,
        session_min=np.where(np.isfinite(min_da_s_eff), min_da_s_eff, 0) / 10.0,
        levels_da=levels,
        step=step,
        expl=expl,
        s_cols=s_cols,
        q_cols=q_cols,
        d_cols=d_cols,
        caps=tuple(caps),
        min_run=opts.min_run_periods,
        min_pause=opts.min_pause_periods,
        max_switches=-1 if opts.max_phase_switches is None else opts.max_phase_switches,
        switchable=switchable,
        rot0=rot0,
        twin_G=twin_G,
        prev=prev,
        nxt=nxt,
        groups=level_groups(levels, S),
    )


def _twin_columns(problem: Problem, rot0: np.ndarray) -> sp.csc_matrix:
    """(M, V) safety columns of every variable as if drawn on the EVSE's L1 only (1 phase).

    Current rows: only the row of the site phase the EVSE's L1 is wired to keeps its entry;
    power and import rows: a third of the three-phase coefficient (kW per A of one phase).
    """
    G = problem.G.tocoo()
    is_cur = problem.row_kind[G.row] == ROW_NODE_CURRENT
    ph = rot0[problem.var_session[G.col]]
    keep = ~is_cur | (problem.row_phase[G.row] == ph)
    data = np.where(is_cur, G.data, G.data / 3.0)[keep]
    return sp.csc_matrix((data, (G.row[keep], G.col[keep])), shape=G.shape)


def _link_twins(lp: LinearProgram, V: int, tw_vars: np.ndarray) -> LinearProgram:
    """Add ``r3 + r1 ≤ ub`` per switchable (session, period): a vehicle draws one way at a
    time. Valid for the MILP, and it keeps the LP relaxation (bound and incumbent guide) from
    drawing the maximum on three phases and on one phase at once."""
    rb = lp.cols["r"]
    col = np.full(V + tw_vars.size, -1, dtype=np.int64)
    col[rb.index] = rb.positions
    c3, c1 = col[tw_vars], col[V + np.arange(tw_vars.size)]
    both = (c3 >= 0) & (c1 >= 0)
    c3, c1 = c3[both], c1[both]
    key = tw_vars[both]
    k = c3.size
    if k == 0:
        return lp
    ub = np.maximum(lp.col_ub[c3], lp.col_ub[c1])
    ar = np.arange(k)
    L = sp.csc_matrix((np.ones(2 * k), (np.r_[ar, ar], np.r_[c3, c1])), shape=(k, lp.n_cols))
    A = sp.vstack([lp.A, L], format="csc")
    A.sort_indices()
    m = lp.n_rows
    return dataclasses.replace(
        lp,
        A=A,
        row_lb=np.r_[lp.row_lb, np.full(k, -np.inf)],
        row_ub=np.r_[lp.row_ub, ub],
        rows={**lp.rows, "twin_link": Block(m, m + k, key)},
    )


def _fix_twin_balance(lp: LinearProgram, V: int) -> LinearProgram:
    """build_lp's kW rows (import balance, grid setpoint, export cap) use the session's kW/A;
    1-phase twins draw a third of it."""
    kw_rows = [lp.rows[k] for k in ("balance", "grid_setpoint", "grid_export") if k in lp.rows]
    if not kw_rows:
        return lp
    A = lp.A.tocsc(copy=True)
    bal = np.zeros(A.shape[0], dtype=bool)
    for b in kw_rows:
        bal[b.slice] = True
    col_of = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    tw_col = np.zeros(A.shape[1], dtype=bool)
    rb = lp.cols["r"]
    tw_col[rb.slice] = rb.index >= V
    sel = tw_col[col_of] & bal[A.indices]
    A.data[sel] /= 3.0
    return dataclasses.replace(lp, A=A)


def resolve_phases(model: MilpModel, one_phase: np.ndarray) -> Problem:
    """The problem with the safety columns of 1-phase (session, period)s swapped for their
    single-phase form, so that :mod:`loadopt.safety` checks what is really drawn.

    Parameters
    ----------
    model
        The MILP.
    one_phase
        ``(V,)`` bool, the slots drawing on one phase.

    Returns
    -------
    Problem
    """
    p = model.problem
    if model.twin_G is None or not one_phase.any():
        return p
    keep = sp.diags((~one_phase).astype(float))
    swap = sp.diags(one_phase.astype(float))
    G = (p.G @ keep + model.twin_G @ swap).tocsr()
    G.eliminate_zeros()
    kwh = np.where(one_phase, p.var_kwh_per_a / 3.0, p.var_kwh_per_a)
    return dataclasses.replace(p, G=G, var_kwh_per_a=kwh)


def slot_on_of(model: MilpModel, x: np.ndarray) -> np.ndarray:
    """Slots with any of their extended variables (3-phase or 1-phase) above 0.

    Parameters
    ----------
    model
        The MILP.
    x
        Extended currents.

    Returns
    -------
    numpy.ndarray
        ``(V,)`` bool.
    """
    on = np.zeros(model.problem.n_vars, dtype=bool)
    np.logical_or.at(on, model.ext_var, x > 0)
    return on


def to_dense(model: MilpModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Problem]:
    """Extended deci-amps as a schedule's arrays.

    Parameters
    ----------
    model
        The MILP.
    x
        Extended currents (deci-amps).

    Returns
    -------
    tuple
        ``(S, T)`` A, the ``(V,)`` 1-phase mask and the phase-resolved problem.
    """
    p = model.problem
    V = p.n_vars
    cur = x[:V].copy()
    one = np.zeros(V, dtype=bool)
    tw = np.flatnonzero(model.ext_twin)
    if tw.size:
        base = model.ext_var[tw]
        use = x[tw] > 0
        cur[base[use]] = x[tw[use]]
        one[base[use]] = True
    return p.dense(cur / 10.0), one, resolve_phases(model, one)


def lp_point(model: MilpModel, x_da: np.ndarray) -> np.ndarray:
    """A full column vector of the MILP for extended currents ``x_da`` (aux and integer columns
    set to match).

    Parameters
    ----------
    model
        The MILP.
    x_da
        Extended currents (deci-amps).

    Returns
    -------
    numpy.ndarray
        One value per MILP column.
    """
    lp, milp = model.lp, model.milp
    p = model.problem
    xa = x_da / 10.0
    out = np.zeros(milp.n_cols)
    has = model.ext_col >= 0
    out[model.ext_col[has]] = xa[has]
    rb = lp.cols["r"]
    r = out[rb.slice]
    bal_rows, imp, exp = lp.rows.get("balance"), lp.cols.get("imp"), lp.cols.get("exp")
    if bal_rows is not None and imp is not None and exp is not None:
        # imp_t − exp_t = net_t, the balance row of period t taken by name
        T = p.n_periods
        brow = np.full(T, -1)
        brow[bal_rows.index] = bal_rows.positions
        act = lp.A[:, rb.slice] @ r
        net = lp.row_lb[brow] - act[brow]
        out[imp.positions[np.argsort(imp.index)]] = np.maximum(net, 0.0)
        ec = exp.positions[np.argsort(exp.index)]
        out[ec] = np.minimum(np.maximum(-net, 0.0), lp.col_ub[ec])
        peak = lp.cols.get("peak")
        if peak is not None:
            out[peak.start] = max(
                float(np.max(out[imp.slice], initial=0.0)), float(lp.col_lb[peak.start])
            )
    z = lp.cols.get("z")
    if z is not None:
        E = p.session_energy_kwh
        cs = _ext_sess(model)[rb.index]
        got = np.bincount(cs, _kwh_cols(model) * r, minlength=p.n_sessions)
        want = (E > 0) & (np.bincount(cs, minlength=E.size) > 0)
        out[z.start] = float(np.clip(np.min(got[want] / E[want], initial=1.0), 0.0, 1.0))
    on = x_da > 0
    u = model.ext_u >= 0
    out[model.ext_u[u]] = on[u]
    st = model.step
    if st["ext"].size:
        e = st["ext"]
        out[st["n"]] = np.where(on[e], np.rint((x_da[e] - st["a0"]) / st["d"]), 0.0)
    ex = model.expl
    if ex["ext"].size:
        out[ex["y"]] = np.abs(xa[ex["ext"]] - ex["level"]) < 1e-6
    slot_on = slot_on_of(model, x_da).astype(float)
    prev = model.prev
    if model.s_cols is not None:
        before = np.where(prev >= 0, slot_on[np.maximum(prev, 0)], 0.0)
        out[model.s_cols] = np.maximum(slot_on - before, 0.0)
    if model.q_cols is not None:
        tw = np.flatnonzero(model.ext_twin)
        q = np.ones(p.n_vars)
        q[model.ext_var[tw[on[tw]]]] = 0.0
        # off periods keep the previous phase state (no needless switch)
        sw = model.q_cols >= 0
        q = _carry_forward(q, slot_on > 0, prev)
        out[model.q_cols[sw]] = q[sw]
        dq = np.where(prev >= 0, np.abs(q - q[np.maximum(prev, 0)]), 0.0)
        assert model.d_cols is not None  # built together with q_cols
        out[model.d_cols[sw]] = dq[sw]
    return out


def _carry_forward(q: np.ndarray, on: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Off slots take the state of the last on slot before them (or the first on slot after)."""
    q = q.copy()
    V = q.size
    src = np.where(on, np.arange(V), -1)
    # forward fill along each session chain (chains are contiguous in variable order)
    start = prev < 0
    grp = np.cumsum(start) - 1
    idx = np.where(src >= 0, src, -1)
    last = np.maximum.accumulate(np.where(idx >= 0, idx, -1))
    first_of_grp = np.flatnonzero(start)[grp]
    ok = last >= first_of_grp
    q_ff = np.where(ok, q[np.maximum(last, 0)], np.nan)
    # before the first on slot of a chain: the first on slot's state
    rev_idx = np.where(src >= 0, src, V)[::-1]
    nxt_on = np.minimum.accumulate(rev_idx)[::-1]
    last_of_grp = np.r_[np.flatnonzero(start)[1:] - 1, V - 1][grp]
    ok2 = nxt_on <= last_of_grp
    q_bf = np.where(ok2, q[np.minimum(nxt_on, V - 1)], 1.0)
    return np.where(np.isnan(q_ff), q_bf, q_ff)


def _ext_sess(model: MilpModel) -> np.ndarray:
    return model.problem.var_session[model.ext_var]


def _kwh_cols(model: MilpModel) -> np.ndarray:
    p = model.problem
    kwh = p.var_kwh_per_a[model.ext_var] / np.where(model.ext_twin, 3.0, 1.0)
    return kwh[model.lp.cols["r"].index]


def objective_of(model: MilpModel, x_da: np.ndarray) -> float:
    """MILP objective (with the offset) of extended currents ``x_da``.

    Parameters
    ----------
    model
        The MILP.
    x_da
        Extended currents (deci-amps).

    Returns
    -------
    float
    """
    return float(model.milp.c @ lp_point(model, x_da) + model.milp.offset)
