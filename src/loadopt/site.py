"""The site: a tree of electrical nodes with EVSEs hanging from them.

A node is anything with a rating: the grid connection, a transformer, a feeder, a panel, a circuit
breaker. Each has per-phase current limits (A, per site phase R/S/T = L1/L2/L3 of the connection)
and/or a power limit (kW), each optionally overridden by a time series.

Phase rotation follows OCPP (1.6 ``ConnectorPhaseRotation``, 2.x ``PhaseRotation``): the three
letters say which *site* phase the EVSE's own L1, L2, L3 are wired to. ``"SRT"`` means EVSE L1 is on
site phase S (L2), EVSE L2 on R (L1) and EVSE L3 on T (L3). A single-phase vehicle draws on the
EVSE's L1, so on an ``SRT`` EVSE it loads only site phase S.

Wiring (:attr:`Evse.wiring`): a **line-to-neutral** EVSE (230 V Europe, 277 V US) draws each of its
phases between one line and neutral; a **line-to-line** EVSE (US 208 V, any delta-connected load)
draws between two lines: one phase is the pair (L1, L2) of its rotation, two phases the pairs
(L1, L2) and (L2, L3), three phases a full delta. A line then carries the *phasor* sum of the
branches on it; a node may be a delta/wye transformer (:class:`DeltaWye`) whose primary line
currents are phasor sums of its secondary ones. :mod:`loadopt.wiring` has the physics.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ._base import (
    FrozenModel,
    Identifier,
    NonNegFloat,
    PosFloat,
    SeriesPoint,
    UtcDatetime,
    check_series,
)
from .errors import InputError

PhaseRotation = Literal["RST", "RTS", "SRT", "STR", "TRS", "TSR"]
NodeKind = Literal["grid_connection", "transformer", "feeder", "panel", "circuit"]
Wiring = Literal["line_to_neutral", "line_to_line"]
PerPhase = tuple[NonNegFloat, NonNegFloat, NonNegFloat]

#: Site phase index (0 = R/L1, 1 = S/L2, 2 = T/L3) of each EVSE line, by rotation.
ROTATION_TO_SITE_PHASES: dict[str, tuple[int, int, int]] = {
    rot: ("RST".index(rot[0]), "RST".index(rot[1]), "RST".index(rot[2]))
    for rot in ("RST", "RTS", "SRT", "STR", "TRS", "TSR")
}


class CurrentPoint(FrozenModel):
    """A step of a per-phase current-limit series: one value for all phases, or three (A)."""

    start: UtcDatetime
    value: NonNegFloat | PerPhase


class DeltaWye(FrozenModel):
    """A delta-primary / wye-secondary transformer (vector group Dyn11) at a node.

    ``turns_ratio`` is delta turns over wye turns, i.e. the primary line-to-line voltage over the
    secondary line-to-neutral one (480 V / 120 V = 4). The primary line currents are
    ``I_A = (I_a − I_c)/n``, ``I_B = (I_b − I_a)/n``, ``I_C = (I_c − I_b)/n`` (phasors, from the
    secondary line currents ``I_a, I_b, I_c``); ``primary_max_current`` limits them (A, one value
    or three for A, B, C). The node's own ``max_current`` limits the secondary lines; nodes above
    it carry the primary currents.
    """

    turns_ratio: PosFloat
    primary_max_current: NonNegFloat | PerPhase | None = None

    def primary_triplet(self) -> tuple[float, float, float] | None:
        """The primary-side line limits as three values.

        Returns
        -------
        tuple of float or None
            A per primary line (A, B, C); ``None`` when the primary is not limited.
        """
        if self.primary_max_current is None:
            return None
        if isinstance(self.primary_max_current, tuple):
            return self.primary_max_current
        return (self.primary_max_current,) * 3


class Node(FrozenModel):
    """A rated element of the site tree.

    ``max_current`` is the per-phase current limit in A (one value for all three phases, or three
    values for R, S, T); ``max_power_kw`` limits the total active power through the node. Either may
    be ``None`` (no limit of that kind). ``current_series`` / ``power_series_kw`` override the
    static value from their first point on (e.g. a transformer derated on hot afternoons, a grid
    operator's dynamic limit). The root (``parent=None``) is the grid connection; the site's base
    load is counted against it.
    """

    id: Identifier
    parent: Identifier | None = None
    kind: NodeKind = "circuit"
    max_current: NonNegFloat | PerPhase | None = None
    max_power_kw: NonNegFloat | None = None
    current_series: tuple[CurrentPoint, ...] | None = None
    power_series_kw: tuple[SeriesPoint, ...] | None = None
    #: The node is a delta/wye transformer (``kind="transformer"``); ``max_current`` is then its
    #: secondary line limit.
    delta_wye: DeltaWye | None = None

    @model_validator(mode="after")
    def _series_sorted(self) -> Node:
        if self.delta_wye is not None and self.kind != "transformer":
            raise ValueError(
                f"node {self.id!r}: delta_wye needs kind='transformer', not {self.kind!r}"
            )
        check_series(self.current_series, f"node {self.id!r} current_series")  # type: ignore[arg-type]
        check_series(self.power_series_kw, f"node {self.id!r} power_series_kw")
        if self.power_series_kw and any(p.value < 0 for p in self.power_series_kw):
            raise ValueError(f"node {self.id!r}: power_series_kw values must be >= 0")
        return self

    def current_triplet(self) -> tuple[float, float, float] | None:
        """The node's current limit as three values.

        Returns
        -------
        tuple of float or None
            A per phase (R, S, T); ``None`` when the node has no current limit.
        """
        if self.max_current is None:
            return None
        if isinstance(self.max_current, tuple):
            return self.max_current
        return (self.max_current,) * 3


class Evse(FrozenModel):
    """One EVSE (one connector that can charge one vehicle at a time).

    ``charge_point_id`` is the OCPP identity of the station; ``connector_id`` is the OCPP 1.6
    ``connectorId`` and the OCPP 2.x ``evseId`` (both ≥ 1; 0 addresses the whole station).
    Currents are per phase, in A. IEC 61851-1 pilot duty cycles allow 6 A to 80 A on AC; the
    default minimum is 6 A.

    ``wiring``: ``"line_to_neutral"`` (each phase between a line and neutral; ``voltage_v`` is the
    line-to-neutral voltage) or ``"line_to_line"`` (each phase between two lines, ``voltage_v`` the
    line-to-line voltage, e.g. 208 V; see the module docstring). ``phases`` 1, 2 or 3.
    """

    id: Identifier
    node: Identifier
    charge_point_id: Identifier
    connector_id: Annotated[int, Field(ge=1)] = 1
    phases: Literal[1, 2, 3] = 3
    wiring: Wiring = "line_to_neutral"
    phase_rotation: PhaseRotation = "RST"
    max_current: NonNegFloat = 32.0
    min_current: NonNegFloat = 6.0
    voltage_v: PosFloat = 230.0
    #: OCPP ``ChargingRateUnit`` the station accepts (``"A"`` or ``"W"``).
    rate_unit: Literal["A", "W"] = "A"
    #: ``ChargingScheduleMaxPeriods`` / ``PeriodsPerSchedule`` of the station.
    max_periods: Annotated[int, Field(ge=1)] = 24
    #: Discrete pilot steps: explicit allowed currents (A), used by the MILP.
    allowed_currents: tuple[NonNegFloat, ...] | None = None
    #: Station can switch a vehicle between 1 and 3 phases (1.6
    #: ``ConnectorSwitch3to1PhaseSupported``, 2.x ``ACPhaseSwitchingSupported``).
    phase_switching: bool = False
    #: The EVSE can discharge a vehicle (OCPP 2.1 bidirectional, ISO 15118-20 BPT); only then is
    #: a session with ``v2x`` parameters planned to discharge.
    bidirectional: bool = False
    #: Per-phase discharge current limit (A); ``None``: ``max_current``.
    max_discharge_current: NonNegFloat | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> Evse:
        if self.min_current > self.max_current:
            raise ValueError(
                f"EVSE {self.id!r}: min_current {self.min_current} A is above "
                f"max_current {self.max_current} A"
            )
        if self.wiring == "line_to_line" and self.phase_switching:
            raise ValueError(
                f"EVSE {self.id!r}: phase switching is only modelled for line-to-neutral EVSEs"
            )
        return self

    @property
    def site_phases(self) -> tuple[int, int, int]:
        """Site phase index of the EVSE's L1, L2, L3 (0=R, 1=S, 2=T)."""
        return ROTATION_TO_SITE_PHASES[self.phase_rotation]


class Battery(FrozenModel):
    """A stationary battery on ``node``: a three-phase inverter drawing balanced current.

    Energies in kWh, powers in kW (AC side), states of charge as fractions of ``capacity_kwh``.
    Charging ``P`` kW stores ``P · charge_efficiency`` kWh per hour; discharging ``P`` kW takes
    ``P / discharge_efficiency`` kWh per hour out of the cells. ``degradation_per_kwh`` is the
    wear cost per kWh discharged (AC side); ``terminal_value_per_kwh`` the value of each kWh still
    stored at the end of the horizon (without it the optimiser would empty the battery: energy
    left over has no worth to a finite horizon). ``soc`` outside ``[min_soc, max_soc]`` is
    allowed (a battery reporting after a long idle); the schedule then only moves it back towards
    the band.
    """

    id: Identifier
    node: Identifier
    capacity_kwh: PosFloat
    soc: Annotated[float, Field(ge=0.0, le=1.0)]
    min_soc: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    max_soc: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    max_charge_kw: NonNegFloat
    max_discharge_kw: NonNegFloat
    charge_efficiency: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    discharge_efficiency: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    degradation_per_kwh: NonNegFloat = 0.0
    terminal_value_per_kwh: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _band(self) -> Battery:
        if self.min_soc > self.max_soc:
            raise ValueError(
                f"battery {self.id!r}: min_soc {self.min_soc} is above max_soc {self.max_soc}"
            )
        return self


class Site(FrozenModel):
    """A charging site: a tree of :class:`Node` with :class:`Evse` leaves.

    Exactly one node has no parent (the grid connection). Ids are unique among nodes and among
    EVSEs; every parent and every EVSE's ``node`` must exist; the tree has no cycle.
    """

    id: Identifier = "site"
    nodes: tuple[Node, ...]
    evses: tuple[Evse, ...] = ()
    #: Phase-to-neutral voltage used to turn base-load kW into per-phase amps.
    voltage_v: PosFloat = 230.0
    #: The node the site's other consumption (``Signals.base_load_kw``, e.g. the building) hangs
    #: from; it loads that node and every node above it, balanced over the three phases.
    #: ``None``: the grid connection.
    base_load_node: Identifier | None = None
    #: Facets per phasor line limit in the linear model (:mod:`loadopt.wiring`): the worst-case
    #: capacity given away on a sector of width Δ is 1 − cos(Δ/2m) (m = 4: 0.86 % on 60°).
    phasor_facets: Annotated[int, Field(ge=1, le=64)] = 4
    #: Stationary batteries (see :class:`Battery`).
    batteries: tuple[Battery, ...] = ()

    @field_validator("nodes")
    @classmethod
    def _some_nodes(cls, v: tuple[Node, ...]) -> tuple[Node, ...]:
        if not v:
            raise ValueError("a site needs at least one node (its grid connection)")
        return v

    @model_validator(mode="after")
    def _tree(self) -> Site:
        _check_unique([n.id for n in self.nodes], "node")
        _check_unique([e.id for e in self.evses], "EVSE")
        ids = {n.id for n in self.nodes}
        roots = [n.id for n in self.nodes if n.parent is None]
        if len(roots) != 1:
            raise InputError(
                f"site {self.id!r}: exactly one root node (parent=None) is needed, found "
                f"{len(roots)}: {roots}"
            )
        parent = {n.id: n.parent for n in self.nodes}
        for n in self.nodes:
            if n.parent is not None and n.parent not in ids:
                raise InputError(f"node {n.id!r}: parent {n.parent!r} is not a node of the site")
            if n.parent == n.id:
                raise InputError(f"node {n.id!r} is its own parent")
        # every node must reach the root within len(nodes) steps, else it sits on a cycle
        for n in self.nodes:
            seen, cur = [n.id], parent[n.id]
            while cur is not None:
                if cur in seen:
                    raise InputError(f"node {n.id!r} is on a cycle: {' -> '.join([*seen, cur])}")
                seen.append(cur)
                cur = parent[cur]
        if self.base_load_node is not None and self.base_load_node not in ids:
            raise InputError(
                f"site {self.id!r}: base_load_node {self.base_load_node!r} is not a "
                "node of the site"
            )
        _check_unique([b.id for b in self.batteries], "battery")
        for b in self.batteries:
            if b.node not in ids:
                raise InputError(f"battery {b.id!r}: node {b.node!r} is not a node of the site")
        by_connector: dict[tuple[str, int], str] = {}
        for e in self.evses:
            if e.node not in ids:
                raise InputError(f"EVSE {e.id!r}: node {e.node!r} is not a node of the site")
            other = by_connector.setdefault((e.charge_point_id, e.connector_id), e.id)
            if other != e.id:
                raise InputError(
                    f"EVSEs {other!r} and {e.id!r}: charge point {e.charge_point_id!r} connector "
                    f"{e.connector_id} is used by more than one EVSE"
                )
        return self

    @property
    def root(self) -> Node:
        return next(n for n in self.nodes if n.parent is None)

    def evse(self, evse_id: str) -> Evse:
        """The EVSE ``evse_id`` (a dict lookup: called per session per control step).

        The map is built once per ``evses`` tuple and kept beside it; ``model_copy`` copies it
        along, so it is rebuilt whenever the tuple it was built from is not this site's.

        Parameters
        ----------
        evse_id
            The EVSE's id.

        Returns
        -------
        Evse

        Raises
        ------
        InputError
            No EVSE of this site has that id.
        """
        cached = self.__dict__.get("_evse_map")
        if cached is None or cached[0] is not self.evses:
            cached = (self.evses, {e.id: e for e in self.evses})
            self.__dict__["_evse_map"] = cached
        try:
            return cached[1][evse_id]
        except KeyError:
            raise InputError(f"unknown EVSE {evse_id!r} on site {self.id!r}") from None


def _check_unique(ids: list[str], what: str) -> None:
    dup = sorted(i for i, c in Counter(ids).items() if c > 1)
    if dup:
        raise InputError(f"duplicate {what} id(s): {dup}")
