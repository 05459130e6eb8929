"""Reservations: current an EVSE may draw whatever the plan says, counted as a fixed load.

The property test checks with its own physics, written from the site objects (parents walked
by id, phase rotation read from the EVSE), not from the library's safety rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.errors import InputError
from loadopt.ocpp import allowances, build_profiles
from loadopt.ocpp.merge import value_at

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _site(grid_a: float = 32.0, panel_a: float = 20.0, n: int = 4) -> lo.Site:
    return lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=grid_a, max_power_kw=40.0),
            lo.Node(id="panel", parent="grid", max_current=panel_a),
        ),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node="panel" if k % 2 else "grid",
                charge_point_id=f"CP{k}",
                phases=3 if k % 3 else 1,
                phase_rotation=("RST", "STR", "TRS")[k % 3],
            )
            for k in range(n)
        ),
    )


def _sessions(site: lo.Site, which: list[int]) -> list[lo.Session]:
    return [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=T0 - timedelta(hours=1),
            departure=T0 + timedelta(hours=6),
            energy_kwh=40.0,
            phases=site.evses[k].phases,
        )
        for k in which
    ]


def physical_load(
    site: lo.Site,
    sessions: list[lo.Session],
    current: np.ndarray,
    reserved: np.ndarray,
    base_a: float = 0.0,
) -> dict[tuple[str, int], np.ndarray]:
    """(node id, site phase) -> A per period: every EVSE draws its reservation where it has one,
    else its session's limit on the lines the vehicle uses; the base load on the root."""
    T = current.shape[1]
    parent = {n.id: n.parent for n in site.nodes}
    out = {
        (n.id, p): np.full(T, base_a if n.parent is None else 0.0)
        for n in site.nodes
        for p in range(3)
    }
    sess_of = {s.evse: (i, s) for i, s in enumerate(sessions)}
    for e_idx, ev in enumerate(site.evses):
        lines = np.zeros((3, T))
        i_s = sess_of.get(ev.id)
        if i_s is not None:
            i, s = i_s
            for j in range(min(ev.phases, s.phases)):
                lines[j] = current[i]
        res = reserved[e_idx]
        held = res.max(axis=0) > 0
        for j in range(ev.phases):
            lines[j] = np.where(held, res[j], lines[j])
        rot = ["RST".index(c) for c in ev.phase_rotation]
        node = ev.node
        while node is not None:
            for j in range(3):
                out[(node, rot[j])] += lines[j]
            node = parent[node]
    return out


def assert_within(site: lo.Site, loads: dict[tuple[str, int], np.ndarray]) -> None:
    for n in site.nodes:
        if n.max_current is None:
            continue
        for p in range(3):
            assert np.all(loads[(n.id, p)] <= n.current_triplet()[p] + 1e-9), (n.id, p)


def test_reservation_is_a_fixed_load_and_the_reserved_session_leaves_the_rows():
    site = _site()
    sess = _sessions(site, [1, 2])
    hz = lo.Horizon(start=T0, step_s=900, n_periods=4)
    res = np.zeros((4, 3, 4))
    res[1, :, :2] = 12.0  # e1 (3-phase on panel) holds 12 A for the first two periods
    p = lo.compile_problem(site, sess, hz, reserved_a=res)
    assert p.var_reserved is not None
    i1 = p.session_index("s1")
    in_res = (p.var_session == i1) & (p.var_period < 2)
    assert np.array_equal(p.var_reserved, in_res)
    assert np.all(p.var_ub[in_res] == 12.0)
    assert p.G[:, np.flatnonzero(in_res)].nnz == 0  # counted in the reservation instead
    sched = lo.solve(p)
    sched.check()
    # panel phase R: 20 A − 12 A reserved leaves 8 A for s1 in periods 2+ only
    loads = physical_load(site, sess, sched.current, res)
    assert_within(site, loads)
    assert loads[("panel", 0)][0] == pytest.approx(12.0)
    # the schedule's own node loads count the reservation, not the plan inside it
    npc = sched.node_phase_current
    assert npc[1, 0, 0] == pytest.approx(12.0)


def test_reservation_over_a_limit_gives_others_zero_and_says_so():
    site = _site()
    sess = _sessions(site, [1, 3])
    hz = lo.Horizon(start=T0, step_s=900, n_periods=2)
    res = np.zeros((4, 3, 2))
    res[1] = 25.0  # over the 20 A panel
    p = lo.compile_problem(site, sess, hz, reserved_a=res)
    assert any("reserved draw alone exceeds" in n for n in p.notices)
    sched = lo.solve(p)
    i3 = p.session_index("s3")
    assert np.all(sched.current[i3] == 0.0)  # e3 is on the same panel


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 3)), np.full((4, 3, 2), -1.0), np.full((4, 3, 2), np.nan), "x"]
)
def test_bad_reservations_are_input_errors(bad):
    site = _site()
    hz = lo.Horizon(start=T0, step_s=900, n_periods=2)
    with pytest.raises(InputError, match="reserved_a"):
        lo.compile_problem(site, [], hz, reserved_a=bad)


def test_controller_reserve_expires_and_validates():
    site = _site()
    ctl = lo.Controller(site, step_s=900, n_periods=4)
    for s in _sessions(site, [1, 3]):
        ctl.start_session(s)
    ctl.reserve("e1", 18.0, until=T0 + timedelta(minutes=20), reason="decrease in flight")
    sched = ctl.step(T0)
    assert np.array_equal(sched.problem.evse_reserved_a[1, :, :2], np.full((3, 2), 18.0))
    assert not sched.problem.evse_reserved_a[1, :, 2:].any()
    i3 = sched.problem.session_index("s3")
    assert sched.current[i3, 0] <= 2.0 + 1e-9  # 20 A panel − 18 A reserved
    ctl.step(T0 + timedelta(minutes=30))
    assert "e1" not in ctl.reservations  # expired
    with pytest.raises(InputError, match="unknown EVSE"):
        ctl.reserve("nope", 1.0)
    with pytest.raises(InputError, match="timezone-aware"):
        ctl.reserve("e1", 1.0, until=datetime(2026, 1, 1))
    with pytest.raises(InputError, match="finite"):
        ctl.reserve("e1", float("nan"))
    ctl.reserve("e2", (1.0, 2.0, 3.0))
    ctl.release("e2")
    assert "e2" not in ctl.reservations


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_reserved_sites_never_exceed_a_limit_with_newcomers(data):
    """LP and fast path, then the OCPP worst case: every session at its TxProfile limit, every
    reserved EVSE at its reservation, a newcomer at TxDefault on every idle EVSE."""
    n = data.draw(st.integers(2, 6))
    site = _site(grid_a=data.draw(st.floats(10, 64)), panel_a=data.draw(st.floats(6, 40)), n=n)
    which = sorted(data.draw(st.sets(st.integers(0, n - 1), max_size=n)))
    sess = _sessions(site, which)
    T = 3
    res = np.zeros((n, 3, T))
    for e in data.draw(st.sets(st.integers(0, n - 1), max_size=n)):
        k = data.draw(st.integers(1, T))
        res[e, :, :k] = data.draw(st.floats(0.5, 20))
    hz = lo.Horizon(start=T0, step_s=900, n_periods=T)
    p = lo.compile_problem(site, sess, hz, reserved_a=res)
    method = data.draw(st.sampled_from(["lp", "fast"]))
    sched = lo.solve(p, method=method)
    loads = physical_load(site, sess, sched.current, res)
    fixed_over = any(
        np.any(
            physical_load(site, sess, np.zeros_like(sched.current), res)[(nd.id, ph)]
            > nd.current_triplet()[ph]
        )
        for nd in site.nodes
        for ph in range(3)
    )
    if fixed_over:
        return  # the reservations alone break a limit: nothing the plan can do (notice)
    assert_within(site, loads)
    # newcomers: TxDefault (per period) on every idle, unreserved EVSE
    allow = allowances(sched)
    profs = {(pr.charge_point_id, pr.purpose): pr for pr in build_profiles(sched)}
    busy = {s.evse for s in sess}
    worst = sched.current.copy()
    extra = np.zeros((n, 3, T))
    for k, ev in enumerate(site.evses):
        if ev.id in busy or res[k].max() > 0:
            continue
        pr = profs[(ev.charge_point_id, "tx_default")]
        extra[k] = value_at(pr.starts, pr.limits, np.arange(T) * hz.step_s).T / 10.0
    assert allow.idle.shape == (n, T)
    loads = physical_load(site, sess, worst, res + extra)
    assert_within(site, loads)


@pytest.mark.parametrize("grid_a,expect_zero", [(10.0, True), (0.0, True), (32.0, False)])
def test_a_reservation_that_does_not_fit_hands_its_vehicle_zero(grid_a, expect_zero):
    """A vehicle metered above its limit (here: before it had any limit from us) is reserved
    at what it draws, and inside that reservation its own plan is free. Where the reservation
    does not fit the limits (16 A metered on a 10 A, or a 0 A, connection), handing out what it
    draws allowed 16 A on a 10 A line (found by the independent physics check in
    test_controller.test_never_exceeds_limits): now it is handed 0 A, the only limit that helps.
    Where it fits (32 A), the plan inside it stays free as before."""
    from loadopt.controller import Controller

    from .physics import physical_violations

    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=grid_a),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="CP0", phases=1),),
    )
    c = Controller(site, step_s=900, n_periods=4)
    c.start_session(
        lo.Session(
            id="s", evse="e0", arrival=T0, departure=T0 + timedelta(hours=4), energy_kwh=20.0
        )
    )
    c.meter("s", T0, current_a=16.0)
    sched = c.step(T0)
    assert "reserved" in " ".join(c.log[-1].events) or c.reservations
    assert sched.violations() == []
    if expect_zero:
        assert np.all(sched.current == 0.0)
        assert physical_violations(sched.problem, sched.current) == []
    else:
        assert sched.current[0, 0] == pytest.approx(16.0)
