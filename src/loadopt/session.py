"""Charging sessions: one vehicle plugged into one EVSE."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Iterable, Sequence
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ._base import FrozenModel, Identifier, NonNegFloat, PosFloat, UtcDatetime, as_model
from .errors import InputError

#: An efficiency in (0, 1].
Efficiency = Annotated[float, Field(gt=0.0, le=1.0)]


class V2xParameters(FrozenModel):
    """What a bidirectional vehicle announces (ISO 15118-20 BPT, OCPP 2.1
    ``V2XChargingParametersType`` in ``NotifyEVChargingNeeds``).

    Energies are kWh in the battery, **relative to now** (as ISO 15118-20 sends them):

    - ``min_v2x_energy_kwh`` (``evMinV2XEnergyRequest``): energy to charge until the vehicle's
      minimum state of charge for V2X; negative = it may give that much back. It is a floor the
      schedule never discharges below. When it is positive the vehicle is below its V2X minimum
      and is not discharged in this plan at all (a later plan, with the metered energy, may).
    - ``max_v2x_energy_kwh`` (``evMaxV2XEnergyRequest``): energy to charge until the maximum state
      of charge for V2X; the ceiling of the stored energy.
    - the session's ``energy_kwh`` is the target (``evTargetEnergyRequest``) at departure, met as a
      soft row priced by the unmet-energy penalty.

    ``max_discharge_current`` is A per phase (``maxDischargeCurrent``); efficiencies turn grid-side
    kWh into battery kWh (charge: ``× charge_efficiency``; discharge: battery loses
    ``grid kWh / discharge_efficiency``); ``degradation_per_kwh`` is a cost per grid-side kWh
    discharged (battery wear, paid to the vehicle owner).

    :meth:`from_soc` builds the same from a capacity and states of charge.
    """

    min_v2x_energy_kwh: float
    max_v2x_energy_kwh: float
    max_discharge_current: NonNegFloat = 32.0
    charge_efficiency: Efficiency = 1.0
    discharge_efficiency: Efficiency = 1.0
    degradation_per_kwh: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _order(self) -> V2xParameters:
        if self.min_v2x_energy_kwh > self.max_v2x_energy_kwh:
            raise ValueError(
                f"V2X parameters: min_v2x_energy_kwh {self.min_v2x_energy_kwh} is above "
                f"max_v2x_energy_kwh {self.max_v2x_energy_kwh}"
            )
        return self

    @classmethod
    def from_soc(
        cls, capacity_kwh: float, soc: float, min_soc: float, max_soc: float = 1.0, **kw
    ) -> V2xParameters:
        """From a battery ``capacity_kwh`` and states of charge (fractions in [0, 1]): the floor is
        ``(min_soc − soc) · capacity``, the ceiling ``(max_soc − soc) · capacity``."""
        for name, v in (("soc", soc), ("min_soc", min_soc), ("max_soc", max_soc)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"V2X parameters: {name} {v} is not in [0, 1]")
        if not capacity_kwh > 0:
            raise ValueError(f"V2X parameters: capacity_kwh {capacity_kwh} must be > 0")
        return cls(
            min_v2x_energy_kwh=(min_soc - soc) * capacity_kwh,
            max_v2x_energy_kwh=(max_soc - soc) * capacity_kwh,
            **kw,
        )


class Session(FrozenModel):
    """A vehicle plugged into ``evse`` from ``arrival`` until its (estimated) ``departure``.

    ``id`` is the OCPP transaction id (an integer in 1.6, a string in 2.x: keep it a string here).
    ``energy_kwh`` is the energy *still wanted* from now on (kWh). ``max_current`` is the vehicle's
    per-phase limit (A), ``phases`` how many phases its on-board charger draws on (it uses the
    EVSE's L1 first: a 1-phase car on a 3-phase EVSE draws on EVSE L1 only). ``min_current``
    overrides the EVSE's minimum (IEC 61851: below about 6 A a vehicle stops charging).
    ``priority`` scales the penalty on energy left unmet (2 = twice as important).

    ``v2x``: the vehicle can discharge (ISO 15118-20 bidirectional power transfer); it is planned
    bidirectionally only on an EVSE with ``bidirectional=True`` (elsewhere it charges only, and
    the compiled problem says so in its notices). ``energy_kwh`` is then the target at departure.
    """

    id: Identifier
    evse: Identifier
    arrival: UtcDatetime
    departure: UtcDatetime
    energy_kwh: NonNegFloat
    max_current: NonNegFloat = 32.0
    phases: Literal[1, 2, 3] = 3
    min_current: NonNegFloat | None = None
    priority: PosFloat = 1.0
    v2x: V2xParameters | None = None

    @model_validator(mode="after")
    def _times(self) -> Session:
        if not self.departure > self.arrival:
            raise ValueError(
                f"session {self.id!r}: departure {self.departure.isoformat()} is not after "
                f"arrival {self.arrival.isoformat()}"
            )
        if self.min_current is not None and self.min_current > self.max_current:
            raise ValueError(
                f"session {self.id!r}: min_current {self.min_current} A is above max_current "
                f"{self.max_current} A"
            )
        if self.v2x is not None and self.energy_kwh > max(self.v2x.max_v2x_energy_kwh, 0.0) + 1e-9:
            raise ValueError(
                f"session {self.id!r}: target energy_kwh {self.energy_kwh} is above its "
                f"max_v2x_energy_kwh {self.v2x.max_v2x_energy_kwh}"
            )
        return self


def as_sessions(sessions: Iterable[Session] | None) -> tuple[Session, ...]:
    """The sessions as a tuple of :class:`Session`; mappings are validated into sessions.

    Raises :class:`InputError` for a string, a single session or a non-iterable, and for an
    element that is neither a session nor a mapping (naming its position), and
    :class:`~loadopt.errors.ModelError` for a mapping that is not a valid session.
    """
    if sessions is None:
        return ()
    if isinstance(sessions, str | bytes | Session) or not isinstance(sessions, Iterable):
        raise InputError(f"sessions must be an iterable of Session, got {type(sessions).__name__}")
    if isinstance(sessions, dict):
        raise InputError(
            "sessions must be an iterable of Session, got a dict (a single "
            "session's fields?): wrap it in a list"
        )
    if isinstance(sessions, tuple | list):
        out = tuple(sessions)
        if all(isinstance(s, Session) for s in out):
            return out  # (what as_model returns for each)
    return tuple(as_model(s, Session, f"sessions[{k}]") for k, s in enumerate(sessions))


def check_sessions(sessions: Iterable[Session], evse_ids: Container[str]) -> None:
    """Cross-check sessions against the site: unique ids, known EVSEs, one car per EVSE at once."""
    if not isinstance(sessions, Sequence):
        sessions = tuple(sessions)
    ids = {s.id for s in sessions}
    evses = {s.evse for s in sessions}
    n = len(sessions)
    if len(ids) == n and len(evses) == n and all(e in evse_ids for e in evses):
        return  # the common case (a controller step): nothing can overlap, no message to build
    seen: set[str] = set()
    by_evse: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        if s.id in seen:
            raise InputError(f"duplicate session id {s.id!r}")
        seen.add(s.id)
        if s.evse not in evse_ids:
            raise InputError(f"session {s.id!r}: unknown EVSE {s.evse!r}")
        by_evse[s.evse].append(s)
    for evse, group in by_evse.items():
        group.sort(key=lambda s: s.arrival)
        for a, b in pairwise(group):
            if b.arrival < a.departure:
                raise InputError(
                    f"EVSE {evse!r}: sessions {a.id!r} and {b.id!r} overlap "
                    f"({b.id!r} arrives {b.arrival.isoformat()} before {a.id!r} departs "
                    f"{a.departure.isoformat()})"
                )
