"""Shared pydantic configuration for every input model."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: A finite, non-negative float (NaN and ±inf are rejected by the model config).
NonNegFloat = Annotated[float, Field(ge=0.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]


class FrozenModel(BaseModel):
    """Immutable, strict-ish, JSON-serialisable base of every input model.

    ``allow_inf_nan=False`` makes NaN or infinity anywhere a validation error; ``extra="forbid"``
    makes a misspelt field in a scenario file an error instead of being silently ignored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SeriesPoint(FrozenModel):
    """One step of a piecewise-constant time series: ``value`` holds from ``start`` on."""

    start: AwareDatetime
    value: float


def check_series(points: tuple[SeriesPoint, ...] | None, what: str) -> None:
    """Raise ``ValueError`` unless the points of a step series have strictly increasing starts."""
    if not points:
        return
    starts: list[datetime] = [p.start for p in points]
    for a, b in pairwise(starts):
        if not b > a:
            raise ValueError(
                f"{what}: series point starts must be strictly increasing ({a} then {b})")
