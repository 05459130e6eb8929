"""Pilots the EVSE can take: steps, minimum current, re-sharing in steps, fast-path policies."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.pilots import round_to_pilots

from .conftest import T0, horizon, one_breaker_site, session
from .phasors import line_breaches
from .physics import physical_violations

STEPS = (8.0, 16.0, 24.0, 32.0)


def stepped_site(breaker_a: float = 40.0, n: int = 4, steps=STEPS, min_a: float = 8.0):
    return one_breaker_site(
        breaker_a, n_evse=n, phases=1, min_current=min_a, allowed_currents=steps
    )


def legal(limits: np.ndarray, steps, min_a: float) -> bool:
    ok = (limits == 0) | np.isin(limits, steps) if steps else (limits == 0) | (limits >= min_a)
    return bool(np.all(ok))


@pytest.mark.parametrize("method", ["auto", "lp"])
def test_controller_hands_out_only_pilots_the_evse_can_take(method):
    site = stepped_site(breaker_a=40.0)
    ctl = lo.Controller(site, method=method, step_s=900, n_periods=8, time_limit_s=10.0)
    for k in range(4):
        ctl.start_session(session(f"s{k}", f"e{k}", 30.0 + k, dep_h=3.0 + k, phases=1))
    for k in range(3):
        sched = ctl.step(T0 + timedelta(minutes=15 * k))
        assert legal(sched.current[:, 0], STEPS, 8.0), sched.current[:, 0]
        assert physical_violations(sched.problem, sched.current) == []
        assert not sched.violations()
        # four cars on 40 A: the plan uses what the steps allow (e.g. 24 + 16), not 4 × 8
        assert sched.current[:, 0].sum() >= 40.0 - 8.0


def test_continuous_evse_gets_zero_or_at_least_its_minimum():
    site = lo.Site(
        nodes=(lo.Node(id="g", kind="grid_connection", max_current=20.0),),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="g", charge_point_id=f"C{k}", phases=1, min_current=6.0)
            for k in range(4)
        ),
    )
    ctl = lo.Controller(site, step_s=900, n_periods=8)
    # tiny energies: a plan at 1-3 A would be taken as 0 by the vehicles (IEC 61851)
    for k in range(4):
        ctl.start_session(session(f"s{k}", f"e{k}", 0.3, dep_h=2.0, phases=1))
    sched = ctl.step(T0)
    first = sched.current[:, 0]
    assert legal(first, None, 6.0) and (first > 0).sum() >= 3
    assert not sched.violations()


def test_resharing_on_stepped_evses_lifts():
    """A car capped after drawing less than its step is lifted as soon as it draws the step it
    is given (before: capped at drawn + 2 A, which the EVSE signals as the step below, which the
    car then draws in full — held there for good)."""
    site = stepped_site(breaker_a=200.0, n=1)
    ctl = lo.Controller(site, step_s=900, n_periods=8)
    ctl.start_session(session("s0", "e0", 60.0, dep_h=8.0, phases=1))
    t = T0
    assert ctl.step(t).current[0, 0] == 32.0
    t += timedelta(minutes=15)
    ctl.meter("s0", t, energy_kwh=1.0, current_a=10.0)  # a cold battery takes 10 A
    first = ctl.step(t).current[0, 0]
    assert first == 16.0  # capped at the step at or above 10 + 2 A
    t += timedelta(minutes=15)
    ctl.meter("s0", t, energy_kwh=2.0, current_a=16.0)  # it takes all of its step again
    assert ctl.step(t).current[0, 0] == 32.0  # lifted


def test_fast_policy_is_a_controller_option():
    site = stepped_site(breaker_a=16.0, n=2)
    early = session("s0", "e0", 30.0, dep_h=2.0, phases=1)
    late = session("s1", "e1", 30.0, dep_h=8.0, phases=1)
    got = {}
    for pol in ("edf", "fair"):
        ctl = lo.Controller(site, method="fast", policy=pol, step_s=900, n_periods=4)
        ctl.start_session(early)
        ctl.start_session(late)
        got[pol] = ctl.step(T0).current[:, 0]
    assert list(got["edf"]) == [16.0, 0.0]  # the one leaving first takes the breaker
    assert list(got["fair"]) == [8.0, 8.0]
    with pytest.raises(lo.InputError, match="policy"):
        lo.Controller(site, method="lp", policy="edf")
    with pytest.raises(lo.InputError, match="policy"):
        lo.Controller(site, method="fast", policy="nope")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(0, 32), min_size=4, max_size=4),
    st.sampled_from([None, STEPS, tuple(float(a) for a in range(6, 33))]),
    st.floats(5, 80),
)
def test_rounding_to_pilots_is_safe_and_legal(wish, steps, breaker_a):
    site = stepped_site(breaker_a=breaker_a, steps=steps, min_a=steps[0] if steps else 6.0)
    sessions = [session(f"s{k}", f"e{k}", 20.0, phases=1) for k in range(4)]
    p = lo.compile_problem(site, sessions, horizon(2))
    safe = lo.safety.project(p, np.repeat(np.array(wish)[:, None], 2, axis=1))
    out = round_to_pilots(p, safe)
    assert physical_violations(p, out) == []  # independent, from the raw site and sessions
    assert not lo.safety.violations(p, out)
    assert legal(out, steps, steps[0] if steps else 6.0)
    # later periods only ever go down; period 0 only up from the rounded-down step
    assert np.all(out[:, 1] <= safe[:, 1] + 1e-9)


def test_node_limit_changes_at_run_time_without_rebuilding():
    from loadopt.acn import jpl_site

    site = jpl_site(evse_type="basic")
    ids = [e.id for e in site.evses if e.node == "3f"][:12]
    ctl = lo.Controller(site, step_s=900, n_periods=8)
    for k, eid in enumerate(ids):
        ctl.start_session(session(f"s{k}", eid, 40.0, dep_h=8.0, phases=1))
    before = ctl.step(T0)
    assert before.node_phase_current[before.problem.node_ids.index("3f"), :, 0].max() > 100
    ctl.set_node_limit("3f", max_current=60.0)  # the operator lowers the floor's feeder
    after = ctl.step(T0 + timedelta(minutes=15))
    k3 = after.problem.node_ids.index("3f")
    assert after.node_phase_current[k3, :, 0].max() <= 60.0 + 1e-9
    floor_a = 60.0 * (1 - after.problem.facet_loss_bound) - 1
    assert after.node_phase_current[k3, :, 0].max() >= floor_a
    assert not after.violations()
    # and by the phasor checker written from the raw (updated) site, not from compiled rows
    assert line_breaches(ctl.site, after.problem.sessions, after.current) == []
    ctl.set_node_limit("tx-34f", primary_max_current=20.0)
    tight = ctl.step(T0 + timedelta(minutes=30))
    N = len(tight.problem.node_ids)
    ktx = tight.problem.node_ids.index("tx-34f")
    assert tight.line_current[3 * (N + ktx) : 3 * (N + ktx) + 3, 0].max() <= 20.0 + 1e-9
    assert line_breaches(ctl.site, tight.problem.sessions, tight.current) == []
    with pytest.raises(lo.InputError, match="unknown node"):
        ctl.set_node_limit("nope", max_current=1.0)
    with pytest.raises(lo.InputError, match="not a delta/wye"):
        ctl.set_node_limit("3f", primary_max_current=1.0)
    with pytest.raises(lo.InputError):
        ctl.set_node_limit("3f", max_current=-5.0)
    assert next(n for n in ctl.site.nodes if n.id == "3f").max_current == 60.0


def test_pilot_give_back_respects_battery_charging_on_the_same_breaker():
    """Regression: giving period 0 back what rounding took must count a battery charging under
    the same breaker (20 A plan + 20 A battery on 40 A: raising 20 -> 24 A would draw 44 A)."""
    from dataclasses import replace

    from loadopt.site import Battery

    base = stepped_site(breaker_a=40.0, n=1)
    bat = Battery(
        id="b", node="cb", capacity_kwh=100.0, soc=0.1, max_charge_kw=30.0, max_discharge_kw=30.0
    )
    site = lo.Site(nodes=base.nodes, evses=base.evses, batteries=(bat,))
    p = lo.compile_problem(
        site,
        [session("s0", "e0", 30.0, dep_h=3.0, phases=1)],
        horizon(4, 900),
        lo.Signals(),
        lo.Objective(),
    )
    s = lo.solve(p, method="lp")
    cur = np.zeros_like(s.current)
    cur[0, 0] = 20.0
    bat_a = np.zeros_like(s.battery_a)
    bat_a[0, 0] = 20.0
    ctl = lo.Controller(site, method="lp", step_s=900, n_periods=4, pilots=True)
    out = ctl._in_pilot_steps(p, replace(s, current=cur, battery_a=bat_a))
    # independent check from the raw inputs: breaker 40 A, one phase, battery 20 A per phase
    assert out.current[0, 0] + 20.0 <= 40.0
    assert out.current[0, 0] == 16.0  # the step below 20 A


AMPS = tuple(float(a) for a in range(6, 33))  # whole amps 6–32 A (AeroVironment)


def two_breaker_site(battery: bool = True) -> lo.Site:
    """grid → cb1 (40 A: EVSE e0 and, optionally, a battery) and cb2 (40 A: EVSE e1)."""
    from loadopt.site import Battery

    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="cb1", parent="grid", max_current=40.0),
            lo.Node(id="cb2", parent="grid", max_current=40.0),
        ),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node=f"cb{k + 1}",
                charge_point_id=f"CP{k}",
                phases=1,
                min_current=8.0,
                allowed_currents=STEPS,
            )
            for k in range(2)
        ),
        batteries=(
            (
                Battery(
                    id="b",
                    node="cb1",
                    capacity_kwh=100.0,
                    soc=0.1,
                    max_charge_kw=30.0,
                    max_discharge_kw=30.0,
                ),
            )
            if battery
            else ()
        ),
    )


def test_give_back_counts_battery_charging_instead_of_skipping():
    """Regression: with a battery charging, the give-back was skipped for every session as soon
    as one raise would have broken a limit; now the battery's charging is load on its rows and
    only the raise that does not fit is left out (cb1: 20 A plan + 20 A battery, no room for
    24 A; cb2: 20 A plan, room for 24 A)."""
    from dataclasses import replace

    site = two_breaker_site()
    sessions = [session(f"s{k}", f"e{k}", 30.0, dep_h=3.0, phases=1) for k in range(2)]
    p = lo.compile_problem(site, sessions, horizon(4, 900), lo.Signals(), lo.Objective())
    s = lo.solve(p, method="lp")
    plan = np.zeros_like(s.current)
    plan[:, 0] = 20.0
    bat_a = np.zeros_like(s.battery_a)
    bat_a[0, 0] = 20.0
    out = round_to_pilots(p, plan, battery_a=bat_a)
    assert list(out[:, 0]) == [16.0, 24.0]
    ctl = lo.Controller(site, method="lp", step_s=900, n_periods=4)
    got = ctl._in_pilot_steps(p, replace(s, current=plan, battery_a=bat_a)).current[:, 0]
    assert list(got) == [16.0, 24.0]
    # independent check from the raw inputs: each breaker 40 A, one phase, battery 20 A
    assert got[0] + 20.0 <= 40.0 and got[1] <= 40.0
    # without the battery, both are raised
    p2 = lo.compile_problem(two_breaker_site(False), sessions, horizon(4, 900))
    assert list(round_to_pilots(p2, plan)[:, 0]) == [24.0, 24.0]


def amps_site(breaker_a: float = 40.0, n: int = 3) -> lo.Site:
    return stepped_site(breaker_a=breaker_a, n=n, steps=AMPS, min_a=6.0)


def test_rounding_aware_resolve_lifts_a_car_the_give_back_could_not():
    """A car planned at 4.6 A (its last 0.26 kWh) under a 6 A minimum, two others at 18 and
    17.4 A on a 40 A breaker: rounded 0 + 18 + 17, 5 A left, so the give-back cannot raise it
    to 6 A (it raises 17 to 18 instead) and it would get nothing. The re-solve holds it at its
    pilot and re-plans the others around it: it gets 6 A, the breaker holds, every limit is a
    pilot."""
    from dataclasses import replace

    site = amps_site()
    kwh = 4.6 * 230.0 / 1000.0 * 0.25
    sessions = [
        session("near", "e0", kwh, dep_h=1.0, phases=1),
        session("a", "e1", 40.0, dep_h=6.0, phases=1),
        session("b", "e2", 40.0, dep_h=6.0, phases=1),
    ]
    p = lo.compile_problem(site, sessions, horizon(8, 900))
    s = lo.solve(p, method="lp")
    plan = np.array(s.current, dtype=np.float64)
    plan[:, 0] = [4.6, 18.0, 17.4]
    rounded = round_to_pilots(p, plan)
    assert list(rounded[:, 0]) == [0.0, 18.0, 18.0]  # the give-back alone leaves it at 0
    ctl = lo.Controller(site, method="lp", step_s=900, n_periods=8)
    out = ctl._in_pilot_steps(p, replace(s, current=plan))
    assert out.current[0, 0] == 6.0
    assert out.current[:, 0].sum() <= 40.0 + 1e-9  # independent: one 40 A breaker, 1 phase
    assert legal(out.current, AMPS, 6.0)
    assert not out.violations()
    assert "re-solved" in out.message
    # "round": the give-back only, as before
    ctl = lo.Controller(site, method="lp", step_s=900, n_periods=8, pilots="round")
    assert ctl._in_pilot_steps(p, replace(s, current=plan)).current[0, 0] == 0.0
    with pytest.raises(lo.InputError, match="pilots"):
        lo.Controller(site, pilots="maybe")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(0, 32), min_size=4, max_size=4),
    st.lists(st.floats(0.05, 20.0), min_size=4, max_size=4),
    st.sampled_from([STEPS, AMPS]),
    st.floats(10, 80),
)
def test_pilot_fixings_are_feasible_and_the_resolve_safe(wish, energy, steps, breaker_a):
    """Whatever the plan: the floors fit every row by themselves under the lowered right-hand
    sides, those never exceed the real ones, the re-solve finds a plan, and the controller's
    result is legal and within the breaker (checked from the raw inputs)."""
    from dataclasses import replace

    from loadopt.pilots import pilot_fixings

    min_a = steps[0]
    site = stepped_site(breaker_a=breaker_a, steps=steps, min_a=min_a)
    sessions = [session(f"s{k}", f"e{k}", e, dep_h=1.0 + k, phases=1) for k, e in enumerate(energy)]
    p = lo.compile_problem(site, sessions, horizon(4, 900))
    plan = lo.safety.project(p, np.repeat(np.array(wish)[:, None], 4, axis=1))
    fx = pilot_fixings(p, plan, round_to_pilots(p, plan))
    if fx is not None:
        floor, ub, h = fx
        assert np.all(h <= p.h + 1e-9) and np.all(h >= 0)
        assert np.all(floor <= ub + 1e-9) and np.all(ub <= p.var_ub + 1e-9)
        assert np.all(p.G @ floor <= h * (1 + 1e-9) + 1e-9)
        again = lo.solve(replace(p, var_floor_a=floor, var_ub=ub, h=h), method="lp")
        assert again.status is lo.ScheduleStatus.OPTIMAL
    s = lo.solve(p, method="lp")
    ctl = lo.Controller(site, method="lp", step_s=900, n_periods=4)
    out = ctl._in_pilot_steps(p, replace(s, current=plan)).current
    assert legal(out, steps, min_a)
    assert np.all(out.sum(axis=0) <= breaker_a + 1e-9)
    assert physical_violations(p, out) == []


def test_auto_picks_the_rounding_aware_lp_for_pilots_and_the_milp_for_integer_rules():
    """``method="auto"`` in a controller, per step (docs/benchmarks.md, "method='auto'"):
    steps and minimum currents alone -> the LP (handed out in pilots); phase switching -> the
    MILP while it fits the budget; too large, or over its budget lately -> the LP."""
    ctl = lo.Controller(stepped_site(), method="auto", step_s=900, n_periods=4)
    ctl.start_session(session("s0", "e0", 20.0, dep_h=3.0, phases=1))
    s = ctl.step(T0)
    assert ctl.log[-1].method.startswith("lp") and "rounding-aware LP" in ctl.log[-1].reason
    assert legal(s.current[:, 0], STEPS, 8.0)

    def switching_site(n: int = 2) -> lo.Site:
        return lo.Site(
            nodes=(
                lo.Node(id="grid", kind="grid_connection"),
                lo.Node(id="cb", parent="grid", max_current=32.0),
            ),
            evses=tuple(
                lo.Evse(id=f"e{k}", node="cb", charge_point_id=f"CP{k}", phase_switching=True)
                for k in range(n)
            ),
        )

    ctl = lo.Controller(switching_site(), method="auto", step_s=900, n_periods=4)
    for k in range(2):
        ctl.start_session(session(f"s{k}", f"e{k}", 20.0, dep_h=3.0))
    ctl.step(T0)
    assert ctl.log[-1].method == "milp" and "phase switching: MILP" in ctl.log[-1].reason
    ctl.planner.max_milp_vars = 4  # 2 sessions x 4 periods = 8 variables
    ctl.step(T0 + timedelta(minutes=15))
    assert ctl.log[-1].method.startswith("lp") and "variables > 4" in ctl.log[-1].reason
    ctl.planner.max_milp_vars = 1500
    ctl.planner.milp_budget_s = 1e-9  # every MILP call is over budget
    ctl.step(T0 + timedelta(minutes=30))
    assert "over 1e-09 s" in ctl.log[-1].reason
    s = ctl.step(T0 + timedelta(minutes=45))
    assert ctl.log[-1].method.startswith("lp") and "over its budget lately" in ctl.log[-1].reason
    assert not s.violations()
