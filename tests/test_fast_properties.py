"""Property-based proofs for the fast path and the projection.

- The allocator (every policy) never exceeds a node, phase, grid or DR limit, honours maximum and
  minimum currents and discrete steps, and its schedule comes back from the projection unchanged.
- Max-min fairness: a session below its cap sits under a full row in which no session has a larger
  weighted share (up to the 0.1 A rounding).
- The numba and pure paths give identical results.
- The projection: never exceeds a limit, never raises a value, leaves a feasible schedule as is.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt import fast
from loadopt.fast._prepared import prepared
from loadopt.safety import GRID_SNAP, project, row_capacity_da

from .conftest import T0, examples
from .test_safety_properties import assert_physically_safe, scenarios

#: Comparing the numba kernels with the pure-Python twin means nothing when numba is off.
NEEDS_NUMBA = pytest.mark.skipif(not fast.NUMBA, reason="numba is off: nothing to compare")

ROTATIONS = ["RST", "RTS", "SRT", "STR", "TRS", "TSR"]
SETTINGS = settings(max_examples=examples(120))


@st.composite
def fast_problems(draw, with_min: bool = True, with_steps: bool = True, tight: bool = False):
    """Small trees with current, kW and import limits; optional minimum currents and steps.

    ``tight``: every node has a current limit and every session is plugged in throughout, so
    that sessions compete (for the fairness property)."""
    n_nodes = draw(st.integers(1, 4))
    nodes = []
    for k in range(n_nodes):
        parent = None if k == 0 else f"n{draw(st.integers(0, k - 1))}"
        lim = st.floats(0, 64).map(lambda x: round(x, 1))
        cur = draw(
            st.one_of(lim, st.tuples(lim, lim, lim))
            if tight
            else st.one_of(st.none(), lim, st.tuples(lim, lim, lim))
        )
        kw = draw(st.one_of(st.none(), st.floats(0, 40).map(lambda x: round(x, 2))))
        nodes.append(lo.Node(id=f"n{k}", parent=parent, max_current=cur, max_power_kw=kw))
    n_evse = draw(st.integers(2 if tight else 1, 7))
    evses, sessions = [], []
    for k in range(n_evse):
        mx = draw(st.sampled_from([10.0, 16.0, 20.0, 32.0]))
        mn = draw(st.sampled_from([0.0, 6.0, 8.0])) if with_min else 0.0
        steps = None
        if with_steps and draw(st.booleans()):
            steps = tuple(
                sorted(
                    draw(
                        st.sets(
                            st.sampled_from([0.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0]), min_size=1
                        )
                    )
                )
            )
        evses.append(
            lo.Evse(
                id=f"e{k}",
                node=f"n{draw(st.integers(0, n_nodes - 1))}",
                charge_point_id=f"CP{k}",
                phases=draw(st.sampled_from([1, 3])),
                phase_rotation=draw(st.sampled_from(ROTATIONS)),
                max_current=mx,
                min_current=mn,
                allowed_currents=steps,
                voltage_v=draw(st.sampled_from([230.0, 240.0])),
            )
        )
        a = -10 if tight else draw(st.integers(-30, 60))
        d = 300 if tight else a + draw(st.integers(15, 240))
        sessions.append(
            lo.Session(
                id=f"s{k}",
                evse=f"e{k}",
                arrival=T0 + timedelta(minutes=a),
                departure=T0 + timedelta(minutes=d),
                energy_kwh=draw(st.floats(0, 60)),
                max_current=draw(st.sampled_from([8.0, 16.0, 32.0])),
                phases=draw(st.sampled_from([1, 3])),
                priority=draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
            )
        )
    signals = lo.Signals(
        base_load_kw=draw(st.floats(0, 10)),
        pv_kw=draw(st.floats(0, 10)),
        grid_import_limit_kw=draw(st.one_of(st.none(), st.floats(0, 40))),
    )
    h = lo.Horizon(
        start=T0, step_s=draw(st.sampled_from([300, 900])), n_periods=draw(st.integers(1, 4))
    )
    return lo.compile_problem(lo.Site(nodes=tuple(nodes), evses=tuple(evses)), sessions, h, signals)


def _check_minimum_and_steps(p: lo.Problem, cur: np.ndarray) -> None:
    mins = p.session_min_current[:, None]
    assert ((cur == 0) | (cur >= mins - 1e-9)).all(), "a session runs below its minimum"
    for i, e in enumerate(p.session_evse):
        steps = p.site.evses[int(e)].allowed_currents
        if steps:
            ok = np.isin(np.round(cur[i] * 10), np.round(np.array((0.0, *steps)) * 10))
            assert ok.all(), f"session {i} off its allowed steps: {cur[i]}"


@SETTINGS
@given(fast_problems(), st.sampled_from(["fair", "edf", "llf"]))
def test_allocator_never_exceeds_a_limit_and_honours_min_and_steps(p, policy):
    cur = fast.allocate_horizon(p, policy)
    assert_physically_safe(p, cur)
    _check_minimum_and_steps(p, cur)
    assert np.array_equal(project(p, cur), cur), "a feasible schedule must come back unchanged"


@settings(max_examples=examples(80))
@given(scenarios(), st.sampled_from(["fair", "edf", "llf"]))
def test_allocator_is_safe_on_the_core_scenarios(p, policy):
    cur = fast.allocate_horizon(p, policy)
    assert_physically_safe(p, cur)
    assert np.array_equal(project(p, cur), cur)
    s = lo.solve(p, method="fast", policy=policy)
    assert np.array_equal(s.current, cur)


@SETTINGS
@given(
    st.booleans().flatmap(lambda t: fast_problems(with_min=False, with_steps=False, tight=t)),
    st.data(),
)
def test_fair_allocation_is_weighted_max_min_fair(p, data):
    """Bottleneck condition of weighted max-min fairness, period by period: every session below
    its cap sits under a full row in which its share ``x/w`` is the largest (up to the rounding to
    0.1 A: each value is at most 0.1 A from the exact fill)."""
    T = p.n_periods
    t = data.draw(st.integers(0, T - 1))
    energy = data.draw(
        st.one_of(
            st.none(),
            st.lists(st.floats(0, 30), min_size=p.n_sessions, max_size=p.n_sessions).map(np.array),
        )
    )
    x_a = fast.allocate(p, t, "fair", energy)
    e = p.session_energy_kwh if energy is None else energy
    v = np.flatnonzero(p.var_period == t)
    if v.size == 0:
        return
    s = p.var_session[v]
    x = np.round(x_a[s] * 10)  # deci-amps
    ub = np.floor(p.var_ub[v] * 10 + GRID_SNAP)
    need = np.where(e[s] > 1e-9, np.ceil(e[s] / p.var_kwh_per_a[v] * 10 - 1e-9), 0)
    hi = np.minimum(ub, need)
    w = p.session_priority[s]
    rows = np.flatnonzero(p.row_period == t)
    G = p.G[rows][:, v].toarray()
    cap = row_capacity_da(p)[rows]
    load = G @ x
    slack = G.sum(axis=1) * 1.0 + 1e-6  # ≤ 0.1 A lost per variable by the floor
    full = load >= cap - slack
    share = x / w
    for j in range(v.size):
        if x[j] >= hi[j]:
            continue
        ok = False
        for r in np.flatnonzero(full & (G[:, j] > 0)):
            members = np.flatnonzero(G[r] > 0)
            if (share[j] >= share[members] - 1.0 / w[j] - 1.0 / w[members] - 1e-9).all():
                ok = True
                break
        assert ok, (
            f"session {p.session_ids[s[j]]} at {x[j] / 10} A (cap {hi[j] / 10}) is not "
            f"bottlenecked: loads {load}, caps {cap}, shares {share}"
        )


@NEEDS_NUMBA
@settings(max_examples=examples(60))
@given(fast_problems(), st.sampled_from(["fair", "edf", "llf"]))
def test_numba_and_pure_paths_are_identical(p, policy):
    a = fast.allocate_horizon(p, policy)
    b = fast.allocate_horizon(p, policy, kernels=fast.pure_kernels())
    assert np.array_equal(a, b)


@SETTINGS
@given(fast_problems(), st.data())
def test_projection_never_exceeds_a_limit_and_never_raises_a_value(p, data):
    S, T = p.n_sessions, p.n_periods
    vals = st.one_of(st.floats(-50, 200), st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 6.0]))
    cur = np.array(data.draw(st.lists(vals, min_size=S * T, max_size=S * T))).reshape(S, T)
    out = project(p, cur)
    assert_physically_safe(p, out)
    finite = np.where(np.isfinite(cur), cur, 0.0)
    assert (out <= np.maximum(finite, 0.0) + 1e-9).all(), "the projection raised a value"
    assert np.array_equal(project(p, out), out), "the projection is not idempotent"


@SETTINGS
@given(fast_problems(), st.data())
def test_projection_leaves_feasible_schedules_unchanged(p, data):
    """Any schedule on the 0.1 A grid that satisfies every limit: a scaled-down allocator result
    (rounded down to 0.1 A, which keeps it feasible since G ≥ 0)."""
    f = data.draw(st.floats(0, 1))
    base = fast.allocate_horizon(p, data.draw(st.sampled_from(["fair", "edf"])))
    cur = np.floor(base * f * 10 + 1e-9) / 10
    assert np.array_equal(project(p, cur), cur)


def test_prepared_rows_cover_every_period():
    from loadopt.synthetic import demo_scenario

    p = demo_scenario().compile()
    pp = prepared(p)
    assert pp.vptr[-1] == p.n_vars and pp.rptr[-1] == pp.row_orig.size <= p.G.shape[0]
    assert (np.diff(pp.vptr) >= 0).all() and (np.diff(pp.rptr) >= 0).all()
    # reduced rows stay in their period's block
    per = np.repeat(np.arange(p.n_periods), np.diff(pp.rptr))
    assert np.array_equal(p.row_period[pp.row_orig], per)


def test_projection_rejects_a_schedule_of_the_wrong_shape():
    import pytest

    from loadopt.synthetic import demo_scenario

    p = demo_scenario().compile()
    with pytest.raises(ValueError, match="expected"):
        project(p, np.zeros((p.n_sessions, p.n_periods + 3)))


# --- row reduction and the fill's shortcuts (issue 3 follow-up) ---------------------------------


@SETTINGS
@given(fast_problems())
def test_row_reduction_drops_no_limit(p):
    """Every safety row of the problem is either kept, or has a kept twin (same coefficients)
    with no larger capacity, or holds whenever every variable is at its bound ``hi_da`` — and
    ``hi_da`` is never above a variable's maximum current nor above a one-variable row."""
    pp = prepared(p)
    G = p.G.tocsr()[:, pp.var_perm].tocsr()
    cap = row_capacity_da(p)
    assert (pp.hi_da <= pp.ub_da).all() and (pp.lo_da <= pp.hi_da).all()
    assert (pp.chk <= cap[pp.row_orig]).all()
    kept = {r: k for k, r in enumerate(pp.row_orig)}
    load_hi = G @ pp.hi_da
    for r in range(G.shape[0]):
        if r in kept:
            continue
        # at most SNAP_DA-sized float slack on power rows (the fill's margin keeps it below h)
        if load_hi[r] <= cap[r]:
            continue
        twins = [k for rr, k in kept.items() if (G[rr] != G[r]).nnz == 0 and G[rr].nnz == G[r].nnz]
        assert twins and min(pp.chk[k] for k in twins) <= cap[r], f"row {r} lost"


def _fill_both_ways(p, t, energy):
    """The fair fill of period ``t``: with the jump to the highest floor level (from the static
    row sums) and without it (step by step from λ = 0)."""
    from loadopt.fast import _kernels as K

    pp = prepared(p)
    v0, v1 = int(pp.vptr[t]), int(pp.vptr[t + 1])
    r0, r1 = int(pp.rptr[t]), int(pp.rptr[t + 1])
    nv, nr = v1 - v0, r1 - r0
    e = energy[pp.sess[v0:v1]]
    need = np.ceil(e / pp.kwh_per_a[v0:v1] * 10 - 1e-9)
    hi = np.where(e > 1e-9, np.minimum(pp.hi_da[v0:v1], need), 0.0)
    lo = np.where(e > 1e-9, pp.lo_da[v0:v1], 0.0)
    hi = np.maximum(hi, lo)
    cap = pp.cap_fill[r0:r1]
    out = []
    for jump in (True, False):
        lo_, hi_ = lo.copy(), hi.copy()
        x = np.zeros(nv)
        args = (r0, nr, v0, nv, pp.indptr, pp.indices, pp.data, pp.cptr, pp.cidx, pp.cdata, cap)
        w = pp.w[v0:v1]
        starts, caps = K.sorted_by_level(lo_, w, nv), K.sorted_by_level(hi_, w, nv)
        static = (
            pp.row_slope0[r0:r1],
            pp.row_cnt0[r0:r1],
            pp.row_full0[r0:r1],
            pp.row_floor0[r0:r1],
            pp.hi_da[v0:v1],
            pp.lo_da[v0:v1],
        )
        if K.fill(*args, lo_, hi_, w, starts, caps, True, *static, jump, x) < 0:
            K.admit(r0, nr, v0, nv, pp.cptr, pp.cidx, pp.cdata, cap, pp.fair_order[v0:v1], lo_, hi_)
            K.fill(*args, lo_, hi_, w, starts, caps, False, *static, jump, x)
        out.append(x)
    return out


@SETTINGS
@given(st.booleans().flatmap(lambda t: fast_problems(with_steps=False, tight=t)), st.data())
def test_jump_to_the_highest_floor_gives_the_step_by_step_fill(p, data):
    t = data.draw(st.integers(0, p.n_periods - 1))
    a, b = _fill_both_ways(p, t, p.session_energy_kwh)
    assert np.allclose(a, b, rtol=1e-9, atol=1e-7), (a, b)


@SETTINGS
@given(st.booleans().flatmap(lambda t: fast_problems(with_steps=False, tight=t)), st.data())
def test_fair_allocation_with_minimum_currents_is_max_min_fair_above_the_floors(p, data):
    """With minimum currents: every session that runs, is below its cap and above its minimum
    sits under a full row in which no session above its own minimum has a larger share ``x/w``
    (sessions held at their minimum may have more; paused sessions are out of the game)."""
    t = data.draw(st.integers(0, p.n_periods - 1))
    x_a = fast.allocate(p, t, "fair")
    v = np.flatnonzero(p.var_period == t)
    if v.size == 0:
        return
    s = p.var_session[v]
    x = np.round(x_a[s] * 10)
    e = p.session_energy_kwh[s]
    ub = np.floor(p.var_ub[v] * 10 + GRID_SNAP)
    need = np.where(e > 1e-9, np.ceil(e / p.var_kwh_per_a[v] * 10 - 1e-9), 0)
    lo_da = np.ceil(p.session_min_current[s] * 10 - 1e-9)
    hi = np.maximum(np.minimum(ub, need), np.where(need > 0, np.minimum(lo_da, ub), 0))
    w = p.session_priority[s]
    rows = np.flatnonzero(p.row_period == t)
    G = p.G[rows][:, v].toarray()
    cap = row_capacity_da(p)[rows]
    load = G @ x
    full = load >= cap - (G.sum(axis=1) + 1e-6)  # ≤ 0.1 A lost per variable by the floor
    share = x / w
    at_floor = x <= lo_da + 1.0  # held at (or rounded to) its minimum
    for j in range(v.size):
        if x[j] >= hi[j] or x[j] == 0 or at_floor[j]:
            continue
        ok = False
        for r in np.flatnonzero(full & (G[:, j] > 0)):
            m = np.flatnonzero((G[r] > 0) & ~at_floor)
            if (share[j] >= share[m] - 1.0 / w[j] - 1.0 / w[m] - 1e-9).all():
                ok = True
                break
        assert ok, (
            f"session {p.session_ids[s[j]]} at {x[j] / 10} A is not bottlenecked: "
            f"loads {load}, caps {cap}, shares {share}"
        )
