"""Second review: the staleness rule of a stream with no events (``validity_signal``) in the
compliance KPIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

import loadopt as lo
from loadopt.grid.arrays import validity_signal
from loadopt.grid.compliance import compliance

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _schedule(valid_until: datetime) -> lo.Schedule:
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=63.0),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="CP0"),),
    )
    s = lo.Session(
        id="s0",
        evse="e0",
        arrival=T0,
        departure=T0 + timedelta(hours=4),
        energy_kwh=60.0,
    )
    sig = lo.Signals(grid_signals=(validity_signal("openadr2", valid_until, 5.0, None),))
    p = lo.compile_problem(site, [s], lo.Horizon(start=T0, step_s=900, n_periods=8), sig)
    return lo.solve(p)


def test_a_live_validity_rule_is_no_compliance_row():
    """Regression: a VEN with no events carries its staleness rule as a zero price adder; while
    the stream is fresh it asks for nothing and showed up as an empty price-adder row."""
    sched = _schedule(T0 + timedelta(hours=6))
    assert compliance(sched) == ()
    assert sched.kpis().demand_response == ()


def test_a_stale_stream_is_judged_against_its_fallback():
    sched = _schedule(T0 + timedelta(minutes=50))  # stale from inside period 3 on
    (c,) = compliance(sched)
    assert c.kind == "fallback_kw"
    assert np.array_equal(c.period_index, np.arange(3, 8))
    assert np.all(c.required_kw == 5.0)
    assert c.compliant and np.all(c.planned_kw <= 5.0 + 1e-9)
    (dr,) = sched.kpis().demand_response
    assert dr.kind == "fallback_kw" and dr.periods == 5
