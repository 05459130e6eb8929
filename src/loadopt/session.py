"""Charging sessions: one vehicle plugged into one EVSE."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import pairwise
from typing import Literal

from pydantic import model_validator

from ._base import FrozenModel, Identifier, NonNegFloat, PosFloat, UtcDatetime, as_model
from .errors import InputError


class Session(FrozenModel):
    """A vehicle plugged into ``evse`` from ``arrival`` until its (estimated) ``departure``.

    ``id`` is the OCPP transaction id (an integer in 1.6, a string in 2.x: keep it a string here).
    ``energy_kwh`` is the energy *still wanted* from now on (kWh). ``max_current`` is the vehicle's
    per-phase limit (A), ``phases`` how many phases its on-board charger draws on (it uses the
    EVSE's L1 first: a 1-phase car on a 3-phase EVSE draws on EVSE L1 only). ``min_current``
    overrides the EVSE's minimum (IEC 61851: below about 6 A a vehicle stops charging).
    ``priority`` scales the penalty on energy left unmet (2 = twice as important).
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
        raise InputError(f"sessions must be an iterable of Session, got "
                         f"{type(sessions).__name__}")
    if isinstance(sessions, dict):
        raise InputError("sessions must be an iterable of Session, got a dict (a single "
                         "session's fields?): wrap it in a list")
    return tuple(as_model(s, Session, f"sessions[{k}]") for k, s in enumerate(sessions))


def check_sessions(sessions: Iterable[Session], evse_ids: set[str]) -> None:
    """Cross-check sessions against the site: unique ids, known EVSEs, one car per EVSE at once."""
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
