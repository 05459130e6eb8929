"""Line-to-line EVSEs, delta/wye transformers, and the facet model of phasor line limits.

The exact line currents are recomputed here from the raw site description with plain complex
arithmetic (:func:`exact_lines`), independently of ``loadopt.wiring`` and of the rows
``compile`` builds, so a wrong coefficient, sector or facet would be caught.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.safety import project
from loadopt.wiring import facet_loss_bound

from .conftest import horizon, session

ROTATIONS = ["RST", "RTS", "SRT", "STR", "TRS", "TSR"]
VOLT = {
    "R": cmath.rect(1, 0.0),
    "S": cmath.rect(1, math.radians(-120)),
    "T": cmath.rect(1, math.radians(120)),
}


def exact_lines(
    site: lo.Site, sessions, current: np.ndarray, base_a: np.ndarray | None = None
) -> dict[tuple[str, str], np.ndarray]:
    """``{(node, line): |I| over periods}`` for every node's lines ``R, S, T`` and every
    delta/wye primary's lines ``A, B, C``, from first principles (unity power factor)."""
    T = current.shape[1]
    by_id = {n.id: n for n in site.nodes}
    acc: dict[tuple[str, str], np.ndarray] = {}

    def add(key, z):
        acc[key] = acc.get(key, np.zeros(T, complex)) + z

    def climb(node_id, lines):  # lines: {"R"|"S"|"T": complex (T,)}
        while node_id is not None:
            n = by_id[node_id]
            for p, z in lines.items():
                add((node_id, p), z)
            if n.delta_wye is not None:
                k = n.delta_wye.turns_ratio
                a, b, c = (lines.get(p, np.zeros(T, complex)) for p in "RST")
                lines = {"R": (a - c) / k, "S": (b - a) / k, "T": (c - b) / k}
                for p, P in zip("RST", "ABC", strict=True):
                    add((node_id, P), lines[p])
            node_id = n.parent

    for i, s in enumerate(sessions):
        e = site.evse(s.evse)
        n = min(e.phases, s.phases)
        rot = e.phase_rotation
        lines: dict[str, np.ndarray] = {}
        for k in range(n):
            if e.wiring == "line_to_neutral":
                p = rot[k]
                lines[p] = lines.get(p, 0) + current[i] * VOLT[p]
            else:
                a, b = rot[k], rot[(k + 1) % 3]
                u = (VOLT[a] - VOLT[b]) / abs(VOLT[a] - VOLT[b])
                lines[a] = lines.get(a, 0) + current[i] * u
                lines[b] = lines.get(b, 0) - current[i] * u
        climb(e.node, lines)
    if base_a is not None and base_a.any():
        climb(site.base_load_node or site.root.id, {p: base_a * VOLT[p] for p in "RST"})
    return {k: np.abs(v) for k, v in acc.items()}


def exact_breaches(
    site: lo.Site,
    sessions,
    current: np.ndarray,
    base_a: np.ndarray | None = None,
    rtol: float = 1e-9,
) -> list[str]:
    """Limits the schedule breaks; where the base load alone is over, the vehicles may add
    nothing (the library then reports a notice: that is not the schedule's doing)."""
    out = []
    base_only = exact_lines(site, sessions, np.zeros_like(current), base_a)
    for (nid, line), mag in exact_lines(site, sessions, current, base_a).items():
        n = next(x for x in site.nodes if x.id == nid)
        if line in "ABC":
            trip = n.delta_wye.primary_triplet() if n.delta_wye else None
            if trip is None:
                continue
            lim = trip["ABC".index(line)]
        else:
            trip = n.current_triplet()
            if trip is None:
                continue
            lim = trip["RST".index(line)]
        lim = np.maximum(lim, base_only.get((nid, line), 0.0))
        bad = np.flatnonzero(mag > lim * (1 + rtol) + rtol)
        out += [
            f"{nid}/{line} t={t}: {mag[t]:.4f} > {np.broadcast_to(lim, mag.shape)[t]}" for t in bad
        ]
    return out


def ll_pair_site(breaker_a: float = 30.0, evse_a: float = 32.0) -> lo.Site:
    """One breaker, EVSE e0 on lines R–S and e1 on lines S–T (208 V line-to-line)."""
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="cb", parent="grid", max_current=breaker_a),
        ),
        evses=(
            lo.Evse(
                id="e0",
                node="cb",
                charge_point_id="CP0",
                phases=1,
                wiring="line_to_line",
                phase_rotation="RST",
                voltage_v=208.0,
                max_current=evse_a,
            ),
            lo.Evse(
                id="e1",
                node="cb",
                charge_point_id="CP1",
                phases=1,
                wiring="line_to_line",
                phase_rotation="STR",
                voltage_v=208.0,
                max_current=evse_a,
            ),
        ),
        voltage_v=120.0,
    )


def test_line_to_line_pair_loads_two_lines_with_the_phasor_sum():
    site = ll_pair_site(30.0)
    sessions = [session("s0", "e0", 100.0), session("s1", "e1", 100.0)]
    p = lo.compile_problem(site, sessions, horizon(2))
    cb = p.node_ids.index("cb")
    # both at 20 A: lines R and T carry 20 A, line S the phasor sum √3·20 = 34.6 A > 30 A
    cur = np.full((2, 2), 20.0)
    sched = lo.Schedule(p, cur, lo.ScheduleStatus.FEASIBLE, "user")
    np.testing.assert_allclose(sched.node_phase_current[cb, :, 0], [20, 20 * math.sqrt(3), 20])
    ref = exact_lines(site, sessions, cur)
    np.testing.assert_allclose(ref[("cb", "S")], 20 * math.sqrt(3))
    v = sched.violations()
    assert v and all(x.kind == "line current (phasor)" and "line S" in x.where for x in v)
    # the naive one-line-per-EVSE model would have accepted it: each line "sees" 20 A ≤ 30 A
    # the optimiser uses (almost) all of the exact limit and never more
    out = lo.solve(p)
    out.check()
    r = out.current[:, 0]
    s_line = abs(
        r[0] * -(VOLT["R"] - VOLT["S"]) / math.sqrt(3)
        + r[1] * (VOLT["S"] - VOLT["T"]) / math.sqrt(3)
    )
    assert s_line <= 30.0 + 1e-9
    assert s_line >= 30.0 * (1 - p.facet_loss_bound) - 0.2  # 0.1 A grid rounding, two cars
    assert p.facet_loss_bound == pytest.approx(1 - math.cos(math.radians(60) / 8))
    assert not exact_breaches(site, sessions, out.current)


def dyn_site(primary_a: float, secondary_a: float = 400.0) -> lo.Site:
    """A 480 V Δ / 120/208 V Y transformer (turns ratio 4) feeding six 208 V EVSEs, two per
    line pair, and two 120 V line-to-neutral EVSEs on R."""
    evses = [
        lo.Evse(
            id=f"e{k}",
            node="tx",
            charge_point_id=f"CP{k}",
            phases=1,
            wiring="line_to_line",
            phase_rotation=("RST", "STR", "TRS")[k % 3],
            voltage_v=208.0,
            max_current=32.0,
        )
        for k in range(6)
    ]
    evses += [
        lo.Evse(
            id=f"n{k}",
            node="tx",
            charge_point_id=f"CN{k}",
            phases=1,
            voltage_v=120.0,
            max_current=16.0,
        )
        for k in range(2)
    ]
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                max_current=secondary_a,
                delta_wye=lo.DeltaWye(turns_ratio=4.0, primary_max_current=primary_a),
            ),
        ),
        evses=tuple(evses),
        voltage_v=120.0,
    )


def test_delta_wye_primary_row_binds():
    site = dyn_site(primary_a=20.0)
    sessions = [session(f"s{k}", e.id, 200.0, phases=1) for k, e in enumerate(site.evses)]
    p = lo.compile_problem(site, sessions, horizon(2))
    assert (p.row_kind == lo.problem.ROW_PRIMARY_FACET).any()
    out = lo.solve(p)
    out.check()
    mags = exact_lines(site, sessions, out.current)
    primary = max(mags[("tx", P)][0] for P in "ABC")
    secondary = max(mags[("tx", L)][0] for L in "RST")
    assert secondary < 400.0 / 2  # the secondary is nowhere near its limit …
    assert primary <= 20.0 * (1 + 1e-9)  # … the primary binds, exactly safe …
    assert primary >= 20.0 * (1 - p.facet_loss_bound) - 0.1  # … and is used within the bound
    assert not exact_breaches(site, sessions, out.current)
    # the library's line currents agree with the independent ones
    N = len(p.node_ids)
    tx = p.node_ids.index("tx")
    sched_lines = out.line_current
    for k, P in enumerate("ABC"):
        np.testing.assert_allclose(sched_lines[3 * (N + tx) + k], mags[("tx", P)], atol=1e-9)


def test_line_to_neutral_site_keeps_exact_integer_rows():
    site = lo.Site(
        nodes=(lo.Node(id="g", kind="grid_connection", max_current=32.0),),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="g", charge_point_id=f"C{k}", phase_rotation=ROTATIONS[k])
            for k in range(4)
        ),
    )
    p = lo.compile_problem(site, [session(f"s{k}", f"e{k}", 50.0) for k in range(4)], horizon(2))
    assert set(np.unique(p.row_kind)) <= {lo.problem.ROW_NODE_CURRENT}
    assert not p.line_exact.any() and p.facet_loss_bound == 0.0


def test_three_phase_delta_and_split_phase_coefficients():
    site = lo.Site(
        nodes=(lo.Node(id="g", kind="grid_connection", max_current=100.0),),
        evses=(
            lo.Evse(
                id="d",
                node="g",
                charge_point_id="D",
                phases=3,
                wiring="line_to_line",
                voltage_v=400.0,
            ),
            lo.Evse(
                id="sp",
                node="g",
                charge_point_id="SP",
                phases=2,
                wiring="line_to_line",
                voltage_v=208.0,
            ),
        ),
    )
    sessions = [session("a", "d", 10.0), session("b", "sp", 10.0)]
    p = lo.compile_problem(site, sessions, horizon(1))
    np.testing.assert_allclose(p.session_kw_per_a, [1.2, 0.416])
    cur = np.array([[10.0], [0.0]])
    s = lo.Schedule(p, cur, lo.ScheduleStatus.FEASIBLE, "user")
    np.testing.assert_allclose(s.node_phase_current[0, :, 0], [10 * math.sqrt(3)] * 3)
    cur = np.array([[0.0], [10.0]])
    s = lo.Schedule(p, cur, lo.ScheduleStatus.FEASIBLE, "user")
    ref = exact_lines(site, sessions, cur)
    np.testing.assert_allclose(s.node_phase_current[0, :, 0], [ref[("g", L)][0] for L in "RST"])
    np.testing.assert_allclose(ref[("g", "S")][0], 10 * math.sqrt(3))


def test_bad_wiring_inputs():
    with pytest.raises(ValueError, match="phase switching"):
        lo.Evse(id="x", node="g", charge_point_id="X", wiring="line_to_line", phase_switching=True)
    with pytest.raises(ValueError, match="delta_wye needs kind='transformer'"):
        lo.Node(id="x", kind="panel", delta_wye=lo.DeltaWye(turns_ratio=4.0))
    with pytest.raises(ValueError):
        lo.DeltaWye(turns_ratio=0.0)


# --------------------------------------------------------------------------- facet geometry
def facet_scale(angles: np.ndarray, r: np.ndarray, delta: float, m: int) -> float:
    """Largest ``t`` with ``t·r`` admitted by the clipped facets of a unit limit over the
    sector ``[0, Δ]`` (written out here, not taken from loadopt)."""
    if delta == 0:
        return 1.0 / float(r.sum())
    worst = 0.0
    for k in range(m):
        psi = (k + 0.5) * delta / m
        a = np.maximum(np.cos(angles - psi), 0.0)
        worst = max(worst, float(a @ r) / math.cos(delta / (2 * m)))
    return 1.0 / worst


@pytest.mark.parametrize("m", [1, 2, 4, 8])
@pytest.mark.parametrize("deg", [0, 30, 60, 90, 120, 150])
def test_facet_loss_on_a_sector_stays_within_the_bound(deg, m):
    delta = math.radians(deg)
    bound = float(facet_loss_bound(delta, m))
    rng = np.random.default_rng(deg * 10 + m)
    worst_single = worst_pair = 0.0
    # single directions over the whole sector
    for phi in np.linspace(0.0, delta, 721):
        t = facet_scale(np.array([phi]), np.array([1.0]), delta, m)
        assert t <= 1.0 + 1e-12  # inner: never beyond the exact limit
        worst_single = max(worst_single, 1 - t)
    # pairs (the worst case of a linear function over a planar disc section has ≤ 2 vectors)
    ends = np.array([[0.0, delta], [delta, 0.0]])
    pairs = np.vstack([ends, rng.uniform(0.0, delta, (120, 2))])
    for a, b in pairs:
        # weights on a grid, plus the one where the second vector cancels most of the first
        lean = max(-math.cos(b - a), 0.0)
        for r in [np.array([w, 1.0 - w]) for w in np.linspace(0.0, 1.0, 21)] + [
            np.array([1.0, lean]),
            np.array([lean, 1.0]),
        ]:
            zmag = abs(r[0] * cmath.exp(1j * a) + r[1] * cmath.exp(1j * b))
            if zmag < 1e-9:
                continue
            t = facet_scale(np.array([a, b]), r / zmag, delta, m)
            assert t <= 1.0 + 1e-9
            worst_pair = max(worst_pair, 1 - t)
    assert worst_single <= 1 - math.cos(delta / (2 * m)) + 1e-12
    assert max(worst_single, worst_pair) <= bound + 1e-9
    # and the bound is attained (not a loose promise): the sampled worst case meets it
    assert max(worst_single, worst_pair) >= bound - 2e-3
    if m == 4 and deg == 60:
        assert bound < 0.01
    if m == 4 and deg == 120:
        assert 1 - math.cos(delta / 8) < 0.035 and bound == pytest.approx(1 - math.sin(delta))


# --------------------------------------------------------------------------- properties
@st.composite
def wired_sites(draw):
    n_nodes = draw(st.integers(1, 4))
    nodes = []
    for k in range(n_nodes):
        parent = None if k == 0 else f"n{draw(st.integers(0, k - 1))}"
        cur = draw(
            st.one_of(
                st.none(),
                st.floats(0, 80).map(lambda x: round(x, 1)),
                st.tuples(*[st.floats(0, 80)] * 3),
            )
        )
        dyn = None
        if draw(st.booleans()):
            dyn = lo.DeltaWye(
                turns_ratio=draw(st.sampled_from([1.0, 2.0, 4.0])),
                primary_max_current=draw(
                    st.one_of(st.floats(0, 40), st.tuples(*[st.floats(0, 40)] * 3))
                ),
            )
        nodes.append(
            lo.Node(
                id=f"n{k}",
                parent=parent,
                max_current=cur,
                kind="transformer" if dyn else "panel",
                delta_wye=dyn,
            )
        )
    n_evse = draw(st.integers(1, 6))
    evses = tuple(
        lo.Evse(
            id=f"e{k}",
            node=f"n{draw(st.integers(0, n_nodes - 1))}",
            charge_point_id=f"CP{k}",
            phases=draw(st.sampled_from([1, 2, 3])),
            phase_rotation=draw(st.sampled_from(ROTATIONS)),
            wiring=draw(st.sampled_from(["line_to_neutral", "line_to_line"])),
            max_current=32.0,
            min_current=0.0,
            voltage_v=208.0,
        )
        for k in range(n_evse)
    )
    site = lo.Site(
        nodes=tuple(nodes),
        evses=evses,
        voltage_v=120.0,
        base_load_node=f"n{draw(st.integers(0, n_nodes - 1))}",
        phasor_facets=draw(st.integers(1, 6)),
    )
    sessions = [
        session(f"s{k}", f"e{k}", draw(st.floats(0, 80)), phases=draw(st.sampled_from([1, 2, 3])))
        for k in range(n_evse)
    ]
    base = draw(st.sampled_from([0.0, 0.0, 2.0, 8.0]))
    return site, sessions, base


PROP = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROP
@given(wired_sites(), st.data())
def test_projection_of_any_schedule_is_exactly_safe(case, data):
    site, sessions, base = case
    hz = horizon(3)
    sig = lo.Signals(base_load_kw=base) if base else None
    p = lo.compile_problem(site, sessions, hz, sig)
    wish = np.array(
        data.draw(
            st.lists(st.floats(0, 40), min_size=3 * len(sessions), max_size=3 * len(sessions))
        )
    ).reshape(len(sessions), 3)
    safe = project(p, wish)
    assert (safe <= np.maximum(wish, 0) + 1e-9).all()
    assert not exact_breaches(site, sessions, safe, p.base_load_a)
    sched = lo.Schedule(p, safe, lo.ScheduleStatus.FEASIBLE, "user")
    assert not sched.violations()
    # the library's check flags exactly what the independent one flags (without a base load,
    # which alone may break a limit: a notice, not a schedule's fault)
    if not base:
        raw = np.floor(wish * 10) / 10
        lib = [
            v
            for v in lo.Schedule(p, raw, lo.ScheduleStatus.FEASIBLE, "user").violations()
            if v.kind in ("current", "line current (phasor)")
        ]
        ref = exact_breaches(site, sessions, raw * (p.avail > 0))
        assert len(lib) == len(ref), (lib, ref)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(wired_sites())
def test_optimal_and_fast_schedules_are_exactly_safe(case):
    site, sessions, base = case
    sig = lo.Signals(base_load_kw=base) if base else None
    p = lo.compile_problem(site, sessions, horizon(3), sig)
    for method in ("lp", "fast"):
        out = lo.solve(p, method=method)
        assert not exact_breaches(site, sessions, out.current, p.base_load_a), method
        out.check()


def test_facet_model_reaches_the_exact_limit_within_the_bound_on_a_sector():
    """Mixes of the two line pairs (directions over line S's 60° sector): the LP's schedule
    never exceeds the exact limit and reaches at least (1 − bound) of it."""
    site = ll_pair_site(50.0, evse_a=80.0)
    hz = horizon(1)
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        sessions = [
            session("s0", "e0", 100.0, max_current=80.0 * share),
            session("s1", "e1", 100.0, max_current=80.0 * (1 - share)),
        ]
        p = lo.compile_problem(site, sessions, hz)
        out = lo.solve(p)
        mag = exact_lines(site, sessions, out.current)
        worst = max(mag[("cb", L)][0] for L in "RST")
        assert worst <= 50.0 + 1e-9
        assert worst >= 50.0 * (1 - p.facet_loss_bound) - 0.2


_ANGLES_DEG = [0.0, 30.0, -30.0, 60.0, 90.0, 120.0, -120.0, 150.0, 180.0, 210.0]


@settings(max_examples=150, deadline=None)
@given(
    loads=st.lists(
        st.tuples(
            st.sampled_from(_ANGLES_DEG),
            st.sampled_from([0.0, 0.5, 1.0, 1 / math.sqrt(3)]),
            st.lists(st.sampled_from([0.0, 7.0, 16.0, -10.0, 32.0, 1e3]), min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=7,
    )
)
def test_the_prepared_zonotope_is_the_brute_force_maximum(loads):
    """``Zonotope(coef).max_abs(amount)`` (what the OCPP guard evaluates, directions prepared
    once) against the largest ``|Σ t_i·amount_i·coef_i|`` over every vertex ``t ∈ {0, 1}^K``
    of the box (|·| is convex: the maximum is at a vertex), and the two calling forms agree."""
    from itertools import product

    from loadopt.wiring import Zonotope, zonotope_max_abs

    coef = np.array([cmath.rect(m, math.radians(a)) for a, m, _ in loads])
    amount = np.array([am for _, _, am in loads], dtype=float)  # (K, 3 instants)
    got = Zonotope(coef).max_abs(amount)
    brute = np.zeros(amount.shape[1])
    for t in product((0.0, 1.0), repeat=coef.size):
        z = np.abs((np.array(t)[:, None] * amount * coef[:, None]).sum(axis=0))
        brute = np.maximum(brute, z)
    np.testing.assert_allclose(got, brute, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(zonotope_max_abs(coef, amount), got)
