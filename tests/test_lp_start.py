"""The relaxed start (issue 16): a valid basis, the greedy optimum of the LP without its safety
rows, and a solve from it ends at the optimum of the straightforward model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import loadopt as lo
from loadopt.lp import build_lp, relaxed_start
from loadopt.solvers import highs as hs

from .conftest import examples
from .test_lp import _plain
from .test_safety_properties import scenarios

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference import straightforward_lp


def _without_safety_rows(lp):
    """``lp`` with every safety row made free (HiGHS then ignores it)."""
    import dataclasses

    ub = lp.row_ub.copy()
    ub[lp.rows["safety"].slice] = np.inf
    return dataclasses.replace(lp, row_ub=ub)


def _status(st):
    col = np.where(st.col_upper, hs.BASIS_UPPER, hs.BASIS_LOWER).astype(np.int8)
    col[st.col_basic] = hs.BASIS_BASIC
    row = np.where(st.row_basic, hs.BASIS_BASIC, hs.BASIS_UPPER).astype(np.int8)
    return col, row


@settings(max_examples=examples(60))
@given(scenarios())
def test_solving_from_the_relaxed_start_reaches_the_unreduced_optimum(p):
    p = _plain(p)
    ref = straightforward_lp(p)
    lp = build_lp(p)
    if ref.n_cols == 0 or lp.n_cols == 0:
        return
    a = hs.solve_lp(ref)
    assert a.status.value == "optimal"
    st = relaxed_start(lp)
    if lp.integrality is not None:  # one meter's binary (export pays more): a MIP, no basis
        assert st is None
        return
    assert st is not None  # the plain LP always has one
    # one basic entry per row, and HiGHS takes it as it is (no repair: alien=False)
    assert st.col_basic.sum() + st.row_basic.sum() == lp.n_rows
    h = hs.new_highs(hs.LP_OPTIONS)
    hs.pass_lp(h, lp)
    assert hs.set_basis(h, *_status(st))
    forced = hs.relaxed_basis(lp, max_overload=np.inf, min_cols=0)
    assert forced is not None
    np.testing.assert_array_equal(forced[0], _status(st)[0])
    np.testing.assert_array_equal(forced[1], _status(st)[1])
    b = hs.run(h)
    assert b.status.value == "optimal"
    assert b.objective == pytest.approx(a.objective, rel=1e-7, abs=1e-5)
    # the library path (with the rule: from this start or HiGHS' own) ends at the same optimum
    c = hs.solve_lp(lp, options=hs.LP_OPTIONS, start=True)
    assert c.objective == pytest.approx(a.objective, rel=1e-7, abs=1e-5)
    # the relaxed point is within its bounds and meets every energy row exactly
    assert (st.x >= lp.col_lb - 1e-9).all() and (st.x <= lp.col_ub + 1e-9).all()
    e = lp.rows["energy"]
    np.testing.assert_allclose((lp.A @ st.x)[e.slice], lp.row_ub[e.slice], rtol=1e-9, atol=1e-9)


@settings(max_examples=examples(60))
@given(scenarios())
def test_relaxed_point_is_the_optimum_without_safety_rows(p):
    """Where nothing couples the sessions (no import balance, no peak) the greedy point is the
    LP's optimum once the safety rows are dropped (checked by HiGHS on that LP)."""
    # no PV: the import is substituted in every period (no balance rows); no demand charge; a
    # strong preference for early energy and a third of each request, so the order matters
    sessions = tuple(s.model_copy(update={"energy_kwh": s.energy_kwh / 3}) for s in p.sessions)
    signals = p.signals.model_copy(update={"pv_kw": 0.0})
    # a low penalty: late kWh can cost more than unmet ones
    obj = lo.Objective(charge_early_per_kwh_h=1.0, unmet_energy_per_kwh=1.0)
    p = lo.compile_problem(p.site, sessions, p.horizon, signals, obj)
    lp = build_lp(p)
    if lp.n_cols == 0:
        return
    assert all(lp.rows[k].size == 0 for k in ("balance", "peak") if k in lp.rows)
    st = relaxed_start(lp)
    assert st is not None
    relaxed = hs.solve_lp(_without_safety_rows(lp), options=hs.LP_OPTIONS)
    assert relaxed.status.value == "optimal"
    assert float(lp.c @ st.x) + lp.offset == pytest.approx(relaxed.objective, rel=1e-9, abs=1e-7)
    # the overload is what the relaxed point exceeds, in sum over the rows it exceeds
    s = lp.rows["safety"]
    excess = (lp.A @ st.x)[s.slice] - lp.row_ub[s.slice]
    over = excess > 1e-9 * np.maximum(1.0, np.abs(lp.row_ub[s.slice]))
    limit = np.abs(lp.row_ub[s.slice][over]).sum()
    want = excess[over].sum() / max(limit, 1e-12) if over.any() else 0.0
    assert st.overload == pytest.approx(want)


def test_no_relaxed_start_where_it_does_not_apply():
    from loadopt.synthetic import demo_scenario, v2g_scenario

    sc = demo_scenario(n_evse=8)
    p = sc.compile()
    assert relaxed_start(build_lp(p)) is not None
    assert relaxed_start(build_lp(p, unmet_slack=False)) is None  # no unmet slack column
    fair = sc.model_copy(update={"objective": lo.Objective(fairness=1.0)}).compile()
    assert relaxed_start(build_lp(fair)) is None  # fairness rows: not the plain form
    assert relaxed_start(build_lp(v2g_scenario(6)[0].compile())) is None  # storage columns


def test_the_rule_keeps_highs_own_start_when_the_relaxed_point_overloads_far():
    """Sessions wanting all their window allows behind a tight feeder: the relaxed point
    overloads the feeder rows far past the rule's bound, and solve_lp starts as HiGHS would."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=400.0),
            lo.Node(id="f", parent="grid", max_current=40.0),
        ),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="f", charge_point_id=f"CP{k}", phases=3, max_current=32.0)
            for k in range(6)
        ),
    )
    hz = lo.Horizon(start=t0, step_s=900, n_periods=8)
    sessions = tuple(
        lo.Session(
            id=f"s{k}", evse=f"e{k}", arrival=t0, departure=t0 + timedelta(hours=2), energy_kwh=40.0
        )
        for k in range(6)
    )
    lp = build_lp(lo.compile_problem(site, sessions, hz))
    st = relaxed_start(lp)
    assert st is not None and st.overload > hs.START_MAX_OVERLOAD
    assert hs.relaxed_basis(lp, min_cols=0) is None
    # a site with room for everyone: nothing overloaded, the relaxed start is taken
    roomy = site.model_copy(
        update={"nodes": (site.nodes[0], site.nodes[1].model_copy(update={"max_current": 400.0}))}
    )
    lp2 = build_lp(lo.compile_problem(roomy, sessions, hz))
    assert relaxed_start(lp2).overload == 0.0 and hs.relaxed_basis(lp2, min_cols=0) is not None
    # but a small LP is solved from HiGHS' own start (the relaxed one does not pay there)
    assert lp2.n_cols < hs.START_MIN_COLS and hs.relaxed_basis(lp2) is None


def test_solve_from_the_relaxed_start_on_a_congested_site_has_the_reference_optimum():
    """A site large enough for the rule (≥ START_MIN_COLS columns, feeders congested): solve()
    starts from the relaxed basis and reaches the straightforward model's optimum, safely."""
    from loadopt.synthetic import benchmark_scenario

    p = benchmark_scenario(80, seed=3).compile()
    lp = build_lp(p)
    assert lp.n_cols >= hs.START_MIN_COLS and hs.relaxed_basis(lp) is not None
    assert relaxed_start(lp).overload > 0  # the relaxed point does overload some rows
    ref = hs.solve_lp(straightforward_lp(p))
    sched = lo.solve(p)
    assert sched.status == lo.ScheduleStatus.OPTIMAL and not sched.violations(limit=1)
    assert sched.objective == pytest.approx(ref.objective, rel=1e-7, abs=1e-5)
