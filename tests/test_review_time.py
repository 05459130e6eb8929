"""Second review: time paths (daylight-saving changes with zoneinfo datetimes, tiered
horizons, signals sampled onto periods). Expected instants are computed here with plain UTC
arithmetic from the wall-clock inputs, not with the library's helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.lp import build_lp
from loadopt.ocpp import set_charging_profiles
from loadopt.solvers.warm import WarmStart

from .conftest import examples

BERLIN = ZoneInfo("Europe/Berlin")
#: 2026 changes in Europe: 29 March 01:00 UTC (+1 -> +2), 25 October 01:00 UTC (+2 -> +1)
SPRING = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
AUTUMN = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)


def _site() -> lo.Site:
    return lo.Site(
        nodes=(lo.Node(id="grid", max_current=32.0),),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="A"),),
    )


@pytest.mark.parametrize("day", [SPRING, AUTUMN])
def test_warm_start_keys_follow_real_time_across_a_dst_change(day):
    """Regression: the warm start keyed periods by wall-clock offsets from its first horizon,
    so after a DST change every column was mapped to the period an hour away."""
    site = _site()
    s = lo.Session(
        id="s", evse="e0", arrival=day, departure=day + timedelta(hours=6), energy_kwh=30.0
    )
    ws = WarmStart()
    per = []
    for k in (0, 1, 2):  # 00:00, 01:00, 02:00 UTC, given as Berlin wall-clock times
        now = (day + timedelta(hours=k)).astimezone(BERLIN)
        p = lo.compile_problem(site, [s], lo.Horizon(start=now, step_s=3600, n_periods=3))
        lp = build_lp(p)
        ck, _ = ws.keys(p, lp)
        r = ck[lp.cols["r"].slice]
        per.append((r & 0xFFFFFFF) - (1 << 27))
    # the absolute period of every column is its real hour since the first horizon
    assert [list(x) for x in per] == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_a_step_at_a_sub_second_instant_never_sends_a_limit_rise_early():
    """Regression: a controller stepped at 08:00:00.7 planned periods from 08:00:00.7 while the
    payload's startSchedule is sent in whole seconds (08:00:00), so a limit that rises at the
    08:15:00.7 boundary was sent as rising at 08:15:00 (0.7 s early). Checked on the payload:
    the instant each period starts is startSchedule + startPeriod, by hand."""
    t0 = datetime(2026, 3, 2, 8, 0, 0, 700_000, tzinfo=UTC)
    rise = t0 + timedelta(seconds=900)
    site = lo.Site(
        nodes=(
            lo.Node(
                id="grid",
                max_current=32.0,
                current_series=(
                    lo.CurrentPoint(start=t0 - timedelta(hours=1), value=10.0),
                    lo.CurrentPoint(start=rise, value=32.0),
                ),
            ),
        ),
        evses=(lo.Evse(id="e0", node="grid", charge_point_id="CP0"),),
    )
    ctl = lo.Controller(site, step_s=900, n_periods=4)
    ctl.start_session(
        lo.Session(
            id="s0",
            evse="e0",
            arrival=t0 - timedelta(hours=1),
            departure=t0 + timedelta(hours=3),
            energy_kwh=80.0,
        )
    )
    sched = ctl.step(t0)
    msgs = set_charging_profiles(sched, "2.0.1", station_max=False, tx_default=False)
    (prof,) = [pl["chargingProfile"] for _, _, pl in msgs]
    cs = prof["chargingSchedule"][0]
    start = datetime.fromisoformat(cs["startSchedule"].replace("Z", "+00:00"))
    for per in cs["chargingSchedulePeriod"]:
        if per["limit"] > 10.0:
            assert start + timedelta(seconds=per["startPeriod"]) >= rise, per
    assert max(per["limit"] for per in cs["chargingSchedulePeriod"]) > 10.0


NEW_YORK = ZoneInfo("America/New_York")
#: US change 2026-03-08 07:00 UTC (02:00 EST -> 03:00 EDT)
US_SPRING = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)


def _limit_in(points: list[tuple[datetime, float]], a: datetime, b: datetime) -> float:
    """Smallest limit in force at any instant of ``[a, b)`` (UTC datetimes; 40 A before the
    first point)."""
    vals = [next((v for s, v in reversed(points) if s <= a), 40.0)]
    vals += [v for s, v in points if a < s < b]
    return min(vals)


@settings(max_examples=examples(12), deadline=None)
@given(data=st.data())
def test_tiered_controller_across_dst_never_plans_above_a_limit_in_force(data):
    """A controller with a tiered horizon stepped with New York wall-clock times across the
    spring change: in every period of every plan the load is within the smallest limit in force
    at any instant of that period (instants computed here in UTC from the raw series)."""
    starts = sorted(
        {US_SPRING + timedelta(seconds=data.draw(st.integers(0, 8 * 3600))) for _ in range(3)}
    )
    points = [(s, float(data.draw(st.integers(0, 40)))) for s in starts]
    site = lo.Site(
        nodes=(
            lo.Node(
                id="grid",
                max_current=40.0,
                current_series=tuple(lo.CurrentPoint(start=s, value=v) for s, v in points),
            ),
        ),
        evses=tuple(lo.Evse(id=f"e{k}", node="grid", charge_point_id=f"C{k}") for k in range(2)),
    )
    ctl = lo.Controller(
        site,
        step_s=900,
        n_periods=32,
        coarse_step_s=data.draw(st.sampled_from([1800, 3600])),
        fine_s=data.draw(st.sampled_from([0, 3600])),
    )
    for k in range(2):
        ctl.start_session(
            lo.Session(
                id=f"s{k}",
                evse=f"e{k}",
                arrival=US_SPRING,
                departure=US_SPRING + timedelta(hours=10),
                energy_kwh=200.0,
            )
        )
    now = US_SPRING + timedelta(seconds=data.draw(st.integers(0, 3 * 3600)))
    for _ in range(2):
        sched = ctl.step(now.astimezone(NEW_YORK))
        hz = sched.problem.horizon
        for k in range(hz.n_periods):
            a = hz.period_start(k).astimezone(UTC)
            b = hz.period_start(k + 1).astimezone(UTC)
            assert sched.current[:, k].sum() <= _limit_in(points, a, b) + 1e-9, (k, a, b)
        now += timedelta(seconds=data.draw(st.integers(60, 2 * 3600)))
