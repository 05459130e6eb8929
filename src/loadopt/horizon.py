"""The optimisation horizon and the sampling of step series onto it.

At the API edge times are timezone-aware datetimes; inside, everything is an integer period index
on a fixed step (``step_s`` seconds) of real time. ``start`` keeps the zone it was given in (the
schedule is read in it), but every computation goes through UTC (:func:`loadopt._base.to_utc`):
Python adds to and subtracts ``ZoneInfo`` datetimes as wall-clock times, so a horizon crossing a
daylight-saving change would otherwise have an hour too many or too few and put a limit change an
hour away from its real instant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from ._base import FrozenModel, SeriesPoint, ZonedDatetime


class Horizon(FrozenModel):
    """``n_periods`` periods of ``step_s`` seconds from ``start`` (e.g. 96 × 900 s, 60 × 60 s).

    Periods are real seconds (UTC arithmetic) whatever the zone of ``start``; the datetimes this
    class returns are in the zone of ``start``.
    """

    start: ZonedDatetime
    step_s: Annotated[int, Field(gt=0, le=86_400)] = 900
    n_periods: Annotated[int, Field(gt=0, le=100_000)] = 96

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    @property
    def start_utc(self) -> datetime:
        return self.start.astimezone(UTC)

    @property
    def end(self) -> datetime:
        return self.period_start(self.n_periods)

    def period_start(self, k: int) -> datetime:
        """Start of period ``k`` (real time), in the zone of ``start``."""
        return (self.start_utc + timedelta(seconds=self.step_s * k)).astimezone(self.start.tzinfo)

    def seconds_from_start(self, t: datetime) -> float:
        """Real seconds from the horizon start to the aware datetime ``t`` (negative before it).

        One operand is UTC, so Python subtracts real instants whatever zone ``t`` is in."""
        return (t - self.start_utc).total_seconds()

    def period_bounds_s(self) -> np.ndarray:
        """Period boundaries in seconds from start, shape ``(n_periods + 1,)``."""
        return np.arange(self.n_periods + 1, dtype=np.float64) * self.step_s

    def series(self, values: Any) -> tuple[SeriesPoint, ...]:
        """A step series from one value per period of this horizon (a list or numpy array of
        ``n_periods`` numbers: value ``k`` holds over period ``k``), for any series input of
        :class:`~loadopt.Signals` (prices per kWh, base load and PV in kW, grid limit in kW).
        Raises :class:`~loadopt.InputError` for another length or a value that is not a finite
        number."""
        from .errors import InputError

        try:
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"horizon.series: values must be numbers, got "
                             f"{type(values).__name__}") from None
        if arr.size != self.n_periods or np.ndim(values) != 1:
            raise InputError(f"horizon.series: one value per period needed ({self.n_periods}), "
                             f"got shape {np.shape(values)}")
        if not np.all(np.isfinite(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise InputError(f"horizon.series: value of period {bad} is {arr[bad]}")
        return tuple(SeriesPoint(start=self.period_start(k), value=float(v))
                     for k, v in enumerate(arr))


Reduce = Literal["min", "max", "mean"]


def sample(
    default: float | None,
    points: tuple[SeriesPoint, ...] | None,
    horizon: Horizon,
    how: Reduce,
) -> np.ndarray:
    """Sample a piecewise-constant series onto the horizon's periods.

    ``default`` holds before the first point; ``None`` there means the first point's value
    (a series given alone is extended backwards) or, without points, ``+inf`` ("no limit"). A
    point holds until the next one; the last one holds for ever.

    ``how`` states what one number per period must mean:

    - ``"min"`` — the smallest value in force at any instant of the period. Used for limits: a
      limit that drops mid-period is in force for the whole period, so it is never exceeded.
    - ``"max"`` — the largest value; used for loads that must be covered (base load).
    - ``"mean"`` — the time-weighted mean; used for prices and energy.

    Returns an array of shape ``(n_periods,)``.
    """
    n = horizon.n_periods
    if not points:
        return np.full(n, np.inf if default is None else float(default))
    base = float(points[0].value) if default is None else float(default)
    t = np.array([horizon.seconds_from_start(p.start) for p in points])
    v = np.array([p.value for p in points], dtype=np.float64)
    bounds = horizon.period_bounds_s()
    # value in force at each breakpoint: index of the last point starting at or before it
    if how == "mean":
        knots = np.concatenate(([-np.inf], t))
        vals = np.concatenate(([base], v))
        grid = np.union1d(bounds, t[(t > 0) & (t < bounds[-1])])
        idx = np.searchsorted(knots, grid[:-1], side="right") - 1
        seg = vals[idx] * np.diff(grid)
        cum = np.concatenate(([0.0], np.cumsum(seg)))
        at_bounds = np.interp(bounds, grid, cum)
        return np.diff(at_bounds) / horizon.step_s
    in_force = np.concatenate(([base], v))[np.searchsorted(t, bounds[:-1], side="right")]
    inside = (t > bounds[0]) & (t < bounds[-1])
    k = np.floor(t[inside] / horizon.step_s).astype(np.int64)
    k = np.clip(k, 0, n - 1)
    starts_inside = t[inside] > bounds[k]
    k, vin = k[starts_inside], v[inside][starts_inside]
    out = in_force.copy()
    if how == "min":
        np.minimum.at(out, k, vin)
    else:
        np.maximum.at(out, k, vin)
    return out
