"""Controller: interface, errors, bookkeeping, re-sharing, warm start, safety under any input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadopt import InputError, Session, Signals
from loadopt.controller import Controller
from loadopt.synthetic import make_site

from .conftest import examples
from .physics import physical_violations

T0 = datetime(2026, 6, 10, 8, tzinfo=UTC)


def _site(n=6, grid_a=40.0):
    return make_site(
        n,
        evses_per_circuit=2,
        circuit_a=32.0,
        feeder_a=63.0,
        grid_a=grid_a,
        transformer_kw=200.0,
        share_single_phase_evse=0.0,
        seed=1,
    )


def _sess(i, evse, hours=8.0, kwh=20.0, arrival=T0, **kw):
    return Session(
        id=f"s{i}",
        evse=evse,
        arrival=arrival,
        departure=arrival + timedelta(hours=hours),
        energy_kwh=kwh,
        **kw,
    )


def test_interface_and_errors():
    site = _site()
    c = Controller(site, step_s=900, n_periods=8)
    c.start_session(_sess(1, "evse0"))
    assert set(c.sessions) == {"s1"}
    with pytest.raises(InputError, match="already active"):
        c.start_session(_sess(1, "evse1"))
    with pytest.raises(InputError, match="busy"):
        c.start_session(_sess(2, "evse0"))
    with pytest.raises(InputError, match="unknown EVSE"):
        c.start_session(_sess(3, "nope"))
    with pytest.raises(InputError, match="unknown session"):
        c.meter("zz", T0, energy_kwh=1.0)
    for bad in (float("nan"), -1.0):
        with pytest.raises(InputError, match="s1"):
            c.meter("s1", T0, energy_kwh=bad)
        with pytest.raises(InputError, match="s1"):
            c.meter("s1", T0, current_a=(1.0, bad, 1.0))
    with pytest.raises(InputError, match="unknown session"):
        c.stop_session("zz", T0)
    with pytest.raises(InputError, match="timezone"):
        c.step(T0.replace(tzinfo=None))
    sched = c.step(T0)
    assert sched.problem.horizon.start == T0 and sched.problem.n_periods == 8
    assert sched.violations() == []
    assert physical_violations(sched.problem, sched.current, sched.n_phases) == []
    c.stop_session("s1", T0 + timedelta(minutes=5))
    c.start_session(_sess(2, "evse0"))  # the EVSE is free again


def test_meter_reduces_energy_wanted():
    c = Controller(_site(), step_s=900, n_periods=8)
    c.start_session(_sess(1, "evse0", kwh=20.0))
    c.step(T0)
    c.meter("s1", T0 + timedelta(minutes=15), energy_kwh=15.0)
    planned = c.planned_sessions(T0 + timedelta(minutes=15))
    assert planned[0].energy_kwh == pytest.approx(5.0)
    sched = c.step(T0 + timedelta(minutes=15))
    assert sched.energy_kwh[0] <= 5.0 + 1e-6


def test_overstay_extends_departure():
    c = Controller(_site(), step_s=900, n_periods=8)
    c.start_session(_sess(1, "evse0", hours=0.5, kwh=50.0))
    late = T0 + timedelta(hours=1)
    sched = c.step(late)
    assert sched.current[0, 0] > 0  # still plugged in: it may charge
    assert c.planned_sessions(late)[0].departure > late


def test_resharing_lowers_then_recovers():
    site = _site(grid_a=40.0)
    c = Controller(site, step_s=900, n_periods=4)
    c.start_session(_sess(1, "evse0", kwh=60.0))
    c.start_session(_sess(2, "evse2", kwh=60.0))
    s0 = c.step(T0)
    a0 = s0.current[:, 0].copy()
    assert a0.sum() == pytest.approx(40.0, abs=0.2)
    t1 = T0 + timedelta(minutes=15)
    c.meter("s1", t1, current_a=5.0)  # s1 draws far below its limit
    c.meter("s2", t1, current_a=float(a0[1]))
    s1 = c.step(t1)
    i1, i2 = s1.problem.session_index("s1"), s1.problem.session_index("s2")
    assert s1.current[i1, 0] <= 7.0 + 1e-9  # measured + 2 A headroom
    assert s1.current[i2, 0] > a0[1]  # the rest went to the other car
    assert s1.violations() == []
    assert physical_violations(s1.problem, s1.current, s1.n_phases) == []
    t2 = t1 + timedelta(minutes=15)
    c.meter("s1", t2, current_a=float(s1.current[i1, 0]))  # draws all it gets again
    c.meter("s2", t2, current_a=float(s1.current[i2, 0]))
    s2 = c.step(t2)
    assert s2.current[s2.problem.session_index("s1"), 0] > 7.0  # cap lifted


def _drive(c, sc, now):
    """Start the scenario's sessions that have arrived and stop those that have left."""
    for s in sc.sessions:
        if s.id in c.sessions and s.departure <= now:
            c.stop_session(s.id, now)
        elif s.id not in c.sessions and s.arrival <= now < s.departure and s.id not in c._seen:
            c.start_session(s)
            c._seen.add(s.id)


def test_warm_equals_cold_over_a_day_with_arrivals_departures_and_a_cut():
    """Every warm step reaches the objective of a cold solve of the same problem (1e-6 rel),
    through arrivals, departures and a grid-limit cut over the whole horizon (solved cold)."""
    import loadopt as lo
    from loadopt.synthetic import benchmark_scenario

    sc = benchmark_scenario(30)
    c = Controller(
        sc.site,
        signals=sc.signals,
        objective=sc.objective,
        step_s=1800,
        n_periods=16,
        warm_min_rows=0,  # the warm start at every size (by default small LPs solve cold)
    )
    c._seen = set()
    now0 = sc.horizon.start.replace(hour=6)
    n_changes = 0
    cut_k = 14
    for k in range(28):
        now = now0 + timedelta(minutes=30 * k)
        before = set(c.sessions)
        _drive(c, sc, now)
        n_changes += before != set(c.sessions)
        if k == cut_k:
            c.set_signals(sc.signals.model_copy(update={"grid_import_limit_kw": 15.0}))
        sched = c.step(now)
        assert sched.violations() == []
        assert physical_violations(sched.problem, sched.current, sched.n_phases) == []
        rec = c.log[-1]
        if sched.problem.n_vars and rec.mode != "empty":
            cold = lo.solve(sched.problem)
            assert sched.status == cold.status
            assert sched.objective == pytest.approx(cold.objective, rel=1e-6, abs=1e-6)
        if k == cut_k:
            assert rec.mode == "cold" and "limit dropped" in rec.reason
            assert float(sched.import_kw.max()) <= 15.0 + 1e-6
    modes = [r.mode for r in c.log]
    assert n_changes >= 5  # sessions arrived and left along the day
    assert modes[0] == "cold" and modes.count("warm") >= 20
    assert all(r.reason for r in c.log)
    assert any("previous basis mapped" in r.reason for r in c.log)


def test_mapped_basis_is_consistent():
    """The starting basis handed to HiGHS has exactly one basic entry per row, also after
    sessions arrived and left."""
    from loadopt.compile import compile_problem
    from loadopt.lp import build_lp
    from loadopt.synthetic import benchmark_scenario

    sc = benchmark_scenario(30)
    # map whatever maps, even in the morning rush (hard repairs)
    c = Controller(
        sc.site,
        signals=sc.signals,
        objective=sc.objective,
        n_periods=24,
        warm_min_mapped=0.0,
        warm_min_rows=0,
    )
    c._seen = set()
    now = sc.horizon.start.replace(hour=8)
    checked = 0
    for _ in range(6):
        _drive(c, sc, now)
        ws = c.planner.warm_start
        if ws.memo is not None:
            p = compile_problem(
                c.site, c.planned_sessions(now), c.horizon(now), c.signals, c.objective
            )
            lp = build_lp(p)
            start, info = ws.mapped_basis(lp, ws.keys(p, lp))
            assert start is not None, info
            col, row = start
            assert col.shape == (lp.n_cols,) and row.shape == (lp.n_rows,)
            assert int((col == 1).sum() + (row == 1).sum()) == lp.n_rows
            assert not np.any((row == 0) & ~np.isfinite(lp.row_lb))  # at a finite bound
            assert not np.any((col == 2) & ~np.isfinite(lp.col_ub))
            checked += 1
        c.step(now)
        now += timedelta(minutes=45)
    assert checked == 5


def test_warm_off_solves_cold():
    from loadopt.synthetic import benchmark_scenario

    sc = benchmark_scenario(10)
    c = Controller(sc.site, signals=sc.signals, n_periods=8, warm=False)
    c._seen = set()
    now = sc.horizon.start.replace(hour=10)
    for k in range(2):
        _drive(c, sc, now + timedelta(minutes=15 * k))
        c.step(now + timedelta(minutes=15 * k))
    assert [r.mode for r in c.log] == ["cold", "cold"]
    assert "warm start off" in c.log[-1].reason


def test_solver_failure_falls_back(monkeypatch):
    import loadopt.solvers.highs as hs
    import loadopt.solvers.separable as sep
    from loadopt.options import LpOptions

    # HiGHS itself (the one-car problem is separable: solved by sorting unless told otherwise)
    c = Controller(_site(), step_s=900, n_periods=4, planner=LpOptions(separable=False))
    c.start_session(_sess(1, "evse0"))

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(hs, "pass_lp", boom)
    sched = c.step(T0)
    assert sched.status.value == "solver_failed_fallback"
    # the sorting shortcut failing: HiGHS takes over (and fails here too: the fast path)
    c2 = Controller(_site(), step_s=900, n_periods=4)
    c2.start_session(_sess(1, "evse0"))
    monkeypatch.setattr(sep, "solve_separable", boom)
    s2 = c2.step(T0)
    assert s2.status.value == "solver_failed_fallback" and s2.violations() == []
    assert sched.violations() == []
    assert physical_violations(sched.problem, sched.current, sched.n_phases) == []


@settings(max_examples=examples(25))
@given(
    grid_a=st.floats(0.0, 100.0),
    cap_kw=st.one_of(st.none(), st.floats(0.0, 50.0)),
    meters=st.lists(st.tuples(st.floats(0.0, 40.0), st.floats(0.0, 40.0)), min_size=3, max_size=3),
    warm=st.booleans(),
)
def test_never_exceeds_limits(grid_a, cap_kw, meters, warm):
    site = _site(n=4, grid_a=grid_a)
    c = Controller(
        site, step_s=900, n_periods=6, signals=Signals(grid_import_limit_kw=cap_kw), warm=warm
    )
    c.start_session(_sess(1, "evse0", kwh=30.0))
    c.start_session(_sess(2, "evse1", kwh=30.0, phases=1))
    c.start_session(_sess(3, "evse3", kwh=5.0))
    for k, (e, a) in enumerate(meters):
        t = T0 + timedelta(minutes=15 * k)
        if k == 1:  # a vehicle leaves, another arrives: the warm start maps what stays
            c.stop_session("s3", t)
            c.start_session(_sess(4, "evse2", kwh=25.0, arrival=t))
        c.meter("s1", t, energy_kwh=e, current_a=a)
        if k == 0:
            c.meter("s3", t, current_a=(a, 0.0, a))
        sched = c.step(t)
        assert sched.violations() == []
        assert physical_violations(sched.problem, sched.current, sched.n_phases) == []
        assert np.all(sched.current >= 0)


def test_expected_vehicle_keeps_capacity_and_gets_no_limit_before_it_plugs_in():
    """One 32 A circuit, two EVSEs. A car here now could defer to a cheap hour; a bus expected
    at that hour makes the plan charge the first car now instead."""
    from loadopt import SeriesPoint

    site = make_site(
        2,
        evses_per_circuit=2,
        circuit_a=32.0,
        feeder_a=63.0,
        grid_a=63.0,
        transformer_kw=200.0,
        share_single_phase_evse=0.0,
        seed=1,
    )
    price = Signals(
        import_price=(
            SeriesPoint(start=T0, value=0.4),
            SeriesPoint(start=T0 + timedelta(hours=2), value=0.1),
        )
    )
    need = 2 * 32 * 0.69  # two hours of the whole circuit
    plain = Controller(site, step_s=3600, n_periods=4, signals=price)
    plain.start_session(_sess(1, "evse0", hours=4, kwh=need))
    assert plain.step(T0).current[0, :2].tolist() == [0.0, 0.0]  # waits for the cheap hours

    told = Controller(site, step_s=3600, n_periods=4, signals=price)
    told.start_session(_sess(1, "evse0", hours=4, kwh=need))
    told.expect_session(_sess(2, "evse1", hours=2, kwh=need, arrival=T0 + timedelta(hours=2)))
    s = told.step(T0)
    assert s.problem.session_ids == ("s1", "s2")
    assert s.current[0, :2].tolist() == [32.0, 32.0]  # charges now: the cheap hours are taken
    assert s.current[1, :2].tolist() == [0.0, 0.0]  # nothing before it arrives
    assert s.violations() == []
    assert physical_violations(s.problem, s.current, s.n_phases) == []
    # it plugs in: the started session replaces the expectation
    told.start_session(_sess(2, "evse1", hours=2, kwh=need, arrival=T0 + timedelta(hours=2)))
    assert told.expected == {} and set(told.sessions) == {"s1", "s2"}


def test_expected_vehicle_errors_and_expiry():
    c = Controller(_site(), step_s=900, n_periods=8)
    c.start_session(_sess(1, "evse0"))
    later = T0 + timedelta(hours=1)
    with pytest.raises(InputError, match="already active or expected"):
        c.expect_session(_sess(1, "evse1"))
    with pytest.raises(InputError, match="unknown EVSE 'nope'"):
        c.expect_session(_sess(2, "nope", arrival=later))
    c.expect_session(_sess(2, "evse1", hours=2, arrival=later))
    with pytest.raises(InputError, match="overlaps expected session 's2'"):
        c.expect_session(_sess(3, "evse1", hours=2, arrival=later + timedelta(hours=1)))
    # an expected car on a busy EVSE is planned after the car there leaves
    c.expect_session(_sess(4, "evse0", hours=12, arrival=later))
    s = c.step(T0)
    i = s.problem.session_index("s4")
    assert s.problem.sessions[i].arrival == _sess(1, "evse0").departure
    with pytest.raises(InputError, match="unknown expected session"):
        c.cancel_expected("zz")
    c.cancel_expected("s4")
    # not plugged in 30 min after its arrival: forgotten
    c.step(later + timedelta(minutes=31))
    assert "s2" not in c.expected


def test_a_fault_in_the_warm_start_means_a_cold_solve_not_a_crash(monkeypatch):
    from loadopt.options import LpOptions

    c = Controller(  # warm at any size; HiGHS even for one car (not solved by sorting)
        _site(), step_s=900, n_periods=8, warm_min_rows=0, planner=LpOptions(separable=False)
    )
    c.start_session(_sess(1, "evse0"))
    c.step(T0)

    def boom(*a, **k):
        raise RuntimeError("mapping bug")

    from loadopt.solvers.warm import WarmStart

    monkeypatch.setattr(WarmStart, "mapped_basis", boom)
    s = c.step(T0 + timedelta(minutes=15))
    assert s.status.value == "optimal" and s.violations() == []
    assert physical_violations(s.problem, s.current, s.n_phases) == []
    assert c.log[-1].mode == "cold" and "mapping bug" in c.log[-1].reason


def test_align_to_grid_floors_the_horizon_on_the_utc_grid_across_dst():
    from zoneinfo import ZoneInfo

    import loadopt as lo

    berlin = ZoneInfo("Europe/Berlin")
    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=32.0),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="CP"),),
    )
    ctl = Controller(site, step_s=900, n_periods=4, method="fast", align_to_grid=True)
    # 03:07 CEST on the spring-forward day is 01:07 UTC: the grid instant is 01:00 UTC
    now = datetime(2026, 3, 29, 3, 7, 30, tzinfo=berlin)
    hz = ctl.horizon(now)
    assert hz.start.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert ctl.step(now).problem.horizon.start.astimezone(UTC) == hz.start.astimezone(UTC)
    on_grid = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # fall-back night, on the grid
    assert ctl.horizon(on_grid).start == on_grid
    assert Controller(site, step_s=900).horizon(now).start == now  # default: at now
    with pytest.raises(InputError, match="align_to_grid"):
        Controller(site, align_to_grid="yes")


@settings(max_examples=examples(60), deadline=None)
@given(
    seconds=st.lists(st.integers(0, 3 * 86_400), min_size=1, max_size=8),
    step_s=st.sampled_from([60, 300, 900]),
    n_periods=st.integers(1, 300),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata"]),
    align=st.booleans(),
)
def test_step_horizons_are_the_tiered_horizons(seconds, step_s, n_periods, zone, align):
    """``Controller.horizon`` works each coarse-period offset's tiers out once and reuses them:
    every horizon it hands out is the one ``Horizon.tiered`` builds for that instant (fields,
    fields set), across zones, daylight-saving changes, settings changed between steps."""
    from zoneinfo import ZoneInfo

    import loadopt as lo
    from loadopt.horizon import Horizon

    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=32.0),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="CP"),),
    )
    ctl = Controller(site, step_s=step_s, n_periods=n_periods, method="fast", align_to_grid=align)
    t0 = datetime(2026, 3, 28, 22, 0, 0, 250_000, tzinfo=UTC).astimezone(ZoneInfo(zone))
    for k, s in enumerate(seconds + seconds):
        if k == len(seconds) and ctl.coarse_step_s is not None:
            ctl.fine_s += step_s  # a setting changed at run time: new tiers
        now = t0 + timedelta(seconds=s)
        got = ctl.horizon(now)
        start = now.astimezone(UTC).replace(microsecond=0)
        if align:
            start -= timedelta(seconds=int(start.timestamp()) % step_s)
        start = start.astimezone(now.tzinfo)
        if ctl.coarse_step_s is None:
            ref = Horizon(start=start, step_s=step_s, n_periods=n_periods)
        else:
            ref = Horizon.tiered(
                start,
                fine_step_s=step_s,
                fine_s=ctl.fine_s,
                coarse_step_s=ctl.coarse_step_s,
                span_s=step_s * n_periods,
            )
        assert got == ref and got.model_fields_set == ref.model_fields_set
        assert got.start.tzinfo == ref.start.tzinfo


@pytest.mark.parametrize("bad", [0, "auto", -900])
def test_a_bad_coarse_step_set_at_run_time_is_an_input_error(bad):
    """A tiered horizon's settings changed at run time are checked as at construction: the
    tiers kept per coarse-period offset do not turn a bad ``coarse_step_s`` into a
    ZeroDivisionError or TypeError."""
    import loadopt as lo

    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=32.0),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="CP"),),
    )
    ctl = Controller(site, step_s=300, n_periods=60, method="fast")
    assert ctl.coarse_step_s is not None
    now = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    ctl.horizon(now)
    ctl.coarse_step_s = bad
    with pytest.raises(InputError, match="coarse_step_s"):
        ctl.horizon(now)


@pytest.mark.parametrize("bad", [0, -300, 0.5, True, float("nan"), "300"])
def test_a_bad_step_set_at_run_time_on_a_grid_aligned_controller_is_an_input_error(bad):
    """``align_to_grid`` floors ``now`` to the ``step_s`` grid: a ``step_s`` set at run time to
    something that is not a positive whole number of seconds is an InputError naming it (was a
    ZeroDivisionError or TypeError)."""
    import loadopt as lo

    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=32.0),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="CP"),),
    )
    ctl = Controller(site, step_s=300, n_periods=12, method="fast", align_to_grid=True)
    now = datetime(2026, 3, 29, 1, 0, 7, tzinfo=UTC)
    assert ctl.horizon(now).start == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    ctl.step_s = bad
    with pytest.raises(InputError, match="step_s"):
        ctl.horizon(now)
