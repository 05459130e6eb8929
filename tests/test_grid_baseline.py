"""The 10-of-10 baseline from metered history, and a reduction against it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import loadopt as lo
from loadopt.grid.baseline import ten_of_ten

BERLIN = ZoneInfo("Europe/Berlin")


def history(days: int, end: datetime, f) -> tuple[list[datetime], list[float]]:
    """15-minute metered kW for ``days`` days before ``end`` (UTC grid), value f(local time)."""
    n = days * 96
    t0 = end - timedelta(days=days)
    ts = [t0 + timedelta(minutes=15 * k) for k in range(n)]
    return ts, [f(t.astimezone(BERLIN)) for t in ts]


def test_mean_of_the_last_ten_eligible_days_same_day_type_with_exclusions():
    # Wednesday 2026-03-18 17:00-18:00 Berlin; each day's load = its day-of-month (kW)
    start = datetime(2026, 3, 18, 17, 0, tzinfo=BERLIN)
    ts, kw = history(30, datetime(2026, 3, 18, 0, 0, tzinfo=UTC), lambda t: float(t.day))
    out = ten_of_ten(ts, kw, start, start + timedelta(hours=1), excluded_days=[date(2026, 3, 17)])
    assert len(out) == 4 and out[0].start == start
    # weekdays before the 18th, without the 17th: 16, 13, 12, 11, 10, 9, 6, 5, 4, 3
    assert out[0].value == pytest.approx(np.mean([16, 13, 12, 11, 10, 9, 6, 5, 4, 3]))


def test_day_of_adjustment_is_capped_and_dst_is_local_time():
    # the event is on Monday 2026-03-30, after the spring-forward Sunday: same local hour
    start = datetime(2026, 3, 30, 18, 0, tzinfo=BERLIN)

    def f(t):
        return (
            10.0 + (5.0 if t.hour == 18 else 0.0) + (20.0 if t.date() == date(2026, 3, 30) else 0.0)
        )

    ts, kw = history(40, datetime(2026, 3, 30, 18, 0, tzinfo=UTC), f)
    plain = ten_of_ten(ts, kw, start, start + timedelta(minutes=30))
    assert [p.value for p in plain] == [15.0, 15.0]  # the 18:00 local bump, across DST
    adj = ten_of_ten(ts, kw, start, start + timedelta(minutes=30), adjustment_h=2)
    assert [p.value for p in adj] == pytest.approx([15.0 * 1.2] * 2)  # 30/10 capped at +20 %


def test_not_enough_days_and_bad_input():
    start = datetime(2026, 3, 18, 17, 0, tzinfo=UTC)
    ts, kw = history(5, datetime(2026, 3, 18, tzinfo=UTC), lambda t: 1.0)
    with pytest.raises(lo.InputError, match="only 3 eligible"):
        ten_of_ten(ts, kw, start, start + timedelta(hours=1))
    with pytest.raises(lo.InputError, match="not after"):
        ten_of_ten(ts, kw, start, start)
    with pytest.raises(lo.InputError, match="times but"):
        ten_of_ten(ts, kw[:-1], start, start + timedelta(hours=1))


def test_reduction_against_the_history_baseline():
    start = datetime(2026, 3, 18, 17, 0, tzinfo=UTC)
    ts, kw = history(30, datetime(2026, 3, 18, tzinfo=UTC), lambda t: 40.0)
    base = ten_of_ten(ts, kw, start, start + timedelta(hours=1))
    ev = lo.GridSignal(
        id="dr", start=start, end=start + timedelta(hours=1), reduction_kw=15.0, baseline_kw=base
    )
    site = lo.Site(
        nodes=(lo.Node(id="grid"),),
        evses=tuple(lo.Evse(id=f"e{k}", node="grid", charge_point_id=f"C{k}") for k in range(3)),
    )
    sess = [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=start - timedelta(hours=1),
            departure=start + timedelta(hours=3),
            energy_kwh=100.0,
        )
        for k in range(3)
    ]
    p = lo.compile_problem(
        site,
        sess,
        lo.Horizon(start=start, step_s=900, n_periods=8),
        lo.Signals(base_load_kw=5.0, grid_signals=(ev,)),
    )
    np.testing.assert_allclose(p.dr_cap_kw[0, :4], 25.0)
    sched = lo.solve(p)
    assert np.all(sched.import_kw[:4] <= 25.0 + 1e-9)
