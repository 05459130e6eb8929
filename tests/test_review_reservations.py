"""Second review: what a reserved EVSE may draw is the larger of its reservation and what its
session is sent, line by line.

A reservation says "this EVSE may draw this much whatever the plan says"; the session's
TxProfile is what the plan says. The checker below walks the raw site (parents by id, phase
rotation from the OCPP string) and loads every EVSE line with ``max(sent, reserved)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo

from .conftest import examples

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def drawn_loads(site: lo.Site, sessions, current: np.ndarray, reserved: np.ndarray) -> dict:
    """(node, site phase) -> A per period, every EVSE line at ``max(sent, reserved)``."""
    T = current.shape[1]
    parent = {n.id: n.parent for n in site.nodes}
    out = {(n.id, p): np.zeros(T) for n in site.nodes for p in range(3)}
    sess_of = {s.evse: (i, s) for i, s in enumerate(sessions)}
    for e, ev in enumerate(site.evses):
        lines = np.zeros((3, T))
        if ev.id in sess_of:
            i, s = sess_of[ev.id]
            lines[: min(ev.phases, s.phases)] = current[i]
        lines[: ev.phases] = np.maximum(lines[: ev.phases], reserved[e, : ev.phases])
        rot = ["RST".index(c) for c in ev.phase_rotation]
        node = ev.node
        while node is not None:
            for j in range(3):
                out[(node, rot[j])] += lines[j]
            node = parent[node]
    return out


def breaches(site: lo.Site, loads: dict) -> list[str]:
    out = []
    for n in site.nodes:
        if n.max_current is None:
            continue
        for p in range(3):
            lim = n.current_triplet()[p]
            if np.any(loads[(n.id, p)] > lim + 1e-9):
                out.append(f"{n.id}/{'RST'[p]}: {loads[(n.id, p)].max():.1f} > {lim}")
    return out


def _session(k: int, phases: int) -> lo.Session:
    return lo.Session(
        id=f"s{k}",
        evse=f"e{k}",
        arrival=T0 - timedelta(hours=1),
        departure=T0 + timedelta(hours=5),
        energy_kwh=80.0,
        phases=phases,
    )


def test_session_inside_an_uneven_reservation_is_sent_no_more_than_its_smallest_line():
    """Regression: with e0 reserved at (5, 20, 20) A its 3-phase session was planned (and sent
    a TxProfile) at 20 A on every line while only 5 A was counted on L1: a 1-phase car on L1
    got 32 A, 52 A on a 40 A breaker once e0 followed its TxProfile."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=40.0),),
        evses=(
            lo.Evse(id="e0", node="grid", charge_point_id="A", phases=3),
            lo.Evse(id="e1", node="grid", charge_point_id="B", phases=1),
        ),
    )
    sessions = [_session(0, 3), _session(1, 1)]
    res = np.zeros((2, 3, 2))
    res[0, :, 0] = (5.0, 20.0, 20.0)
    p = lo.compile_problem(
        site, sessions, lo.Horizon(start=T0, step_s=900, n_periods=2), reserved_a=res
    )
    for method in ("lp", "fast"):
        sched = lo.solve(p, method=method)
        sched.check()
        assert not breaches(site, drawn_loads(site, sessions, sched.current, res)), method
        assert sched.current[0, 0] == 5.0  # inside the reservation, at its smallest line


def test_reservation_on_lines_the_vehicle_does_not_use_gives_it_nothing():
    """A 1-phase car on an EVSE reserved on L2/L3 only: its L1 draw is counted nowhere, so it
    may not be planned at all there (it was planned at the largest reserved line)."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=20.0),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="A", phases=3),),
    )
    sessions = [_session(0, 1)]
    res = np.zeros((1, 3, 1))
    res[0, 1:, 0] = 16.0
    p = lo.compile_problem(
        site, sessions, lo.Horizon(start=T0, step_s=900, n_periods=1), reserved_a=res
    )
    sched = lo.solve(p)
    assert not breaches(site, drawn_loads(site, sessions, sched.current, res))
    assert sched.current[0, 0] == 0.0


@settings(max_examples=examples(40), deadline=None)
@given(data=st.data())
def test_reserved_evses_drawing_the_larger_of_plan_and_reservation_stay_within_limits(data):
    n = data.draw(st.integers(2, 5))
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=data.draw(st.floats(10, 64))),
            lo.Node(id="panel", parent="grid", max_current=data.draw(st.floats(6, 40))),
        ),
        evses=tuple(
            lo.Evse(
                id=f"e{k}",
                node=data.draw(st.sampled_from(["grid", "panel"])),
                charge_point_id=f"CP{k}",
                phases=data.draw(st.sampled_from([1, 3])),
                phase_rotation=data.draw(st.sampled_from(["RST", "STR", "TRS", "SRT"])),
            )
            for k in range(n)
        ),
    )
    which = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n)))
    sessions = [_session(k, data.draw(st.sampled_from([1, site.evses[k].phases]))) for k in which]
    T = 2
    res = np.zeros((n, 3, T))
    for e in data.draw(st.sets(st.integers(0, n - 1), max_size=2)):
        for j in range(3):
            res[e, j, : data.draw(st.integers(1, T))] = data.draw(
                st.sampled_from([0.0, 3.0, 8.0, 24.0])
            )
    p = lo.compile_problem(
        site, sessions, lo.Horizon(start=T0, step_s=900, n_periods=T), reserved_a=res
    )
    sched = lo.solve(p, method=data.draw(st.sampled_from(["lp", "fast"])))
    if breaches(site, drawn_loads(site, sessions, np.zeros_like(sched.current), res)):
        return  # the reservations alone are over a limit (a notice): not the plan's doing
    assert not breaches(site, drawn_loads(site, sessions, sched.current, res))
