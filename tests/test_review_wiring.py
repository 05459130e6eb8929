"""Second review: reservations and newcomer allowances on line-to-line / delta-wye sites.

The checker here is written from the raw site objects with plain complex arithmetic (phase
voltages at 0°, −120°, +120°; a line-to-line branch in phase with ``V_a − V_b``; Dyn11 primary
``I_A = (I_a − I_c)/n``), not from ``loadopt.wiring`` or the compiled rows. A reserved EVSE may
draw anything from 0 to its reservation on each of its branches: the line magnitudes are convex
in those draws, so the checker tries every corner of that box.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.ocpp import allowances

from .conftest import examples
from .phasors import branch_phasors, climb, limit_of

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def line_phasors(site: lo.Site, loads: list[tuple[lo.Evse, int, np.ndarray]]) -> dict:
    """``{(node, line): complex (T,)}`` from branch draws ``(evse, branch, A per period)``."""
    acc: dict[tuple[str, str], np.ndarray] = {}
    for ev, j, amps in loads:
        climb(site, ev.node, {p: amps * z for p, z in branch_phasors(ev, j).items()}, acc)
    return acc


def worst_breaches(
    site: lo.Site,
    planned: list[tuple[lo.Evse, int, np.ndarray]],
    held: list[tuple[lo.Evse, int, np.ndarray]],
) -> tuple[list[str], bool]:
    """Lines over their limit for some draw in ``[0, held]`` on top of ``planned``; and whether
    the held draws alone (nothing planned) already break a limit somewhere."""
    out, fixed_over = [], False
    for corner in itertools.product((0.0, 1.0), repeat=len(held)):
        chosen = [(ev, j, a * c) for (ev, j, a), c in zip(held, corner, strict=True)]
        for (node, line), z in line_phasors(site, planned + chosen).items():
            lim = limit_of(site, node, line)
            if np.any(np.abs(z) > lim + 1e-6):
                out.append(f"{node}/{line} corner {corner}: {np.abs(z).max():.2f} > {lim}")
        for (node, line), z in line_phasors(site, chosen).items():
            fixed_over |= bool(np.any(np.abs(z) > limit_of(site, node, line) + 1e-6))
    return out, fixed_over


def _evse(k: int, node: str, wiring: str, rot: str, phases: int) -> lo.Evse:
    return lo.Evse(
        id=f"e{k}",
        node=node,
        charge_point_id=f"CP{k}",
        phases=phases,
        wiring=wiring,
        phase_rotation=rot,
        voltage_v=208.0 if wiring == "line_to_line" else 120.0,
        max_current=32.0,
    )


def test_reserved_line_to_line_evse_loads_both_lines_of_its_pair():
    """Regression: a line-to-line EVSE reserved at 30 A was counted on its first line only, so
    a 120 V EVSE on the pair's second line was planned at 32 A: 59.9 A on a 40 A line."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=40.0),),
        evses=(
            _evse(0, "grid", "line_to_line", "RST", 1),  # lines R and S
            _evse(1, "grid", "line_to_neutral", "SRT", 1),  # line S
        ),
        voltage_v=120.0,
    )
    s = lo.Session(
        id="s1",
        evse="e1",
        arrival=T0 - timedelta(hours=1),
        departure=T0 + timedelta(hours=4),
        energy_kwh=50.0,
        phases=1,
    )
    res = np.zeros((2, 3, 2))
    res[0, 0] = 30.0
    p = lo.compile_problem(site, [s], lo.Horizon(start=T0, step_s=900, n_periods=2), reserved_a=res)
    ev0, ev1 = site.evses
    for method in ("lp", "fast"):
        sched = lo.solve(p, method=method)
        sched.check()
        bad, _ = worst_breaches(site, [(ev1, 0, sched.current[0])], [(ev0, 0, res[0, 0])])
        assert not bad, (method, bad)
        assert sched.current[0, 0] > 0  # and the room that is left is used


@st.composite
def wired_cases(draw):
    tx = draw(st.booleans())
    nodes = [lo.Node(id="grid", max_current=draw(st.floats(20, 80)))]
    if tx:
        nodes.append(
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                max_current=draw(st.floats(20, 80)),
                delta_wye=lo.DeltaWye(
                    turns_ratio=draw(st.sampled_from([1.0, 1.7320508, 4.0])),
                    primary_max_current=draw(st.floats(10, 60)),
                ),
            )
        )
    nodes.append(
        lo.Node(id="cb", parent="tx" if tx else "grid", max_current=draw(st.floats(15, 60)))
    )
    n = draw(st.integers(2, 5))
    evses = []
    for k in range(n):
        wiring = draw(st.sampled_from(["line_to_line", "line_to_neutral"]))
        evses.append(
            _evse(
                k,
                draw(st.sampled_from([x.id for x in nodes])),
                wiring,
                draw(st.sampled_from(["RST", "RTS", "SRT", "STR", "TRS", "TSR"])),
                draw(st.sampled_from([1, 1, 2, 3])),
            )
        )
    site = lo.Site(nodes=tuple(nodes), evses=tuple(evses), voltage_v=120.0)
    plugged = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n)))
    T = 2
    res = np.zeros((n, 3, T))
    for e in draw(st.sets(st.integers(0, n - 1), max_size=2)):
        for j in range(evses[e].phases):
            res[e, j, : draw(st.integers(1, T))] = draw(st.floats(1, 20))
    return site, plugged, res, draw(st.sampled_from(["lp", "fast"]))


def _solve_case(site: lo.Site, plugged: list[int], res: np.ndarray, method: str) -> lo.Schedule:
    """A 60 kWh car on each plugged EVSE since an hour ago, solved with ``res`` A reserved."""
    T = res.shape[2]
    sessions = [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=T0 - timedelta(hours=1),
            departure=T0 + timedelta(hours=4),
            energy_kwh=60.0,
            phases=site.evses[k].phases,
        )
        for k in plugged
    ]
    p = lo.compile_problem(
        site, sessions, lo.Horizon(start=T0, step_s=900, n_periods=T), reserved_a=res
    )
    return lo.solve(p, method=method)


def _held(site: lo.Site, res: np.ndarray | None) -> list:
    """The reservations as (EVSE, conductor, A per period) branches for ``worst_breaches``."""
    return [
        (site.evses[e], j, res[e, j])
        for e in range(len(site.evses))
        for j in range(site.evses[e].phases)
        if res is not None and res[e, j].any()
    ]


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=wired_cases())
def test_reserved_wired_sites_never_exceed_an_exact_limit(case):
    site, plugged, res, method = case
    sched = _solve_case(site, plugged, res, method)
    cur = sched.unreserved_current
    planned = [
        (site.evses[k], j, cur[i])
        for i, k in enumerate(plugged)
        for j in range(site.evses[k].phases)
    ]
    held = _held(site, res)
    bad, fixed_over = worst_breaches(site, planned, held)
    if fixed_over:
        return  # the reservations alone break a limit: a notice, not the plan's doing
    assert not bad, bad


def _newcomer_breaches(site: lo.Site, sched: lo.Schedule, plugged: list[int]) -> list[str]:
    """Every idle EVSE's newcomer at its allowance on each branch, on top of the plan (and any
    reservation at any draw within it): the TxDefault worst case."""
    allow = allowances(sched)
    p = sched.problem
    cur = sched.unreserved_current
    res = p.evse_reserved_a
    planned = [
        (site.evses[k], j, cur[i])
        for i, k in enumerate(plugged)
        for j in range(site.evses[k].phases)
    ]
    for e, ev in enumerate(site.evses):
        for j in range(ev.phases):
            planned.append((ev, j, np.where(allow.idle[e], allow.newcomer[e, j], 0) / 10.0))
    held = _held(site, res)
    bad, fixed_over = worst_breaches(site, planned, held)
    return [] if fixed_over else bad


def test_newcomer_allowances_count_line_to_line_pairs_and_transformer_primaries():
    """Regression: allowances counted an idle line-to-line EVSE on its first line only and
    carried a load under a delta/wye transformer up as if it were on the same site phase
    (primary limits ignored): all newcomers at their TxDefault put 36.3 A on a 20 A line."""
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=20.0),
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                max_current=100.0,
                delta_wye=lo.DeltaWye(turns_ratio=1.0, primary_max_current=15.0),
            ),
        ),
        evses=(
            _evse(0, "grid", "line_to_line", "RST", 1),
            _evse(1, "grid", "line_to_neutral", "SRT", 1),
            _evse(2, "tx", "line_to_neutral", "RST", 1),
        ),
        voltage_v=120.0,
    )
    p = lo.compile_problem(site, [], lo.Horizon(start=T0, step_s=900, n_periods=2))
    sched = lo.solve(p)
    assert not _newcomer_breaches(site, sched, [])
    assert allowances(sched).newcomer[:, 0, 0].min() > 0  # and everyone still gets something


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=wired_cases())
def test_newcomers_on_wired_sites_never_exceed_an_exact_limit(case):
    site, plugged, res, method = case
    sched = _solve_case(site, plugged, res, method)
    assert not _newcomer_breaches(site, sched, plugged)
