"""Small cases with known optima: the LP does what a site operator would compute by hand."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

import loadopt as lo
from loadopt.options import LpOptions
from loadopt.solvers.result import SolverResult, SolverStatus

from .conftest import T0, horizon, one_breaker_site, session

KW_3PH_PER_A = 3 * 230 / 1000


def test_two_cars_behind_one_breaker_share_it():
    site = one_breaker_site(16.0)
    p = lo.compile_problem(site, [session("a", "e0", 100), session("b", "e1", 100)], horizon(4))
    s = lo.solve(p)
    assert s.status == lo.ScheduleStatus.OPTIMAL
    np.testing.assert_allclose(s.current.sum(axis=0), 16.0)  # breaker full every hour
    assert s.kpis().delivered_kwh == pytest.approx(16 * KW_3PH_PER_A * 4)
    # with fairness on, they share it equally
    fair = lo.compile_problem(
        site,
        [session("a", "e0", 100), session("b", "e1", 100)],
        horizon(4),
        objective=lo.Objective(fairness=1.0),
    )
    e = lo.solve(fair).energy_kwh
    assert e[0] == pytest.approx(e[1], abs=0.25)
    s.check()


def test_priority_decides_who_gets_a_scarce_breaker():
    site = one_breaker_site(16.0)
    p = lo.compile_problem(
        site, [session("low", "e0", 100), session("high", "e1", 100, priority=2.0)], horizon(4)
    )
    s = lo.solve(p)
    assert s.current[1].tolist() == [16.0] * 4
    assert s.current[0].sum() == 0


def test_the_car_leaving_first_is_served_first():
    site = one_breaker_site(16.0)
    need = 2 * 16 * KW_3PH_PER_A  # two hours of the whole breaker each
    p = lo.compile_problem(
        site,
        [session("stays", "e0", need, dep_h=8), session("leaves", "e1", need, dep_h=2)],
        horizon(8),
    )
    s = lo.solve(p)
    assert s.current[1, :2].tolist() == [16.0, 16.0]
    assert s.current[0, 2:4].tolist() == [16.0, 16.0]
    assert s.kpis().sessions_served == 2


def test_cheap_periods_are_used_first():
    site = one_breaker_site(32.0, n_evse=1)
    prices = tuple(
        lo.SeriesPoint(start=T0 + timedelta(hours=k), value=v)
        for k, v in enumerate([0.40, 0.40, 0.10, 0.12, 0.40, 0.40, 0.30, 0.40])
    )
    need = 2 * 32 * KW_3PH_PER_A  # two full hours at 32 A
    p = lo.compile_problem(
        site, [session("a", "e0", need)], horizon(8), lo.Signals(import_price=prices)
    )
    s = lo.solve(p)
    assert s.current[0].tolist() == [0, 0, 32, 32, 0, 0, 0, 0]
    assert s.kpis().energy_cost == pytest.approx(need / 2 * (0.10 + 0.12))


def test_single_phase_car_on_srt_evse_loads_only_site_phase_s():
    site = one_breaker_site(32.0, n_evse=1, rotations=("SRT",))
    p = lo.compile_problem(site, [session("a", "e0", 50, phases=1)], horizon(2))
    s = lo.solve(p)
    cb = p.node_ids.index("cb")
    r, s_, t = s.node_phase_current[cb]
    assert r.tolist() == [0, 0] and t.tolist() == [0, 0]
    assert s_.tolist() == [32, 32]
    assert p.session_phase_mask[0].tolist() == [False, True, False]


def test_phase_limits_let_single_phase_cars_fill_other_phases():
    """Three 1-phase cars on RST/STR/TRS EVSEs each get a whole 16 A phase of a 16 A breaker."""
    site = one_breaker_site(16.0, n_evse=3, rotations=("RST", "STR", "TRS"))
    p = lo.compile_problem(
        site, [session(f"s{k}", f"e{k}", 50, phases=1) for k in range(3)], horizon(2)
    )
    s = lo.solve(p)
    assert s.current.tolist() == [[16, 16]] * 3
    assert (s.node_phase_current[p.node_ids.index("cb")] == 16).all()


def test_demand_response_window_caps_import():
    site = one_breaker_site(64.0)
    ev = lo.DemandResponseEvent(
        id="dr1", start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=4), import_cap_kw=10.0
    )
    p = lo.compile_problem(
        site,
        [session("a", "e0", 200), session("b", "e1", 200)],
        horizon(6),
        lo.Signals(base_load_kw=3.0, demand_response=(ev,)),
    )
    s = lo.solve(p)
    imp = s.import_kw
    assert imp[2] <= 10.0 and imp[3] <= 10.0
    assert imp[2] == pytest.approx(10.0, abs=0.15)  # cars take what the cap leaves
    assert imp[0] == pytest.approx(3.0 + 64 * KW_3PH_PER_A, abs=1e-9)
    (dr,) = s.kpis().demand_response
    assert dr.compliant and dr.periods == 2 and dr.cap_kw == 10.0


def test_demand_response_reduction_below_explicit_baseline():
    site = one_breaker_site(64.0)
    ev = lo.DemandResponseEvent(
        id="dr", start=T0, end=T0 + timedelta(hours=1), reduction_kw=20.0, baseline_kw=30.0
    )
    p = lo.compile_problem(
        site,
        [session("a", "e0", 200), session("b", "e1", 200)],
        horizon(2),
        lo.Signals(demand_response=(ev,)),
    )
    s = lo.solve(p)
    assert s.import_kw[0] <= 10.0 + 1e-9
    assert s.import_kw[0] == pytest.approx(10.0, abs=0.15)


def test_demand_response_reduction_below_uncontrolled_baseline():
    """Without a baseline, the reduction is taken from what the site would import uncontrolled."""
    site = one_breaker_site(64.0)
    ev = lo.DemandResponseEvent(id="dr", start=T0, end=T0 + timedelta(hours=1), reduction_kw=8.0)
    p = lo.compile_problem(
        site,
        [session("a", "e0", 200), session("b", "e1", 200, dep_h=1)],
        horizon(2),
        lo.Signals(base_load_kw=2.0, demand_response=(ev,)),
    )
    uncontrolled = 2.0 + 2 * 32 * KW_3PH_PER_A  # both cars at 32 A, breaker allows 64 A
    assert p.dr_cap_kw[0, 0] == pytest.approx(uncontrolled - 8.0)
    assert np.isinf(p.dr_cap_kw[0, 1])
    s = lo.solve(p)
    assert s.import_kw[0] <= uncontrolled - 8.0 + 1e-9
    assert s.kpis().demand_response[0].compliant


def test_kw_limit_binds_with_mixed_phase_vehicles():
    site = lo.Site(
        nodes=(
            lo.Node(id="grid"),
            lo.Node(id="panel", parent="grid", max_current=32.0, max_power_kw=10.0),
        ),
        evses=(
            lo.Evse(id="e0", node="panel", charge_point_id="A", max_current=16),
            lo.Evse(
                id="e1", node="panel", charge_point_id="B", max_current=16, phase_rotation="STR"
            ),
        ),
    )
    p = lo.compile_problem(
        site, [session("three", "e0", 100), session("one", "e1", 100, phases=1)], horizon(2)
    )
    s = lo.solve(p)
    kw = s.node_power_kw[p.node_ids.index("panel")]
    assert (kw <= 10.0).all()
    assert kw == pytest.approx([10.0, 10.0], abs=0.1 * KW_3PH_PER_A)
    # every kW is worth the same energy to either car: the 10 kW are used in full
    assert s.energy_kwh.sum() == pytest.approx(20.0, abs=0.1 * KW_3PH_PER_A * 2)


def test_time_varying_limit_takes_the_minimum_within_a_period():
    series = (
        lo.CurrentPoint(start=T0 + timedelta(minutes=90), value=(10.0, 20.0, 20.0)),
        lo.CurrentPoint(start=T0 + timedelta(minutes=150), value=32.0),
    )
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=32.0, current_series=series),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="A"),),
    )
    s = lo.solve(lo.compile_problem(site, [session("a", "e0", 200)], horizon(4)))
    assert s.current[0].tolist() == [32.0, 10.0, 10.0, 32.0]


def test_session_partly_inside_the_horizon():
    site = one_breaker_site(32.0, n_evse=1)
    # arrived before the horizon, leaves after 90 minutes
    sess = lo.Session(
        id="a",
        evse="e0",
        arrival=T0 - timedelta(hours=3),
        departure=T0 + timedelta(minutes=90),
        energy_kwh=100,
    )
    p = lo.compile_problem(site, [sess], horizon(4))
    s = lo.solve(p)
    assert s.current[0].tolist() == [32.0, 32.0, 0.0, 0.0]
    assert s.energy_kwh[0] == pytest.approx(32 * KW_3PH_PER_A * 1.5)


def test_energy_is_not_overdelivered_and_early_is_preferred():
    site = one_breaker_site(32.0, n_evse=1)
    p = lo.compile_problem(site, [session("a", "e0", 10.0)], horizon(8))
    s = lo.solve(p)
    assert s.energy_kwh[0] <= 10.0 + 1e-9
    assert s.energy_kwh[0] == pytest.approx(10.0, abs=0.1 * KW_3PH_PER_A)
    # 10 kWh fit into the first hour at 14.4 A: nothing is left for later hours
    assert s.current[0, 0] == pytest.approx(10.0 / KW_3PH_PER_A, abs=0.1)
    assert (s.current[0, 1:] == 0).all()


def test_base_load_alone_over_grid_limit_is_reported_not_hidden():
    site = one_breaker_site(32.0)
    base = (
        lo.SeriesPoint(start=T0, value=5.0),
        lo.SeriesPoint(start=T0 + timedelta(hours=1), value=25.0),
        lo.SeriesPoint(start=T0 + timedelta(hours=2), value=5.0),
    )
    p = lo.compile_problem(
        site,
        [session("a", "e0", 100)],
        horizon(3),
        lo.Signals(base_load_kw=base, grid_import_limit_kw=20.0),
    )
    assert any("base load" in n and "grid import" in n for n in p.notices)
    s = lo.solve(p)
    assert s.notices == p.notices
    assert s.current[0, 1] == 0.0
    assert s.current[0, 0] > 0
    s.check()


def test_base_load_loads_its_node_and_everything_above_only():
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=50.0),
            lo.Node(id="trafo", parent="grid"),
            lo.Node(id="office", parent="trafo", max_current=40.0),
            lo.Node(id="cb", parent="trafo", max_current=32.0),
        ),
        evses=(lo.Evse(id="e0", node="cb", charge_point_id="A"),),
        base_load_node="office",
    )
    base_kw = 20 * 3 * 230 / 1000  # 20 A per phase
    p = lo.compile_problem(
        site, [session("a", "e0", 500)], horizon(2), lo.Signals(base_load_kw=base_kw)
    )
    assert p.node_carries_base.tolist() == [True, True, True, False]
    s = lo.solve(p)
    assert s.current[0].tolist() == [30.0, 30.0]  # grid: 50 A − 20 A of office load
    npc = s.node_phase_current
    assert npc[p.node_ids.index("office")] == pytest.approx(20.0)
    assert npc[p.node_ids.index("grid")] == pytest.approx(50.0)
    assert npc[p.node_ids.index("cb")] == pytest.approx(30.0)
    with pytest.raises(ValueError, match="base_load_node 'nowhere'"):
        lo.Site(nodes=(lo.Node(id="g"),), base_load_node="nowhere")


def test_demand_charge_flattens_the_peak():
    site = one_breaker_site(32.0, n_evse=1)
    need = 2 * 32 * KW_3PH_PER_A
    flat = lo.compile_problem(
        site,
        [session("a", "e0", need)],
        horizon(4),
        objective=lo.Objective(demand_charge_per_kw=1.0, charge_early_per_kwh_h=0.0),
    )
    s = lo.solve(flat)
    assert s.kpis().peak_import_kw == pytest.approx(need / 4, abs=0.1)


def test_pv_lowers_import_and_export_is_bounded():
    site = one_breaker_site(32.0, n_evse=1)
    p = lo.compile_problem(
        site,
        [session("a", "e0", 5.0)],
        horizon(2),
        lo.Signals(import_price=0.3, export_price=0.05, pv_kw=10.0),
    )
    s = lo.solve(p)
    assert s.import_kw.min() >= -10.0
    assert s.kpis().energy_cost < 0  # surplus PV is sold


def test_no_sessions_and_empty_site():
    site = one_breaker_site(16.0)
    s = lo.solve(lo.compile_problem(site, [], horizon(3)))
    assert s.current.shape == (0, 3)
    assert s.kpis().sessions_served == 0
    s.check()


def test_solver_failure_falls_back_to_a_safe_schedule(monkeypatch):
    import loadopt.solvers.highs as hs

    def broken(*a, **k):
        return SolverResult(SolverStatus.ERROR, None, None, 0.0, "boom")

    monkeypatch.setattr(hs, "solve_lp", broken)
    site = one_breaker_site(16.0)
    p = lo.compile_problem(site, [session("a", "e0", 100), session("b", "e1", 100)], horizon(3))
    s = lo.solve(p)
    assert s.status == lo.ScheduleStatus.SOLVER_FAILED_FALLBACK
    assert "boom" in s.message
    s.check()
    assert s.current.sum(axis=0).max() <= 16.0


def test_a_failing_fast_path_after_a_failing_solver_hands_out_zero(monkeypatch):
    import loadopt.fast
    import loadopt.solvers.highs as hs

    monkeypatch.setattr(
        hs, "solve_lp", lambda *a, **k: SolverResult(SolverStatus.OPTIMAL, np.zeros(1000), 0.0, 0.0)
    )  # wrong length: unusable

    def boom(*a, **k):
        raise RuntimeError("kernel crashed")

    monkeypatch.setattr(loadopt.fast, "allocate_horizon", boom)
    p = lo.compile_problem(one_breaker_site(16.0), [session("a", "e0", 100)], horizon(3))
    s = lo.solve(p, LpOptions(separable=False))  # (one car: otherwise solved by sorting)
    assert s.status == lo.ScheduleStatus.SOLVER_FAILED_FALLBACK
    assert "kernel crashed" in s.message and (s.current == 0).all()


def test_time_limit_falls_back_safely():
    from loadopt.synthetic import make_sessions, make_site

    site = make_site(200, seed=1)
    h = lo.Horizon(start=T0.replace(hour=0), step_s=900, n_periods=96)
    p = lo.compile_problem(site, make_sessions(site, h, seed=1), h)
    s = lo.solve(p, time_limit_s=1e-6)
    assert s.status in (lo.ScheduleStatus.TIME_LIMIT_FALLBACK, lo.ScheduleStatus.FEASIBLE)
    assert s.violations() == []


def test_milp_on_pulp_is_refused_not_silently_run_on_highs():
    p = lo.compile_problem(one_breaker_site(16.0), [session("a", "e0", 10)], horizon(2))
    with pytest.raises(ValueError, match="HiGHS only"):
        lo.solve(p, method="milp", backend="pulp")


def test_pulp_backend_reaches_the_same_objective():
    pytest.importorskip("pulp")
    from loadopt.synthetic import demo_scenario

    sc = demo_scenario(n_evse=12)
    for obj in (lo.Objective(), lo.Objective(fairness=2.0, demand_charge_per_kw=0.2)):
        p = sc.model_copy(update={"objective": obj}).compile()
        a = lo.solve(p, backend="highs")
        b = lo.solve(p, backend="pulp")
        assert b.status == lo.ScheduleStatus.OPTIMAL
        assert b.objective == pytest.approx(a.objective, rel=1e-6, abs=1e-6)
        b.check()
