"""The one pipeline: options objects for ``solve``, planners for the ``Controller``."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

import loadopt as lo
from loadopt.options import as_options
from loadopt.safety import violations

from .conftest import T0, horizon, one_breaker_site, session
from .physics import physical_violations


def _problem(breaker_a=16.0, n=2, **evse_kw):
    site = one_breaker_site(breaker_a, n_evse=n, **evse_kw)
    return lo.compile_problem(site, [session(f"s{k}", f"e{k}", 20.0) for k in range(n)], horizon(4))


# ------------------------------------------------------------------ options


def test_each_method_has_its_options_object_and_the_old_keywords_map_onto_them():
    assert as_options() == lo.LpOptions()
    assert as_options(method="fast", policy="edf") == lo.FastOptions(policy="edf")
    assert as_options("milp", mip_rel_gap=0.0).mip_rel_gap == 0.0
    assert as_options({"presolve": "on"}).highs == {"presolve": "on"}
    auto = as_options(method="auto", time_limit_s=2.0)
    assert isinstance(auto, lo.AutoOptions)
    assert auto.lp.time_limit_s == auto.milp.time_limit_s == 2.0


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "lp", "policy": "edf"},  # a fast-path argument on the LP
        {"method": "fast", "time_limit_s": 1.0},
        {"method": "milp", "backend": "pulp"},
        {"method": "lp", "integer": lo.IntegerOptions()},
        {"method": "simplex"},
    ],
)
def test_an_argument_meant_for_another_method_is_an_error_not_ignored(kw):
    p = _problem()
    with pytest.raises(ValueError):
        lo.solve(p, **kw)


def test_options_object_and_keywords_together_are_an_error():
    with pytest.raises(ValueError, match="not both"):
        lo.solve(_problem(), lo.LpOptions(), time_limit_s=1.0)


@pytest.mark.parametrize("t", [0.0, -1.0, math.nan, math.inf])
def test_time_limits_must_be_finite_and_positive(t):
    for cls in (lo.LpOptions, lo.MilpOptions):
        with pytest.raises(ValueError, match="time_limit_s"):
            cls(time_limit_s=t)


def test_highs_options_are_checked_against_highs_own_table():
    with pytest.raises(ValueError, match="unknown HiGHS option 'presolv'"):
        lo.LpOptions(highs={"presolv": "off"})
    with pytest.raises(ValueError, match="rejects the value 'bogus'"):
        lo.MilpOptions(highs={"presolve": "bogus"})
    with pytest.raises(ValueError, match="'mip_rel_gap'"):
        lo.MilpOptions(highs={"mip_rel_gap": -1.0})
    assert lo.LpOptions(highs={"presolve": "on", "threads": 1}).highs["threads"] == 1


def test_solve_takes_options_objects():
    p = _problem()
    a = lo.solve(p, lo.LpOptions(time_limit_s=10.0))
    b = lo.solve(p)
    assert a.status == b.status == lo.ScheduleStatus.OPTIMAL
    assert np.array_equal(a.current, b.current)
    f = lo.solve(p, lo.FastOptions(policy="edf"))
    assert f.method == "fast" and f.violations() == []
    m = lo.solve(p, lo.MilpOptions(integer=lo.IntegerOptions(), mip_rel_gap=0.0))
    assert m.method == "milp" and m.violations() == []


# ------------------------------------------------------------------ planners


def _run(ctl, n=3):
    ctl.start_session(ctl.new_session("a", "e0", T0, energy_kwh=20.0))
    ctl.start_session(ctl.new_session("b", "e1", T0, energy_kwh=20.0))
    return [ctl.step(T0 + timedelta(minutes=15 * k)) for k in range(n)]


def test_controller_settings_are_constructor_arguments_and_readable():
    c = lo.Controller(
        one_breaker_site(),
        reshare=False,
        reshare_headroom_a=3.0,
        overstay_extension_h=2.0,
        expected_grace_h=1.0,
        warm=False,
        warm_min_mapped=0.7,
        alien_basis=True,
        cold_after_limit_cut=False,
        warm_min_rows=123,
    )
    assert (c.reshare, c.reshare_headroom_a, c.overstay_extension_h, c.expected_grace_h) == (
        False,
        3.0,
        2.0,
        1.0,
    )
    assert (c.warm, c.warm_min_mapped, c.alien_basis, c.cold_after_limit_cut) == (
        False,
        0.7,
        True,
        False,
    )
    assert c.warm_min_rows == c.planner.warm_start.min_rows == 123
    assert c.method == "lp" and isinstance(c.planner, lo.SolvePlanner)
    with pytest.raises(lo.InputError):
        lo.Controller(one_breaker_site(), method="nope")  # lp, fast, milp, auto only
    with pytest.raises(lo.InputError):
        lo.Controller(one_breaker_site(), planner=42)


@pytest.mark.parametrize(
    "planner",
    ["milp", "auto", "fast", lo.MilpOptions(time_limit_s=5.0), lo.FastOptions(policy="llf")],
)
def test_the_milp_and_the_fast_path_plug_into_the_controller(planner):
    c = lo.Controller(one_breaker_site(16.0), step_s=900, n_periods=8, planner=planner)
    for s in _run(c):
        assert s.violations() == []
    expected = {"milp": "milp", "auto": "lp-highs", "fast": "fast"}
    name = planner if isinstance(planner, str) else planner.method
    assert c.log[-1].method.startswith(expected[name])


def test_a_custom_planner_is_called_with_the_compiled_problem():
    seen = []

    def half_of_max(problem: lo.Problem) -> lo.Schedule:
        seen.append(problem)
        cur = problem.dense(problem.var_ub) * 0.5
        cur = np.floor(cur * 10) / 10
        return lo.Schedule(problem, cur, lo.ScheduleStatus.FEASIBLE, "half")

    c = lo.Controller(one_breaker_site(100.0), step_s=900, n_periods=4, planner=half_of_max)
    s = _run(c, 2)[-1]
    assert len(seen) == 2 and s.method == "half" and c.log[-1].mode == "planner"
    assert np.allclose(s.current[:, 0], np.floor(seen[-1].dense(seen[-1].var_ub)[:, 0] * 5) / 10)


def test_a_custom_planner_that_breaks_a_limit_is_projected_onto_the_limits():
    def greedy(problem):
        return lo.Schedule(
            problem, problem.dense(problem.var_ub), lo.ScheduleStatus.FEASIBLE, "greedy"
        )

    c = lo.Controller(one_breaker_site(16.0), step_s=900, n_periods=4, planner=greedy)
    for s in _run(c):
        assert s.violations() == [] and violations(s.problem, s.current) == []
        # and by the checker written from the raw site, not from the library's own rows
        assert physical_violations(s.problem, s.current, s.n_phases) == []
    assert "projected" in c.log[-1].reason


@pytest.mark.parametrize("bad", ["raises", "wrong type", "wrong shape"])
def test_a_failing_custom_planner_does_not_stop_the_loop(bad):
    def planner(problem):
        if bad == "raises":
            raise RuntimeError("planner bug")
        if bad == "wrong type":
            return np.zeros((problem.n_sessions, problem.n_periods))
        return lo.Schedule(
            problem,
            np.zeros((problem.n_sessions + 1, problem.n_periods)),
            lo.ScheduleStatus.FEASIBLE,
            "x",
        )

    c = lo.Controller(one_breaker_site(16.0), step_s=900, n_periods=4, planner=planner)
    for s in _run(c, 2):
        assert s.status == lo.ScheduleStatus.SOLVER_FAILED_FALLBACK and s.violations() == []
        assert physical_violations(s.problem, s.current, s.n_phases) == []
    assert c.log[-1].mode == "fallback"


def test_warm_start_object_carries_the_basis_between_solve_calls():
    from loadopt.solvers.warm import WarmStart

    site = one_breaker_site(16.0)
    ws = WarmStart(min_rows=0)  # the mechanism at any size (by default small LPs solve cold)
    modes = []
    for k in range(3):
        hz = horizon(8, 900, T0 + timedelta(minutes=15 * k))
        p = lo.compile_problem(site, [session("a", "e0", 20.0), session("b", "e1", 20.0)], hz)
        s = lo.solve(p, warm_start=ws)
        cold = lo.solve(p)
        assert s.objective == pytest.approx(cold.objective, rel=1e-7, abs=1e-7)
        modes.append(ws.mode)
    assert modes == ["cold", "warm", "warm"]


# ------------------------------------------------------------------ a complete Problem


def test_problem_carries_the_evse_arrays_and_id_maps():
    site = one_breaker_site(
        32.0,
        n_evse=3,
        rotations=("RST", "STR", "TSR"),
        allowed_currents=(16.04, 6.0, 8.96, 6.0),
        phase_switching=True,
    )
    p = lo.compile_problem(site, [session("a", "e2", 10.0), session("b", "e0", 10.0)], horizon(4))
    assert p.evse_site_phases.tolist() == [[0, 1, 2], [1, 2, 0], [2, 1, 0]]  # L1 L2 L3 -> R S T
    assert p.evse_phase_switching.all() and p.evse_has_levels.all()
    assert p.evse_voltage_v.tolist() == [e.voltage_v for e in site.evses]
    # one snapping rule: down to the 0.1 A grid, sorted, duplicates merged, 0 (pause) added
    assert p.evse_levels_of(1).tolist() == [0.0, 60.0, 89.0, 160.0]
    assert p.session_index("b") == 1 and p.evse_pos["e2"] == 2
    with pytest.raises(lo.InputError, match="unknown session 'nope'") as err:
        p.session_index("nope")
    assert isinstance(err.value, KeyError) and isinstance(err.value, lo.UnknownIdError)
    assert p.session_departure_s.tolist() == [8 * 3600.0, 8 * 3600.0]


@pytest.mark.parametrize("method", ["fast", "milp"])
def test_every_path_reads_the_same_levels(method):
    # levels 8.96 A and 16.04 A snap to 8.9 and 16.0: the fast path, the MILP and the simulated
    # pilot all use them (before, the fast path and the pilot used the raw values)
    site = one_breaker_site(12.0, n_evse=1, allowed_currents=(0.0, 8.96, 16.04), max_current=32.0)
    p = lo.compile_problem(site, [session("a", "e0", 50.0)], horizon(3))
    s = lo.solve(p, method=method)
    assert set(np.unique(s.current).tolist()) <= {0.0, 8.9}
    assert s.current.max() == 8.9
    from loadopt.simulate import evse_pilot

    assert evse_pilot(p)(np.array([15.99]))[0] == 8.9  # not the raw 8.96
    assert evse_pilot(p)(np.array([16.0]))[0] == 16.0  # the 16.04 step, snapped down


def test_an_empty_level_set_means_only_zero_on_every_path():
    site = one_breaker_site(32.0, n_evse=1, allowed_currents=())
    p = lo.compile_problem(site, [session("a", "e0", 50.0)], horizon(3))
    for method in ("fast", "milp"):
        assert not lo.solve(p, method=method).current.any()


# ------------------------------------------------------------------ series inputs


def test_a_price_per_period_via_the_horizon_and_a_pandas_series():
    hz = horizon(4, 3600)
    prices = np.array([0.3, 0.1, 0.1, 0.4])
    a = lo.Signals(import_price=hz.series(prices))
    pd = pytest.importorskip("pandas")
    idx = pd.date_range(T0, periods=4, freq="1h")
    b = lo.Signals(import_price=pd.Series(prices, index=idx))
    c = lo.Signals(import_price=pd.Series(prices, index=idx.tz_convert("Europe/Berlin")))
    site = one_breaker_site(16.0, n_evse=1)
    ps = [lo.compile_problem(site, [session("a", "e0", 5.0)], hz, sig) for sig in (a, b, c)]
    for p in ps:
        assert p.import_price.tolist() == prices.tolist()
    assert np.array_equal(lo.solve(ps[0]).current, lo.solve(ps[1]).current)


def test_series_inputs_that_cannot_be_placed_are_errors():
    hz = horizon(4, 3600)
    with pytest.raises(lo.InputError, match="one value per period"):
        hz.series([0.1, 0.2])
    with pytest.raises(lo.InputError, match="period 1"):
        hz.series([0.1, float("nan"), 0.1, 0.1])
    with pytest.raises(lo.LoadoptError, match="needs its horizon"):
        lo.Signals(import_price=np.array([0.1, 0.2, 0.3, 0.4]))
    pd = pytest.importorskip("pandas")
    naive = pd.Series([0.1, 0.2], index=pd.date_range("2026-03-02", periods=2, freq="1h"))
    with pytest.raises(lo.LoadoptError, match="timezone-aware"):
        lo.Signals(import_price=naive)


def test_site_evse_lookup_follows_a_copied_site():
    site = one_breaker_site(32.0, n_evse=3)
    assert site.evse("e1") is site.evses[1]
    new = tuple(e.model_copy(update={"max_current": 10.0}) for e in site.evses)
    copy = site.model_copy(update={"evses": new})
    assert copy.evse("e1").max_current == 10.0 and site.evse("e1").max_current == 32.0
    assert "_evse_map" not in site.model_dump_json()
    # the compiled EVSE arrays are kept per evses tuple too: a copy with new EVSEs recompiles
    hz = horizon(2)
    p1 = lo.compile_problem(site, [], hz)
    p2 = lo.compile_problem(copy, [], hz)
    assert p1.evse_max_current.tolist() == [32.0] * 3
    assert p2.evse_max_current.tolist() == [10.0] * 3
    assert lo.compile_problem(site, [], hz).evse_max_current is p1.evse_max_current
    assert not p1.evse_max_current.flags.writeable
    with pytest.raises(lo.InputError, match="unknown EVSE 'e9'"):
        site.evse("e9")


def test_warm_start_by_size_solves_small_lps_cold_and_keeps_no_basis():
    """``WarmStart.min_rows``: an LP with fewer rows is solved cold (measured faster there) and
    no basis is kept; at or above it the chain of warm starts runs as before; same optimum."""
    from loadopt.solvers.warm import MIN_WARM_ROWS, WarmStart

    site = one_breaker_site(16.0)
    assert WarmStart().min_rows == MIN_WARM_ROWS > 0
    for min_rows, want in ((10**6, ["cold", "cold", "cold"]), (1, ["cold", "warm", "warm"])):
        ws = WarmStart(min_rows=min_rows)
        modes = []
        for k in range(3):
            hz = horizon(8, 900, T0 + timedelta(minutes=15 * k))
            p = lo.compile_problem(site, [session("a", "e0", 20.0), session("b", "e1", 20.0)], hz)
            s = lo.solve(p, warm_start=ws)
            assert s.objective == pytest.approx(lo.solve(p).objective, rel=1e-7, abs=1e-7)
            modes.append(ws.mode)
            if min_rows > 1:
                assert ws.memo is None and "rows <" in ws.reason
        assert modes == want
