"""Property tests: random overlapping grid signals never let the site exceed what they ask for.

Random sites (a root and feeders, 1- and 3-phase EVSEs), sessions arriving and leaving inside
periods, and random overlapping signals — import caps on any node, per-phase current caps,
reductions (declared or uncontrolled baseline), SIMPLE levels, §14a floors, randomised windows,
stale streams with fallbacks. Whatever produces the currents (LP, fast path, garbage through the
projection), the checker below — written from the raw inputs, minute by minute, without the
compiled rows or the period sampling of :mod:`loadopt.grid.arrays` — finds no minute where a
signal in force is exceeded. A second property: §14a floors hold where nothing physical stops
them.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.safety import project

from .conftest import T0

STEP_S = 900
N_PERIODS = 6
MINUTES = STEP_S * N_PERIODS // 60


@st.composite
def cases(draw):
    n_feeders = draw(st.integers(1, 2))
    nodes = [lo.Node(id="grid", kind="grid_connection")]
    nodes += [lo.Node(id=f"f{k}", parent="grid", kind="feeder") for k in range(n_feeders)]
    node_ids = ["grid"] + [f"f{k}" for k in range(n_feeders)]
    n_evse = draw(st.integers(1, 5))
    evses = tuple(
        lo.Evse(
            id=f"e{k}",
            node=f"f{draw(st.integers(0, n_feeders - 1))}",
            charge_point_id=f"CP{k}",
            phases=draw(st.sampled_from([1, 3])),
            phase_rotation=draw(st.sampled_from(["RST", "STR", "TRS"])),
            max_current=32.0,
            min_current=6.0,
        )
        for k in range(n_evse)
    )
    site = lo.Site(id=draw(st.sampled_from(["a", "b", "depot"])), nodes=tuple(nodes), evses=evses)
    sessions = []
    for k in range(n_evse):
        if draw(st.booleans()) or k == 0:
            a = draw(st.integers(-30, 60))
            sessions.append(
                lo.Session(
                    id=f"s{k}",
                    evse=f"e{k}",
                    arrival=T0 + timedelta(minutes=a),
                    departure=T0 + timedelta(minutes=a + draw(st.integers(5, 200))),
                    energy_kwh=draw(st.floats(0, 60)),
                    phases=draw(st.sampled_from([1, 3])),
                )
            )
    sigs = []
    for j in range(draw(st.integers(1, 5))):
        a = draw(st.integers(-20, MINUTES))
        b = a + draw(st.integers(1, 120))
        kind = draw(
            st.sampled_from(
                ["import_cap_kw", "current_cap_a", "reduction_kw", "reduction_declared", "level"]
            )
        )
        kw: dict = {}
        if kind == "import_cap_kw":
            kw["import_cap_kw"] = draw(st.floats(0, 40))
        elif kind == "current_cap_a":
            kw["current_cap_a"] = draw(st.floats(0, 40))
        elif kind == "reduction_kw":
            kw["reduction_kw"] = draw(st.floats(0, 30))
        elif kind == "reduction_declared":
            kw["reduction_kw"] = draw(st.floats(0, 30))
            kw["baseline_kw"] = draw(st.floats(0, 60))
        else:
            kw["level"] = draw(st.integers(0, 3))
        if kind in ("import_cap_kw", "current_cap_a") and draw(st.booleans()):
            kw["floor_kw_per_device"] = draw(st.sampled_from([4.2, 2.0]))
        if draw(st.booleans()):
            kw["valid_until"] = T0 + timedelta(minutes=draw(st.integers(0, MINUTES)))
            kw["fallback_kw"] = draw(st.floats(0, 40))
        sigs.append(
            lo.GridSignal(
                id=f"g{j}",
                start=T0 + timedelta(minutes=a),
                end=T0 + timedelta(minutes=b),
                node=draw(st.sampled_from([None, *node_ids])),
                source="test",
                ref=f"r{j}",
                randomize_s=draw(st.sampled_from([0, 0, 300])),
                **kw,
            )
        )
    signals = lo.Signals(
        base_load_kw=draw(st.floats(0, 10)),
        pv_kw=draw(st.floats(0, 10)),
        grid_import_limit_kw=draw(st.one_of(st.none(), st.floats(0, 60))),
        grid_signals=tuple(sigs),
    )
    return site, tuple(sessions), signals


def _independent_check(site, sessions, signals, current):
    """Minute by minute from the raw inputs: no signal in force is exceeded (see module doc)."""
    parent = {n.id: n.parent for n in site.nodes}
    root = next(n.id for n in site.nodes if n.parent is None)

    def under(node, evse_node):
        cur = evse_node
        while cur is not None:
            if cur == node:
                return True
            cur = parent[cur]
        return False

    evse = {e.id: e for e in site.evses}
    kwpa = {
        s.id: evse[s.evse].voltage_v * min(evse[s.evse].phases, s.phases) / 1000 for s in sessions
    }
    base, pv = signals.base_load_kw, signals.pv_kw
    base_a = base * 1000 / (3 * site.voltage_v)
    for m in range(MINUTES):
        t = T0 + timedelta(minutes=m, seconds=30)  # the middle of minute m
        k = m * 60 // STEP_S
        here = [(i, s) for i, s in enumerate(sessions) if s.arrival <= t < s.departure]
        for g in signals.grid_signals:
            node = g.node or root
            off = timedelta(seconds=g.offset_s(site.id))
            in_win = g.start + off <= t < g.end + off
            stale = g.valid_until is not None and t >= g.valid_until
            mine = [(i, s) for i, s in here if under(node, evse[s.evse].node)]
            ev_kw = sum(current[i, k] * kwpa[s.id] for i, s in mine)
            fixed = (base - pv) if node == root else base * (node == root)
            caps = []
            if stale:
                caps.append(g.fallback_kw)
            if in_win and g.import_cap_kw is not None:
                caps.append(g.import_cap_kw)
            if in_win and g.reduction_kw is not None and g.baseline_kw is not None:
                caps.append(max(g.baseline_kw - g.reduction_kw, 0.0))
            if in_win and g.reduction_kw is not None and g.baseline_kw is None:
                # uncontrolled right now: every car here that would still be charging at full
                # power (from max(arrival, T0) on) + base − PV at the root
                unc = 0.0
                for _, s in mine:
                    mx = 32.0 * kwpa[s.id]
                    t_full = max(s.arrival, T0) + timedelta(hours=s.energy_kwh / mx)
                    unc += mx if t < t_full else 0.0
                unc = max(unc + (base - pv if node == root else 0.0), 0.0)
                caps.append(max(unc - g.reduction_kw, 0.0))
            if not caps:
                continue
            cap = min(caps)
            if g.floor_kw_per_device is not None and in_win and not stale:
                # §14a: the cap never below the floors of the devices planned in this period
                k0, k1 = (
                    T0 + timedelta(seconds=k * STEP_S),
                    T0 + timedelta(seconds=(k + 1) * STEP_S),
                )
                present = [
                    s
                    for s in sessions
                    if s.arrival < k1
                    and s.departure > k0
                    and s.energy_kwh > 0
                    and under(node, evse[s.evse].node)
                ]
                cap = max(cap, sum(min(g.floor_kw_per_device, 32.0 * kwpa[s.id]) for s in present))
            assert ev_kw <= max(cap - fixed, 0.0) + 1e-6, (g.id, m, ev_kw, cap, fixed)
        # per-phase current caps
        for g in signals.grid_signals:
            if g.current_cap_a is None:
                continue
            off = timedelta(seconds=g.offset_s(site.id))
            if not g.start + off <= t < g.end + off:
                continue
            node = g.node or root
            cap_a = g.current_cap_a
            if g.floor_kw_per_device is not None:
                continue  # floors are in kW; covered by the kW checks and the floor property
            for ph in range(3):
                load = 0.0
                for i, s in here:
                    e = evse[s.evse]
                    if not under(node, e.node):
                        continue
                    used = e.site_phases[: min(e.phases, s.phases)]
                    load += current[i, k] * (ph in used)
                fixed_a = base_a if node == root else 0.0
                assert load <= max(cap_a - fixed_a, 0.0) + 1e-6, (g.id, m, ph, load, cap_a)


COMMON = settings(
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _problem(case):
    site, sessions, signals = case
    return lo.compile_problem(
        site, sessions, lo.Horizon(start=T0, step_s=STEP_S, n_periods=N_PERIODS), signals
    )


@COMMON
@given(cases(), st.sampled_from(["lp", "fast"]))
def test_no_signal_is_exceeded_at_any_minute(case, method):
    p = _problem(case)
    sched = lo.solve(p, method=method)
    assert sched.violations() == []
    _independent_check(*case, sched.current)


@COMMON
@given(cases(), st.integers(0, 2**32 - 1))
def test_garbage_through_the_projection_exceeds_no_signal(case, seed):
    p = _problem(case)
    rng = np.random.default_rng(seed)
    garbage = rng.choice([0.0, 6.0, 16.0, 32.0, 1e6], size=(p.n_sessions, p.n_periods))
    _independent_check(*case, project(p, garbage))


@COMMON
@given(st.integers(1, 5), st.integers(0, 3), st.floats(0, 30), st.sampled_from([1, 3]))
def test_section_14a_floors_hold(n_cars, first_period, cap_kw, phases):
    """Cars plugged in throughout that want plenty, on a site with no physical limit: under a
    floored cap each gets at least its floor (on the 0.1 A grid) in every period of the window,
    and the cap is exceeded only by what the floors require."""
    site = lo.Site(
        nodes=(lo.Node(id="grid"),),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="grid", charge_point_id=f"C{k}", phases=phases)
            for k in range(n_cars)
        ),
    )
    sess = [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=T0 - timedelta(hours=1),
            departure=T0 + timedelta(hours=8),
            energy_kwh=200.0,
        )
        for k in range(n_cars)
    ]
    g = lo.GridSignal(
        id="dso",
        start=T0 + timedelta(seconds=first_period * STEP_S),
        end=T0 + timedelta(seconds=(first_period + 2) * STEP_S),
        import_cap_kw=cap_kw,
        floor_kw_per_device=4.2,
    )
    p = lo.compile_problem(
        site,
        sess,
        lo.Horizon(start=T0, step_s=STEP_S, n_periods=N_PERIODS),
        lo.Signals(grid_signals=(g,)),
    )
    sched = lo.solve(p)
    kw_per_a = 230.0 * phases / 1000
    floor_a = np.floor(min(4.2 / kw_per_a, 32.0) * 10) / 10
    win = slice(first_period, first_period + 2)
    assert np.all(sched.current[:, win] >= floor_a - 1e-9)
    assert np.all(sched.ev_power_kw[win] <= max(cap_kw, n_cars * min(4.2, 32 * kw_per_a)) + 1e-6)
