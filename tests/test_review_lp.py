"""Second review: the LP's forms (unmet slack or not, import substituted or not) agree with each
other and with the objective evaluated here from the raw inputs (prices by time-weighted mean,
base load and PV as the safety rows sample them: per period maximum and minimum)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.lp import build_lp
from loadopt.solvers.highs import solve_lp

from .conftest import examples

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _in_period(series, hz: lo.Horizon, k: int, how: str) -> float:
    """``series`` (a number or sorted SeriesPoints, the first holding backwards) over period
    ``k``: time-weighted mean, or the max / min of the values in force there."""
    if series is None:
        return 0.0
    if isinstance(series, int | float):
        return float(series)
    a, z = hz.period_start(k), hz.period_start(k + 1)
    pts = list(series)
    spans = []
    for j, p in enumerate(pts):
        s = a if j == 0 else max(p.start, a)
        e = min(pts[j + 1].start, z) if j + 1 < len(pts) else z
        if e > s:
            spans.append((p.value, (e - s).total_seconds()))
    if how == "mean":
        return sum(v * d for v, d in spans) / (z - a).total_seconds()
    return max(v for v, _ in spans) if how == "max" else min(v for v, _ in spans)


def objective_from_inputs(site, sessions, hz, sig, obj, cur) -> float:
    """The documented objective of per-session currents ``cur`` (S, T), from the raw inputs
    (``finish_first_kwh`` and ``fairness`` at 0)."""
    T = hz.n_periods
    b = np.array([(hz.period_start(k) - hz.start).total_seconds() for k in range(T + 1)])
    dt_h, span_h = np.diff(b) / 3600.0, b[-1] / 3600.0
    evses = {e.id: e for e in site.evses}
    total, ev_kw = 0.0, np.zeros(T)
    for i, s in enumerate(sessions):
        e = evses[s.evse]
        kw_per_a = e.voltage_v * min(e.phases, s.phases) / 1000.0
        dep_h = min(max((s.departure - hz.start).total_seconds() / 3600.0, dt_h[0]), span_h)
        got = 0.0
        for k in range(T):
            a, z = hz.period_start(k), hz.period_start(k + 1)
            share = (min(z, s.departure) - max(a, s.arrival)).total_seconds()
            kwh = kw_per_a * dt_h[k] * min(max(share / (z - a).total_seconds(), 0.0), 1.0)
            kwh *= cur[i, k]
            got += kwh
            ev_kw[k] += kw_per_a * cur[i, k]
            mid_h = (b[k] + b[k + 1]) / 7200.0
            total += obj.charge_early_per_kwh_h * mid_h * span_h / dep_h * kwh
        total += obj.unmet_energy_per_kwh * s.priority * max(s.energy_kwh - got, 0.0)
    net = np.array(
        [
            _in_period(sig.base_load_kw, hz, k, "max") - _in_period(sig.pv_kw, hz, k, "min")
            for k in range(T)
        ]
    )
    m = net + ev_kw
    price = np.array([_in_period(sig.import_price, hz, k, "mean") for k in range(T)])
    feed = np.array([_in_period(sig.export_price, hz, k, "mean") for k in range(T)])
    total += obj.energy_cost * float(
        np.sum(dt_h * (price * np.maximum(m, 0.0) - feed * np.maximum(-m, 0.0)))
    )
    if obj.demand_charge_per_kw > 0:
        total += obj.demand_charge_per_kw * max(sig.peak_so_far_kw, float(m.max()))
    return total


def test_night_then_pv_surplus_with_negative_prices_solves():
    """Regression: with the import substituted in the night periods (base load, no PV) the
    meter-direction rows of the day periods (PV surplus, import price below the feed-in) took
    the import/export columns by period instead of by kept position: IndexError out of
    ``solve`` and ``Controller.step``."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=32.0),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="CP0"),),
    )
    car = lo.Session(
        id="s0", evse="e0", arrival=T0, departure=T0 + timedelta(hours=4), energy_kwh=20.0
    )
    hz = lo.Horizon(start=T0, step_s=3600, n_periods=4)
    sig = lo.Signals(
        base_load_kw=1.0,
        pv_kw=hz.series([0.0, 0.0, 10.0, 10.0]),
        import_price=hz.series([0.3, 0.3, -0.05, -0.05]),
        export_price=0.0,
    )
    obj = lo.Objective(finish_first_kwh=0.0)
    p = lo.compile_problem(site, [car], hz, sig, obj)
    sched = lo.solve(p)
    assert sched.status == lo.ScheduleStatus.OPTIMAL
    sched.check()
    # the LP's own optimum is the objective of its currents from the raw inputs
    lp = build_lp(p)
    x = solve_lp(lp).x
    want = objective_from_inputs(site, [car], hz, sig, obj, p.dense(lp.currents(p, x)))
    assert abs(float(lp.c @ x + lp.offset) - want) < 1e-6 * max(1.0, abs(want))
    ctl = lo.Controller(site, step_s=3600, n_periods=4, coarse_step_s=None)
    ctl.set_signals(sig)
    ctl.start_session(car)
    assert ctl.step(T0).status == lo.ScheduleStatus.OPTIMAL


@st.composite
def priced_cases(draw):
    n = draw(st.integers(1, 3))
    site = lo.Site(
        nodes=(
            lo.Node(
                id="grid",
                max_current=draw(st.floats(6, 64)),
                max_power_kw=draw(st.one_of(st.none(), st.floats(5, 40))),
            ),
        ),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node="grid",
                charge_point_id=f"C{k}",
                phases=draw(st.sampled_from([1, 3])),
            )
            for k in range(n)
        ),
    )
    T = draw(st.integers(2, 5))
    step = draw(st.sampled_from([900, 3600]))
    if draw(st.booleans()):
        hz = lo.Horizon.non_uniform(
            T0, [step] + [draw(st.sampled_from([step, 2 * step])) for _ in range(T - 1)]
        )
    else:
        hz = lo.Horizon(start=T0, step_s=step, n_periods=T)

    def series(lo_: float, hi_: float):
        starts = sorted({draw(st.integers(0, 4 * 3600)) for _ in range(draw(st.integers(0, 3)))})
        if not starts:
            return draw(st.floats(lo_, hi_))
        return tuple(
            lo.SeriesPoint(start=T0 + timedelta(seconds=s), value=draw(st.floats(lo_, hi_)))
            for s in starts
        )

    sig = lo.Signals(
        base_load_kw=series(0, 10),
        pv_kw=series(0, 15),
        import_price=series(-0.1, 0.5),
        export_price=draw(st.one_of(st.none(), st.floats(0, 0.3))),
        peak_so_far_kw=draw(st.floats(0, 10)),
    )
    obj = lo.Objective(
        energy_cost=draw(st.sampled_from([0.0, 1.0])),
        demand_charge_per_kw=draw(st.sampled_from([0.0, 0.5])),
        charge_early_per_kwh_h=draw(st.sampled_from([0.0, 1e-3, 0.05])),
        finish_first_kwh=0.0,  # a term of its own (objective.py), not what this test is about
    )
    sessions = []
    for k in range(n):
        a = draw(st.integers(-2, 3)) * 900
        sessions.append(
            lo.Session(
                id=f"s{k}",
                evse=f"e{k}",
                arrival=T0 + timedelta(seconds=a),
                departure=T0 + timedelta(seconds=a + draw(st.integers(1, 12)) * 900),
                energy_kwh=draw(st.one_of(st.just(0.0), st.floats(0.5, 40))),
                phases=draw(st.sampled_from([1, 3])),
                priority=draw(st.sampled_from([1.0, 2.0])),
            )
        )
    return site, sessions, hz, sig, obj


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=priced_cases())
def test_lp_forms_agree_with_the_objective_from_raw_inputs(case):
    site, sessions, hz, sig, obj = case
    p = lo.compile_problem(site, sessions, hz, sig, obj)
    values = []
    for slack, substitute in ((True, True), (True, False), (False, False)):
        lp = build_lp(p, unmet_slack=slack, eliminate_import=substitute)
        if lp.n_cols == 0:
            return
        res = solve_lp(lp)
        assert res.status.name == "OPTIMAL", res.message
        got = float(lp.c @ res.x + lp.offset)
        cur = p.dense(lp.currents(p, res.x))
        want = objective_from_inputs(site, sessions, hz, sig, obj, cur)
        assert abs(got - want) <= 1e-5 * max(1.0, abs(want)), (slack, substitute, got, want)
        values.append(got)
    assert max(values) - min(values) <= 1e-5 * max(1.0, abs(values[0])), values
