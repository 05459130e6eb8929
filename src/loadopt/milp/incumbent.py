"""Incumbent heuristics: a good feasible MILP point before branch-and-bound (see
:mod:`loadopt.milp`), tuned by :class:`~loadopt.options.IncumbentOptions`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..options import IncumbentOptions
from .model import MilpModel, objective_of, slot_on_of, to_dense
from .repair import apply_caps, enforce, exclusive, fix_runs
from .slots import segments


@dataclass
class Incumbent:
    x_da: np.ndarray | None  #: ext deci-amps
    objective: float
    bound: float | None  #: LP bound (objective of the LP relaxation, with offset)
    source: str
    lp_time_s: float


def rel_gap(obj: float, bound: float | None) -> float:
    if bound is None:
        return math.inf
    return max(obj - bound, 0.0) / max(abs(obj), 1e-9)


def incumbent(
    model: MilpModel,
    mip_rel_gap: float = 0.01,
    *,
    heuristics: IncumbentOptions | None = None,
    highs: dict[str, Any] | None = None,
    deadline: float | None = None,
) -> Incumbent:
    """Best feasible point from the LP relaxation and its fixed-pattern re-solves (see
    :mod:`loadopt.milp`).

    Parameters
    ----------
    model
        The MILP.
    mip_rel_gap
        Relative gap at which a point is good enough.
    heuristics
        Tuning of the heuristics (:class:`~loadopt.options.IncumbentOptions`).
    highs
        Extra HiGHS options for the LPs.
    deadline
        ``time.perf_counter`` instant (s) at which to stop.

    Returns
    -------
    Incumbent
        The best point (ext deci-amps, exact by :func:`~loadopt.milp.enforce`), its objective
        and the LP bound.
    """
    from ..solvers.highs import LP_OPTIONS, interrupt_at, new_highs, pass_lp, run

    ho = heuristics or IncumbentOptions()

    t0 = time.perf_counter()
    lp = model.lp
    best = Incumbent(None, math.inf, None, "none", 0.0)
    if lp.n_cols == 0:
        x = np.zeros(model.n_ext)
        return Incumbent(x, objective_of(model, x), lp.offset, "empty", 0.0)
    try:
        h = new_highs(
            {**LP_OPTIONS, **(highs or {})},
            None if deadline is None else max(deadline - time.perf_counter(), 0.01),
        )
        pass_lp(h, lp)
        if deadline is not None:  # the re-solves below share this object: keep the limit hard
            interrupt_at(h, deadline)
        res = run(h)
    except Exception:  # a broken solver must never take the controller down
        res = None
    best.lp_time_s = time.perf_counter() - t0
    if res is None or res.x is None:
        return best
    if res.status.value == "optimal":
        best.bound = res.objective
    r = np.zeros(model.n_ext)
    has = model.ext_col >= 0
    r[has] = res.x[model.ext_col[has]]
    mins = np.maximum(model.ext_min_da / 10.0, 0.1)
    rb = lp.cols["r"]  # the current columns: the only ones the re-solves bound
    nr = rb.size
    col_e = np.empty(nr, dtype=np.int64)  # ext variable of each current column
    col_e[model.ext_col[has] - rb.start] = np.flatnonzero(has)
    intc = model.ext_min_da[col_e] > 0
    base_lb = lp.col_lb[rb.slice].copy()
    base_ub = lp.col_ub[rb.slice].copy()
    idx = rb.positions.astype(np.int32)
    seen: set[bytes] = set()
    V = model.problem.n_vars
    timed = model.min_run > 1 or model.min_pause > 1
    score = np.zeros(V)
    np.maximum.at(score, model.ext_var, r)

    def solve_cols(lb: np.ndarray, ub: np.ndarray) -> np.ndarray | None:
        """The LP re-solved warm with these bounds (A) on the current columns, as ext amps;
        None if not optimal."""
        h.changeColsBounds(nr, idx, lb, ub)
        rr = run(h)
        if rr.x is None or rr.status.value != "optimal":
            return None
        xr = np.zeros(model.n_ext)
        xr[has] = rr.x[model.ext_col[has]]
        return xr

    def lp_with(on_e: np.ndarray, strict: bool, free_off: bool = False) -> np.ndarray | None:
        on_c = on_e[col_e]
        lb = np.where(intc & on_c & strict, np.minimum(mins[col_e], base_ub), base_lb)
        ub = base_ub if free_off else np.where(intc & ~on_c, 0.0, base_ub)
        return solve_cols(lb, ub)

    def lp_with_bounds(lb_e: np.ndarray, ub_e: np.ndarray) -> np.ndarray | None:
        """The LP with ext-indexed bounds (A) on the current columns; None if not optimal."""
        return solve_cols(np.minimum(lb_e[col_e], base_ub), np.minimum(ub_e[col_e], base_ub))

    best_src: list = []  # (continuous point, its pattern) of the best candidate so far

    def late() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    def consider(xc: np.ndarray, on_e: np.ndarray, label: str) -> None:
        xd = _bump(model, enforce(model, xc), xc)
        obj = objective_of(model, xd)
        if obj < best.objective:
            best.x_da, best.objective, best.source = xd, obj, label
            best_src[:] = [xc, on_e]

    def try_pattern(r_src: np.ndarray, theta: float, tag: str) -> None:
        on_e = r_src >= theta * mins - 1e-7
        on_e = _hold_phases(model, exclusive(model, np.where(on_e, r_src + 1.0, 0.0)) > 0)
        slot = np.zeros(V, dtype=bool)
        np.logical_or.at(slot, model.ext_var, on_e)
        slot = _fill_pauses(model, slot)
        slot = fix_runs(model, apply_caps(model, slot, score))
        on_e = _pattern_ext(model, slot, on_e)
        key = np.packbits(on_e).tobytes()
        if key in seen:
            return
        seen.add(key)
        xr = lp_with(on_e, strict=True)
        how = "fixed-pattern LP"
        if xr is None:  # the pattern asks too much: relax, keep what reaches the minimum
            xr = lp_with(on_e, strict=False)
            if xr is None:
                return
            xd = enforce(model, xr)
            x2 = lp_with(xd > 0, strict=True)
            xr = xr if x2 is None else x2
            how = "relaxed, re-fixed pattern LP"
        consider(xr, on_e, f"{how} θ={theta}{tag}")
        if timed and how == "fixed-pattern LP" and not late():  # off free: may extend runs
            xf = lp_with(on_e, strict=True, free_off=True)
            if xf is not None:
                consider(xf, on_e, f"pattern LP, off periods free θ={theta}{tag}")

    def done() -> bool:
        return rel_gap(best.objective, best.bound) <= mip_rel_gap / 2

    for theta in ho.thetas:
        if late():
            break
        try_pattern(r, theta, "")
        if done():
            break
    if timed and not done():
        # Spread LPs: the LP with every current capped at a fraction α of its maximum has to
        # charge over more periods — longer runs, fewer bursts that the minimum run length
        # would remove; its patterns are then re-solved with the full maxima.
        for alpha in ho.spread_alphas:
            if late() or done():
                break
            h.changeColsBounds(nr, idx, base_lb, base_ub * alpha)
            rs = run(h)
            if rs.x is None or rs.status.value != "optimal":
                continue
            r_a = np.zeros(model.n_ext)
            r_a[has] = rs.x[model.ext_col[has]]
            for theta in ho.spread_thetas:
                if late() or done():
                    break
                try_pattern(r_a, theta, f", spread α={alpha}")
    if (
        ho.end_runs
        and timed
        and best.x_da is not None
        and model.min_run > 1
        and not late()
        and not done()
    ):
        # sessions left without energy: a run that ends at departure may be shorter than the
        # minimum (sessions wanting less than a full minimum run at the minimum current can
        # only charge there) — offer their last periods before departure, re-solve
        p = model.problem
        got = np.bincount(p.var_session[model.ext_var], best.x_da, minlength=p.n_sessions)
        empty = (got == 0) & (p.session_energy_kwh > 0)
        # their LP bursts, each lengthened forward to the minimum run (at the minimum current
        # at least, if the rows allow), or else their last periods before departure
        burst = np.zeros(V, dtype=bool)
        np.logical_or.at(burst, model.ext_var, r >= 0.25 * mins - 1e-7)
        burst &= empty[p.var_session]
        nxt = model.nxt
        ext = burst.copy()
        for _ in range(model.min_run - 1):
            ext[nxt[ext & (nxt >= 0)]] = True
        tail = _last_slots(model, model.min_run - 1) & empty[p.var_session]
        on_e = best.x_da > 0
        for add_v, strict_add in ((ext, True), (tail, True), (ext, False), (tail, False)):
            if late() or not add_v.any():
                continue
            add = add_v[model.ext_var] & ~model.ext_twin & (model.ext_col >= 0)
            lo_on = on_e | (add & strict_add)
            xf = lp_with_bounds(
                np.where(lo_on & (model.ext_min_da > 0), mins, 0.0),
                np.where(on_e | add, np.inf, 0.0),
            )
            if xf is not None:
                consider(xf, on_e | add, f"{best.source}, runs for sessions left empty")
                break
    if timed and best.x_da is not None:
        # grow runs: keep the runs of the best schedule (at least the minimum), let the periods
        # just before and after each run take current too, make it exact; repeat while better
        for _ in range(ho.grow_rounds):
            if late() or done():
                break
            prev = best.objective
            on_e = best.x_da > 0
            slot = slot_on_of(model, best.x_da)
            grow = _next_to_runs(model, slot)[model.ext_var] & ~model.ext_twin
            xf = lp_with_bounds(
                np.where(on_e & (model.ext_min_da > 0), mins, 0.0),
                np.where(on_e | grow, np.inf, 0.0),
            )
            if xf is None:
                break
            consider(
                xf, on_e, "grown runs" + ("" if "grown" in best.source else f" of {best.source}")
            )
            if best.objective >= prev - 1e-9 * max(abs(prev), 1.0):
                break
    if best_src and not done() and not late() and any(lv is not None for lv in model.levels_da):
        xc = _dive(model, best_src[0], best_src[1], lp_with_bounds, late, ho)
        consider(xc, best_src[1], f"{best.source}, level dive")
    return best


def _level_bracket(model: MilpModel, x_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ext variable: the allowed level at or below ``x_a`` and the next one above (A; 0 is
    a level; the top level where none is above), and a mask of the discrete ones."""
    sess = model.problem.var_session[model.ext_var]
    fl = x_a.copy()
    ce = x_a.copy()
    disc = np.zeros(model.n_ext, dtype=bool)
    for lv_da, in_g in model.groups:
        lv = np.r_[0.0, lv_da] / 10.0
        e = np.flatnonzero(in_g[sess])
        disc[e] = True
        k = np.searchsorted(lv, x_a[e] + 1e-7, "right") - 1  # lv[k] <= x
        fl[e] = lv[k]
        ce[e] = lv[np.minimum(k + 1, lv.size - 1)]
    return fl, ce, disc


def _dive(
    model: MilpModel,
    xc: np.ndarray,
    on_e: np.ndarray,
    lp_with_bounds: Callable[[np.ndarray, np.ndarray], np.ndarray | None],
    late: Callable[[], bool],
    ho: IncumbentOptions,
    free_off: bool = True,
) -> np.ndarray:
    """Level dive for discrete steps, from a fixed-pattern LP point ``xc`` (ext A).

    Each round: a current sitting on an allowed level keeps it as a lower bound (it may still
    rise); the fractional ones (``ho.dive_fix`` of them, lowest fraction first; all by default)
    are fixed at the level below; the LP is re-solved, so the capacity and energy they gave up
    moves to currents still free — other sessions in that period, the same session in other
    periods, periods the pattern had off (``free_off``) — which the next round rounds again.
    Bounds only ever fix values at or below the current LP point, so each LP stays feasible
    (if one is not, the dive stops); what is still fractional is rounded down by ``enforce``.
    Measured on 500 × 96 with 0/8/16/24/32 A: 40 % → 18 % from the LP bound, ~30 rounds."""
    E = model.n_ext
    lb = np.zeros(E)
    ub = np.where(on_e | free_off, np.inf, 0.0)
    fixed = np.zeros(E, dtype=bool)
    x = xc
    for _ in range(ho.dive_rounds):
        if late():
            break
        fl, ce, disc = _level_bracket(model, x)
        span = ce - fl
        frac = np.where(span > 0, (x - fl) / np.where(span > 0, span, 1.0), 0.0)
        free = disc & ~fixed & (x > 1e-7)
        on_lv = free & ((frac < 1e-6) | (frac > 1 - 1e-6))
        lvl = np.where(frac > 0.5, ce, fl)
        fr = np.flatnonzero(free & ~on_lv)
        if fr.size == 0:
            break
        down = (
            fr
            if ho.dive_fix >= 1
            else fr[np.argsort(frac[fr], kind="stable")][: max(1, math.ceil(ho.dive_fix * fr.size))]
        )
        lb[on_lv] = np.maximum(lb[on_lv], lvl[on_lv])  # kept at least, may still rise
        lb[down] = ub[down] = fl[down]
        fixed[down] = True
        x2 = lp_with_bounds(lb, ub)
        if x2 is None:
            break
        x = x2
    return x


def _last_slots(model: MilpModel, k: int) -> np.ndarray:
    """(V,) the last ``k`` plugged-in slots of every session."""
    prev = model.prev
    out = np.zeros(prev.size, dtype=bool)
    cur = np.flatnonzero(model.nxt < 0)
    for _ in range(k):
        out[cur] = True
        cur = prev[cur]
        cur = cur[cur >= 0]
    return out


def _next_to_runs(model: MilpModel, on: np.ndarray) -> np.ndarray:
    """(V,) slots that are off and directly before or after an on slot of the same session."""
    prev, nxt = model.prev, model.nxt
    before = (nxt >= 0) & on[np.maximum(nxt, 0)]
    after = (prev >= 0) & on[np.maximum(prev, 0)]
    return ~on & (before | after)


def _fill_pauses(model: MilpModel, on: np.ndarray) -> np.ndarray:
    """Turn interior pauses shorter than the minimum pause on (a pattern heuristic)."""
    if model.min_pause <= 1:
        return on
    seg = segments(on, model.prev, model.nxt)
    fill = ~seg.on & (seg.length < model.min_pause) & ~seg.at_start & ~seg.at_end
    return on | fill[seg.rid]


def _hold_phases(model: MilpModel, on_e: np.ndarray) -> np.ndarray:
    """Pattern: after a session's last allowed phase switch, keep its phase (move the slot to
    the 3-phase or 1-phase variable of the held phase instead of switching again)."""
    if model.q_cols is None:
        return on_e
    p = model.problem
    V = p.n_vars
    twin_of = np.full(V, -1)
    tw = np.flatnonzero(model.ext_twin)
    twin_of[model.ext_var[tw]] = tw
    one = np.zeros(V, dtype=bool)
    one[model.ext_var[tw[on_e[tw]]]] = True
    on = np.zeros(V, dtype=bool)
    np.logical_or.at(on, model.ext_var, on_e)
    v = np.flatnonzero(on & model.switchable[p.var_session])
    if v.size == 0:
        return on_e
    sess = p.var_session[v]
    new = np.r_[True, sess[1:] != sess[:-1]]
    ph = one[v]
    sw = ~new & np.r_[False, ph[1:] != ph[:-1]]
    grp = np.cumsum(new) - 1
    csum = np.cumsum(sw)
    count = csum - (csum - sw)[np.flatnonzero(new)][grp]
    allowed = count <= model.max_switches
    pos = np.where(allowed, np.arange(v.size), -1)
    held = ph[np.maximum.accumulate(pos)]
    ph = np.where(allowed, ph, held)
    on_e = on_e.copy()
    on_e[v] = ~ph
    on_e[twin_of[v][twin_of[v] >= 0]] = ph[twin_of[v] >= 0]
    return on_e


def _pattern_ext(model: MilpModel, slot: np.ndarray, on_e: np.ndarray) -> np.ndarray:
    """Ext pattern from a slot pattern: a slot newly on uses its 3-phase variable."""
    out = on_e & slot[model.ext_var]
    had = np.zeros(slot.size, dtype=bool)
    np.logical_or.at(had, model.ext_var, out)
    add = slot & ~had
    base = np.arange(slot.size)
    out[base[add]] = True
    return out & (model.ext_col >= 0)


def _next_values(model: MilpModel, x: np.ndarray, target_da: np.ndarray) -> np.ndarray:
    """Next value up per ext variable (deci-amps): the next allowed level for discrete steps,
    +0.1 A for continuous ones that the LP had higher (``target_da``); +inf where none."""
    sess = model.problem.var_session[model.ext_var]
    out = np.where((x > 0) & (target_da >= x + 1), x + 1, np.inf)
    for lv, in_g in model.groups:
        e = np.flatnonzero(in_g[sess])
        out[e] = np.inf
        e = e[x[e] > 0]
        if lv.size == 0 or e.size == 0:
            continue
        k = np.searchsorted(lv, x[e] + 1e-9, "right")
        ok = k < lv.size
        out[e[ok]] = lv[k[ok]]
    return out


def _bump(model: MilpModel, x: np.ndarray, target_a: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Give back what rounding down took, where every limit still has room.

    Rounding to the 0.1 A grid and down to discrete levels frees capacity (measured: ~0.6 % of
    the objective on 500 × 96). Each round proposes the next value up for every charging
    variable (next level, or +0.1 A towards the LP value); a variable is accepted with
    probability ``min(1, slack / demand)`` over its safety rows, proposals landing in a row that
    would overflow are dropped, and so are those that would exceed a session's energy. Seeded,
    vectorised; a round is kept only if the objective improves, and :func:`enforce` re-checks.
    """
    from ..safety import row_capacity_da

    p = model.problem
    sess = p.var_session[model.ext_var]
    target_da = np.ceil(np.maximum(target_a, 0.0) * 10 - 1e-6)
    ub_da = np.zeros(model.n_ext)
    has = model.ext_col >= 0
    ub_da[has] = np.floor(model.lp.col_ub[model.ext_col[has]] * 10 + 1e-6)
    kwh = p.var_kwh_per_a[model.ext_var] / np.where(model.ext_twin, 3.0, 1.0) / 10.0
    rng = np.random.default_rng(0)
    best_obj = objective_of(model, x)
    for _ in range(rounds):
        nxt = _next_values(model, x, target_da)
        cand = np.flatnonzero((nxt <= ub_da) & (x > 0))
        if cand.size == 0:
            break
        bump = np.zeros(model.n_ext)
        bump[cand] = nxt[cand] - x[cand]
        got = np.bincount(sess, kwh * x, minlength=p.n_sessions)
        add = np.bincount(sess, kwh * bump, minlength=p.n_sessions)
        bump[(got + add > p.session_energy_kwh * (1 - 1e-9))[sess]] = 0.0
        cur, _, pp = to_dense(model, x)
        G = pp.G.tocsr()
        xv = pp.gather(cur * 10)
        bv = np.zeros(p.n_vars)
        np.add.at(bv, model.ext_var, bump)  # one of the 3-phase/1-phase pair is on
        slack = row_capacity_da(pp) - G @ xv
        demand = G @ bv
        ratio = np.where(demand > 0, demand / np.maximum(slack, 1e-12), 0.0)
        R = G.copy()
        R.data = ratio[np.repeat(np.arange(G.shape[0]), np.diff(G.indptr))]
        # (a site without limits has no rows: nothing can overflow)
        worst = np.asarray(R.max(axis=0).todense()).ravel() if G.shape[0] else np.zeros(p.n_vars)
        keep_v = rng.random(p.n_vars) * np.maximum(worst, 1.0) < 1.0
        keep_v &= worst < np.inf
        bv = np.where(keep_v, bv, 0.0)
        over = np.flatnonzero(G @ bv > slack)
        if over.size:
            bv[np.unique(G[over].indices)] = 0.0
        if not bv.any():
            continue
        step = np.where(bv[model.ext_var] > 0, bump, 0.0)
        x2 = enforce(model, (x + step) / 10.0)
        obj = objective_of(model, x2)
        if obj < best_obj - 1e-12:
            x, best_obj = x2, obj
    return x
