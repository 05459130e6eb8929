"""The repair: :func:`enforce` lowers any currents until every integer rule and every safety limit
holds (the guarantee behind every MILP schedule, see :mod:`loadopt.milp`)."""

from __future__ import annotations

import numpy as np

from ..safety import project
from .model import MilpModel, slot_on_of, to_dense
from .slots import segments


def _round_levels(model: MilpModel, x: np.ndarray) -> np.ndarray:
    """Round ext deci-amps down to an allowed value (0 below the minimum or the lowest level)."""
    x = np.where(x < model.ext_min_da, 0.0, x)
    sess = model.problem.var_session[model.ext_var]
    for lv, in_g in model.groups:  # one pass per distinct set of levels
        e = np.flatnonzero(in_g[sess] & (x > 0))
        if e.size == 0:
            continue
        if lv.size == 0:
            x[e] = 0.0
            continue
        k = np.searchsorted(lv, x[e] + 1e-9, "right") - 1
        x[e] = np.where(k >= 0, lv[np.maximum(k, 0)], 0.0)
    return x


def exclusive(model: MilpModel, x: np.ndarray) -> np.ndarray:
    """At most one of a variable and its 1-phase twin is on: keep the one with more power."""
    tw = np.flatnonzero(model.ext_twin)
    if tw.size:
        base = model.ext_var[tw]
        both = (x[tw] > 0) & (x[base] > 0)
        three_wins = 3.0 * x[base] >= x[tw]
        x[tw[both & three_wins]] = 0.0
        x[base[both & ~three_wins]] = 0.0
    return x


def apply_caps(model: MilpModel, on: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per capped node and period keep the ``K`` slots with the largest ``score`` on."""
    p = model.problem
    if not model.caps:
        return on
    anc = p.session_anc.tocsc()
    for node, K in model.caps:
        under = np.zeros(p.n_sessions, dtype=bool)
        under[anc[:, node].indices] = True
        v = np.flatnonzero(on & under[p.var_session])
        if v.size == 0:
            continue
        order = np.lexsort((-score[v], p.var_period[v]))
        v = v[order]
        per = p.var_period[v]
        first = np.searchsorted(per, per, "left")
        rank = np.arange(v.size) - first
        on[v[rank >= K]] = False
    return on


def fix_runs(model: MilpModel, on: np.ndarray) -> np.ndarray:
    """Switch slots off until every interior pause and every run meets its minimum length."""
    if model.min_run <= 1 and model.min_pause <= 1:
        return on
    prev, nxt = model.prev, model.nxt
    V = on.size
    for _ in range(V + 1):
        seg = segments(on, prev, nxt)
        kill = seg.on & (seg.length < model.min_run) & ~seg.at_end
        if kill.any():  # short runs first: removing one can lengthen a pause
            on = on & ~kill[seg.rid]
            continue
        short = np.flatnonzero(
            ~seg.on & (seg.length < model.min_pause) & ~seg.at_start & ~seg.at_end
        )
        if short.size == 0:
            return on
        # lengthen each short pause backwards: switch off the end of the run before it
        cur = seg.first[short]
        need = model.min_pause - seg.length[short]
        on = on.copy()
        for k in range(1, model.min_pause):
            cur = np.where(cur >= 0, prev[np.maximum(cur, 0)], -1)
            ok = (cur >= 0) & (need >= k)
            on[cur[ok]] = False
    return np.zeros(V, dtype=bool)


def _limit_switches(model: MilpModel, x: np.ndarray) -> np.ndarray:
    """Switch off every charging period after a session's ``max_phase_switches``-th switch."""
    if model.q_cols is None:
        return x
    p = model.problem
    V = p.n_vars
    tw = np.flatnonzero(model.ext_twin)
    one = np.zeros(V, dtype=bool)
    one[model.ext_var[tw[x[tw] > 0]]] = True
    on = slot_on_of(model, x)
    v = np.flatnonzero(on & model.switchable[p.var_session])  # sorted by session, period
    if v.size == 0:
        return x
    sess = p.var_session[v]
    new = np.r_[True, sess[1:] != sess[:-1]]
    sw = ~new & np.r_[False, one[v][1:] != one[v][:-1]]
    grp = np.cumsum(new) - 1
    csum = np.cumsum(sw)
    before = (csum - sw)[np.flatnonzero(new)][grp]  # switches before each session's first
    over = v[(csum - before) > model.max_switches]
    x = x.copy()
    x[np.isin(model.ext_var, over)] = 0.0
    return x


def enforce(model: MilpModel, x_a: np.ndarray, max_rounds: int = 12) -> np.ndarray:
    """Lower extended currents until every integer rule and every safety limit holds.

    Each step only lowers currents (rounds down to an allowed level, pauses sub-minimum currents,
    switches sessions off for caps and run lengths, projects with :func:`loadopt.safety.project`
    and its ``min_current``), so it always terminates; if the steps keep changing each other it
    returns all zeros, which satisfies everything.

    Parameters
    ----------
    model
        The MILP.
    x_a
        Extended currents (A).
    max_rounds
        Rounds of the steps before giving up (all zeros).

    Returns
    -------
    numpy.ndarray
        Extended currents (deci-amps), exact.
    """
    x = np.floor(np.nan_to_num(np.maximum(x_a, 0.0)) * 10 + 1e-6)
    x = np.where(model.ext_col >= 0, x, 0.0)
    p = model.problem
    for _ in range(max_rounds):
        x = _round_levels(model, x)
        x = _limit_switches(model, exclusive(model, x))
        on = slot_on_of(model, x)
        score = np.zeros(p.n_vars)
        np.maximum.at(score, model.ext_var, x)
        on2 = fix_runs(model, apply_caps(model, on.copy(), score))
        x = np.where(on2[model.ext_var], x, 0.0)
        cur, one, pp = to_dense(model, x)
        safe = np.rint(project(pp, cur, min_current=model.session_min) * 10)
        y = np.zeros_like(x)
        sv = pp.gather(safe)
        y[: p.n_vars] = np.where(one, 0.0, sv)
        tw = np.flatnonzero(model.ext_twin)
        if tw.size:
            base = model.ext_var[tw]
            y[tw] = np.where(one[base], sv[base], 0.0)
        if np.array_equal(y, x):
            return x
        x = y
    return np.zeros_like(x)
