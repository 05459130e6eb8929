"""Time in one place: real (UTC) time inside, across both daylight-saving changes, two zones.

Python subtracts and adds datetimes that share a ``ZoneInfo`` as wall-clock times. Each test puts
a limit change at a local time on a DST day and checks it lands in the period that holds that
*real* instant (issue 10: a limit drop an hour late on spring-forward, a DR cap released an hour
early on fall-back).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import loadopt as lo

BERLIN = ZoneInfo("Europe/Berlin")
LA = ZoneInfo("America/Los_Angeles")
# (zone, local midnight of the change day, +1 h on spring-forward / -1 h on fall-back)
DST_DAYS = [
    pytest.param(BERLIN, datetime(2026, 3, 29), "spring", id="berlin-spring"),
    pytest.param(BERLIN, datetime(2026, 10, 25), "fall", id="berlin-fall"),
    pytest.param(LA, datetime(2026, 3, 8), "spring", id="la-spring"),
    pytest.param(LA, datetime(2026, 11, 1), "fall", id="la-fall"),
]


def _site(series=None) -> lo.Site:
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection"),
            lo.Node(id="cb", parent="grid", max_current=32.0, current_series=series),
        ),
        evses=(lo.Evse(id="e0", node="cb", charge_point_id="CP0"),),
    )


def _real_period(h: lo.Horizon, t: datetime) -> int:
    """The period holding instant ``t``, computed on POSIX timestamps (independent of loadopt)."""
    return int((t.timestamp() - h.start.timestamp()) // h.step_s)


@pytest.mark.parametrize("tz,day,kind", DST_DAYS)
def test_horizon_periods_are_real_seconds(tz, day, kind):
    h = lo.Horizon(start=day.replace(tzinfo=tz), step_s=3600, n_periods=6)
    starts = [h.period_start(k) for k in range(7)]
    assert all(b.timestamp() - a.timestamp() == 3600 for a, b in pairwise(starts))
    assert h.end.timestamp() - h.start.timestamp() == 6 * 3600
    assert h.period_start(3).tzinfo is tz  # read in the zone it was given in


@pytest.mark.parametrize("tz,day,kind", DST_DAYS)
def test_limit_drop_lands_on_its_real_instant(tz, day, kind):
    """A breaker limit drops to 10 A at 04:00 local: 32 A must not be handed out after that."""
    start = day.replace(tzinfo=tz)
    drop = day.replace(hour=4, tzinfo=tz)
    h = lo.Horizon(start=start, step_s=3600, n_periods=8)
    site = _site((lo.CurrentPoint(start=drop, value=10.0),))
    s = lo.Session(
        id="a", evse="e0", arrival=start, departure=start + timedelta(days=1), energy_kwh=500.0
    )
    p = lo.compile_problem(site, [s], h)
    k = _real_period(h, drop)
    assert k == (3 if kind == "spring" else 5)  # 4 wall-clock hours are 3 / 5 real ones
    lim = p.node_current_limit[1, 0]
    assert lim[:k].tolist() == [32.0] * k and lim[k:].tolist() == [10.0] * (8 - k)
    sched = lo.solve(p)
    assert sched.current[0, k:].max() <= 10.0
    assert sched.violations() == []


@pytest.mark.parametrize("tz,day,kind", DST_DAYS)
def test_dr_cap_holds_until_its_real_end(tz, day, kind):
    """A DR cap 01:00–04:00 local is in force in every period overlapping that real interval."""
    start = day.replace(tzinfo=tz)
    a, b = day.replace(hour=1, tzinfo=tz), day.replace(hour=4, tzinfo=tz)
    h = lo.Horizon(start=start, step_s=900, n_periods=32)
    ev = lo.DemandResponseEvent(id="dr", start=a, end=b, import_cap_kw=3.0)
    s = lo.Session(
        id="a", evse="e0", arrival=start, departure=start + timedelta(days=1), energy_kwh=500.0
    )
    p = lo.compile_problem(_site(), [s], h, lo.Signals(demand_response=(ev,)))
    ka, kb = _real_period(h, a), _real_period(h, b)
    assert kb - ka == (8 if kind == "spring" else 16)  # 2 or 4 real hours of 15 minutes
    capped = np.flatnonzero(np.isfinite(p.dr_cap_kw[0]))
    assert capped.tolist() == list(range(ka, kb))
    sched = lo.solve(p)
    assert sched.import_kw[ka:kb].max() <= 3.0 + 1e-9


@pytest.mark.parametrize("tz,day,kind", DST_DAYS)
def test_series_sampling_and_session_windows_in_real_time(tz, day, kind):
    """Price steps and a session's departure land on real instants; the model keeps UTC."""
    start = day.replace(tzinfo=tz)
    h = lo.Horizon(start=start, step_s=3600, n_periods=8)
    t_price = day.replace(hour=5, tzinfo=tz)
    sig = lo.Signals(
        import_price=(
            lo.SeriesPoint(start=start, value=0.1),
            lo.SeriesPoint(start=t_price, value=0.5),
        )
    )
    dep = day.replace(hour=3, minute=30, tzinfo=tz)
    s = lo.Session(id="a", evse="e0", arrival=start, departure=dep, energy_kwh=1.0)
    assert s.departure.tzinfo is UTC and s.departure == dep
    p = lo.compile_problem(_site(), [s], h, sig)
    k = _real_period(h, t_price)
    assert p.import_price[:k].tolist() == [0.1] * k and p.import_price[k] == 0.5
    kd = _real_period(h, dep)
    assert p.avail[0, :kd].tolist() == [1.0] * kd and p.avail[0, kd] == pytest.approx(0.5)
    assert p.avail[0, kd + 1 :].sum() == 0.0


def test_horizon_keeps_the_zone_for_display():
    start = datetime(2026, 3, 29, tzinfo=BERLIN)
    h = lo.Horizon(start=start, step_s=3600, n_periods=4)
    assert h.start.tzinfo is BERLIN and h.start_utc == start
    assert h.period_start(3) == datetime(2026, 3, 29, 2, tzinfo=UTC)
