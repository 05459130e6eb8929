"""Storage on phasor lines: batteries and V2G sessions on line-to-line EVSEs and delta/wye sites.

Signed currents make a line's phasor reach both ways: a discharging unit's phasor points the
opposite way. The independent checker here (:func:`worst_lines`) recomputes, with plain complex
arithmetic from the raw site objects, every line's phasor at *every* instant a period allows —
each unit on or off at its value, base load and PV on or off — by brute force over the subsets,
not from ``loadopt.wiring``, the compiled rows or ``safety.line_current_worst``.
"""

from __future__ import annotations

import cmath
import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.problem import ROW_PRIMARY_FACET
from loadopt.safety import project_storage
from loadopt.session import V2xParameters
from loadopt.site import Battery
from loadopt.wiring import circle_facet_count

from .conftest import examples
from .test_storage import T0, _independent_check, at, steps

VOLT = {
    p: cmath.rect(1.0, math.radians(a)) for p, a in zip("RST", (0.0, -120.0, 120.0), strict=True)
}


def _contributions(site, sessions, cur, dis, bat, base_kw, pv_kw):
    """``{(node, line): [(T,) complex per contributor]}``: each session (charge − discharge),
    each battery (signed), the base load and the PV output, as line phasors (A)."""
    T = cur.shape[1]
    by_id = {n.id: n for n in site.nodes}
    out: dict[tuple[str, str], list[np.ndarray]] = {}

    def climb(node_id, lines):  # lines: {"R"|"S"|"T": (T,) complex}, one contributor
        acc: dict[tuple[str, str], np.ndarray] = {}
        while node_id is not None:
            n = by_id[node_id]
            for p, z in lines.items():
                acc[(node_id, p)] = acc.get((node_id, p), 0) + z
            if n.delta_wye is not None:
                k = n.delta_wye.turns_ratio
                a, b, c = (lines.get(p, np.zeros(T, complex)) for p in "RST")
                lines = {"R": (a - c) / k, "S": (b - a) / k, "T": (c - b) / k}
                for p, P in zip("RST", "ABC", strict=True):
                    acc[(node_id, P)] = acc.get((node_id, P), 0) + lines[p]
            node_id = n.parent
        for key, z in acc.items():
            out.setdefault(key, []).append(np.broadcast_to(z, (T,)).astype(complex))

    for i, s in enumerate(sessions):
        e = site.evse(s.evse)
        amps = cur[i] - dis[i]
        lines: dict[str, np.ndarray] = {}
        for k in range(min(e.phases, s.phases)):
            if e.wiring == "line_to_neutral":
                p = e.phase_rotation[k]
                lines[p] = lines.get(p, 0) + amps * VOLT[p]
            else:
                a, b = e.phase_rotation[k], e.phase_rotation[(k + 1) % 3]
                u = (VOLT[a] - VOLT[b]) / abs(VOLT[a] - VOLT[b])
                lines[a] = lines.get(a, 0) + amps * u
                lines[b] = lines.get(b, 0) - amps * u
        climb(e.node, lines)
    for b, bt in enumerate(site.batteries):
        climb(bt.node, {p: bat[b] * VOLT[p] for p in "RST"})
    here = site.base_load_node or site.root.id
    a_base = np.full(T, base_kw * 1000.0 / (3 * site.voltage_v))
    a_pv = np.full(T, pv_kw * 1000.0 / (3 * site.voltage_v))
    units = out
    out = {}
    fixed = {}
    for z in (a_base, -a_pv):
        out = {}
        climb(here, {p: z * VOLT[p] for p in "RST"})
        for key, parts in out.items():
            fixed.setdefault(key, []).extend(parts)
    zero = np.zeros(T, complex)
    # the last two of every line: the base load and the PV output (zero where they do not flow)
    return {
        key: units.get(key, []) + fixed.get(key, [zero, zero]) for key in set(units) | set(fixed)
    }


def worst_lines(site, sessions, cur, dis, bat, base_kw=0.0, pv_kw=0.0, rtol=1e-9) -> list[str]:
    """Line limits broken at some instant (brute force over which contributors are on)."""
    bad = []
    n_fixed = 2
    for (nid, line), parts in _contributions(site, sessions, cur, dis, bat, base_kw, pv_kw).items():
        n = next(x for x in site.nodes if x.id == nid)
        trip = (
            (n.delta_wye.primary_triplet() if n.delta_wye else None)
            if line in "ABC"
            else n.current_triplet()
        )
        if trip is None:
            continue
        lim = trip[("ABC" if line in "ABC" else "RST").index(line)]
        P = np.array(parts)  # (K, T); the last two are the base load and the PV output
        worst = np.zeros(P.shape[1])
        fixed = np.zeros(P.shape[1])
        for mask in itertools.product((0, 1), repeat=len(P)):
            z = np.abs((np.array(mask)[:, None] * P).sum(axis=0))
            worst = np.maximum(worst, z)
            if not any(mask[:-n_fixed]):
                fixed = np.maximum(fixed, z)
        room = np.maximum(lim, fixed)  # where fixed loads alone are over, units add nothing
        for t in np.flatnonzero(worst > room * (1 + rtol) + rtol):
            bad.append(f"{nid}/{line} t={t}: {worst[t]:.4f} A > {room[t]:.4f} A")
    return bad


def _no_current_limits(site: lo.Site) -> lo.Site:
    """The site without node current limits: ``_independent_check`` adds per-phase magnitudes,
    which is not how line-to-line currents add (the phasor check above does the lines)."""
    return site.model_copy(
        update={
            "nodes": tuple(n.model_copy(update={"max_current": None}) for n in site.nodes),
        }
    )


def _ll(eid, node, rotation, **kw) -> lo.Evse:
    return lo.Evse(
        id=eid,
        node=node,
        charge_point_id=f"CP-{eid}",
        phases=1,
        wiring="line_to_line",
        phase_rotation=rotation,
        voltage_v=208.0,
        **kw,
    )


def dyn_storage_site(primary_a=(10.0, 20.0, 20.0)) -> lo.Site:
    """A 480 V Δ / 120/208 V Y transformer (ratio 4): a charging EVSE on lines R–S (its primary
    line A phasor at +30°) and a bidirectional one on S–T (discharging: +90° on line A). One
    pair loads one primary line with ``r/4`` and another with ``2r/4``: A is the line where
    the two directions add up most."""
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                delta_wye=lo.DeltaWye(turns_ratio=4.0, primary_max_current=primary_a),
            ),
        ),
        evses=(
            _ll("ab", "tx", "RST", max_current=40.0),
            _ll("bc", "tx", "STR", max_current=40.0, bidirectional=True),
        ),
        voltage_v=120.0,
    )


def _v2g(sid, evse, energy=0.0, lo_kwh=-30.0, hi_kwh=30.0, **kw) -> lo.Session:
    return lo.Session(
        id=sid,
        evse=evse,
        arrival=T0,
        departure=at(2),
        energy_kwh=energy,
        v2x=V2xParameters(min_v2x_energy_kwh=lo_kwh, max_v2x_energy_kwh=hi_kwh, **kw),
    )


def test_charge_and_discharge_60_degrees_apart_on_a_primary_are_coupled():
    """Charging on R–S and discharging on S–T put 30° and 90° on primary line A: each alone at
    the limit is fine, both at once add to √3 times as much. The rows must see both."""
    site = dyn_storage_site()
    sessions = [
        lo.Session(id="c", evse="ab", arrival=T0, departure=at(2), energy_kwh=100.0),
        _v2g("v", "bc"),
    ]
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    # dear first hour: the V2G car gives to the other car, then takes back in the cheap hour
    sig = lo.Signals(import_price=steps((0, 1.0), (1, 0.05)))
    p = lo.compile_problem(site, sessions, hz, sig)
    assert p.storage is not None and p.notices == ()
    assert (p.row_kind == ROW_PRIMARY_FACET).any()
    # 32 A each: alone, each puts 32/4 = 8 A on primary line A (under 10 A); together their
    # phasors (30° and 90°) add to √3·8 = 13.9 A
    cur = np.array([[32.0] * 8, [0.0] * 8])
    dis = np.array([[0.0] * 8, [32.0] * 8])
    v = lo.safety.violations(p, cur, discharge=dis)
    assert v and all(x.kind == "line current (phasor)" and "primary line A" in x.where for x in v)
    assert worst_lines(site, sessions, cur, dis, np.zeros((0, 8)))
    for c, d in ((cur, 0 * dis), (0 * cur, dis)):
        assert worst_lines(site, sessions, c, d, np.zeros((0, 8))) == []
        assert not [x for x in lo.safety.violations(p, c, discharge=d) if "line" in x.kind]
    # the projection keeps both directions under the exact phasor limit
    c2, d2, b2 = project_storage(p, cur, dis)
    assert worst_lines(site, sessions, c2, d2, b2) == []
    assert lo.safety.violations(p, c2, discharge=d2, battery_a=b2) == []
    # the LP uses it both ways and stays exactly safe
    s = lo.solve(p)
    s.check()
    assert s.discharge is not None
    both = (s.discharge[1] > 0) & (s.current[0] > 0)
    assert both[:4].all()
    assert worst_lines(site, sessions, s.current, s.discharge, np.zeros((0, 8))) == []
    # … and uses the coupled limit: at the worst instant primary line A is near its 10 A
    mag, _, groups = lo.safety.line_current_worst(p, s.current, s.discharge, np.zeros((0, 8)))
    a = list(groups).index(3 * (len(p.node_ids) + p.node_ids.index("tx")))
    assert (mag[a] <= 10.0 * (1 + 1e-9)).all()
    assert mag[a].max() >= 10.0 * math.cos(math.pi / circle_facet_count(4)) - 0.1


def test_battery_on_a_delta_wye_site_exports_within_the_phasor_limit():
    """A battery under a Dyn transformer sells at the export price: its phasor on the primary is
    limited in the export direction exactly like a charging one (it used to be refused)."""
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                delta_wye=lo.DeltaWye(turns_ratio=4.0, primary_max_current=12.0),
            ),
        ),
        evses=(_ll("ab", "tx", "RST", max_current=40.0),),
        batteries=(
            Battery(
                id="bat",
                node="tx",
                capacity_kwh=200.0,
                soc=0.9,
                max_charge_kw=100.0,
                max_discharge_kw=100.0,
            ),
        ),
        voltage_v=120.0,
    )
    sessions = [lo.Session(id="c", evse="ab", arrival=T0, departure=at(2), energy_kwh=100.0)]
    hz = lo.Horizon(start=T0, step_s=900, n_periods=4)
    p = lo.compile_problem(site, sessions, hz, lo.Signals(import_price=0.1, export_price=1.0))
    s = lo.solve(p)
    s.check()
    assert s.battery_a is not None and (s.battery_a < 0).all()
    assert worst_lines(site, sessions, s.current, np.zeros((1, 4)), s.battery_a) == []
    # a balanced load on the secondary is balanced on the primary: |I_A| = √3·I/4 ≤ 12 A, so
    # the battery may export up to 12·4/√3 = 27.7 A (less the facet's loss)
    exported = -s.battery_a[0]
    assert (exported * math.sqrt(3) / 4 <= 12.0 * (1 + 1e-9)).all()
    assert (exported * math.sqrt(3) / 4 >= 12.0 * (1 - 0.04) - 0.1).all()


def test_v2g_on_a_line_to_line_evse_discharges_within_both_lines():
    """A 208 V line-to-line V2G car discharging loads lines R and S in the export direction."""
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="cb", parent="grid", max_current=20.0),
        ),
        evses=(
            _ll("ab", "cb", "RST", max_current=32.0, bidirectional=True),
            _ll("bc", "cb", "STR", max_current=32.0, bidirectional=True),
        ),
        voltage_v=120.0,
    )
    sessions = [_v2g("v0", "ab"), _v2g("v1", "bc")]
    hz = lo.Horizon(start=T0, step_s=900, n_periods=8)
    # exports pay in the first hour; the cars take it back in the second (both leave at 2 h)
    sig = lo.Signals(import_price=0.05, export_price=steps((0, 1.0), (1, 0.0)))
    p = lo.compile_problem(site, sessions, hz, sig)
    assert not any("charge only" in n for n in p.notices)
    s = lo.solve(p)
    s.check()
    assert s.discharge is not None and (s.discharge[:, :4].sum(axis=0) > 0).all()
    none = np.zeros((0, 8))
    assert worst_lines(site, sessions, s.current, s.discharge, none) == []
    # line S carries both cars' phasors (120° apart): the 20 A breaker binds in export
    line_s = np.abs(
        sum(_contributions(site, sessions, s.current, s.discharge, none, 0, 0)[("cb", "S")])
    )
    assert (line_s <= 20.0 * (1 + 1e-9)).all()
    assert line_s[:4].min() >= 20.0 * (1 - p.facet_loss_bound) - 0.3


# --------------------------------------------------------------------------- properties
@st.composite
def wired_bidirectional_sites(draw):
    dyn = draw(st.sampled_from([True, True, False]))  # the 120° primaries are the hard case
    nodes = [
        lo.Node(id="grid", kind="grid_connection", max_current=draw(st.sampled_from([None, 60.0])))
    ]
    nodes.append(
        lo.Node(
            id="tx",
            parent="grid",
            kind="transformer" if dyn else "circuit",
            max_current=draw(st.sampled_from([None, 20.0, 45.0])),
            max_power_kw=draw(st.sampled_from([None, 12.0])),
            delta_wye=(
                lo.DeltaWye(turns_ratio=4.0, primary_max_current=draw(st.sampled_from([6.0, 12.0])))
                if dyn
                else None
            ),
        )
    )
    if draw(st.booleans()):
        nodes.append(lo.Node(id="cb", parent="tx", max_current=draw(st.sampled_from([16.0, 30.0]))))
    node_ids = [n.id for n in nodes]
    evses = []
    for k in range(draw(st.integers(1, 4))):
        ll = draw(st.booleans())
        evses.append(
            lo.Evse(
                id=f"e{k}",
                node=draw(st.sampled_from(node_ids[1:])),
                charge_point_id=f"CP{k}",
                phases=draw(st.sampled_from([1, 2, 3] if ll else [1, 3])),
                wiring="line_to_line" if ll else "line_to_neutral",
                phase_rotation=draw(st.sampled_from(["RST", "STR", "TRS", "RTS"])),
                voltage_v=208.0 if ll else 120.0,
                max_current=draw(st.sampled_from([16.0, 32.0])),
                bidirectional=draw(st.sampled_from([True, True, False])),
            )
        )
    bats = tuple(
        Battery(
            id=f"b{k}",
            node=draw(st.sampled_from(node_ids[1:])),
            capacity_kwh=draw(st.sampled_from([5.0, 30.0])),
            soc=draw(st.floats(0, 1)),
            min_soc=draw(st.sampled_from([0.0, 0.2])),
            max_charge_kw=draw(st.sampled_from([3.0, 20.0])),
            max_discharge_kw=draw(st.sampled_from([3.0, 20.0])),
            charge_efficiency=draw(st.sampled_from([0.9, 1.0])),
        )
        for k in range(draw(st.integers(0, 2)))
    )
    site = lo.Site(
        nodes=tuple(nodes),
        evses=tuple(evses),
        batteries=bats,
        voltage_v=120.0,
        base_load_node=draw(st.sampled_from([None, "tx"])),
    )
    sessions = []
    for k, e in enumerate(evses):
        if not draw(st.sampled_from([True, True, False])):
            continue
        v2x = (
            V2xParameters(
                min_v2x_energy_kwh=draw(st.sampled_from([-10.0, 0.0])),
                max_v2x_energy_kwh=draw(st.sampled_from([5.0, 30.0])),
                max_discharge_current=draw(st.sampled_from([8.0, 32.0])),
            )
            if draw(st.booleans())
            else None
        )
        energy = draw(st.sampled_from([0.0, 4.0, 20.0]))
        sessions.append(
            lo.Session(
                id=f"s{k}",
                evse=e.id,
                arrival=at(draw(st.sampled_from([-1.0, 0.0, 0.3]))),
                departure=at(draw(st.sampled_from([0.7, 1.5]))),
                energy_kwh=energy if v2x is None else min(energy, v2x.max_v2x_energy_kwh),
                phases=draw(st.sampled_from([1, 2, 3])),
                v2x=v2x,
            )
        )
    return site, sessions


@settings(max_examples=examples(40), deadline=None)
@given(data=st.data(), case=wired_bidirectional_sites())
def test_no_line_exceeds_its_phasor_limit_in_either_direction(data, case):
    site, sessions = case
    T = 6
    hz = lo.Horizon(start=T0, step_s=900, n_periods=T)
    base = data.draw(st.sampled_from([0.0, 2.0, 30.0]))
    pv = data.draw(st.sampled_from([0.0, 2.0, 30.0]))
    sig = lo.Signals(
        base_load_kw=base,
        pv_kw=pv,
        import_price=steps((0, data.draw(st.sampled_from([0.1, -0.5]))), (0.75, 0.8)),
        export_price=data.draw(st.sampled_from([0.05, 1.0])),
    )
    p = lo.compile_problem(site, sessions, hz, sig)
    S, B = len(sessions), len(site.batteries)
    pool = st.sampled_from([0.0, 3.3, 16.0, 100.0, -5.0, float("nan"), 1e9])

    def arr(n):
        return np.array(data.draw(st.lists(pool, min_size=n * T, max_size=n * T))).reshape(n, T)

    if p.storage is None:
        cur, dis, bat = lo.safety.project(p, arr(S)), np.zeros((S, T)), np.zeros((B, T))
    else:
        cur, dis, bat = project_storage(p, arr(S), arr(S), arr(B), arr(B))
    assert worst_lines(site, sessions, cur, dis, bat, base, pv) == []
    assert lo.safety.violations(p, cur, discharge=dis, battery_a=bat) == []
    plain = _no_current_limits(site)
    assert _independent_check(plain, sessions, hz, base, pv, None, None, cur, dis, bat) == []
    s = lo.solve(p)
    s.check()
    dis = np.zeros((S, T)) if s.discharge is None else s.discharge
    bat = np.zeros((B, T)) if s.battery_a is None else s.battery_a
    assert worst_lines(site, sessions, s.current, dis, bat, base, pv) == []
    assert _independent_check(plain, sessions, hz, base, pv, None, None, s.current, dis, bat) == []


def test_the_library_worst_case_agrees_with_brute_force():
    """``safety.line_current_worst`` (arcs between breakpoints) equals the brute force here."""
    site = dyn_storage_site(primary_a=1000.0)
    sessions = [
        lo.Session(id="c", evse="ab", arrival=T0, departure=at(2), energy_kwh=100.0),
        _v2g("v", "bc"),
    ]
    hz = lo.Horizon(start=T0, step_s=900, n_periods=3)
    p = lo.compile_problem(site, sessions, hz, lo.Signals(base_load_kw=3.0, pv_kw=5.0))
    cur = np.array([[10.0, 0.0, 25.0], [0.0, 0.0, 0.0]])
    dis = np.array([[0.0, 0.0, 0.0], [7.0, 30.0, 12.5]])
    mag, _, groups = lo.safety.line_current_worst(p, cur, dis, np.zeros((0, 3)))
    ref = _contributions(site, sessions, cur, dis, np.zeros((0, 3)), 3.0, 5.0)
    N = len(p.node_ids)
    for j, g in enumerate(groups):
        side, node, line = g // (3 * N), (g // 3) % N, g % 3
        key = (p.node_ids[node], ("RST" if side == 0 else "ABC")[line])
        P = np.array(ref[key])
        brute = np.max(
            [
                np.abs((np.array(m)[:, None] * P).sum(axis=0))
                for m in itertools.product((0, 1), repeat=len(P))
            ],
            axis=0,
        )
        np.testing.assert_allclose(mag[j], brute, rtol=1e-12, atol=1e-9)
    assert groups.size
