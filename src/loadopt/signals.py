"""Signals over the horizon: prices, base load, PV, the grid limit and demand-response events.

Every quantity is either one number for the whole horizon or a step series
(:class:`~loadopt._base.SeriesPoint`); :func:`loadopt.horizon.sample` puts them on periods.
Prices are per kWh in the site's currency; powers are kW.
"""

from __future__ import annotations

from pydantic import model_validator

from ._base import FrozenModel, Identifier, NonNegFloat, SeriesPoint, UtcDatetime, check_series

Series = tuple[SeriesPoint, ...]


class DemandResponseEvent(FrozenModel):
    """A demand-response request from the grid operator for ``[start, end)``.

    Exactly one of:

    - ``import_cap_kw``: grid import must stay at or below this many kW;
    - ``reduction_kw``: import must be this many kW below the baseline, i.e. capped at
      ``baseline_kw - reduction_kw``. When ``baseline_kw`` is not given, the baseline is what the
      site would import uncontrolled: base load − PV + every plugged-in vehicle at its maximum,
      capped by the grid import limit (per period, as a DR programme's "would have consumed").
    """

    id: Identifier
    start: UtcDatetime
    end: UtcDatetime
    import_cap_kw: NonNegFloat | None = None
    reduction_kw: NonNegFloat | None = None
    baseline_kw: NonNegFloat | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DemandResponseEvent:
        if not self.end > self.start:
            raise ValueError(f"demand-response event {self.id!r}: end is not after start")
        if (self.import_cap_kw is None) == (self.reduction_kw is None):
            raise ValueError(
                f"demand-response event {self.id!r}: give exactly one of import_cap_kw "
                "and reduction_kw"
            )
        if self.baseline_kw is not None and self.reduction_kw is None:
            raise ValueError(
                f"demand-response event {self.id!r}: baseline_kw only goes with reduction_kw"
            )
        return self


class Signals(FrozenModel):
    """Everything outside the vehicles that the schedule must respect or should exploit.

    ``import_price`` / ``export_price`` (currency per kWh; ``export_price=None``: exporting earns
    nothing), ``base_load_kw`` (other consumption on the grid connection, ≥ 0), ``pv_kw`` (on-site
    generation, ≥ 0), ``grid_import_limit_kw`` (the connection contract; ``None``: only the node
    limits apply), ``demand_response`` events and ``peak_so_far_kw`` (the peak already reached in
    the current billing period, for the demand charge).
    """

    import_price: float | Series = 0.0
    export_price: float | Series | None = None
    base_load_kw: NonNegFloat | Series = 0.0
    pv_kw: NonNegFloat | Series = 0.0
    grid_import_limit_kw: NonNegFloat | Series | None = None
    demand_response: tuple[DemandResponseEvent, ...] = ()
    peak_so_far_kw: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _series(self) -> Signals:
        for name in ("import_price", "export_price", "base_load_kw", "pv_kw",
                     "grid_import_limit_kw"):
            v = getattr(self, name)
            if isinstance(v, tuple):
                check_series(v, name)
                if name not in ("import_price", "export_price") and any(p.value < 0 for p in v):
                    raise ValueError(f"{name}: series values must be >= 0")
        ids = [e.id for e in self.demand_response]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate demand-response event id(s): {sorted(dup)}")
        return self


def split(v: float | Series | None) -> tuple[float | None, Series | None]:
    """``(default, points)`` for :func:`loadopt.horizon.sample`."""
    if isinstance(v, tuple):
        return None, v
    return v, None
