"""Signals over the horizon: prices, base load, PV, the grid limit and grid-operator signals.

Every quantity is either one number for the whole horizon or a step series
(:class:`~loadopt._base.SeriesPoint`); :func:`loadopt.horizon.sample` puts them on periods.
Prices are per kWh in the site's currency; powers are kW.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, field_validator, model_validator

from ._base import (
    FrozenModel,
    Identifier,
    NonNegFloat,
    SeriesPoint,
    UtcDatetime,
    as_series_points,
    check_series,
)

#: A step series: points, or a pandas Series with a timezone-aware DatetimeIndex
#: (:func:`loadopt._base.as_series_points`).
Series = Annotated[tuple[SeriesPoint, ...], BeforeValidator(as_series_points)]


#: Which field of a :class:`GridSignal` says what it asks for (exactly one is set).
SIGNAL_KINDS = (
    "import_cap_kw",
    "current_cap_a",
    "export_cap_kw",
    "reduction_kw",
    "setpoint_kw",
    "import_price_adder",
    "export_price_adder",
    "level",
)


class GridSignal(FrozenModel):
    """One instruction from a grid operator, an aggregator or a demand-response programme.

    Every protocol adapter (:mod:`loadopt.grid`: OpenADR 2.0b and 3, OCPP external constraints,
    IEEE 2030.5 / CSIP) compiles into this; :func:`loadopt.compile_problem` turns a set of them
    into per-node, per-period arrays. It applies to ``node`` (default: the grid connection) over
    ``[start, end)`` and asks for exactly one of:

    - ``import_cap_kw``: power into the node (at the root: net grid import, base load − PV
      included) at most this many kW. A **hard** safety row, exactly like a breaker.
    - ``current_cap_a``: current through the node at most this many A on each phase (limits set in
      A, e.g. OCPP external constraints). Hard, like ``import_cap_kw``.
    - ``export_cap_kw``: net export at the grid connection at most this many kW. **Soft** (priced
      by ``penalty_per_kwh``): loadopt has no discharge, so the only way to lower export is to
      raise load, which may not be possible; see docs/grid-signals.md. Root only.
    - ``reduction_kw``: import this many kW below a baseline, i.e. a hard cap
      ``baseline − reduction_kw``. ``baseline_kw`` is declared (a number, or a step series such as
      :func:`loadopt.grid.baseline.ten_of_ten` computes from metered history); ``None`` means
      the *uncontrolled* baseline: base load − PV + every vehicle plugged in for the **whole**
      period at its maximum, i.e. the lowest uncontrolled load at any instant of the period, so the
      reduction is delivered at every instant.
    - ``setpoint_kw``: net grid import should be this many kW; **soft**, each kWh of deviation
      costs ``penalty_per_kwh``. Root only. Where setpoints overlap the highest ``priority`` wins.
    - ``import_price_adder`` / ``export_price_adder``: added to the import / export price (per
      kWh; overlapping adders add up). Root only.
    - ``level`` (0–3, OpenADR SIMPLE): mapped to one of the above by the site's
      :class:`GridPolicy` (``Signals.grid_policy``).

    Overlapping caps on one node combine by minimum (with the node's own ratings and the grid
    import limit); prices add. ``floor_kw_per_device`` (Germany §14a EnWG: a grid operator may dim a
    controllable device but not switch it off; ≥ 4.2 kW): while the cap is in force it never
    goes below the floors of the devices plugged in under the node, and every such device is
    planned at least at its floor (``floor / (V · phases)`` A on each of its phases) where the
    breakers, the other limits and its energy need allow. ``randomize_s`` (UK Smart Charge Points
    Regulations 2021 random delay, OpenADR ``randomizeStart``): start and end are both delayed by
    a deterministic per-site offset in ``[0, randomize_s]`` (seeded by site id, source and
    ``ref``) so that sites do not switch together. ``valid_until``: the stream that sent this
    signal promised a refresh by then; from ``valid_until`` on (for the rest of the horizon, also
    past ``end``) the hard import cap ``fallback_kw`` holds on its node (OpenADR safe-mode events,
    IEEE 2030.5 DefaultDERControl, OCPP 2.1 ``maxOfflineDuration``), together with the signal's
    own hard cap where its window runs on (the minimum: a stale stream never loosens a cap);
    soft asks (prices, setpoints, export caps) stop. A stale stream never means "no limit".

    ``source`` and ``ref`` are provenance (e.g. ``"openadr2"`` and the VTN's event id): reports
    and KPIs are keyed by them.
    """

    id: Identifier
    start: UtcDatetime
    end: UtcDatetime
    node: Identifier | None = None
    priority: int = 0
    source: Identifier = "manual"
    ref: str | None = None
    import_cap_kw: NonNegFloat | None = None
    current_cap_a: NonNegFloat | None = None
    export_cap_kw: NonNegFloat | None = None
    reduction_kw: NonNegFloat | None = None
    baseline_kw: NonNegFloat | Series | None = None
    setpoint_kw: float | None = None
    import_price_adder: float | None = None
    export_price_adder: float | None = None
    level: Annotated[int, Field(ge=0, le=3)] | None = None
    penalty_per_kwh: NonNegFloat = 10.0
    floor_kw_per_device: NonNegFloat | None = None
    randomize_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    valid_until: UtcDatetime | None = None
    fallback_kw: NonNegFloat | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> GridSignal:
        what = f"grid signal {self.id!r}"
        if not self.end > self.start:
            raise ValueError(f"{what}: end is not after start")
        given = [k for k in SIGNAL_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"{what}: give exactly one of {', '.join(SIGNAL_KINDS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.baseline_kw is not None and self.reduction_kw is None:
            raise ValueError(f"{what}: baseline_kw only goes with reduction_kw")
        if isinstance(self.baseline_kw, tuple):
            check_series(self.baseline_kw, f"{what} baseline_kw")
            if any(p.value < 0 for p in self.baseline_kw):
                raise ValueError(f"{what}: baseline_kw series values must be >= 0")
        if (self.valid_until is None) != (self.fallback_kw is None):
            raise ValueError(
                f"{what}: valid_until and fallback_kw go together (a stale stream "
                "must fall to a cap, never to 'no limit')"
            )
        if self.node is not None and self.kind in (
            "export_cap_kw",
            "setpoint_kw",
            "import_price_adder",
            "export_price_adder",
        ):
            raise ValueError(
                f"{what}: {self.kind} applies at the grid connection only (leave node unset)"
            )
        return self

    @property
    def kind(self) -> str:
        """The field that says what this signal asks for (one of :data:`SIGNAL_KINDS`)."""
        return next(k for k in SIGNAL_KINDS if getattr(self, k) is not None)

    def offset_s(self, site_id: str) -> int:
        """The deterministic randomisation delay of this signal at one site (OpenADR
        ``randomizeStart`` / IEEE 2030.5 ``randomizeStart``: the same for a site every time).

        Parameters
        ----------
        site_id
            The site's id (seeds the delay).

        Returns
        -------
        int
            Delay (s), in ``[0, randomize_s]``.
        """
        if self.randomize_s <= 0:
            return 0
        key = f"{site_id}\x00{self.source}\x00{self.ref or self.id}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % (self.randomize_s + 1)


#: A demand-response event is a grid signal (an import cap or a reduction below a baseline);
#: the old name and its JSON form are kept.
DemandResponseEvent = GridSignal


class LevelAction(FrozenModel):
    """What a SIMPLE level (0–3) means at this site: at most one of a hard import cap (kW), a
    reduction below the uncontrolled baseline (kW, or a fraction of it) or an import price
    adder. All ``None``: the level asks for nothing."""

    import_cap_kw: NonNegFloat | None = None
    reduction_kw: NonNegFloat | None = None
    reduction_fraction: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    import_price_adder: float | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> LevelAction:
        given = [
            k
            for k in ("import_cap_kw", "reduction_kw", "reduction_fraction", "import_price_adder")
            if getattr(self, k) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"a level action takes at most one of its fields, got {given}")
        return self


class GridPolicy(FrozenModel):
    """The site's mapping of OpenADR SIMPLE levels 0 (normal) … 3 (special) to actions.

    Default: level 0 nothing; 1, 2, 3 a reduction of 25 %, 50 %, 100 % below the uncontrolled
    baseline (100 %: the vehicles pause, the base load stays)."""

    levels: tuple[LevelAction, LevelAction, LevelAction, LevelAction] = (
        LevelAction(),
        LevelAction(reduction_fraction=0.25),
        LevelAction(reduction_fraction=0.5),
        LevelAction(reduction_fraction=1.0),
    )


class Signals(FrozenModel):
    """Everything outside the vehicles that the schedule must respect or should exploit.

    ``import_price`` / ``export_price`` (currency per kWh; ``export_price=None``: exporting earns
    nothing), ``base_load_kw`` (other consumption on the grid connection, ≥ 0), ``pv_kw`` (on-site
    generation, ≥ 0), ``grid_import_limit_kw`` / ``grid_export_limit_kw`` (the connection
    contract in each direction; ``None``: only the node limits apply), ``grid_signals``
    (:class:`GridSignal`; the old name ``demand_response`` is accepted as input and kept as a
    read-only alias), ``grid_policy`` (what SIMPLE levels mean here) and ``peak_so_far_kw`` (the
    peak already reached in the current billing period, for the demand charge).

    Each series input is a number, a tuple of :class:`SeriesPoint`, a pandas ``Series`` with a
    timezone-aware ``DatetimeIndex``, or one value per period through
    :meth:`loadopt.Horizon.series`.
    """

    import_price: float | Series = 0.0
    export_price: float | Series | None = None
    base_load_kw: NonNegFloat | Series = 0.0
    pv_kw: NonNegFloat | Series = 0.0
    grid_import_limit_kw: NonNegFloat | Series | None = None
    #: Export contract of the grid connection (kW fed in); ``None``: only the node limits apply.
    grid_export_limit_kw: NonNegFloat | Series | None = None
    grid_signals: tuple[GridSignal, ...] = Field(
        default=(), validation_alias=AliasChoices("grid_signals", "demand_response")
    )
    grid_policy: GridPolicy = GridPolicy()
    peak_so_far_kw: NonNegFloat = 0.0

    @field_validator(
        "import_price",
        "export_price",
        "base_load_kw",
        "pv_kw",
        "grid_import_limit_kw",
        "grid_export_limit_kw",
        mode="before",
    )
    @classmethod
    def _series_inputs(cls, v: Any) -> Any:
        # a pandas Series becomes points; a bare array is an error naming the fix
        return as_series_points(v)

    @model_validator(mode="after")
    def _series(self) -> Signals:
        for name in (
            "import_price",
            "export_price",
            "base_load_kw",
            "pv_kw",
            "grid_import_limit_kw",
            "grid_export_limit_kw",
        ):
            v = getattr(self, name)
            if isinstance(v, tuple):
                check_series(v, name)
                if name not in ("import_price", "export_price") and any(p.value < 0 for p in v):
                    raise ValueError(f"{name}: series values must be >= 0")
        ids = [e.id for e in self.grid_signals]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate grid signal id(s): {sorted(dup)}")
        return self

    def with_grid_signals(
        self, source: str, signals: tuple[GridSignal, ...] | list[GridSignal]
    ) -> Signals:
        """A copy whose grid signals from ``source`` are exactly ``signals`` (the others stay):
        what an adapter hands the controller when its stream changes.

        Parameters
        ----------
        source
            The stream (``GridSignal.source``), e.g. an OpenADR VTN or an OCPP station.
        signals
            Its signals now (empty: the stream has none).

        Returns
        -------
        Signals
        """
        bad = [s.id for s in signals if s.source != source]
        if bad:
            raise ValueError(
                f"with_grid_signals({source!r}): signals {bad} come from another source"
            )
        keep = tuple(s for s in self.grid_signals if s.source != source)
        return type(self).model_validate(
            {**self.model_dump(exclude={"grid_signals"}), "grid_signals": keep + tuple(signals)}
        )

    @property
    def demand_response(self) -> tuple[GridSignal, ...]:
        """The grid signals (the pre-:class:`GridSignal` name)."""
        return self.grid_signals


def split(v: float | Series | None) -> tuple[float | None, Series | None]:
    """``(default, points)`` for :func:`loadopt.horizon.sample`."""
    if isinstance(v, tuple):
        return None, v
    return v, None
