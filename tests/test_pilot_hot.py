"""The controller's pilot step, fast: the rounding-aware re-solve hot on the main solve's HiGHS
model (:meth:`loadopt.planner.SolvePlanner.resolve_tightened`) must give the cold re-solve's
optimum or step aside; the memoised and vectorised pilot helpers must give what the direct
formulas give."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.options import LpOptions
from loadopt.pilots import down_to_pilot, pilot_fixings, pilot_grid, round_to_pilots
from loadopt.planner import SolvePlanner
from loadopt.solvers.warm import tightened_bounds

from .conftest import T0, examples, horizon, session
from .physics import physical_violations

AMPS = tuple(float(a) for a in range(6, 33))
STEPS = (8.0, 16.0, 24.0, 32.0)


def tree_site(main_a: float, sub_a: float, steps=AMPS, min_a: float = 6.0) -> lo.Site:
    """grid → main breaker → two sub-breakers, two 1-phase EVSEs on each (different phases) and
    one 3-phase EVSE on the main one: single-variable rows, rows that cannot bind, rows with
    equal coefficients — every reduction of the LP."""
    evse = dict(min_current=min_a, allowed_currents=steps)
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="main", parent="grid", max_current=main_a),
            lo.Node(id="a", parent="main", max_current=sub_a),
            lo.Node(id="b", parent="main", max_current=sub_a),
        ),
        evses=(
            lo.Evse(id="a0", node="a", charge_point_id="A0", phases=1, **evse),
            lo.Evse(
                id="a1", node="a", charge_point_id="A1", phases=1, phase_rotation="STR", **evse
            ),
            lo.Evse(id="b0", node="b", charge_point_id="B0", phases=1, **evse),
            lo.Evse(
                id="b1", node="b", charge_point_id="B1", phases=1, phase_rotation="TRS", **evse
            ),
            lo.Evse(id="m0", node="main", charge_point_id="M0", phases=3, **evse),
        ),
    )


def tree_problem(energy, dep, main_a, sub_a, steps=AMPS, n=6) -> lo.Problem:
    site = tree_site(main_a, sub_a, steps, steps[0])
    ids = ("a0", "a1", "b0", "b1", "m0")
    sessions = [
        session(f"s{k}", ids[k], e, dep_h=d, phases=3 if ids[k] == "m0" else 1)
        for k, (e, d) in enumerate(zip(energy, dep, strict=False))
    ]
    return lo.compile_problem(site, sessions, horizon(n, 900))


def hot_and_cold(p: lo.Problem, floor, ub, h):
    """(hot schedule or None, cold schedule) of the tightened problem."""
    planner = SolvePlanner(LpOptions(separable=False))  # HiGHS keeps a model (sorting does not)
    planner(p)
    hot = planner.resolve_tightened(p, floor, ub, h)
    cold = lo.solve(replace(p, var_floor_a=floor, var_ub=ub, h=h), method="lp")
    return hot, cold


def same_optimum(hot, cold) -> None:
    assert cold.status is lo.ScheduleStatus.OPTIMAL
    assert hot.status is lo.ScheduleStatus.OPTIMAL and hot.method == "lp-highs-hot"
    assert abs(hot.objective - cold.objective) <= 1e-7 * max(1.0, abs(cold.objective))


problems = st.tuples(
    st.lists(st.floats(0.2, 25.0), min_size=5, max_size=5),
    st.lists(st.floats(0.5, 1.5), min_size=5, max_size=5),
    st.floats(20.0, 80.0),
    st.floats(10.0, 40.0),
)


@pytest.mark.parametrize("steps", [STEPS, AMPS])
def test_hot_resolve_of_the_pilot_fixings_is_the_cold_optimum(steps):
    """Random small sites (fixed seed): wherever the pilot step asks for a re-solve, hot on
    the main solve's model gives the cold optimum, safe by the independent checker. Plans from
    the LP and from arbitrary wishes; small energies, so that sessions full within period 0
    lower right-hand sides too."""
    rng = np.random.default_rng(12)
    done = lowered = 0
    for k in range(60):
        p = tree_problem(
            rng.uniform(0.2, 6.0, 5),
            rng.uniform(0.25, 1.5, 5),
            rng.uniform(20.0, 50.0),
            rng.uniform(8.0, 25.0),
            steps,
        )
        if k % 2:
            plan = lo.solve(p, method="lp").current
        else:
            wish = np.repeat(rng.uniform(0.0, 20.0, 5)[:, None], p.n_periods, axis=1)
            plan = lo.safety.project(p, wish)
        fx = pilot_fixings(p, plan, round_to_pilots(p, plan))
        if fx is None:
            continue
        hot, cold = hot_and_cold(p, *fx)
        assert hot is not None  # fixings only tighten: always done hot here
        same_optimum(hot, cold)
        assert not hot.violations()
        assert physical_violations(p, hot.current) == []  # independent, from the raw inputs
        done += 1
        lowered += bool(np.any(fx[2] < p.h))
    assert done >= 6 and lowered >= 2, (done, lowered)


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems, st.data())
def test_hot_resolve_of_any_tightening_is_the_cold_optimum_or_declined(prob, data):
    """Random tightenings (upper bounds cut, floors, right-hand sides lowered on any rows,
    rows the LP dropped as unable to bind among them): hot gives the cold optimum, or None."""
    energy, dep, main_a, sub_a = prob
    p = tree_problem(energy, dep, main_a, sub_a)
    V, M = p.n_vars, p.G.shape[0]
    cut = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=V, max_size=V)))
    ub = p.var_ub * np.where(cut < 0.3, cut / 0.3, 1.0)
    low = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=M, max_size=M)))
    h = p.h * np.where(low < 0.5, 0.4 + low, 1.0)
    floor = np.zeros(V)
    f0 = data.draw(st.integers(0, max(V - 1, 0)))
    if V and p.var_period[f0] == 0:  # a floor that fits every row by itself
        room = np.min(np.where(p.G[:, f0].toarray().ravel() > 0, h, np.inf) / 10.0)
        floor[f0] = min(ub[f0], room, 6.0)
    hot, cold = hot_and_cold(p, floor, ub, h)
    event(f"hot: {hot is not None}")
    if hot is None:
        return
    same_optimum(hot, cold)


def test_a_row_the_lp_dropped_that_can_bind_again_is_added_back():
    """A 20 A sub-breaker over two 10 A EVSEs cannot bind: the LP drops it. Lowered to 12 A it
    can, so the hot re-solve adds it back (and gets the cold optimum)."""
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="sub", parent="grid", max_current=20.0),
        ),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="sub", charge_point_id=f"C{k}", phases=1, max_current=10.0)
            for k in range(2)
        ),
    )
    p = lo.compile_problem(
        site, [session(f"s{k}", f"e{k}", 30.0, phases=1) for k in range(2)], horizon(4, 900)
    )
    h = p.h.copy()
    rows0 = np.flatnonzero((p.row_period == 0) & (np.diff(p.G.indptr) > 1))
    h[rows0] = 12.0
    planner = SolvePlanner(LpOptions(separable=False))  # HiGHS keeps a model (sorting does not)
    planner(p)
    lp = planner.warm_start._solved[1]
    assert "safety" not in lp.rows or not np.isin(rows0, lp.rows["safety"].index).any()
    tt = tightened_bounds(p, lp, np.zeros(p.n_vars), p.var_ub, h)
    assert tt is not None and tt.new_ub.size == rows0.size
    hot = planner.resolve_tightened(p, np.zeros(p.n_vars), p.var_ub, h)
    cold = lo.solve(replace(p, h=h), method="lp")
    same_optimum(hot, cold)
    assert hot.current[:, 0].sum() <= 12.0 + 1e-9
    assert cold.current[:, 0].sum() == pytest.approx(hot.current[:, 0].sum())


def test_hot_resolve_steps_aside_where_it_cannot_be_shown():
    p = tree_problem([10.0] * 5, [1.0] * 5, 40.0, 20.0)
    floor, ub, h = np.zeros(p.n_vars), p.var_ub.copy(), p.h.copy()
    planner = SolvePlanner(LpOptions(separable=False))  # HiGHS keeps a model (sorting does not)
    assert planner.resolve_tightened(p, floor, ub, h) is None  # nothing solved yet
    planner(p)
    assert planner.resolve_tightened(replace(p), floor, ub, h) is None  # another problem
    planner(p)
    assert planner.resolve_tightened(p, floor, ub + 1.0, h) is None  # a loosened bound
    planner(p)
    assert planner.resolve_tightened(p, floor, ub, h + 1.0) is None  # a loosened row
    planner(p)
    assert planner.resolve_tightened(p, floor, ub, h) is not None
    assert planner.resolve_tightened(p, floor, ub, h) is None  # the kept model is used once
    planner(p)
    planner.hot_resolve = False  # nothing kept, nothing re-solved hot
    assert planner.warm_start._solved is None
    planner(p)
    assert planner.warm_start._solved is None
    assert planner.resolve_tightened(p, floor, ub, h) is None
    planner.hot_resolve = True
    planner(p)
    again = pickle.loads(pickle.dumps(planner))  # the HiGHS model is not pickled
    assert again.warm_start._solved is None and planner.warm_start._solved is not None
    assert again.resolve_tightened(p, floor, ub, h) is None
    timed = SolvePlanner(lo.LpOptions(time_limit_s=5.0))  # the re-run gets its own budget
    timed(p)
    hi = timed.warm_start._solved[2]
    ran = hi.getRunTime()
    assert timed.resolve_tightened(p, floor, ub, h) is not None
    assert hi.getOptionValue("time_limit")[1] == pytest.approx(ran + 5.0)
    planner(p)
    planner.warm_start._solved = (p, planner.warm_start._solved[1], object())  # a broken model
    assert planner.resolve_tightened(p, floor, ub, h) is None


def test_controller_pilot_step_hot_and_cold_agree_and_stay_safe():
    """The same day of a stepped site, re-solving hot and (``hot_resolve=False``) cold: the
    re-solves happen, each is the other's optimum in value, every limit is a pilot and every
    step is safe by the independent checker."""
    site = tree_site(45.0, 24.0, STEPS, 8.0)
    ids = ("a0", "a1", "b0", "b1", "m0")
    out = {}
    for hot in (True, False):
        ctl = lo.Controller(site, method="lp", step_s=900, n_periods=16)
        ctl.planner.hot_resolve = hot
        for k, e in enumerate(ids):
            ctl.start_session(
                session(f"s{k}", e, 3.0 + 4 * k, dep_h=1.5 + k, phases=3 if e == "m0" else 1)
            )
        msgs, firsts = [], []
        for k in range(6):
            sched = ctl.step(T0 + timedelta(minutes=15 * k))
            assert physical_violations(sched.problem, sched.current) == []
            assert np.all(np.isin(sched.current[:, 0], (0.0, *STEPS)))
            msgs.append(sched.message)
            firsts.append(sched.current[:, 0].sum())
        out[hot] = (msgs, firsts)
    assert any("re-solved in pilot steps" in m for m in out[True][0])
    assert [("re-solved" in m) for m in out[True][0]] == [("re-solved" in m) for m in out[False][0]]


# --------------------------------------------------------------------------- old vs new


def grid_reference(p: lo.Problem) -> tuple[np.ndarray, np.ndarray]:
    """The pilot grid built session by session (the formula before it was vectorised)."""
    levels = [p.evse_levels_of(int(e)) for e in p.session_evse]
    width = max((a.size for a in levels if a is not None), default=1)
    grid = np.full((len(levels), width), np.inf)
    for i, a in enumerate(levels):
        if a is not None:
            grid[i, : a.size] = a / 10.0
    return grid, np.array([a is not None for a in levels], dtype=bool)


def down_reference(limit, grid, stepped, min_a):
    """down_to_pilot by comparing every level (the formula before the binary search)."""
    lim = np.asarray(limit, dtype=np.float64)
    two = lim.ndim == 2
    L = lim if two else lim[:, None]
    out = np.where(L + 1e-9 < min_a[:, None], 0.0, L)
    if stepped.any():
        k = (grid[:, None, :] <= L[:, :, None] + 1e-9).sum(axis=2) - 1
        rows = np.arange(grid.shape[0])[:, None]
        val = np.where(k >= 0, grid[rows, np.maximum(k, 0)], 0.0)
        val = np.where(val + 1e-9 < min_a[:, None], 0.0, val)
        out = np.where(stepped[:, None], val, out)
    return out if two else out[:, 0]


@settings(max_examples=examples(40), deadline=None)
@given(st.data())
def test_down_to_pilot_is_the_level_by_level_formula(data):
    S, T = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 5))
    sets = [np.array([0.0, 8.0, 16.0, 32.0, np.inf]), np.array([0.0, *range(6, 17)], float)]
    width = max(a.size for a in sets)
    grid = np.full((S, width), np.inf)
    kind = data.draw(st.lists(st.integers(-1, 1), min_size=S, max_size=S))
    for i, k in enumerate(kind):
        if k >= 0:
            grid[i, : sets[k].size] = sets[k]
    stepped = np.array(kind) >= 0
    value = st.one_of(st.floats(-5, 40), st.sampled_from([np.nan, np.inf, 8.0 - 1e-9, 16.0]))
    lim = np.array(data.draw(st.lists(value, min_size=S * T, max_size=S * T))).reshape(S, T)
    min_a = np.array(data.draw(st.lists(st.floats(0, 10), min_size=S, max_size=S)))
    for x in (lim, lim[:, 0]):
        np.testing.assert_array_equal(
            down_to_pilot(x, grid, stepped, min_a), down_reference(x, grid, stepped, min_a)
        )
    # the next pilot up: one binary search per level set = the smallest level above, directly
    from loadopt.pilots import _up

    ladder = np.full((2, width), np.inf)
    for k, a in enumerate(sets):
        ladder[k, : a.size] = a
    max_a = np.array(data.draw(st.lists(st.floats(0, 40), min_size=S, max_size=S)))
    x = lim[:, 0]
    np.testing.assert_array_equal(
        _up(x, ladder, np.array(kind, dtype=np.int64), min_a, max_a),
        up_reference(x, grid, stepped, min_a, max_a),
    )


def up_reference(limit, grid, stepped, min_a, max_a):
    """The next pilot up by comparing every level (the formula before the binary search)."""
    up = np.where(limit + 1e-9 < min_a, min_a, limit)
    if stepped.any():
        above = np.where(grid > limit[:, None] + 1e-9, grid, np.inf).min(axis=1)
        above = np.maximum(above, min_a)
        up = np.where(stepped, above, up)
    return np.where(up <= max_a + 1e-9, up, limit)


def test_pilot_grid_and_period0_columns_are_the_direct_ones():
    from loadopt.pilots import _columns0, _period0

    mixed = lo.Site(
        nodes=(lo.Node(id="g", kind="grid_connection", max_current=60.0),),
        evses=(
            lo.Evse(id="e0", node="g", charge_point_id="C0", phases=1, allowed_currents=STEPS),
            lo.Evse(id="e1", node="g", charge_point_id="C1", phases=1),
            lo.Evse(id="e2", node="g", charge_point_id="C2", phases=3, allowed_currents=AMPS),
            lo.Evse(id="e3", node="g", charge_point_id="C3", phases=1, allowed_currents=STEPS),
        ),
    )
    sessions = [session(f"s{k}", f"e{k}", 10.0, dep_h=2.0, phases=1) for k in range(4)]
    for p in (
        lo.compile_problem(mixed, sessions, horizon(4, 900)),
        tree_problem([5.0] * 5, [1.0] * 5, 50.0, 20.0),
    ):
        g, s = pilot_grid(p)
        g0, s0 = grid_reference(p)
        np.testing.assert_array_equal(g, g0)
        np.testing.assert_array_equal(s, s0)
        with pytest.raises(ValueError):
            g[0, 0] = 1.0  # shared by every call on the problem: read-only
        lo_, hi_, rows, coef = _columns0(p)
        Gc = p.G.tocsc()
        for j, v in enumerate(_period0(p)):
            sl = slice(Gc.indptr[v], Gc.indptr[v + 1])
            np.testing.assert_array_equal(rows[lo_[j] : hi_[j]], Gc.indices[sl])
            np.testing.assert_array_equal(coef[lo_[j] : hi_[j]], Gc.data[sl])


def test_line_magnitudes_are_the_sliced_formula():
    """The exact line check sums every line then picks the phasor-limited ones: the same sums
    as slicing those lines' coefficient columns first (line-to-line EVSEs)."""
    from loadopt.safety import line_current_magnitudes

    evse = dict(node="cb", phases=1, wiring="line_to_line", voltage_v=208.0)
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="cb", parent="grid", max_current=30.0),
        ),
        evses=(
            lo.Evse(id="e0", charge_point_id="C0", phase_rotation="RST", **evse),
            lo.Evse(id="e1", charge_point_id="C1", phase_rotation="STR", **evse),
            lo.Evse(id="e2", charge_point_id="C2", phase_rotation="TRS", **evse),
        ),
        voltage_v=120.0,
    )
    p = lo.compile_problem(
        site, [session(f"s{k}", f"e{k}", 20.0, phases=1) for k in range(3)], horizon(4, 900)
    )
    groups = np.flatnonzero(p.line_exact)
    assert groups.size
    cur = np.random.default_rng(3).uniform(0, 32, (p.n_sessions, p.n_periods))
    mag, lim, g = line_current_magnitudes(p, cur)
    Z = p.line_coef[:, groups].T @ cur + p.line_base[groups, None] * p.base_load_a[None, :]
    np.testing.assert_array_equal(g, groups)
    np.testing.assert_array_equal(mag, np.abs(Z) + p.line_reserved_a[groups])
    np.testing.assert_array_equal(lim, p.line_limit[groups])


def test_the_highs_object_is_reused_with_the_same_options_and_a_fresh_time_budget():
    """The next solve reuses the last HiGHS object (cleared, its model replaced): same
    solutions as a new object, the time limit re-based on the object's run time so far; other
    options or time limit, or ``hot_resolve=False``: a new object."""
    from loadopt.lp import build_lp
    from loadopt.solvers.result import SolverStatus

    probs = [tree_problem([4.0 + k, 9.0, 2.0, 12.0, 6.0], [1.0] * 5, 40.0, 18.0) for k in range(3)]
    planner = SolvePlanner(lo.LpOptions(time_limit_s=5.0))
    fresh = SolvePlanner(lo.LpOptions(time_limit_s=5.0), hot_resolve=False)
    objs = []
    for p in probs:
        a, b = planner(p), fresh(p)
        np.testing.assert_array_equal(a.current, b.current)
        assert a.objective == b.objective
        hi = planner.warm_start._solved[2]
        objs.append(hi)
        assert hi.getOptionValue("time_limit")[1] <= hi.getRunTime() + 5.0
    assert objs[0] is objs[1] is objs[2]
    assert fresh.warm_start._spare is None and fresh.warm_start._solved is None
    # a hot re-solve on the kept object, then the next solve on the same object
    p = probs[0]
    planner(p)
    assert planner.resolve_tightened(p, np.zeros(p.n_vars), p.var_ub * 0.5, p.h) is not None
    np.testing.assert_array_equal(planner(probs[1]).current, fresh(probs[1]).current)
    assert planner.warm_start._solved[2] is objs[0]
    ws = planner.warm_start  # other options: a new object
    res = ws.solve(p, build_lp(p), {"presolve": "on"}, 5.0)
    assert res.status is SolverStatus.OPTIMAL
    assert ws._solved[2] is not objs[0]


def test_a_safety_row_holds_the_variables_of_its_own_period_only():
    """The contract the pilot give-back reads a period-0 variable's rows by (``_columns0``: from
    the period-0 rows alone): every entry of ``G`` is in a row of its variable's period — on
    wired, tiered, congested, demand-response, PV and V2G/battery problems."""
    from loadopt.acn import acn_scenario
    from loadopt.synthetic import benchmark_scenario, demo_scenario, v2g_scenario

    problems = [
        acn_scenario("2019-05-07", step_s=300).compile(),
        benchmark_scenario(30, n_periods=24, seed=3).compile(),
        demo_scenario(n_evse=12).compile(),
        v2g_scenario(12, n_periods=24)[0].compile(),
        tree_problem([5.0] * 5, [1.0] * 5, 50.0, 20.0),
    ]
    for p in problems:
        G = p.G.tocoo()
        assert G.nnz
        np.testing.assert_array_equal(p.row_period[G.row], p.var_period[G.col])


def _jit(func):
    """``func`` compiled as the library compiles it (:class:`loadopt._csr.LazyKernel`); the test
    is skipped where numba is missing or ``LOADOPT_DISABLE_NUMBA`` is set (nothing to compare)."""
    from loadopt._csr import LazyKernel

    kernel = LazyKernel(func).get(force=True)
    if kernel is None:
        pytest.skip("numba is missing or disabled: no compiled loop to compare")
    return kernel


@pytest.fixture
def pilot_loops(monkeypatch):
    """Run the pilot helpers with their compiled loops (``True``) or their numpy forms."""
    from loadopt import pilots

    kernels = (
        pilots._COLUMNS_KERNEL,
        pilots._ROWS_DOT_KERNEL,
        pilots._TAKE_ROOM_KERNEL,
        pilots._DOWN_AT_KERNEL,
        pilots._UP_AT_KERNEL,
    )
    jitted = {k: _jit(k.func) for k in kernels}

    def use(compiled: bool) -> None:
        for k in kernels:
            monkeypatch.setattr(k, "done", True)
            monkeypatch.setattr(k, "kernel", jitted[k] if compiled else None)
            if compiled:
                assert k.kernel is not None

    return use


def test_pilot_loops_compiled_and_numpy_give_the_same_schedules(pilot_loops):
    """The give-back, the fixings, the period-0 columns and row loads: compiled loops and numpy
    forms agree value for value (a JPL day, tree sites in amps and 8 A steps, batteries)."""
    from loadopt.acn import acn_scenario
    from loadopt.pilots import _columns0, _load0_da, _rows0
    from loadopt.synthetic import v2g_scenario

    problems = [
        acn_scenario("2019-05-07", step_s=300).compile(),
        tree_problem([5.0, 9.0, 2.0, 7.0, 12.0], [1.0, 3.0, 2.0, 0.5, 4.0], 50.0, 20.0),
        tree_problem([5.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0], 40.0, 17.0, steps=STEPS),
        v2g_scenario(12, n_periods=24)[0].compile(),
    ]
    rng = np.random.default_rng(7)
    fixed = raised = 0
    for p in problems:
        st_ = p.storage
        bat = (
            None if st_ is None else rng.uniform(-5.0, 5.0, (st_.n_batteries, p.n_periods)).round(1)
        )
        plans = [
            rng.uniform(0.0, 1.0, (p.n_sessions, p.n_periods)) * p.session_max_current[:, None]
            for _ in range(6)
        ]
        got = {}
        for compiled in (False, True):
            pilot_loops(compiled)
            out = []
            for plan in plans:
                q = replace(p)  # its own memo
                r = round_to_pilots(q, plan, battery_a=bat)
                out.append((r, pilot_fixings(q, plan, r, battery_a=bat)))
                x = np.floor(q.gather(plan) * 10.0)
                load = _load0_da(q, x, bat)
                rows0 = _rows0(q)
                ref = (q.G @ x)[rows0]
                if st_ is not None and bat is not None and st_.bc_ub.size:
                    from loadopt.pilots import _storage_load_da

                    ref = ref + _storage_load_da(q, bat)[rows0]
                np.testing.assert_array_equal(load[rows0], ref)
                lo_, hi_, rows, coef = _columns0(q)
                Gc = q.G.tocsc()
                for j, v in enumerate(np.flatnonzero(q.var_period == 0)):
                    sl = slice(Gc.indptr[v], Gc.indptr[v + 1])
                    np.testing.assert_array_equal(rows[lo_[j] : hi_[j]], Gc.indices[sl])
                    np.testing.assert_array_equal(coef[lo_[j] : hi_[j]], Gc.data[sl])
            got[compiled] = out
        grid, stepped = pilot_grid(p)
        for plan, (ra, fa), (rb, fb) in zip(plans, got[False], got[True], strict=True):
            np.testing.assert_array_equal(ra, rb)
            down = down_to_pilot(plan[:, 0], grid, stepped, p.session_min_current)
            raised += bool((ra[:, 0] > np.floor(down * 10.0 + 1e-6) / 10.0 + 1e-9).any())
            assert (fa is None) == (fb is None)
            fixed += fa is not None
            for a, b in zip(fa or (), fb or (), strict=True):
                np.testing.assert_array_equal(a, b)
    assert raised >= 3 and fixed >= 3  # both loops ran


def test_transposed_product_is_the_scipy_product():
    """The exact line check's ``C.T @ cur`` without the transposed matrix object: the same
    numbers bit for bit (complex and real, any memory layout), and scipy's product where the
    kernel does not apply."""
    import scipy.sparse as sp

    from loadopt import safety

    rng = np.random.default_rng(3)
    C = sp.random(40, 18, density=0.15, format="csr", random_state=4)
    Cz = C.astype(np.complex128)
    Cz.data = C.data * np.exp(1j * rng.uniform(0.0, 6.3, C.nnz))
    cur = rng.uniform(0.0, 32.0, (40, 30)).round(1)
    for M in (C, Cz):
        for x in (cur, cur[:, ::3], np.asfortranarray(cur), cur[:, :0]):
            ref = M.T @ x
            got = safety._transposed_product(M, x)
            assert got.dtype == ref.dtype and got.shape == ref.shape
            assert got.tobytes() == np.ascontiguousarray(ref).tobytes()
    np.testing.assert_array_equal(safety._transposed_product(Cz.tocsc(), cur), Cz.T @ cur)


def test_projection_keeps_capacities_only_of_read_only_limits():
    """``project`` keeps the row capacities and maxima on a compiled problem (read-only arrays,
    shared with the pilot step) and recomputes them where the limits are writable arrays: a
    limit lowered in place after one projection is honoured by the next."""
    from loadopt.safety import project, violations

    p = tree_problem([20.0] * 5, [3.0] * 5, 50.0, 20.0)
    assert not p.h.flags.writeable
    want = np.full((p.n_sessions, p.n_periods), 32.0)
    first = project(p, want)
    assert "cap" in p.__dict__["_memo"] and "ub_da" in p.__dict__["_memo"]
    np.testing.assert_array_equal(project(p, want), first)
    q = replace(p, h=np.array(p.h), var_ub=np.array(p.var_ub))
    np.testing.assert_array_equal(project(q, want), first)
    assert not violations(q, first)  # the check and the pilot step keep nothing of q's limits
    round_to_pilots(q, first)
    q.h[:] = q.h / 2.0
    q.var_ub[:] = np.minimum(q.var_ub, 7.0)
    assert violations(q, first)
    half = project(q, want)
    assert not violations(q, half)
    assert half.max() <= 7.0 and half.sum() < first.sum()
    assert not violations(q, round_to_pilots(q, half))


def test_hot_resolve_with_fairness_is_the_cold_optimum_or_declined():
    """With a fairness reward, a session whose every column is cut to 0 A has no fairness row in
    the rebuilt LP; kept in the hot model it would force the served fraction ``z`` to 0 (another
    optimum): the hot re-solve must give the cold optimum or step aside."""
    site = tree_site(40.0, 20.0)
    ids = ("a0", "a1", "b0", "b1", "m0")
    sessions = [
        session(f"s{k}", e, 20.0, dep_h=1.5, phases=3 if e == "m0" else 1)
        for k, e in enumerate(ids)
    ]
    p = lo.compile_problem(site, sessions, horizon(6, 900), objective=lo.Objective(fairness=50.0))
    ub = p.var_ub.copy()
    ub[p.var_session == 0] = 0.0
    hot, cold = hot_and_cold(p, np.zeros(p.n_vars), ub, p.h.copy())
    if hot is not None:
        same_optimum(hot, cold)
    floor, ub, h = np.zeros(p.n_vars), p.var_ub.copy(), p.h.copy()
    ub[(p.var_session == 0) & (p.var_period == 0)] = 0.0  # room left: still done hot
    hot, cold = hot_and_cold(p, floor, ub, h)
    same_optimum(hot, cold)


def test_a_fault_in_the_pilot_step_does_not_stop_the_controller(monkeypatch):
    """A fault inside the pilot step (here injected into the re-solve's fixings, then into the
    rounding itself) must not escape ``Controller.step``: the plan is rounded down to pilots
    (safe whenever the plan is), or every limit is 0 A."""
    import loadopt.pilots as pilots

    site = tree_site(45.0, 24.0, STEPS, 8.0)
    ids = ("a0", "a1", "b0", "b1", "m0")
    ctl = lo.Controller(site, method="lp", step_s=900, n_periods=8)
    for k, e in enumerate(ids):
        ctl.start_session(session(f"s{k}", e, 9.0 + k, dep_h=3.0, phases=3 if e == "m0" else 1))

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(pilots, "pilot_fixings", broken)
    sched = ctl.step(T0)
    assert physical_violations(sched.problem, sched.current) == []
    assert np.all(np.isin(sched.current[:, 0], (0.0, *STEPS)))
    assert sched.current[:, 0].sum() > 0 and "injected" in sched.message
    monkeypatch.setattr(pilots, "rounded_down", broken)
    monkeypatch.setattr(pilots, "round_to_pilots", broken)
    sched = ctl.step(T0 + timedelta(minutes=15))
    assert np.all(sched.current == 0.0) and "injected" in sched.message


def _levels_cases():
    """Level sets (sorted, ``+inf`` padded like :func:`loadopt.pilots._level_sets`), per session
    a set or -1 (continuous), minima, and values around every level (± the 1e-9 slack, NaN,
    ±inf, negative)."""
    sets = np.array([[0.0, 8.0, 16.0, 24.0, 32.0], [0.0, 6.0, 6.5, np.inf, np.inf]])

    @st.composite
    def case(draw):
        S = draw(st.integers(1, 6))
        set_of = np.array(draw(st.lists(st.integers(-1, 1), min_size=S, max_size=S)))
        min_a = np.array(
            draw(st.lists(st.sampled_from([0.0, 6.0, 8.0, 7.9]), min_size=S, max_size=S))
        )
        near = [
            v + d
            for v in (0.0, 6.0, 6.5, 8.0, 16.0, 32.0)
            for d in (-2e-9, -1e-9, 0.0, 1e-9, 5e-10)
        ]
        val = st.one_of(
            st.sampled_from([*near, np.nan, np.inf, -np.inf, -0.0, -3.0, 40.0]),
            st.floats(-1.0, 40.0, allow_nan=False),
        )
        T = draw(st.integers(1, 4))
        cur = np.array(draw(st.lists(val, min_size=S * T, max_size=S * T))).reshape(S, T)
        max_a = np.array(
            draw(st.lists(st.sampled_from([6.0, 16.0, 32.0, np.inf]), min_size=S, max_size=S))
        )
        return sets, set_of, min_a, cur, max_a

    return case()


@settings(max_examples=examples(150), deadline=None)
@given(case=_levels_cases())
def test_compiled_pilot_searches_are_the_numpy_forms(case):
    """The compiled rounding and next-pilot searches give, value for value, what
    ``_down``/``_up`` (searchsorted over the level sets) give: at the levels, 1e-9 around them,
    NaN, ±inf, continuous EVSEs, minima between the steps."""
    from loadopt import pilots

    sets, set_of, min_a, cur, max_a = case
    dn = _jit(pilots._down_at_loop)
    up = _jit(pilots._up_at_loop)
    ref = np.floor(pilots._down(cur, sets, set_of, min_a) * 10.0 + 1e-6) / 10.0
    S = cur.shape[0]
    sess = np.repeat(np.arange(S), cur.shape[1])
    flat = cur.ravel().copy()
    # rounded_down's compiled path: the search over the sessions' rows, then the 0.1 A grid
    rd = np.floor(dn(flat, sess, set_of, sets, min_a).reshape(cur.shape) * 10.0 + 1e-6) / 10.0
    assert rd.tobytes() == ref.tobytes()
    ref_dn = pilots._down(flat, sets, set_of[sess], min_a[sess])
    assert dn(flat, sess, set_of, sets, min_a).tobytes() == ref_dn.tobytes()
    ref_up = pilots._up(flat, sets, set_of[sess], min_a[sess], max_a[sess])
    assert up(flat, sess, set_of, sets, min_a, max_a[sess]).tobytes() == ref_up.tobytes()


def test_compiled_rounding_takes_only_one_row_per_session(monkeypatch):
    """``rounded_down``'s compiled loop indexes the sessions' level sets by row: an array with
    another number of rows goes to the numpy form (which broadcasts one row, refuses others)
    instead of being read past the sessions' arrays."""
    from loadopt import pilots

    p = tree_problem([5.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0], 40.0, 17.0, steps=STEPS)
    S, T = p.n_sessions, p.n_periods
    monkeypatch.setattr(pilots._DOWN_AT_KERNEL, "done", True)
    for kernel in (None, _jit(pilots._down_at_loop)):
        monkeypatch.setattr(pilots._DOWN_AT_KERNEL, "kernel", kernel)
        with pytest.raises(ValueError):
            pilots.rounded_down(replace(p), np.full((S + 2, T), 20.0))
        assert pilots.rounded_down(replace(p), np.full((1, T), 20.0)).shape == (S, T)
        assert (pilots.rounded_down(replace(p), np.full((S, T), 20.0)) == 16.0).all()


def _screen_problems():
    """A JPL hour (line-to-line EVSEs, delta/wye transformers: phasor lines), the same with a
    reservation on a plugged EVSE, line-to-line EVSEs on lines that carry a base load, and a
    tree site in 8 A steps."""
    from loadopt.acn import acn_scenario

    sc = acn_scenario("2019-05-07", step_s=300)
    start = T0.replace(year=2019, month=5, day=7, hour=19)
    on = [s for s in sc.sessions if s.arrival <= start < s.departure]
    hz = lo.Horizon(start=start, step_s=300, n_periods=12)
    E, T = len(sc.site.evses), hz.n_periods
    res = np.zeros((E, 3, T))
    k = [e.id for e in sc.site.evses].index(on[0].evse)
    res[k, :, :4] = 6.0
    # line-to-line EVSEs on the grid connection, whose lines also carry the base load
    rots = ("RST", "STR", "TRS")
    root = lo.Site(
        nodes=(lo.Node(id="grid", max_current=60.0),),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node="grid",
                charge_point_id=f"CP{k}",
                wiring="line_to_line",
                phase_rotation=rots[k],
                voltage_v=208.0,
                max_current=32.0,
            )
            for k in range(3)
        ),
        voltage_v=120.0,
    )
    loaded = lo.compile_problem(
        root,
        [session(f"s{k}", f"e{k}", 40.0, dep_h=3.0) for k in range(3)],
        horizon(4, 900),
        lo.Signals(base_load_kw=6.0),
    )
    assert np.abs(loaded.line_base[loaded.line_exact]).max() > 0
    return [
        lo.compile_problem(sc.site, on, hz),
        lo.compile_problem(sc.site, on, hz, reserved_a=res),
        loaded,
        tree_problem([5.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0], 40.0, 17.0, steps=STEPS),
    ]


def test_violation_screen_clears_only_what_the_checks_clear(monkeypatch):
    """``violations``' compiled screen (one pass over the checks' own arithmetic) answers "no
    violation" only where the checks as written find none — every check: non-finite, negative,
    off the 0.1 A grid, not plugged in, above the maximum, a current or power row, a phasor
    line — and the lists it lets through are the checks' own."""
    from loadopt import safety

    screen = _jit(safety._passes_loop)
    rng = np.random.default_rng(11)
    kinds: dict[str, int] = {}
    cleared = 0
    for p in _screen_problems():
        base = lo.solve(p, method="lp").current
        ub = p.dense(np.floor(p.var_ub * 10.0 + 1e-6) / 10.0)
        cands = [base] + [np.floor(base * f * 10.0) / 10.0 for f in (1.01, 1.05, 1.3, 2.0)]
        # within every maximum: only rows or phasor lines can break
        cands += [np.minimum(np.floor(base * f * 10.0) / 10.0, ub) for f in (1.002, 1.01, 1.1)]
        plugged = p.dense(np.ones(p.n_vars)) > 0
        for _ in range(40):
            c = base.copy()
            i, t = rng.integers(c.shape[0]), rng.integers(c.shape[1])
            c[i, t] = rng.choice([c[i, t] + 0.1, c[i, t] + 0.05, -0.1, np.nan, np.inf, 80.0])
            cands.append(c)
        if (~plugged).any():
            c = base.copy()
            c[np.argwhere(~plugged)[0][0], np.argwhere(~plugged)[0][1]] = 1.0
            cands.append(c)
        for c in cands:
            monkeypatch.setattr(safety._PASSES_KERNEL, "done", True)
            monkeypatch.setattr(safety._PASSES_KERNEL, "kernel", None)
            ref = safety.violations(replace(p), c)
            monkeypatch.setattr(safety._PASSES_KERNEL, "kernel", screen)
            q = replace(p)
            assert [str(v) for v in safety.violations(q, c)] == [str(v) for v in ref]
            ok = safety._passes(q, c)
            assert not (ok and ref), ref[:3]
            cleared += ok
            for k in {v.kind for v in ref}:
                kinds[k] = kinds.get(k, 0) + 1
            if ref and all(v.kind == "line current (phasor)" for v in ref):
                kinds["phasor only"] = kinds.get("phasor only", 0) + 1
    assert cleared >= 3
    every = ("non-negative finite", "0.1 A grid", "not plugged in", "max current", "current")
    for k in (*every, "line current (phasor)", "phasor only"):
        assert kinds.get(k, 0) >= 1, kinds


def test_compiled_screen_and_projection_refuse_what_the_numpy_forms_refuse(monkeypatch):
    """A problem whose arrays do not fit together (a right-hand side or a maximum missing, a
    matrix wider than the variables) makes the checks and the projection raise; their compiled
    passes, which index those arrays without bounds checks, must not answer "no violation" or
    hand out a plan instead."""
    import scipy.sparse as sp

    from loadopt import safety

    p = _screen_problems()[0]
    base = lo.solve(p, method="lp").current
    M, V = p.G.shape
    wide = sp.csr_matrix((p.G.data, p.G.indices, p.G.indptr), shape=(M, V + 5))
    monkeypatch.setattr(safety._PASSES_KERNEL, "done", True)
    monkeypatch.setattr(safety._PROJECT_KERNEL, "done", True)
    monkeypatch.setattr(safety._PASSES_KERNEL, "kernel", _jit(safety._passes_loop))
    monkeypatch.setattr(safety._PROJECT_KERNEL, "kernel", _jit(safety._project_loop))
    assert safety.violations(replace(p), base) == []
    bad = (
        replace(p, h=p.h[:-1]),
        replace(p, G=wide),
        replace(p, var_ub=p.var_ub[:-1]),
        replace(p, row_kind=p.row_kind[:-1]),
        replace(p, line_base=p.line_base[:-1]),
        replace(p, line_reserved_a=p.line_reserved_a[:, :-1]),
    )
    for q in bad:
        assert not safety._passes(q, base)
    for q in bad[:3]:
        with pytest.raises(ValueError):
            safety.violations(replace(q), base)
        with pytest.raises(ValueError):
            safety.project(replace(q), base * 1.5)


@pytest.mark.parametrize("compiled", [False, True])
def test_phasor_lines_of_writable_flags_are_read_afresh(monkeypatch, compiled):
    """Which lines are checked as phasors is read from ``line_exact`` afresh where that array
    can still change (as the limits are): a line marked exact in place after a first check is
    checked by the next one, by the compiled screen as by the checks as written."""
    from loadopt import safety

    monkeypatch.setattr(safety._PASSES_KERNEL, "done", True)
    monkeypatch.setattr(
        safety._PASSES_KERNEL, "kernel", _jit(safety._passes_loop) if compiled else None
    )
    p = _screen_problems()[2]  # line-to-line EVSEs: three phasor lines
    over = np.floor(lo.solve(p, method="lp").current * 1.05 * 10.0) / 10.0
    want = [str(v) for v in safety.violations(replace(p), over)]
    assert any("phasor" in v for v in want)
    exact = np.zeros_like(p.line_exact)
    q = replace(p, line_exact=exact)
    assert not any("phasor" in str(v) for v in safety.violations(q, over))
    exact[:] = p.line_exact  # in place
    assert [str(v) for v in safety.violations(q, over)] == want


def test_projection_compiled_is_the_numpy_form(monkeypatch):
    """``project``'s compiled passes give the numpy form's schedule byte for byte: plans over
    every kind of row by a little and by far, off the grid, NaN and inf, with
    and without minimum currents, a reservation, no pass allowed (the last resort: the numpy
    form); and a matrix holding a column twice in a row
    (scipy's maximum adds such entries first) is left to the numpy form."""
    import scipy.sparse as sp

    from loadopt import safety

    compiled = _jit(safety._project_loop)
    rng = np.random.default_rng(5)
    problems = _screen_problems()
    G = problems[3].G  # the tree site's matrix with its first entry split in two
    k = int(G.indptr[np.flatnonzero(np.diff(G.indptr))[0]])
    data = np.insert(G.data, k, G.data[k] * 0.5)
    data[k + 1] *= 0.5
    ptr = G.indptr.copy()
    ptr[np.searchsorted(ptr, k, side="right") :] += 1
    dup = sp.csr_matrix((data, np.insert(G.indices, k, G.indices[k]), ptr), shape=G.shape)
    assert not dup.has_canonical_format
    problems.append(replace(problems[3], G=dup))
    passes = []
    for p in problems:
        base = lo.solve(p, method="lp").current
        plans = [base, base + rng.uniform(0.0, 0.3, base.shape)]
        plans += [base * f + 0.37 for f in (1.02, 1.5, 4.0)]
        c = base * 2.0
        c[0, 0], c[-1, -1] = np.nan, np.inf
        plans.append(c)
        for plan in plans:
            for mc, n in ((None, 8), (p.session_min_current, 8), (None, 0)):
                monkeypatch.setattr(safety._PROJECT_KERNEL, "done", True)
                monkeypatch.setattr(safety._PROJECT_KERNEL, "kernel", None)
                ref = safety.project(replace(p), plan, n, min_current=mc)
                monkeypatch.setattr(safety._PROJECT_KERNEL, "kernel", compiled)
                got = safety.project(replace(p), plan, n, min_current=mc)
                assert got.tobytes() == ref.tobytes()
                passes.append(_shrink_passes(p, plan))
    assert max(passes) >= 1 and min(passes) == 0  # (G ≥ 0: one pass fixes every row)


@pytest.mark.parametrize("compiled", [False, True])
def test_projection_rejects_minimum_currents_not_one_per_session(monkeypatch, compiled):
    """``project``'s ``min_current`` must be one value per session: a shorter array (which the
    compiled passes would read past its end) or a column is refused with an error naming it,
    by the compiled passes as by the numpy form."""
    from loadopt import safety

    p = tree_problem([5.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0], 40.0, 17.0, steps=STEPS)
    S, T = p.n_sessions, p.n_periods
    monkeypatch.setattr(safety._PROJECT_KERNEL, "done", True)
    monkeypatch.setattr(
        safety._PROJECT_KERNEL, "kernel", _jit(safety._project_loop) if compiled else None
    )
    plan = np.full((S, T), 3.0)
    for bad in (np.array([6.0]), np.full(S + 1, 6.0), np.full((S, 1), 6.0), 6.0):
        with pytest.raises(lo.InputError, match="min_current"):
            safety.project(replace(p), plan, min_current=bad)
    ok = safety.project(replace(p), plan, min_current=np.full(S, 6.0))
    assert (ok == 0).all()  # 3 A is below every session's 6 A minimum: all paused


def _shrink_passes(p: lo.Problem, plan: np.ndarray) -> int:
    """How many of ``project``'s passes ``plan`` takes (the numpy form, counted)."""
    from loadopt import safety

    x = np.minimum(safety.to_deciamps(p.gather(plan)), safety._ub_da(p))
    cap = safety.row_capacity_da(p)
    for n in range(8):
        load = p.G @ x
        over = np.flatnonzero(load > cap)
        if over.size == 0:
            return n
        M = p.G[over]
        M.data = np.repeat(1.0 - cap[over] / load[over], np.diff(M.indptr))
        x = np.floor(x * (1.0 - np.asarray(M.max(axis=0).todense()).ravel()))
    return 8


def test_level_sets_kept_by_identity_only_for_read_only_arrays():
    """A controller's problems share the site's read-only level arrays, so their level sets are
    found by identity; writable level arrays are read afresh every time (a step changed in
    place is honoured)."""
    from loadopt import pilots

    p = tree_problem([5.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0], 40.0, 17.0, steps=STEPS)
    first = pilots._level_sets(p)
    assert pilots._level_sets(replace(p)) is first  # the same arrays: the same sets
    lv = np.array(p.evse_levels_da)
    q = replace(p, evse_levels_da=lv)
    assert np.array_equal(pilots._level_sets(q)[1], first[1])
    lv[lv == 80] = 60  # 8 A -> 6 A, in place
    got = pilots._level_sets(replace(q))[1]
    assert 6.0 in got and 8.0 not in got


def test_row_capacities_compiled_are_the_numpy_form():
    """Row capacities (deci-amps below current limits, a margin below power limits, never
    negative) compiled and as numpy computes them: the same values, NaN kept."""
    from loadopt import safety

    rng = np.random.default_rng(2)
    h = np.r_[rng.uniform(0.0, 500.0, 200), [0.0, -0.0, -1.0, np.inf, np.nan, 0.05, 12.34]]
    kind = rng.integers(0, 6, h.size).astype(np.int8)
    ref = np.maximum(
        np.where(kind == 0, np.floor(h * 10.0), h * 10.0 * (1.0 - safety.POWER_MARGIN)), 0.0
    )
    got = _jit(safety._capacity_loop)(h, kind)
    np.testing.assert_array_equal(got, ref)
