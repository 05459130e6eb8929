"""Session bookkeeping of a :class:`~loadopt.controller.Controller`: vehicles that plug in, are
expected, change or leave, and the sessions as the next problem sees them (energy still wanted,
estimated from meter readings; departure estimates; V2X energy window; re-sharing caps).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .._base import as_model, to_utc
from ..errors import InputError
from ..session import Session, V2xParameters
from .state import _check_id, _ControllerState, _finite_nonneg, _SessionState


class _Sessions(_ControllerState):
    """Vehicles plugging in, expected, updated and leaving (OCPP transactions, ISO 15118 needs)."""

    def new_session(
        self,
        session_id: str,
        evse: str,
        arrival: datetime,
        *,
        departure: datetime | None = None,
        energy_kwh: float | None = None,
        **kw: Any,
    ) -> Session:
        """A :class:`Session` with the controller's defaults for what the vehicle did not say.

        OCPP 1.6 transactions carry neither a departure nor an energy; 2.x ``ChargingNeeds`` may.

        Parameters
        ----------
        session_id
            The session's id.
        evse
            The EVSE it is plugged into (id on the site).
        arrival
            Plug-in time (aware datetime).
        departure
            Expected departure (aware); default ``arrival + default_dwell_h``.
        energy_kwh
            Energy wanted (kWh); default ``default_energy_kwh``.
        **kw
            Other :class:`Session` fields (``max_current`` A, ``phases``, ``priority``, ``v2x`` …).

        Returns
        -------
        Session
            Not started: pass it to :meth:`start_session`.

        Raises
        ------
        InputError
            A time that is not an aware datetime in the supported range (e.g. a StartTransaction
            stamped 9999-12-31).
        ModelError
            A field the session rejects.
        """
        arrival = to_utc(arrival, f"session {session_id!r}: arrival")
        if departure is None:
            departure = arrival + timedelta(hours=self.default_dwell_h)
        else:
            departure = to_utc(departure, f"session {session_id!r}: departure")
        return Session(
            id=session_id,
            evse=evse,
            arrival=arrival,
            departure=departure,
            energy_kwh=self.default_energy_kwh if energy_kwh is None else energy_kwh,
            **kw,
        )

    def expect_session(self, session: Session) -> None:
        """A vehicle expected to plug in later: a timetable (bus depot), a reservation (OCPP
        ReserveNow) or a forecast.

        It is planned from its arrival on, so capacity is kept for it instead of being promised to
        vehicles that could have charged earlier; it gets no limit before it plugs in.
        :meth:`start_session` with the same id makes it real (the started session's data win); it is
        forgotten if it has not started ``expected_grace_h`` after its arrival.

        Parameters
        ----------
        session
            The expected vehicle (arrival, departure, energy in kWh, current range in A).

        Raises
        ------
        InputError
            An unknown EVSE, an id in use, or an overlap with another expected vehicle on the same
            EVSE.
        """
        session = as_model(session, Session, "expect_session: session")
        if session.id in self.sessions or session.id in self.expected:
            raise InputError(f"session {session.id!r} is already active or expected")
        if session.evse not in self._evse_ids:
            raise InputError(
                f"expected session {session.id!r}: unknown EVSE {session.evse!r} "
                f"on site {self.site.id!r}"
            )
        for other in self.expected.values():
            if (
                other.evse == session.evse
                and session.arrival < other.departure
                and other.arrival < session.departure
            ):
                raise InputError(
                    f"expected session {session.id!r} overlaps expected session "
                    f"{other.id!r} on EVSE {session.evse!r}"
                )
        self.expected[session.id] = session

    def cancel_expected(self, session_id: str) -> None:
        """Forget an expected vehicle (a cancelled reservation).

        Parameters
        ----------
        session_id
            The id given to :meth:`expect_session`.

        Raises
        ------
        InputError
            No expected vehicle has that id.
        """
        if self.expected.pop(_check_id(session_id, "expected session id"), None) is None:
            raise InputError(f"unknown expected session {session_id!r}")

    def start_session(self, session: Session) -> None:
        """A vehicle plugged in (OCPP StartTransaction / TransactionEvent Started).

        Parameters
        ----------
        session
            The session (arrival = plug-in time; energy wanted in kWh at plug-in).

        Raises
        ------
        InputError
            An unknown EVSE, an EVSE that already has a session, or a session id already in use.
        """
        session = as_model(session, Session, "start_session: session")
        if session.id in self.sessions:
            raise InputError(f"session {session.id!r} is already active")
        if session.evse not in self._evse_ids:
            raise InputError(
                f"session {session.id!r}: unknown EVSE {session.evse!r} on site {self.site.id!r}"
            )
        other = self._busy.get(session.evse)
        if other is not None:
            raise InputError(
                f"session {session.id!r}: EVSE {session.evse!r} is busy with session {other!r}"
            )
        self.expected.pop(session.id, None)
        self.sessions[session.id] = session
        self._state[session.id] = _SessionState(
            session=session, delivered_at=session.arrival, departure=session.departure
        )
        self._busy[session.evse] = session.id
        if self._last_now is None:  # before the first step, plug-ins are the only clock
            self._tick(session.arrival)
        self._events.append(f"session {session.id!r} started on EVSE {session.evse!r}")

    def update_session(
        self,
        session_id: str,
        *,
        departure: datetime | None = None,
        energy_kwh: float | None = None,
        max_current: float | None = None,
        min_current: float | None = None,
        v2x: V2xParameters | dict[str, Any] | None = None,
        at: datetime | None = None,
        remaining_kwh: float | None = None,
        phases: int | None = None,
    ) -> None:
        """New facts about an active session from the vehicle (OCPP 2.x NotifyEVChargingNeeds /
        ISO 15118, ``TransactionEvent.numberOfPhasesUsed``). Validated like a new
        :class:`Session`; nothing changes on an error.

        Parameters
        ----------
        session_id
            The active session.
        departure
            New departure (aware datetime).
        energy_kwh
            Energy wanted for the whole session (kWh).
        remaining_kwh
            Energy the vehicle still wants from ``at`` on (kWh), as ISO 15118 / OCPP send it
            (``energyAmount``, ``evTargetEnergyRequest``: the demand from now, not from
            plug-in). The session's energy becomes what the controller estimates it received by
            ``at`` (for a V2G session: the net energy into its battery) plus this. Not with
            ``energy_kwh``.
        max_current, min_current
            The current range the vehicle accepts (A per phase).
        phases
            The phases the vehicle draws on (1, 2 or 3; OCPP 2.x ``numberOfPhasesUsed``).
        v2x
            V2G: the vehicle's V2X parameters (OCPP 2.1 ``v2xChargingParameters``, ISO 15118-20
            BPT; :func:`loadopt.ocpp.v2x.v2x_parameters`). Their energies are relative to
            ``at``, as the vehicle sends them; the session keeps them relative to its plug-in
            (what :meth:`planned_sessions` expects), shifted by the net battery energy the
            controller estimates moved by ``at`` (metered or estimated charge × charge
            efficiency, minus the discharge estimate / discharge efficiency). The session is
            then planned bidirectionally where its EVSE is ``bidirectional``.
        at
            When the ``v2x`` energies and ``remaining_kwh`` were true (aware datetime);
            default: the controller's clock (its latest step or reading), or the session's
            arrival before any.

        Raises
        ------
        InputError
            An unknown session, a time that is not aware, or both ``energy_kwh`` and
            ``remaining_kwh``.
        ModelError
            A value the session rejects (V2X floor above its ceiling, target above the ceiling
            …).
        """
        s = self._get(session_id)
        if energy_kwh is not None and remaining_kwh is not None:
            raise InputError(
                f"update_session {session_id!r}: give energy_kwh (whole session) or "
                "remaining_kwh (from `at` on), not both"
            )
        upd: dict[str, Any] = {}
        t = (
            to_utc(at, f"update_session {session_id!r}: at")
            if at is not None
            else (self._clock or s.arrival)
        )
        st0 = self._state[session_id]
        v2x_model = (
            as_model(v2x, V2xParameters, f"update_session {session_id!r}: v2x")
            if v2x is not None
            else s.v2x
        )

        def net_at(v: V2xParameters | None) -> float:
            """kWh the session has put into the vehicle by ``t`` (net of discharge for V2G)."""
            if v is None:
                return self._delivered_estimate(st0, t)
            into = v.charge_efficiency * self._delivered_estimate(st0, t)
            return into - self._discharged_estimate(st0, t) / v.discharge_efficiency

        if remaining_kwh is not None:
            rem = _finite_nonneg(remaining_kwh, f"update_session {session_id!r}: remaining_kwh")
            upd["energy_kwh"] = round(max(net_at(v2x_model), 0.0) + rem, 6)
        if v2x is not None:
            v = v2x_model
            assert v is not None
            net = net_at(v)
            upd["v2x"] = v.model_copy(
                update={
                    "min_v2x_energy_kwh": round(v.min_v2x_energy_kwh + net, 6),
                    "max_v2x_energy_kwh": round(v.max_v2x_energy_kwh + net, 6),
                }
            )
        if departure is not None:
            upd["departure"] = to_utc(departure, f"update_session {session_id!r}: departure")
        if energy_kwh is not None:
            upd["energy_kwh"] = energy_kwh
        if max_current is not None:
            upd["max_current"] = max_current
        if min_current is not None:
            upd["min_current"] = min_current
        if phases is not None:
            upd["phases"] = phases
        if not upd:
            return
        new = as_model({**s.model_dump(), **upd}, Session, f"update_session {session_id!r}")
        self.sessions[session_id] = new
        st = self._state[session_id]
        st.session = new
        if departure is not None:
            st.departure = new.departure
        self._events.append(f"session {session_id!r} updated: {sorted(upd)}")

    def stop_session(self, session_id: str, at: datetime) -> None:
        """The vehicle left or the transaction ended (OCPP StopTransaction / Ended).

        Parameters
        ----------
        session_id
            The active session.
        at
            When it ended (aware datetime).

        Raises
        ------
        InputError
            An unknown session or a time that is not aware.
        """
        to_utc(at, f"stop_session {session_id!r}: at")
        s = self._get(session_id)
        del self.sessions[session_id]
        del self._state[session_id]
        self._busy.pop(s.evse, None)
        if s.evse in self._observed:  # the vehicle that overdrew has left
            self._observed.discard(s.evse)
            self.reservations.pop(s.evse, None)
        self._events.append(f"session {session_id!r} stopped")

    def planned_sessions(self, now: datetime) -> list[Session]:
        """The active (and expected) sessions as the next problem sees them: energy still wanted,
        departure estimate, re-sharing cap.

        Parameters
        ----------
        now
            The step's time (UTC).

        Returns
        -------
        list of Session
            Energy still wanted (kWh: wanted minus metered or estimated), departure extended
            by ``overstay_extension_h`` when overdue, ``max_current`` (A) lowered by a
            re-sharing cap or to what an overdrawing vehicle was given; expected vehicles from
            ``max(arrival, now)``.
        """
        out = []
        for sid, st in self._state.items():
            s = st.session
            delivered = self._delivered_estimate(st, now)
            remaining = max(s.energy_kwh - delivered, 0.0)
            v2x_upd: dict[str, Any] = {}
            if s.v2x is not None:
                # energy in the battery since plug-in, metered charge in, planned discharge out
                # (both upper bounds on what moved: the floor below is never too low)
                v = s.v2x
                out_kwh = self._discharged_estimate(st, now)
                net = v.charge_efficiency * delivered - out_kwh / v.discharge_efficiency
                lo, hi = v.min_v2x_energy_kwh - net, v.max_v2x_energy_kwh - net
                remaining = min(max(s.energy_kwh - net, 0.0), max(hi, 0.0))
                v2x_upd["v2x"] = v.model_copy(
                    update={"min_v2x_energy_kwh": round(lo, 6), "max_v2x_energy_kwh": round(hi, 6)}
                )
            dep = st.departure or s.departure
            if dep <= now:  # still plugged in after its estimated departure
                dep = now + timedelta(hours=self.overstay_extension_h)
                st.departure = dep
            upd: dict[str, Any] = {"energy_kwh": round(remaining, 6), "departure": dep, **v2x_upd}
            if s.arrival > now:
                upd["arrival"] = now
            cap = st.cap_a
            if st.over_limit_a is not None:  # not raised while it draws above what it is given
                cap = st.over_limit_a if cap is None else min(cap, st.over_limit_a)
            if cap is not None:
                upd["max_current"] = min(cap, s.max_current)
                if s.min_current is not None:
                    upd["min_current"] = min(s.min_current, upd["max_current"])
            out.append(_copy_with(s, upd))
            del sid
        out.extend(self._expected_sessions(now))
        return out

    def _expected_sessions(self, now: datetime) -> list[Session]:
        """Expected vehicles as the next problem sees them: from ``max(arrival, now)`` and after
        the vehicle now on their EVSE is expected to leave; the overdue ones are forgotten."""
        grace = timedelta(hours=self.expected_grace_h)
        for sid in [k for k, s in self.expected.items() if s.arrival + grace < now]:
            del self.expected[sid]
        out = []
        for s in self.expected.values():
            arrival = max(s.arrival, now)
            busy = self._busy.get(s.evse)
            if busy is not None:
                st = self._state[busy]
                arrival = max(arrival, st.departure or st.session.departure)
            if arrival < s.departure:
                out.append(_copy_with(s, {"arrival": arrival}))
        return out

    def _delivered_estimate(self, st: _SessionState, now: datetime) -> float:
        """Cumulative kWh at ``now``: last reading + what the vehicle drew since (estimated)."""
        since = st.delivered_at or st.session.arrival
        if now <= since:  # nothing since (the common case: read at this step); a clock going
            return st.delivered_kwh  # back adds 0
        dt_h = (now - since).total_seconds() / 3600.0
        rate_a = st.measured_a if st.measured_a is not None else (st.last_limit_a or 0.0)
        if st.last_limit_a is not None:
            rate_a = min(rate_a, st.last_limit_a)
        volt, n_ph = self._evse_draw(st.session)
        kw = rate_a * volt * n_ph / 1000.0
        return st.delivered_kwh + kw * dt_h

    def _discharged_estimate(self, st: _SessionState, now: datetime) -> float:
        """Grid kWh a V2G vehicle may have given back by ``now``: what it was told to discharge,
        for as long as it was told (no meter subtracts from it: an upper bound)."""
        if st.discharge_at is None or st.last_discharge_a <= 0:
            return st.discharged_kwh
        dt_h = max((now - st.discharge_at).total_seconds(), 0.0) / 3600.0
        volt, n_ph = self._evse_draw(st.session)
        kw = st.last_discharge_a * volt * n_ph / 1000.0
        return st.discharged_kwh + kw * dt_h


def _copy_with(s: Session, update: dict[str, Any]) -> Session:
    """``s.model_copy(update=update)`` (the same fields, fields set, no extra and no private
    attributes: a :class:`Session` has neither), without its generic path: it runs per session
    per control step. ``update`` holds field names and values already valid."""
    m = Session.__new__(Session)
    d = s.__dict__.copy()
    d.update(update)
    _setattr(m, "__dict__", d)
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_fields_set__", s.__pydantic_fields_set__ | update.keys())
    _setattr(m, "__pydantic_private__", None)
    return m


_setattr = object.__setattr__
