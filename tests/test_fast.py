"""The fast path (loadopt.fast): hand-checked allocations, policies, minimum current, discrete
steps, the solver fallback, and that the numba and pure paths agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import loadopt as lo
from loadopt import fast
from loadopt.safety import project
from loadopt.solve import _finish
from loadopt.solvers.result import SolverResult, SolverStatus
from loadopt.synthetic import demo_scenario

from .conftest import horizon, one_breaker_site, session
from .fuzz_checker import Limits

#: Comparing the numba kernels with the pure-Python twin means nothing when numba is off.
NEEDS_NUMBA = pytest.mark.skipif(not fast.NUMBA, reason="numba is off: nothing to compare")


def compile1(site, sessions, n=1, **kw):
    return lo.compile_problem(site, sessions, horizon(n), **kw)


def test_equal_split_under_one_breaker():
    p = compile1(one_breaker_site(16.0, 2), [session("a", "e0", 100), session("b", "e1", 100)])
    assert fast.allocate(p, 0).tolist() == [8.0, 8.0]


def test_priority_weights_the_split():
    p = compile1(
        one_breaker_site(30.0, 2, min_current=0.0),
        [session("a", "e0", 100, priority=2.0), session("b", "e1", 100)],
    )
    assert fast.allocate(p, 0).tolist() == [20.0, 10.0]


def test_a_capped_session_leaves_its_share_to_the_other():
    p = compile1(
        one_breaker_site(16.0, 2, min_current=0.0),
        [session("a", "e0", 100, max_current=4.0), session("b", "e1", 100)],
    )
    assert fast.allocate(p, 0).tolist() == [4.0, 12.0]


def test_energy_still_wanted_caps_the_current():
    # 1 h period, 3 phases × 230 V: 0.69 kWh per A; 2.07 kWh = 3 A → rounded up, the car stops
    p = compile1(
        one_breaker_site(32.0, 2, min_current=0.0),
        [session("a", "e0", 2.07), session("b", "e1", 100)],
    )
    assert fast.allocate(p, 0).tolist() == [3.0, 29.0]
    left = np.array([0.0, 100.0])
    assert fast.allocate(p, 0, energy_left_kwh=left).tolist() == [0.0, 32.0]


def test_minimum_current_pauses_who_does_not_fit_and_reoffers_the_share():
    p = compile1(
        one_breaker_site(16.0, 3),
        [
            session("a", "e0", 100, dep_h=3),
            session("b", "e1", 100, dep_h=2),
            session("c", "e2", 100, dep_h=8, priority=2.0),
        ],
    )
    # priority first (c), then earliest departure (b): a cannot get 6 A and is paused
    x = fast.allocate(p, 0)
    assert x[0] == 0.0
    assert x[1] >= 6.0 and x[2] >= 6.0
    assert x[1] + x[2] == 16.0
    # without minimum currents all three would have drawn
    p0 = compile1(
        one_breaker_site(16.0, 3, min_current=0.0),
        [session("a", "e0", 100), session("b", "e1", 100), session("c", "e2", 100)],
    )
    assert (fast.allocate(p0, 0) > 0).all()


def test_everyone_below_minimum_does_not_pause_everyone():
    p = compile1(one_breaker_site(50.0, 10), [session(f"s{k}", f"e{k}", 100) for k in range(10)])
    x = fast.allocate(p, 0)
    assert x.sum() == pytest.approx(50.0)
    assert ((x == 0) | (x >= 6.0)).all()
    assert (x > 0).sum() == 8


def test_discrete_steps_round_down_and_hand_on_the_rest():
    site = lo.Site(
        nodes=(lo.Node(id="grid"), lo.Node(id="cb", parent="grid", max_current=22.0)),
        evses=(
            lo.Evse(
                id="e0",
                node="cb",
                charge_point_id="CP0",
                min_current=0.0,
                allowed_currents=(0.0, 6.0, 10.0, 16.0),
            ),
            lo.Evse(id="e1", node="cb", charge_point_id="CP1", min_current=0.0),
        ),
    )
    p = compile1(site, [session("a", "e0", 100), session("b", "e1", 100)])
    assert fast.allocate(p, 0).tolist() == [10.0, 12.0]


def test_single_phase_sessions_on_different_phases_do_not_compete():
    site = one_breaker_site(16.0, 3, phases=1, rotations=("RST", "STR", "TRS"), min_current=0.0)
    p = compile1(site, [session(f"s{k}", f"e{k}", 100, phases=1) for k in range(3)])
    assert fast.allocate(p, 0).tolist() == [16.0, 16.0, 16.0]


def test_kw_rows_and_grid_import_rows_are_shared_too():
    # 6.9 kW import cap = 10 A on three phases at 230 V: two sessions, 5 A each
    p = compile1(
        one_breaker_site(32.0, 2, min_current=0.0),
        [session("a", "e0", 100), session("b", "e1", 100)],
        signals=lo.Signals(grid_import_limit_kw=6.9),
    )
    x = fast.allocate(p, 0)
    # the float kW row keeps a 1e-9 margin, so 5 A + 5 A does not fit; the top-up hands the
    # 0.1 A left by the rounding to the first in order
    assert x.tolist() == [5.0, 4.9]
    assert lo.Schedule(p, x[:, None], lo.ScheduleStatus.FEASIBLE, "t").violations() == []


def test_edf_serves_the_earliest_departure_first_and_llf_the_least_laxity():
    p = compile1(
        one_breaker_site(40.0, 2),
        [session("a", "e0", 100, dep_h=6), session("b", "e1", 100, dep_h=3)],
    )
    assert fast.allocate(p, 0, "edf").tolist() == [8.0, 32.0]
    # a needs 10 kWh by 6 h (lots of slack), b 60 kWh by 8 h (~2.7 h at 32 A: less slack)
    p = compile1(
        one_breaker_site(40.0, 2),
        [session("a", "e0", 10, dep_h=6), session("b", "e1", 60, dep_h=8)],
    )
    assert fast.allocate(p, 0, "llf").tolist() == [8.0, 32.0]
    # edf: a first, but 10 kWh in one hour is only 14.5 A; b takes the rest
    assert fast.allocate(p, 0, "edf").tolist() == [14.5, 25.5]


def test_allocate_horizon_tracks_energy():
    p = compile1(
        one_breaker_site(32.0, 1, min_current=0.0), [session("a", "e0", 2 * 0.69 * 32)], n=4
    )
    cur = fast.allocate_horizon(p)
    assert cur[0].tolist() == [32.0, 32.0, 0.0, 0.0]


def test_bad_arguments_are_named():
    p = compile1(one_breaker_site(), [session("a", "e0", 10)])
    with pytest.raises(ValueError, match="policy 'rr'"):
        fast.allocate(p, 0, "rr")
    with pytest.raises(ValueError, match="period 5"):
        fast.allocate(p, 5)
    with pytest.raises(ValueError, match="one value per session"):
        fast.allocate(p, 0, energy_left_kwh=np.zeros(3))
    with pytest.raises(lo.InputError, match=r"NaN for session.*'a'"):
        fast.allocate(p, 0, energy_left_kwh=np.array([np.nan]))
    with pytest.raises(ValueError, match="policy"):
        lo.solve(p, method="fast", policy="nope")


def test_no_session_and_unplugged_periods():
    p = compile1(one_breaker_site(), [session("a", "e0", 50, arr_h=2, dep_h=3)], n=4)
    assert fast.allocate(p, 0).tolist() == [0.0]
    assert fast.allocate_horizon(p)[0].tolist() == [0.0, 0.0, 16.0, 0.0]


def test_solve_fast_and_the_fallback_use_the_allocator():
    p = demo_scenario().compile()
    s = lo.solve(p, method="fast")
    assert s.method == "fast" and s.status == lo.ScheduleStatus.FEASIBLE
    assert np.array_equal(s.current, fast.allocate_horizon(p))
    raw = Limits(p.site, p.sessions, p.horizon, p.signals)  # independent of the library's rows
    assert raw.breaches(s.current, p.session_ids) == []
    assert s.violations() == []
    edf = lo.solve(p, method="fast", policy="edf")
    assert raw.breaches(edf.current, p.session_ids) == []
    assert edf.violations() == []
    for st in (SolverStatus.TIME_LIMIT, SolverStatus.ERROR, SolverStatus.INFEASIBLE):
        res = SolverResult(st, None, None, 1.0, "simulated")
        fb = _finish(p, res, lambda x: x, "lp-highs", 0.0)
        assert fb.status.value.endswith("fallback")
        assert np.array_equal(fb.current, project(p, fast.allocate_horizon(p)))
        assert raw.breaches(fb.current, p.session_ids) == []
        assert fb.violations() == []
    assert fb.kpis().delivered_kwh > 0.5 * lo.solve(p).kpis().delivered_kwh


def test_repeat_calls_use_the_cached_preparation():
    from loadopt.fast._prepared import prepared

    p = demo_scenario().compile()
    assert prepared(p) is prepared(p)


@NEEDS_NUMBA
@pytest.mark.parametrize("policy", ["fair", "edf", "llf"])
def test_numba_and_pure_paths_agree_on_the_demo(policy):
    p = demo_scenario().compile()
    a = fast.allocate_horizon(p, policy)
    b = fast.allocate_horizon(p, policy, kernels=fast.pure_kernels())
    assert np.array_equal(a, b)


@NEEDS_NUMBA
def test_disabled_numba_in_a_fresh_process_gives_identical_results(tmp_path):
    code = (
        "import json, sys\n"
        "from loadopt import fast\n"
        "from loadopt.synthetic import demo_scenario\n"
        "p = demo_scenario().compile()\n"
        "print(json.dumps({'numba': fast.NUMBA, 'cur': {k: fast.allocate_horizon(p, k).tolist()"
        " for k in fast.POLICIES}}))\n"
    )
    env = {**os.environ, "LOADOPT_DISABLE_NUMBA": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["numba"] is False
    p = demo_scenario().compile()
    for k in fast.POLICIES:
        assert np.array_equal(np.array(got["cur"][k]), fast.allocate_horizon(p, k)), k


# --- the per-problem row reduction (issue 3 follow-up) --------------------------------------------


def _reduced(p):
    from loadopt.fast._prepared import prepared

    pp = prepared(p)
    return pp, p.G.tocsr()[pp.row_orig]


def test_three_identical_phase_rows_are_merged_into_one():
    # two 3-phase sessions under a 20 A breaker: R, S and T rows are identical → one row kept
    p = compile1(
        one_breaker_site(20.0, 2, min_current=0.0),
        [session("a", "e0", 100), session("b", "e1", 100)],
    )
    pp, _ = _reduced(p)
    assert p.G.shape[0] == 3 and pp.row_orig.size == 1
    assert fast.allocate(p, 0).tolist() == [10.0, 10.0]


def test_duplicates_keep_the_smallest_capacity():
    # phase limits 30/20/25 A on the same breaker: the merged row carries 20 A
    site = lo.Site(
        nodes=(lo.Node(id="grid"), lo.Node(id="cb", parent="grid", max_current=(30.0, 20.0, 25.0))),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="cb", charge_point_id=f"CP{k}", min_current=0.0)
            for k in range(2)
        ),
    )
    p = compile1(site, [session("a", "e0", 100), session("b", "e1", 100)])
    pp, _ = _reduced(p)
    assert pp.row_orig.size == 1 and pp.chk.tolist() == [200.0]
    assert fast.allocate(p, 0).tolist() == [10.0, 10.0]
    assert lo.solve(p, method="fast").violations() == []


def test_a_one_session_row_becomes_a_bound_and_rows_that_cannot_fill_go():
    # e0 alone under a 10 A breaker (one variable → bound 10 A), e1 and e2 under a 64 A breaker
    # that two 32 A sessions cannot overload (dropped), no other limit
    site = lo.Site(
        nodes=(
            lo.Node(id="grid"),
            lo.Node(id="small", parent="grid", max_current=10.0),
            lo.Node(id="big", parent="grid", max_current=64.0),
        ),
        evses=(
            lo.Evse(id="e0", node="small", charge_point_id="CP0", min_current=0.0),
            lo.Evse(id="e1", node="big", charge_point_id="CP1", min_current=0.0),
            lo.Evse(id="e2", node="big", charge_point_id="CP2", min_current=0.0),
        ),
    )
    p = compile1(site, [session("a", "e0", 100), session("b", "e1", 100), session("c", "e2", 100)])
    pp, _ = _reduced(p)
    assert pp.row_orig.size == 0
    assert pp.hi_da.tolist() == [100.0, 320.0, 320.0] and pp.ub_da.tolist() == [320.0] * 3
    for pol in fast.POLICIES:
        assert fast.allocate(p, 0, pol).tolist() == [10.0, 32.0, 32.0]


def test_a_one_session_row_below_the_minimum_current_pauses_the_session():
    # 4 A breaker, 6 A minimum: the session can never be admitted (IEC 61851: it is paused)
    p = compile1(one_breaker_site(4.0, 1), [session("a", "e0", 100)])
    pp, _ = _reduced(p)
    assert pp.hi_da.tolist() == [0.0] and pp.lo_da.tolist() == [0.0]
    for pol in fast.POLICIES:
        assert fast.allocate(p, 0, pol).tolist() == [0.0]


def test_repeat_calls_do_not_prepare_again(monkeypatch):
    from loadopt.fast import _prepared

    p = demo_scenario().compile()
    first = fast.allocate(p, 40)

    def boom(problem):
        raise AssertionError("prepared again")

    monkeypatch.setattr(_prepared, "_prepare", boom)
    for _ in range(3):
        assert np.array_equal(fast.allocate(p, 40), first)
    fast.allocate_horizon(p)
