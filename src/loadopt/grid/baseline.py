"""Demand-response baselines from metered history: the "10 of 10" family.

A reduction event (``GridSignal.reduction_kw``) needs the load the site *would have* drawn. Besides
the uncontrolled baseline computed at compile time, programmes (CAISO, PJM, NYISO, many European
aggregators) declare a **10-of-10** baseline: for each interval of the event window, the mean
metered load in the same interval of the 10 most recent eligible days (same day type — weekday or
weekend — no event days, complete data), optionally scaled by a **day-of adjustment**: the ratio
of the event day's load to the baseline over the hours before the event, capped at ±20 %.

:func:`ten_of_ten` returns that baseline as a step series for ``GridSignal.baseline_kw``.
Days are local calendar days in ``tz`` (the programme's time zone); arithmetic is in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta, tzinfo

import numpy as np

from .._base import SeriesPoint
from ..errors import InputError


def ten_of_ten(
    times: Sequence[datetime],
    kw: Sequence[float],
    start: datetime,
    end: datetime,
    *,
    tz: tzinfo | None = None,
    step_s: int = 900,
    n_days: int = 10,
    lookback_days: int = 45,
    excluded_days: Iterable[date] = (),
    same_day_type: bool = True,
    adjustment_h: float | None = None,
    adjustment_cap: float = 0.2,
) -> tuple[SeriesPoint, ...]:
    """The ``n_days``-of-``n_days`` baseline (kW) of the event ``[start, end)``.

    ``times`` / ``kw``: metered mean power (kW) of the intervals of ``step_s`` seconds starting at
    each time (aware datetimes). An eligible day has every interval of the window metered (finite),
    is not in ``excluded_days`` (earlier events, holidays) and, with ``same_day_type``, is a
    weekday if the event day is one (else a weekend day). ``adjustment_h``: apply the day-of
    adjustment over that many hours before ``start`` (needs those intervals metered on the
    event day and on the baseline days). Raises InputError when fewer than ``n_days`` eligible
    days are found within ``lookback_days``.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise InputError("ten_of_ten: start and end must be timezone-aware")
    if not end > start:
        raise InputError("ten_of_ten: end is not after start")
    if len(times) != len(kw):
        raise InputError(f"ten_of_ten: {len(times)} times but {len(kw)} values")
    tz = tz or start.tzinfo
    t_s = np.array([_epoch(t) for t in times], dtype=np.int64)
    v = np.asarray(kw, dtype=np.float64)
    series = dict(zip(t_s.tolist(), v.tolist(), strict=True))
    offs = np.arange(0, int((end - start).total_seconds()), step_s, dtype=np.int64)
    adj_offs = (
        np.arange(-int(adjustment_h * 3600), 0, step_s, dtype=np.int64)
        if adjustment_h
        else np.zeros(0, np.int64)
    )
    local_start = start.astimezone(tz)
    event_day = local_start.date()
    weekend = event_day.weekday() >= 5
    skip = set(excluded_days)

    def window(day: date, o: np.ndarray) -> np.ndarray | None:
        # the same local wall-clock time on ``day`` (DST-safe: built in local time, then UTC)
        t0 = datetime.combine(day, local_start.timetz().replace(tzinfo=None), tzinfo=tz)
        base = _epoch(t0)
        vals = np.array([series.get(int(base + x), np.nan) for x in o])
        return vals if np.all(np.isfinite(vals)) else None

    rows, adj_rows = [], []
    for back in range(1, lookback_days + 1):
        day = event_day - timedelta(days=back)
        if day in skip or (same_day_type and (day.weekday() >= 5) != weekend):
            continue
        w = window(day, offs)
        if w is None:
            continue
        if adjustment_h:
            a = window(day, adj_offs)
            if a is None:
                continue
            adj_rows.append(a)
        rows.append(w)
        if len(rows) == n_days:
            break
    if len(rows) < n_days:
        raise InputError(
            f"ten_of_ten: only {len(rows)} eligible day(s) with complete data in "
            f"the {lookback_days} days before {event_day}, need {n_days}"
        )
    base = np.mean(rows, axis=0)
    if adjustment_h:
        today = window(event_day, adj_offs)
        if today is None:
            raise InputError(
                f"ten_of_ten: the {adjustment_h} h before the event on "
                f"{event_day} are not fully metered (day-of adjustment)"
            )
        ref = float(np.mean(adj_rows))
        ratio = float(np.mean(today)) / ref if ref > 0 else 1.0
        base = base * min(max(ratio, 1.0 - adjustment_cap), 1.0 + adjustment_cap)
    t0 = _epoch(start)
    return tuple(
        SeriesPoint(
            start=datetime.fromtimestamp(t0 + int(o), start.tzinfo), value=float(max(b, 0.0))
        )
        for o, b in zip(offs, base, strict=True)
    )


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        raise InputError(f"ten_of_ten: naive datetime {t!r}")
    return round(t.timestamp())
