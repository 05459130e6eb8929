"""The fast path's discharge policy (``loadopt.fast.storage``): batteries and V2G without an
optimiser — known cases, and a property test over random bidirectional sites (line-to-neutral
and phasor-wired) checked by the independent checkers of ``test_storage`` and
``test_storage_wiring`` (written from the raw objects)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.fast import allocate_horizon
from loadopt.safety import project_storage, soc_path
from loadopt.session import V2xParameters

from .conftest import examples
from .test_storage import T0, _independent_check, at, battery, bidirectional_sites, steps
from .test_storage_wiring import _no_current_limits, wired_bidirectional_sites, worst_lines

HZ = lo.Horizon(start=T0, step_s=1800, n_periods=8)  # 4 h in half hours


def _charge_only(p: lo.Problem):
    """The fast path's plan with storage idle (what it did before the policy)."""
    cur, dis, bat = project_storage(p, allocate_horizon(p), min_current=p.session_min_current)
    return lo.Schedule(p, cur, lo.ScheduleStatus.FEASIBLE, "fast", discharge=dis, battery_a=bat)


def _site(*, grid_a: float = 63.0, bidirectional: bool = False, **bat) -> lo.Site:
    return lo.Site(
        nodes=(lo.Node(id="grid", max_current=grid_a),),
        evses=(
            lo.Evse(
                id="e0",
                node="grid",
                charge_point_id="CP0",
                max_current=16.0,
                bidirectional=bidirectional,
            ),
            lo.Evse(id="e1", node="grid", charge_point_id="CP1", max_current=16.0),
        ),
        batteries=(battery(**bat),) if bat else (),
    )


def test_battery_charges_cheap_and_discharges_into_the_dear_import():
    site = _site(soc=0.5)
    cars = [
        lo.Session(id="a", evse="e0", arrival=T0, departure=at(4), energy_kwh=20.0),
        lo.Session(id="b", evse="e1", arrival=T0, departure=at(4), energy_kwh=20.0),
    ]
    # cheap first hour, dear second (the cars still charge then), cheap, dear
    sig = lo.Signals(import_price=steps((0, 0.1), (1, 0.5), (2, 0.1), (3, 0.4)))
    p = lo.compile_problem(site, cars, HZ, sig)
    s = lo.solve(p, method="fast")
    s.check()
    ref = _charge_only(p)
    bat = s.battery_a[0]
    assert (bat[:2] > 0).all() and (bat[2:4] < 0).all()  # charge at 0.1, give at 0.5
    assert s.kpis().delivered_kwh == pytest.approx(ref.kpis().delivered_kwh)
    assert s.kpis().energy_cost < ref.kpis().energy_cost - 1.0
    assert (
        _independent_check(
            site, cars, HZ, 0.0, 0.0, None, None, s.current, s.discharge, s.battery_a
        )
        == []
    )


def test_v2g_car_discharges_at_the_price_peak_and_still_departs_with_its_target():
    site = _site(bidirectional=True)
    v2x = V2xParameters(min_v2x_energy_kwh=-10.0, max_v2x_energy_kwh=30.0)
    cars = [
        lo.Session(id="v", evse="e0", arrival=T0, departure=at(4), energy_kwh=8.0, v2x=v2x),
        lo.Session(id="c", evse="e1", arrival=T0, departure=at(4), energy_kwh=40.0),
    ]
    sig = lo.Signals(import_price=steps((0, 0.1), (2, 0.6), (3, 0.1)))  # peak: periods 4 and 5
    p = lo.compile_problem(site, cars, HZ, sig)
    s = lo.solve(p, method="fast")
    s.check()
    assert (s.discharge[0, 4:6] > 0).all() and not s.discharge[0, :4].any()
    e = soc_path(p, s.current, s.discharge, s.battery_a)[0]
    assert e[-1] >= 8.0 - 1e-6  # the target kept
    assert e.min() >= -10.0 - 1e-9  # the V2X floor kept
    assert s.kpis().energy_cost < _charge_only(p).kpis().energy_cost


def test_dr_cap_is_met_by_battery_discharge_instead_of_curtailing_cars():
    site = _site(soc=0.9, capacity_kwh=60.0, max_discharge_kw=20.0)
    cars = [
        lo.Session(id="a", evse="e0", arrival=T0, departure=at(4), energy_kwh=40.0),
        lo.Session(id="b", evse="e1", arrival=T0, departure=at(4), energy_kwh=40.0),
    ]
    sig = lo.Signals(import_price=0.2, grid_import_limit_kw=12.0)
    p = lo.compile_problem(site, cars, HZ, sig)
    s = lo.solve(p, method="fast")
    s.check()
    ref = _charge_only(p)
    assert (s.battery_a[0] < 0).any()
    assert s.kpis().delivered_kwh > ref.kpis().delivered_kwh + 10.0
    # the contract holds net of the discharge, independently
    assert (
        _independent_check(
            site, cars, HZ, 0.0, 0.0, 12.0, None, s.current, s.discharge, s.battery_a
        )
        == []
    )


def test_plan_storage_without_storage_is_an_input_error():
    from loadopt.fast.storage import plan_storage

    site = _site()
    cars = [lo.Session(id="a", evse="e1", arrival=T0, departure=at(4), energy_kwh=5.0)]
    p = lo.compile_problem(site, cars, HZ, lo.Signals())
    with pytest.raises(lo.InputError, match="batteries or V2G"):
        plan_storage(p)


def test_the_solver_fallback_on_a_storage_problem_uses_the_policy():
    site = _site(soc=0.5)
    cars = [lo.Session(id="a", evse="e0", arrival=T0, departure=at(4), energy_kwh=20.0)]
    sig = lo.Signals(import_price=steps((0, 0.1), (1, 0.5), (2, 0.1), (3, 0.4)))
    p = lo.compile_problem(site, cars, HZ, sig)
    from loadopt.solve import _finish
    from loadopt.solvers.result import SolverResult, SolverStatus

    s = _finish(p, SolverResult(SolverStatus.ERROR, None, None, 0.0, "boom"), None, "lp", 0.0)
    assert s.method == "lp->fast"
    s.check()
    assert (s.battery_a[0] < 0).any()


def _v2g_targets_kept(p: lo.Problem, s: lo.Schedule) -> bool:
    """Every V2G car ends with at least min(target, what the charge-only plan gives it)."""
    st_ = p.storage
    if st_ is None:
        return True
    ref = _charge_only(p)
    e = soc_path(p, s.current, s.discharge, s.battery_a)[:, -1]
    e0 = soc_path(p, ref.current, ref.discharge, ref.battery_a)[:, -1]
    Us = st_.n_units - st_.n_batteries
    return bool((e[:Us] >= np.minimum(st_.unit_target_kwh[:Us], e0[:Us]) - 1e-6).all())


@settings(max_examples=examples(15), deadline=None)
@given(data=st.data(), case=bidirectional_sites())
def test_fast_policy_keeps_every_limit_and_target(data, case):
    site, sessions = case
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    base = data.draw(st.sampled_from([0.0, 5.0]))
    pv = data.draw(st.sampled_from([0.0, 3.0, 30.0]))
    grid = data.draw(st.sampled_from([None, 10.0, 30.0]))
    export = data.draw(st.sampled_from([None, 0.0, 8.0]))
    sig = lo.Signals(
        base_load_kw=base,
        pv_kw=pv,
        grid_import_limit_kw=grid,
        grid_export_limit_kw=export,
        import_price=steps((0, data.draw(st.sampled_from([0.1, -0.5]))), (1, 0.8)),
        export_price=data.draw(st.sampled_from([0.05, 0.3])),
    )
    p = lo.compile_problem(site, sessions, hz, sig)
    s = lo.solve(p, method="fast")
    s.check()
    S, B = len(sessions), len(site.batteries)
    dis = np.zeros((S, 8)) if s.discharge is None else s.discharge
    bat = np.zeros((B, 8)) if s.battery_a is None else s.battery_a
    bad = _independent_check(site, sessions, hz, base, pv, grid, export, s.current, dis, bat)
    assert bad == []
    assert _v2g_targets_kept(p, s)


@settings(max_examples=examples(10), deadline=None)
@given(data=st.data(), case=wired_bidirectional_sites())
def test_fast_policy_keeps_phasor_limits_both_ways(data, case):
    site, sessions = case
    T = 6
    hz = lo.Horizon(start=T0, step_s=900, n_periods=T)
    base = data.draw(st.sampled_from([0.0, 2.0]))
    pv = data.draw(st.sampled_from([0.0, 30.0]))
    sig = lo.Signals(
        base_load_kw=base,
        pv_kw=pv,
        import_price=steps((0, 0.1), (0.75, 0.8)),
        export_price=data.draw(st.sampled_from([0.05, 1.0])),
    )
    p = lo.compile_problem(site, sessions, hz, sig)
    s = lo.solve(p, method="fast")
    s.check()
    S, B = len(sessions), len(site.batteries)
    dis = np.zeros((S, T)) if s.discharge is None else s.discharge
    bat = np.zeros((B, T)) if s.battery_a is None else s.battery_a
    assert worst_lines(site, sessions, s.current, dis, bat, base, pv) == []
    plain = _no_current_limits(site)
    assert _independent_check(plain, sessions, hz, base, pv, None, None, s.current, dis, bat) == []
    assert _v2g_targets_kept(p, s)
