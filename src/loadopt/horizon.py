"""The optimisation horizon and the sampling of step series onto it.

At the API edge times are timezone-aware datetimes; inside, everything is an integer period index
with known boundaries in real seconds: ``step_s`` each, or the lengths ``periods_s`` of a
non-uniform horizon (fine periods first, coarse after). ``start`` keeps the zone it was given in
(the schedule is read in it), but every computation goes through UTC (:func:`loadopt._base.to_utc`):
Python adds to and subtracts ``ZoneInfo`` datetimes as wall-clock times, so a horizon crossing a
daylight-saving change would otherwise have an hour too many or too few and put a limit change an
hour away from its real instant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ._base import FrozenModel, SeriesPoint, ZonedDatetime, epoch_s
from .errors import InputError


class Horizon(FrozenModel):
    """``n_periods`` periods of ``step_s`` seconds from ``start`` (e.g. 96 × 900 s, 60 × 60 s).

    Periods are real seconds (UTC arithmetic) whatever the zone of ``start``; the datetimes this
    class returns are in the zone of ``start``.

    ``periods_s`` makes the periods non-uniform: the length of each period (s), the first being
    ``step_s`` (the control interval: what a controller acts on), e.g. 5-minute periods for the
    first hours and hourly ones after (:meth:`tiered`). ``None`` (the default) is ``n_periods``
    periods of ``step_s``. Everything downstream works per period (limits sampled by minimum over
    the longer periods, energy and prices by duration), so a non-uniform horizon only changes how
    finely the later hours are planned, never what is safe.
    """

    start: ZonedDatetime
    step_s: Annotated[int, Field(gt=0, le=86_400)] = 900
    n_periods: Annotated[int, Field(gt=0, le=100_000)] = 96
    periods_s: tuple[Annotated[int, Field(gt=0, le=86_400)], ...] | None = None

    @model_validator(mode="after")
    def _periods(self) -> Horizon:
        ps = self.periods_s
        if ps is not None and (len(ps) != self.n_periods or ps[0] != self.step_s):
            raise ValueError(
                f"horizon: periods_s has {len(ps)} period(s) starting with {ps[0] if ps else None}"
                f" s, but n_periods={self.n_periods} and step_s={self.step_s}; use "
                "Horizon.non_uniform(start, periods_s)"
            )
        return self

    @classmethod
    def non_uniform(cls, start: datetime, periods_s: Sequence[int]) -> Horizon:
        """A horizon of the given period lengths; uniform lengths give a uniform horizon.

        Parameters
        ----------
        start
            Start (aware datetime).
        periods_s
            Period lengths (s, each >= 1).

        Returns
        -------
        Horizon

        Raises
        ------
        InputError
            No period.
        ModelError
            A length below 1 s or above a day, or a naive start.
        """
        ps = tuple(int(x) for x in periods_s)
        if not ps:
            raise InputError("horizon: periods_s is empty")
        if all(x == ps[0] for x in ps):
            return cls(start=start, step_s=ps[0], n_periods=len(ps))
        return cls(start=start, step_s=ps[0], n_periods=len(ps), periods_s=ps)

    @classmethod
    def tiered(
        cls,
        start: datetime,
        *,
        fine_step_s: int = 900,
        fine_s: int = 4 * 3600,
        coarse_step_s: int = 3600,
        span_s: int = 86_400,
    ) -> Horizon:
        """``fine_step_s`` periods for the first ``fine_s`` seconds, ``coarse_step_s`` after, up
        to ``span_s`` from ``start``.

        The coarse periods start on multiples of ``coarse_step_s`` of UTC epoch seconds (whole
        hours for 3600): the fine part runs on until the next such instant, so a controller
        rolling ``start`` forward by ``fine_step_s`` sees the same coarse periods from step to
        step (and its warm start maps them). Where ``start`` is off the fine grid, the fine
        period before the first coarse one is shortened; the last period ends at
        ``start + span_s``.

        Parameters
        ----------
        start
            Start (aware datetime).
        fine_step_s, coarse_step_s
            Period lengths (s) of the fine and the coarse part.
        fine_s
            Length of the fine part (s).
        span_s
            Length of the whole horizon (s).

        Returns
        -------
        Horizon

        Raises
        ------
        InputError
            A step or span that is not a positive whole number of seconds, a negative ``fine_s``,
            a coarse step shorter than the fine one, or a period longer than a day.
        """
        for name, v in (
            ("fine_step_s", fine_step_s),
            ("coarse_step_s", coarse_step_s),
            ("span_s", span_s),
        ):
            if not (isinstance(v, int) and not isinstance(v, bool) and 0 < v):
                raise InputError(
                    f"horizon: {name} must be a positive whole number of seconds, got {v!r}"
                )
        if not (isinstance(fine_s, int) and fine_s >= 0) or coarse_step_s < fine_step_s:
            raise InputError(
                f"horizon: need a whole fine_s >= 0 (got {fine_s!r}) and "
                f"coarse_step_s >= fine_step_s (got {coarse_step_s} < "
                f"{fine_step_s})"
            )
        if fine_step_s > 86_400 or coarse_step_s > 86_400:
            raise InputError("horizon: periods are at most 86,400 s")
        t0 = _epoch_s(start)
        out: list[int] = []
        b = 0
        fine_until = min(fine_s, span_s)
        while b < span_s and (b < fine_until or (t0 + b) % coarse_step_s):
            nxt = b + fine_step_s
            if b >= fine_until:  # aligning: never step over the next coarse boundary
                nxt = min(nxt, b + (coarse_step_s - (t0 + b) % coarse_step_s))
            nxt = min(nxt, span_s)
            out.append(nxt - b)
            b = nxt
        while b < span_s:
            nxt = min(b + coarse_step_s - (t0 + b) % coarse_step_s, span_s)
            out.append(nxt - b)
            b = nxt
        return cls.non_uniform(start, out)

    @property
    def uniform(self) -> bool:
        return self.periods_s is None

    @property
    def step_h(self) -> float:
        """Length of the first period (h); of every period when the horizon is uniform."""
        return self.step_s / 3600.0

    @property
    def period_s(self) -> np.ndarray:
        """Length of each period (s), shape ``(n_periods,)`` (read-only)."""
        return _period_arrays(self.step_s, self.n_periods, self.periods_s)[0]

    @property
    def period_h(self) -> np.ndarray:
        """Length of each period (h), shape ``(n_periods,)``."""
        return self.period_s / 3600.0

    @property
    def span_s(self) -> int:
        """Length of the whole horizon (s)."""
        return self.step_s * self.n_periods if self.periods_s is None else int(sum(self.periods_s))

    @property
    def start_utc(self) -> datetime:
        return self.start.astimezone(UTC)

    @property
    def end(self) -> datetime:
        return self.period_start(self.n_periods)

    def period_start(self, k: int) -> datetime:
        """Start of period ``k`` (real time), in the zone of ``start``.

        Parameters
        ----------
        k
            Period index (``0 <= k <= n_periods``; ``n_periods`` gives the end).

        Returns
        -------
        datetime
        """
        s = self.step_s * k if self.periods_s is None else int(sum(self.periods_s[:k]))
        return (self.start_utc + timedelta(seconds=s)).astimezone(self.start.tzinfo)

    def seconds_from_start(self, t: datetime) -> float:
        """Real seconds from the horizon start to ``t`` (negative before it).

        One operand is UTC, so Python subtracts real instants whatever zone ``t`` is in.

        Parameters
        ----------
        t
            An aware datetime.

        Returns
        -------
        float
            Seconds (s).
        """
        return (t - self.start_utc).total_seconds()

    def period_bounds_s(self) -> np.ndarray:
        """Period boundaries.

        Returns
        -------
        numpy.ndarray
            ``(n_periods + 1,)`` seconds from the start (read-only).
        """
        return _period_arrays(self.step_s, self.n_periods, self.periods_s)[1]

    def series(self, values: Any) -> tuple[SeriesPoint, ...]:
        """A step series from one value per period of this horizon, for any series input of
        :class:`~loadopt.Signals` (prices per kWh, base load and PV in kW, grid limit in kW).

        Parameters
        ----------
        values
            A list, numpy array or pandas Series of ``n_periods`` numbers: value ``k`` holds over
            period ``k``.

        Returns
        -------
        tuple of SeriesPoint

        Raises
        ------
        InputError
            Another length, or a value that is not a finite number.
        """
        try:
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(
                f"horizon.series: values must be numbers, got {type(values).__name__}"
            ) from None
        if arr.size != self.n_periods or np.ndim(values) != 1:
            raise InputError(
                f"horizon.series: one value per period needed ({self.n_periods}), "
                f"got shape {np.shape(values)}"
            )
        if not np.all(np.isfinite(arr)):
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise InputError(f"horizon.series: value of period {bad} is {arr[bad]}")
        return tuple(
            SeriesPoint(start=self.period_start(k), value=float(v)) for k, v in enumerate(arr)
        )


def _epoch_s(t: datetime) -> int:
    """Whole seconds since the Unix epoch of an aware datetime (sub-seconds dropped)."""
    return math.floor(epoch_s(t))


Reduce = Literal["min", "max", "mean"]


#: Period lengths and bounds of recent horizon shapes: a controller builds a new horizon every
#: step, mostly of a shape it has seen (the tiered fine/coarse split repeats every coarse step).
_PERIODS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_PERIODS_MAX = 256


def _period_arrays(
    step_s: int, n_periods: int, periods_s: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(period lengths (n,), bounds (n + 1,))`` in seconds of a horizon shape (read-only,
    shared by every horizon of that shape)."""
    key = (step_s, n_periods, periods_s)
    got = _PERIODS.get(key)
    if got is None:
        if periods_s is None:
            length = np.full(n_periods, float(step_s))
            bounds = np.arange(n_periods + 1, dtype=np.float64) * step_s
        else:
            length = np.asarray(periods_s, dtype=np.float64)
            bounds = np.concatenate(([0.0], np.cumsum(periods_s, dtype=np.float64)))
        for a in (length, bounds):
            a.setflags(write=False)
        got = (length, bounds)
        if len(_PERIODS) >= _PERIODS_MAX:
            _PERIODS.clear()  # (no iteration: safe beside other threads)
        _PERIODS[key] = got
    return got


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
        return np.diff(at_bounds) / np.diff(bounds)
    in_force = np.concatenate(([base], v))[np.searchsorted(t, bounds[:-1], side="right")]
    inside = (t > bounds[0]) & (t < bounds[-1])
    k = np.searchsorted(bounds, t[inside], side="right") - 1  # the period each point starts in
    k = np.clip(k, 0, n - 1)
    starts_inside = t[inside] > bounds[k]
    k, vin = k[starts_inside], v[inside][starts_inside]
    out = in_force.copy()
    if how == "min":
        np.minimum.at(out, k, vin)
    else:
        np.maximum.at(out, k, vin)
    return out
