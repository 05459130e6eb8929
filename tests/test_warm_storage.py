"""Warm start on storage problems: stable keys for the battery, discharge and energy-state
columns and the export / energy-state / target rows; same optimum as cold."""

from __future__ import annotations

import numpy as np
import pytest

import loadopt as lo
from loadopt.lp import build_lp
from loadopt.solvers.warm import WarmStart
from loadopt.synthetic import v2g_scenario


def _problem(sc, k: int, T: int = 16) -> lo.Problem:
    hz = sc.horizon
    h = lo.Horizon(start=hz.period_start(k), step_s=hz.step_s, n_periods=T)
    live = [s for s in sc.sessions if s.departure > h.start]
    return lo.compile_problem(sc.site, live, h, sc.signals, sc.objective)


def test_storage_keys_are_unique_and_stable_across_steps():
    sc, _ = v2g_scenario(6, n_periods=24)
    ws = WarmStart(min_rows=0)  # the warm start at any size (small LPs solve cold by default)
    p0, p1 = _problem(sc, 0), _problem(sc, 1)
    lp0, lp1 = build_lp(p0), build_lp(p1)
    assert lp0.integrality is None and p0.storage is not None
    c0, r0 = ws.keys(p0, lp0)
    c1, r1 = ws.keys(p1, lp1)
    for k in (c0, r0, c1, r1):
        assert np.unique(k).size == k.size  # one key, one column / row
    # a storage column of the same unit and absolute period has the same key one step later
    for name in ("bc", "d", "e"):
        shared = np.intersect1d(c0[lp0.cols[name].slice], c1[lp1.cols[name].slice])
        assert shared.size >= 0.8 * (lp0.cols[name].size - lp0.cols[name].size // 16)
    shared = np.intersect1d(r0[lp0.rows["energy_state"].slice], r1[lp1.rows["energy_state"].slice])
    assert shared.size > 0


@pytest.mark.parametrize("k", [1, 3])
def test_warm_storage_solve_reaches_the_cold_optimum(k):
    sc, _ = v2g_scenario(6, n_periods=24)
    ws = WarmStart(min_rows=0)  # the warm start at any size (small LPs solve cold by default)
    first = lo.solve(_problem(sc, 0), warm_start=ws)
    assert ws.mode in ("cold", "warm")
    p = _problem(sc, k)
    warm = lo.solve(p, warm_start=ws)
    assert warm.method == "lp-highs-warm"
    cold = lo.solve(p)
    warm.check()
    assert warm.objective == pytest.approx(cold.objective, rel=1e-7, abs=1e-7)
    del first
