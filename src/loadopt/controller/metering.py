"""Metering and observed reality of a :class:`~loadopt.controller.Controller`: meter readings
checked when they arrive (stale, future, out-of-order ones rejected and recorded), reservations
for what the plan cannot control, and vehicles metered above their limit budgeted at what they
draw until they comply.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from .._base import to_utc
from ..errors import InputError
from ..horizon import Horizon
from .state import (
    RejectedReading,
    Reservation,
    _check_id,
    _ControllerState,
    _finite_nonneg,
    _SessionState,
)


class _Metering(_ControllerState):
    """Meter readings, reservations and observed reality."""

    def meter(
        self,
        session_id: str,
        at: datetime,
        energy_kwh: float | None = None,
        current_a: float | tuple[float, float, float] | None = None,
        *,
        exported_kwh: float | None = None,
    ) -> bool:
        """A meter reading: cumulative energy of this session and/or the current drawn.

        Parameters
        ----------
        session_id
            The active session.
        at
            When it was measured (aware datetime).
        energy_kwh
            Cumulative energy of the session (kWh, relative to its start: OCPP
            ``Energy.Active.Import.Register`` minus ``meterStart``).
        current_a
            Current drawn (A): one value for the lines the vehicle uses, or three for the EVSE's
            L1, L2, L3; the largest is compared with its limit.
        exported_kwh
            V2G: cumulative grid kWh the vehicle gave back since plug-in (OCPP 2.1
            ``Energy.Active.Export.Register``, relative to the transaction's start). It replaces
            the estimate from the discharge setpoints handed out (an upper bound) at the
            reading's time; after it the estimate runs on from the reading at the setpoint in
            force. A reading older than the controller's last step is only taken where it is
            lower than what the vehicle could have given at its maximum discharge current since
            (the estimate stays an upper bound: a V2X floor is never overestimated). Cumulative
            like ``energy_kwh``: a value below the last one, or out of order, is rejected.

        Returns
        -------
        bool
            Whether the reading was applied. One that is out of order, stale or from the future
            (module docstring) is not, and is recorded in :attr:`rejected_readings`.

        Raises
        ------
        InputError
            An unknown session, a time that is not an aware datetime, or a value that is not a
            finite number >= 0 (nothing is changed then).
        """
        self._get(session_id)
        st = self._state[session_id]
        at_utc = to_utc(at, f"meter reading of session {session_id!r}: at")
        e = (
            None
            if energy_kwh is None
            else _finite_nonneg(energy_kwh, f"session {session_id!r}: energy_kwh")
        )
        x = (
            None
            if exported_kwh is None
            else _finite_nonneg(exported_kwh, f"session {session_id!r}: exported_kwh")
        )
        lines: tuple[float, ...] | None = None
        if current_a is not None:
            vals = current_a if isinstance(current_a, tuple | list) else (current_a,)
            if len(vals) not in (1, 3):
                raise InputError(
                    f"session {session_id!r}: current_a needs 1 or 3 values, got {len(vals)}"
                )
            lines = tuple(_finite_nonneg(v, f"session {session_id!r}: current_a") for v in vals)
        why = self._reading_fault(st, at_utc, e, lines)
        if why is None and x is not None:
            why = self._export_fault(st, at_utc, x)
        if why is not None:
            self.rejected_readings.append(RejectedReading(session_id, at_utc, e, lines, why))
            del self.rejected_readings[:-1000]
            self._events.append(
                f"meter reading of session {session_id!r} at {at_utc.isoformat()} rejected: {why}"
            )
            return False
        if e is not None:
            st.delivered_kwh = e
            st.delivered_at = at_utc
            st.read_at, st.read_kwh = at_utc, e
        if lines is not None:
            _, n_ph = self._evse_draw(st.session)
            if len(lines) == 1:
                per = tuple(lines[0] if j < n_ph else 0.0 for j in range(3))
            else:
                per = lines
            st.measured_a = max(lines)
            st.measured_lines_a = per  # type: ignore[assignment]
            st.measured_at = at_utc
        if x is not None:
            self._apply_export(st, at_utc, x)
        return True

    def _export_fault(self, st: _SessionState, at: datetime, x: float) -> str | None:
        """Why an exported-energy reading must not be applied (``None``: it may)."""
        if st.export_read_at is not None:
            if at < st.export_read_at:
                return f"out of order: older than the last export reading ({st.export_read_at})"
            if st.export_read_kwh is not None and x < st.export_read_kwh - 1e-9:
                return (
                    f"cumulative exported energy {x} kWh below the last reading "
                    f"{st.export_read_kwh} kWh (a meter reset or a reading out of order)"
                )
        return None

    def _apply_export(self, st: _SessionState, at: datetime, x: float) -> None:
        """Take an exported-energy reading into the discharge estimate (see :meth:`meter`)."""
        st.export_read_at, st.export_read_kwh = at, x
        if st.discharge_at is None or at >= st.discharge_at:
            st.discharged_kwh, st.discharge_at = x, at
            return
        # older than the last fold at ``discharge_at``: bound what could have followed it
        v = st.session.v2x
        volt, n_ph = self._evse_draw(st.session)
        max_a = 0.0 if v is None else v.max_discharge_current
        dt_h = (st.discharge_at - at).total_seconds() / 3600.0
        st.discharged_kwh = min(st.discharged_kwh, x + max_a * volt * n_ph / 1000.0 * dt_h)

    def _reading_fault(
        self, st: _SessionState, at: datetime, e: float | None, lines: tuple[float, ...] | None
    ) -> str | None:
        """Why a reading must not be applied (``None``: it may)."""
        if self._clock is not None:
            lead = (at - self._clock).total_seconds()
            if lead > self.meter_max_lead_s:
                return (
                    f"from the future: {lead:.0f} s ahead of the controller's clock "
                    f"{self._clock.isoformat()} (more than {self.meter_max_lead_s:.0f} s)"
                )
            if -lead > self.meter_max_age_s:
                return (
                    f"stale: {-lead:.0f} s older than the controller's clock "
                    f"{self._clock.isoformat()} (more than {self.meter_max_age_s:.0f} s)"
                )
        if at < st.session.arrival:
            return f"before the session's arrival {st.session.arrival.isoformat()}"
        if e is not None and st.read_at is not None:
            if at < st.read_at:
                return f"out of order: older than the last energy reading ({st.read_at})"
            if st.read_kwh is not None and e < st.read_kwh - 1e-9:
                return (
                    f"cumulative energy {e} kWh below the last reading {st.read_kwh} kWh "
                    "(a meter reset or a reading out of order)"
                )
        if lines is not None and st.measured_at is not None and at < st.measured_at:
            return f"out of order: older than the last current reading ({st.measured_at})"
        return None

    def reserve(
        self,
        evse_id: str,
        current_a: float | tuple[float, float, float],
        *,
        until: datetime | None = None,
        reason: str = "",
    ) -> None:
        """Budget EVSE ``evse_id`` at ``current_a`` from now until ``until``, whatever the plan.

        For what the plan cannot control: a station that has not accepted a lower limit (it may
        draw what it holds), a silent or unknown one (its hardware maximum), a vehicle drawing above
        its limit. Each step counts it as a fixed load on every limit above the EVSE (any overlap
        with a period counts the whole period) and plans everyone else around it; a session on the
        EVSE is planned within the reservation there. Replaces the EVSE's previous reservation.

        Parameters
        ----------
        evse_id
            The EVSE.
        current_a
            A per EVSE line: one value for every line, or three (L1, L2, L3).
        until
            End of the reservation (aware); ``None``: until :meth:`release`.
        reason
            Why (shown in logs and the step record).

        Raises
        ------
        InputError
            An unknown EVSE, a bad current (not finite, negative, not 1 or 3 values) or time.
        """
        if _check_id(evse_id, "reserve: EVSE id") not in self._evse_index:
            raise InputError(f"reserve: unknown EVSE {evse_id!r} on site {self.site.id!r}")
        vals = current_a if isinstance(current_a, tuple | list) else (current_a,) * 3
        if len(vals) != 3:
            raise InputError(
                f"reserve EVSE {evse_id!r}: current_a needs 1 or 3 values, got {len(vals)}"
            )
        amps = tuple(_finite_nonneg(v, f"reserve EVSE {evse_id!r}: current_a") for v in vals)
        if until is not None:
            until = to_utc(until, f"reserve EVSE {evse_id!r}: until")
        self.reservations[evse_id] = Reservation(amps, until, reason)  # type: ignore[arg-type]
        self._observed.discard(evse_id)  # set by hand: the controller does not lift it

    def release(self, evse_id: str) -> None:
        """End the reservation of ``evse_id`` (no-op when it has none).

        Parameters
        ----------
        evse_id
            The EVSE.
        """
        self.reservations.pop(_check_id(evse_id, "release: EVSE id"), None)
        self._observed.discard(evse_id)

    def reserved_array(self, horizon: Horizon) -> np.ndarray | None:
        """The reservations over ``horizon``; expired ones are dropped.

        Parameters
        ----------
        horizon
            The horizon of the step.

        Returns
        -------
        numpy.ndarray or None
            ``(E, 3, T)`` A per EVSE line and period (EVSEs in ``site.evses`` order), ``None`` when
            there are none: the ``reserved_a`` of :func:`~loadopt.compile_problem`.
        """
        now = horizon.start_utc
        for eid in [
            k for k, r in self.reservations.items() if r.until is not None and r.until <= now
        ]:
            del self.reservations[eid]
        if not self.reservations:
            return None
        T = horizon.n_periods
        out = np.zeros((len(self.site.evses), 3, T))
        for eid, r in self.reservations.items():
            n = (
                T
                if r.until is None
                else int(
                    np.searchsorted(
                        horizon.period_bounds_s()[:-1], (r.until - now).total_seconds(), side="left"
                    )
                )
            )
            out[self._evse_index[eid], :, :n] = np.asarray(r.current_a)[:, None]
        return out

    def _observe(self) -> list[str]:
        """Observed reality: budget a vehicle metered above its limit at what it draws (a
        reservation on its EVSE lines, until it complies); lift that when it complies."""
        out = []
        for sid, st in self._state.items():
            lines = st.measured_lines_a
            if lines is None or st.measured_at is None:
                continue
            if st.limit_at is not None and st.measured_at <= st.limit_at:
                continue  # no reading since the last limit was handed out
            # a vehicle that has had no limit from us yet draws what its station allows: all of
            # it is beyond the plan
            lim = 0.0 if st.last_limit_a is None else st.last_limit_a
            evse = st.session.evse
            if max(lines) > lim + self.overdraw_tolerance_a:
                self.reservations[evse] = Reservation(
                    tuple(lines),  # type: ignore[arg-type]
                    None,
                    f"session {sid!r} metered at {max(lines):.1f} A above its limit {lim:.1f} A",
                )
                self._observed.add(evse)
                if st.over_limit_a is None and st.last_limit_a is not None:
                    st.over_limit_a = lim
                out.append(
                    f"session {sid!r} on EVSE {evse!r} draws {max(lines):.1f} A above "
                    f"its limit {lim:.1f} A: budgeted at what it draws"
                )
            elif evse in self._observed:
                self._observed.discard(evse)
                self.reservations.pop(evse, None)
                st.over_limit_a = None
                out.append(
                    f"session {sid!r} on EVSE {evse!r} complies again "
                    f"({max(lines):.1f} A within {lim:.1f} A): reservation lifted"
                )
        return out
