"""Shared pydantic configuration for every input model, and the one time conversion.

Time: at the edges datetimes are timezone-aware in any zone; inside, every instant is UTC. Python
subtracts and compares two datetimes that share a ``tzinfo`` (e.g. one ``ZoneInfo``) as *wall
clock* times, so across a daylight-saving change ``b - a`` is an hour off and ``a + 8 h`` lands an
hour away from 8 real hours later. :func:`to_utc` is the single conversion: every model field
(:data:`UtcDatetime`) and every time handed to the :class:`~loadopt.controller.Controller` passes
through it, so all arithmetic inside is on UTC datetimes (real elapsed time), as OCPP's
timestamps are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import pairwise
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError, ModelError

#: A finite, non-negative float (NaN and ±inf are rejected by the model config).
NonNegFloat = Annotated[float, Field(ge=0.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]

#: The latest instant loadopt computes with. Beyond it ``datetime`` arithmetic (an estimated
#: departure 8 h after a timestamp of 9999-12-31) would overflow; nothing real happens after it.
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def _bounded(t: datetime) -> datetime:
    if not MIN_TIME <= t <= MAX_TIME:
        raise ValueError(
            f"{t.isoformat()} is outside the supported range [{MIN_TIME.year}, {MAX_TIME.year}]"
        )
    return t


def _utc_bounded(t: datetime) -> datetime:
    return _bounded(t.astimezone(UTC))


#: A timezone-aware datetime, stored in UTC (see the module docstring).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc_bounded)]
#: A timezone-aware datetime kept in the zone it was given in (the horizon start: its zone is
#: how the user reads the schedule); arithmetic on it goes through :func:`to_utc`.
ZonedDatetime = Annotated[AwareDatetime, AfterValidator(_bounded)]


def to_utc(t: Any, what: str) -> datetime:
    """``t`` as a UTC datetime; :class:`InputError` naming ``what`` for anything else than a
    timezone-aware datetime between 1970 and 9000 (a naive datetime, a string, a number)."""
    if not isinstance(t, datetime):
        raise InputError(f"{what} must be a timezone-aware datetime, got {type(t).__name__} {t!r}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise InputError(f"{what} must be timezone-aware, got the naive datetime {t.isoformat()}")
    try:
        return _utc_bounded(t)
    except (ValueError, OverflowError) as exc:
        raise InputError(f"{what}: {exc}") from None


def epoch_s(t: datetime) -> float:
    """Seconds since 1970-01-01 UTC of an aware datetime (real time, whatever its zone)."""
    return t.timestamp()


class FrozenModel(BaseModel):
    """Immutable, strict-ish, JSON-serialisable base of every input model.

    ``allow_inf_nan=False`` makes NaN or infinity anywhere a validation error; ``extra="forbid"``
    makes a misspelt field in a scenario file an error instead of being silently ignored. Every
    validation failure (construction, ``model_validate``, ``model_validate_json``, assignment)
    raises :class:`~loadopt.errors.ModelError`, which names the model, the object and the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ModelError:
            raise
        except ValidationError as exc:
            raise ModelError.wrap(type(self), data, exc) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kw: Any) -> Any:
        """Validate ``obj`` (a mapping or a model) into this model, as pydantic does.

        Parameters
        ----------
        obj
            The data (a mapping, or an instance).
        *args, **kw
            As pydantic's ``BaseModel.model_validate`` (``strict``, ``context`` …).

        Returns
        -------
        FrozenModel
            The validated, frozen model (all times in UTC).

        Raises
        ------
        ModelError
            The data is not valid; the message names the object (its id where it has one) and
            the field. Also a pydantic ``ValidationError`` and a ``ValueError``.
        """
        try:
            return super().model_validate(obj, *args, **kw)
        except ModelError:
            raise
        except ValidationError as exc:
            raise ModelError.wrap(cls, obj, exc) from None

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kw: Any) -> Any:
        """Validate a JSON document into this model, as pydantic does.

        Parameters
        ----------
        json_data
            The JSON text (``str`` or ``bytes``).
        *args, **kw
            As pydantic's ``BaseModel.model_validate_json``.

        Returns
        -------
        FrozenModel
            The validated, frozen model.

        Raises
        ------
        ModelError
            Not JSON, or not a valid model; the message names the object and the field.
        """
        try:
            return super().model_validate_json(json_data, *args, **kw)
        except ModelError:
            raise
        except ValidationError as exc:
            try:  # only to name the objects in the message
                data = json.loads(json_data)
            except Exception:
                data = None
            raise ModelError.wrap(cls, data, exc) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ModelError:
            raise
        except ValidationError as exc:
            raise ModelError.wrap(type(self), self, exc) from None


def as_model(value: Any, cls: type[FrozenModel], what: str) -> Any:
    """``value`` if it is a ``cls``; a mapping validated into one (:class:`ModelError` when it is
    not valid); :class:`InputError` naming ``what`` for anything else."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.model_validate(dict(value))
    raise InputError(
        f"{what} must be a {cls.__name__} (or a mapping of its fields), got "
        f"{type(value).__name__} {_short(value)}"
    )


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class SeriesPoint(FrozenModel):
    """One step of a piecewise-constant time series: ``value`` holds from ``start`` on."""

    start: UtcDatetime
    value: float


def as_series_points(value: Any) -> Any:
    """Accept a step series as a pandas ``Series`` with a timezone-aware ``DatetimeIndex``
    (each value holds from its timestamp on) besides a tuple of :class:`SeriesPoint`; anything
    else is left to the model's own validation. A bare array per period is rejected with a
    hint: it needs the horizon it is meant for (:meth:`loadopt.Horizon.series`). pandas is an
    optional dependency (``pip install loadopt[pandas]``) and is not imported here."""
    index = getattr(value, "index", None)
    if index is not None and hasattr(value, "to_numpy") and hasattr(index, "tz"):
        if index.tz is None:
            raise ValueError(
                "a pandas Series needs a timezone-aware DatetimeIndex "
                "(tz_localize it), got a naive one"
            )
        return tuple(
            SeriesPoint(start=t.to_pydatetime(), value=float(v))
            for t, v in zip(index, value.to_numpy(), strict=True)
        )
    if hasattr(value, "__array__") and not isinstance(value, str | bytes):
        raise ValueError(
            "an array per period needs its horizon: pass "
            "horizon.series(values) (or a pandas Series with a DatetimeIndex)"
        )
    return value


def check_series(points: tuple[SeriesPoint, ...] | None, what: str) -> None:
    """Raise ``ValueError`` unless the points of a step series have strictly increasing starts."""
    if not points:
        return
    starts: list[datetime] = [p.start for p in points]
    for a, b in pairwise(starts):
        if not b > a:
            raise ValueError(
                f"{what}: series point starts must be strictly increasing ({a} then {b})"
            )
