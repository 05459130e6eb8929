"""Second review: time paths (daylight-saving changes with zoneinfo datetimes, tiered
horizons, signals sampled onto periods). Expected instants are computed here with plain UTC
arithmetic from the wall-clock inputs, not with the library's helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import loadopt as lo
from loadopt.lp import build_lp
from loadopt.solvers.warm import WarmStart

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
