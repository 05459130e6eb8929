"""Second review: the OCPP transition guard (``ocpp.guard.SiteLimits``) on line-to-line EVSEs
and delta/wye transformers, against line magnitudes computed here from the raw site (complex
arithmetic, :mod:`tests.test_review_wiring`)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.ocpp.guard import EPS, SiteLimits

from .conftest import examples
from .phasors import limit_of
from .test_review_wiring import _evse, line_phasors, wired_cases

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NOW = np.array([T0.timestamp()])


def _over_on_node_lines(site: lo.Site, worst: np.ndarray) -> bool:
    """Some node line (R, S, T) over its limit with every EVSE branch at ``worst`` (E, 3) A."""
    loads = [
        (ev, j, np.array([worst[e, j]]))
        for e, ev in enumerate(site.evses)
        for j in range(ev.phases)
        if worst[e, j] > 0
    ]
    return any(
        np.abs(z).max() > limit_of(site, node, line) + 1e-6
        for (node, line), z in line_phasors(site, loads).items()
        if line in "RST"
    )


def test_guard_counts_both_lines_of_a_line_to_line_pair():
    """Regression: the guard counted a 208 V R–S branch on line R only: with it at 20 A and a
    120 V car on S at 32 A (line S 50.3 A on a 40 A limit), ``excess`` saw no row over and
    ``within_for`` admitted it."""
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=40.0),),
        evses=(
            _evse(0, "grid", "line_to_line", "RST", 1),
            _evse(1, "grid", "line_to_neutral", "SRT", 1),
        ),
        voltage_v=120.0,
    )
    g = SiteLimits(lo.compile_problem(site, [], lo.Horizon(start=T0, step_s=900, n_periods=2)))
    worst = np.zeros((2, 3))
    worst[0, 0], worst[1, 0] = 20.0, 32.0
    assert _over_on_node_lines(site, worst)
    assert g.excess(worst[None], NOW).max() > EPS
    assert not g.within_for(0, worst[None], NOW) and not g.within_for(1, worst[None], NOW)


def test_guard_carries_loads_through_a_delta_wye_transformer():
    """Regression: above a Dyn transformer the guard counted a secondary line-c load on the
    parent's line T; the parent's line A carries (I_a − I_c)/n: 30 A on a 20 A line R."""
    site = lo.Site(
        nodes=(
            lo.Node(id="grid", max_current=(20.0, 100.0, 100.0)),
            lo.Node(
                id="tx",
                parent="grid",
                kind="transformer",
                max_current=100.0,
                delta_wye=lo.DeltaWye(turns_ratio=1.0),
            ),
        ),
        evses=(_evse(0, "tx", "line_to_neutral", "TRS", 1),),  # secondary line c only
        voltage_v=120.0,
    )
    g = SiteLimits(lo.compile_problem(site, [], lo.Horizon(start=T0, step_s=900, n_periods=2)))
    worst = np.zeros((1, 3))
    worst[0, 0] = 30.0
    assert _over_on_node_lines(site, worst)
    assert g.excess(worst[None], NOW).max() > EPS
    assert not g.within_for(0, worst[None], NOW)


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=wired_cases(), data=st.data())
def test_guard_sees_every_node_line_over_its_limit(case, data):
    """Soundness: whatever each branch may draw, a node line over its exact limit is a row
    the guard sees over."""
    site = case[0]
    g = SiteLimits(lo.compile_problem(site, [], lo.Horizon(start=T0, step_s=900, n_periods=1)))
    worst = np.zeros((len(site.evses), 3))
    for e, ev in enumerate(site.evses):
        for j in range(ev.phases):
            worst[e, j] = data.draw(st.sampled_from([0.0, 16.0, 32.0]))
    if _over_on_node_lines(site, worst):
        assert g.excess(worst[None], NOW).max() > EPS
