"""Non-uniform horizons: construction, sampling onto longer periods, and safety of a coarse plan
on the fine timeline (checked by the independent raw-input checker of the fuzz suite)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.errors import InputError, LoadoptError
from loadopt.horizon import sample
from loadopt.lp import build_lp
from loadopt.solvers import highs as hs

from .conftest import T0, one_breaker_site, session
from .fuzz_checker import Limits
from .physics import physical_violations
from .test_safety_properties import scenarios

BERLIN = ZoneInfo("Europe/Berlin")


def test_tiered_periods_align_coarse_periods_to_utc_multiples():
    start = datetime(2026, 6, 10, 10, 5, tzinfo=BERLIN)  # 08:05 UTC
    h = lo.Horizon.tiered(start, fine_step_s=300, fine_s=7200, coarse_step_s=3600, span_s=86_400)
    ps = np.array(h.periods_s)
    assert h.step_s == 300 and h.n_periods == ps.size and ps.sum() == 86_400 == h.span_s
    assert h.end == start + timedelta(days=1)
    b = h.period_bounds_s()
    # fine for the first 2 h, then fine on to the next whole UTC hour, then hourly
    assert (ps[b[:-1] < 7200] == 300).all()
    coarse = np.flatnonzero(ps == 3600)
    starts_utc = start.timestamp() + b[coarse]
    assert (starts_utc % 3600 == 0).all()
    assert ps[-1] == 300  # the last period ends at start + span
    # rolling the start by one fine step keeps the coarse periods' instants
    h2 = lo.Horizon.tiered(
        start + timedelta(minutes=5),
        fine_step_s=300,
        fine_s=7200,
        coarse_step_s=3600,
        span_s=86_400,
    )
    s1 = set(start.timestamp() + b[:-1][ps == 3600])
    b2 = h2.period_bounds_s()
    s2 = set((start + timedelta(minutes=5)).timestamp() + b2[:-1][np.array(h2.periods_s) == 3600])
    assert len(s1 & s2) >= len(s1) - 1
    assert [h.period_start(k) for k in (0, 1, 24)] == [
        start,
        start + timedelta(minutes=5),
        start + timedelta(hours=2),
    ]


def test_tiered_off_grid_start_and_degenerate_cases():
    start = datetime(2026, 6, 10, 10, 7, tzinfo=UTC)
    h = lo.Horizon.tiered(start, fine_step_s=900, fine_s=3 * 3600, coarse_step_s=3600)
    ps = np.array(h.periods_s)
    assert ps.sum() == 86_400 and (ps <= 3600).all()
    assert 0 < ps[ps < 900].size <= 2  # one shortened fine period before the hours, the last one
    # fine over the whole span: an ordinary uniform horizon
    u = lo.Horizon.tiered(start, fine_step_s=900, fine_s=86_400, coarse_step_s=3600)
    assert u.uniform and u == lo.Horizon(start=start, step_s=900, n_periods=96)
    assert lo.Horizon.non_uniform(start, [600] * 4) == lo.Horizon(
        start=start, step_s=600, n_periods=4
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"fine_step_s": 0},
        {"coarse_step_s": 600, "fine_step_s": 900},
        {"fine_s": -1},
        {"span_s": 0},
        {"fine_step_s": 900.5},
        {"coarse_step_s": 200_000},
    ],
)
def test_tiered_rejects_bad_arguments(kw):
    with pytest.raises(InputError, match="horizon"):
        lo.Horizon.tiered(T0, **kw)


def test_periods_must_match_step_and_count():
    with pytest.raises(LoadoptError, match="periods_s"):
        lo.Horizon(start=T0, step_s=900, n_periods=2, periods_s=(900, 900, 3600))
    with pytest.raises(LoadoptError, match="periods_s"):
        lo.Horizon(start=T0, step_s=900, n_periods=2, periods_s=(3600, 900))
    with pytest.raises(LoadoptError):
        lo.Horizon.non_uniform(T0, [900, 0])
    with pytest.raises(InputError, match="empty"):
        lo.Horizon.non_uniform(T0, [])


series = st.lists(st.tuples(st.integers(-30, 300), st.floats(0, 100)), min_size=0, max_size=6)


@settings(derandomize=True, deadline=None, max_examples=60)
@given(series, st.sampled_from([None, 5.0]), st.sampled_from([900, 1800]), st.integers(0, 6))
def test_sampling_onto_longer_periods_is_the_fine_sampling_aggregated(pts, default, coarse, nf):
    """min/max over a coarse period = min/max of the 5-minute samples inside it; mean = their
    duration-weighted mean."""
    pts = sorted({m: v for m, v in pts}.items())
    points = tuple(lo.SeriesPoint(start=T0 + timedelta(minutes=m), value=v) for m, v in pts)
    span = 4 * 3600
    coarse_h = lo.Horizon.tiered(
        T0, fine_step_s=300, fine_s=nf * 300, coarse_step_s=coarse, span_s=span
    )
    fine = lo.Horizon(start=T0, step_s=300, n_periods=span // 300)
    of = (
        np.searchsorted(coarse_h.period_bounds_s(), fine.period_bounds_s()[:-1], side="right") - 1
    )  # coarse period of each fine one
    for how, red in (("min", np.minimum), ("max", np.maximum)):
        f = sample(default, points, fine, how)
        c = sample(default, points, coarse_h, how)
        agg = np.full(coarse_h.n_periods, np.inf if how == "min" else -np.inf)
        red.at(agg, of, f)
        np.testing.assert_array_equal(c, agg)
    f = sample(default, points, fine, "mean")
    c = sample(default, points, coarse_h, "mean")
    w = np.bincount(of, f * 300, minlength=coarse_h.n_periods) / coarse_h.period_s
    np.testing.assert_allclose(c, w, rtol=1e-9, atol=1e-9)


def test_non_uniform_code_path_on_equal_periods_is_the_uniform_problem():
    """A horizon given as explicit equal periods goes through the non-uniform code path and
    must compile and solve to exactly the uniform problem."""
    from loadopt.synthetic import demo_scenario

    sc = demo_scenario(n_evse=8)
    h = sc.horizon
    forced = lo.Horizon(
        start=h.start, step_s=h.step_s, n_periods=h.n_periods, periods_s=(h.step_s,) * h.n_periods
    )
    a = sc.compile()
    b = lo.compile_problem(sc.site, sc.sessions, forced, sc.signals, sc.objective)
    for name in (
        "avail",
        "var_kwh_per_a",
        "h",
        "import_price",
        "base_load_kw",
        "pv_kw",
        "session_departure_h",
        "import_cap_kw",
    ):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-12)
    assert (a.G != b.G).nnz == 0
    la, lb = build_lp(a), build_lp(b)
    np.testing.assert_allclose(lb.c, la.c, rtol=1e-12, atol=1e-15)
    sa, sb = lo.solve(a), lo.solve(b)
    assert sb.objective == pytest.approx(sa.objective, rel=1e-9)
    np.testing.assert_allclose(sb.energy_kwh, sa.energy_kwh, rtol=1e-9)


def test_energy_and_cost_count_period_lengths():
    """One vehicle at 10 A for a 15-min and a 60-min period gets 1.25 h of energy; the LP, the
    schedule's KPIs and the import cost all use the period lengths."""
    site = one_breaker_site(breaker_a=10.0, n_evse=1, phases=1)
    h = lo.Horizon.non_uniform(T0, [900, 3600])
    s = session("s", "e0", energy=100.0, dep_h=5.0, phases=1)
    p = lo.compile_problem(site, [s], h, lo.Signals(import_price=0.2))
    np.testing.assert_allclose(p.var_kwh_per_a, [0.23 * 0.25, 0.23 * 1.0])
    sched = lo.solve(p)
    np.testing.assert_allclose(sched.current, [[10.0, 10.0]])
    k = sched.kpis()
    assert k.delivered_kwh == pytest.approx(2.3 * 1.25)
    assert k.energy_cost == pytest.approx(0.2 * 2.3 * 1.25)


def test_ocpp_profile_periods_follow_the_period_starts():
    from loadopt.ocpp.profiles import tx_profiles

    site = one_breaker_site(breaker_a=16.0, n_evse=2, phases=3)
    h = lo.Horizon.non_uniform(T0, [900, 900, 3600, 3600])
    ss = [session("a", "e0", energy=60.0, dep_h=2.5), session("b", "e1", energy=5.0, dep_h=3.0)]
    sched = lo.solve(lo.compile_problem(site, ss, h))
    for prof in tx_profiles(sched):
        b = h.period_bounds_s()
        assert set(prof.starts.tolist()) <= set(b[:-1].astype(int).tolist())
        assert prof.starts[0] == 0


COARSE = settings(
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

minutes = st.integers(0, 359)


@st.composite
def congested(draw):
    """Vehicles wanting more than the limits allow, under limits that change inside the coarse
    periods: a breaker current series, a grid limit series, a base load series, PV, a DR cap."""

    def pts(lo_v, hi_v, n):
        ms = sorted(set(draw(st.lists(minutes, min_size=1, max_size=n))))
        return tuple(
            lo.SeriesPoint(start=T0 + timedelta(minutes=m), value=draw(st.floats(lo_v, hi_v)))
            for m in ms
        )

    cur = tuple(lo.CurrentPoint(start=x.start, value=x.value) for x in pts(0, 40, 4))
    n = draw(st.integers(1, 4))
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=draw(st.floats(20, 80))),
            lo.Node(id="cb", parent="grid", max_current=32.0, current_series=cur),
        ),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node="cb",
                charge_point_id=f"CP{k}",
                phases=draw(st.sampled_from([1, 3])),
                phase_rotation=draw(st.sampled_from(["RST", "STR", "TRS"])),
            )
            for k in range(n)
        ),
    )
    sessions = []
    for k in range(n):
        a = draw(st.integers(-30, 200))
        sessions.append(
            lo.Session(
                id=f"s{k}",
                evse=f"e{k}",
                arrival=T0 + timedelta(minutes=a),
                departure=T0 + timedelta(minutes=a + draw(st.integers(10, 400))),
                energy_kwh=80.0,
                phases=draw(st.sampled_from([1, 3])),
            )
        )
    dr = ()
    if draw(st.booleans()):
        a = draw(minutes)
        dr = (
            lo.DemandResponseEvent(
                id="dr",
                start=T0 + timedelta(minutes=a),
                end=T0 + timedelta(minutes=a + draw(st.integers(5, 90))),
                import_cap_kw=draw(st.floats(0, 20)),
            ),
        )
    sig = lo.Signals(
        grid_import_limit_kw=pts(0, 40, 3),
        base_load_kw=pts(0, 10, 3),
        pv_kw=pts(0, 10, 2),
        import_price=pts(0.1, 0.4, 3),
        demand_response=dr,
    )
    return site, sessions, sig


def _check_coarse_plan(site, sessions, sig, objective, n_fine, coarse, method):
    span = 6 * 3600
    th = lo.Horizon.tiered(
        T0, fine_step_s=300, fine_s=n_fine * 300, coarse_step_s=coarse, span_s=span
    )
    fine = lo.Horizon(start=T0, step_s=300, n_periods=span // 300)
    pc = lo.compile_problem(site, sessions, th, sig, objective)
    pf = lo.compile_problem(site, sessions, fine, sig, objective)
    sched = lo.solve(pc, method=method)
    assert sched.violations() == []
    of = np.searchsorted(th.period_bounds_s(), fine.period_bounds_s()[:-1], side="right") - 1
    held = sched.current[:, of] * (pf.avail > 0)
    assert Limits(site, sessions, fine, sig).breaches(held, pc.session_ids) == []


@COARSE
@given(
    congested(),
    st.integers(0, 4),
    st.sampled_from([900, 1800, 3600]),
    st.sampled_from(["lp", "fast"]),
)
def test_a_coarse_plan_is_safe_at_every_fine_period(inst, n_fine, coarse, method):
    """Plan on a tiered horizon, hold each coarse period's current over its 5-minute periods,
    and check the raw limits on the fine timeline (fuzz_checker, written from raw inputs)."""
    site, sessions, sig = inst
    _check_coarse_plan(site, sessions, sig, lo.Objective(), n_fine, coarse, method)


@settings(COARSE, max_examples=25)
@given(scenarios(), st.integers(0, 4), st.sampled_from([900, 3600]))
def test_a_coarse_plan_is_safe_on_the_safety_suite_sites(p, n_fine, coarse):
    """The same on the general random sites of the safety suite (trees, rotations, series)."""
    assume(
        all(
            g.import_cap_kw is not None or isinstance(g.baseline_kw, float | int)
            for g in p.signals.grid_signals
        )
    )
    _check_coarse_plan(p.site, p.sessions, p.signals, p.objective, n_fine, coarse, "lp")


def test_controller_on_a_tiered_horizon_rolls_warm_and_stays_safe():
    from loadopt.synthetic import benchmark_scenario

    sc = benchmark_scenario(40)
    now0 = sc.horizon.start.replace(hour=9)
    ctl = lo.Controller(
        sc.site,
        step_s=900,
        n_periods=96,
        coarse_step_s=3600,
        fine_s=3 * 3600,
        signals=sc.signals,
        objective=sc.objective,
        warm_min_rows=0,  # the warm start at every size (by default small LPs solve cold)
    )
    for s in sc.sessions:
        if s.arrival <= now0 < s.departure:
            ctl.start_session(s)
    for k in range(3):
        sched = ctl.step(now0 + timedelta(minutes=15 * k))
        hz = sched.problem.horizon
        assert not hz.uniform and hz.step_s == 900 and hz.span_s == 86_400
        assert hz.n_periods < 40
        assert sched.violations() == []
        assert physical_violations(sched.problem, sched.current, sched.n_phases) == []
    assert [r.mode for r in ctl.log][1:] == ["warm", "warm"]
    with pytest.raises(InputError):
        lo.Controller(sc.site, step_s=900, coarse_step_s=600)


def test_straightforward_model_has_the_same_optimum_on_a_tiered_horizon():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from loadopt.synthetic import demo_scenario
    from reference import straightforward_lp

    sc = demo_scenario(n_evse=10)
    th = lo.Horizon.tiered(
        sc.horizon.start.replace(hour=7, minute=10),
        fine_step_s=300,
        fine_s=3600,
        coarse_step_s=3600,
    )
    p = lo.compile_problem(
        sc.site,
        sc.sessions,
        th,
        sc.signals,
        sc.objective.model_copy(update={"demand_charge_per_kw": 0.0}),
    )
    a = hs.solve_lp(straightforward_lp(p))
    b = hs.solve_lp(build_lp(p), options=hs.LP_OPTIONS)
    assert b.objective == pytest.approx(a.objective, rel=1e-7)


@pytest.mark.parametrize(
    "step_s,n_periods,fine_s,coarse",
    [
        (300, 144, 4 * 3600, 3600),  # 5-min steps, 12 h: hourly after 4 h
        (900, 96, 4 * 3600, 3600),  # the controller's defaults: 24 h
        (600, 48, 4 * 3600, 3600),  # 8 h: more than an hour beyond the fine part
        (900, 20, 4 * 3600, None),  # 5 h: not more than an hour beyond 4 h
        (900, 8, 4 * 3600, None),  # 2 h: nothing to coarsen
        (420, 200, 4 * 3600, None),  # 7 min does not divide an hour
        (3600, 48, 4 * 3600, None),  # already hourly
        (900, 96, 0, 3600),  # no fine part
    ],
)
def test_the_default_horizon_is_tiered_where_it_has_something_to_coarsen(
    step_s, n_periods, fine_s, coarse
):
    from loadopt.controller.core import auto_coarse_step_s

    assert auto_coarse_step_s(step_s, n_periods, fine_s) == coarse
    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=32.0),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="CP"),),
    )
    ctl = lo.Controller(site, step_s=step_s, n_periods=n_periods, fine_s=fine_s)
    assert ctl.coarse_step_s == coarse
    hz = ctl.horizon(datetime(2026, 3, 2, 8, 7, tzinfo=UTC))
    assert hz.span_s == step_s * n_periods and hz.uniform == (coarse is None)
    explicit = lo.Controller(site, step_s=step_s, n_periods=n_periods, coarse_step_s=None)
    assert explicit.coarse_step_s is None and explicit.horizon(hz.start).uniform


@pytest.mark.parametrize(
    "step_s,n_periods,fine_s,coarse",
    [
        (300, 144, 18 * 300, 3600),  # 5-min steps, 12 h: 1.5 h fine, then hourly
        (900, 96, 18 * 900, 3600),  # the controller's defaults: 4.5 h fine of 24 h
        (60, 720, 18 * 60, 3600),  # 1-min control: 18 min fine, not 4 h (240 periods)
        (900, 20, 18 * 900, None),  # 5 h: not more than an hour beyond 4.5 h
        (3600, 48, 18 * 3600, None),  # already hourly
    ],
)
def test_the_default_fine_part_is_a_number_of_periods(step_s, n_periods, fine_s, coarse):
    """``fine_s="auto"`` (the default): AUTO_FINE_PERIODS periods of ``step_s``, so the LP's
    size does not grow with a shorter control interval; the fine part then runs on to the next
    whole coarse period (``Horizon.tiered``)."""
    from loadopt.controller.core import AUTO_FINE_PERIODS, auto_fine_s

    assert AUTO_FINE_PERIODS == 18 and auto_fine_s(step_s) == fine_s
    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=32.0),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="CP"),),
    )
    ctl = lo.Controller(site, step_s=step_s, n_periods=n_periods)
    assert ctl.fine_s == fine_s and ctl.coarse_step_s == coarse
    hz = ctl.horizon(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # on the hour: fine part exact
    n_fine = int(np.sum(hz.period_s == step_s))
    assert hz.span_s == step_s * n_periods
    if coarse is None:
        assert n_fine == n_periods
    else:  # starting on the hour: 18 periods, on to the next whole hour
        assert n_fine == -(-18 * step_s // coarse) * coarse // step_s
    restored = lo.Controller.from_state(json.loads(json.dumps(ctl.to_state())))
    assert restored.fine_s == fine_s and restored.coarse_step_s == coarse
