"""Transactions of a :class:`~loadopt.ocpp.adapter.CsmsAdapter`: the lifecycle of a charging
session (1.6 Start/StopTransaction, 2.x TransactionEvent, idempotent and late events, ghosts),
meter values, status notifications, ISO 15118 charging needs and external limits fed to the
controller.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ...errors import InputError
from ...site import Evse
from ..belief import Held, held_from_payload
from ..profiles import clear_payload
from ..v2x import v2x_parameters
from .state import _ENDED_MEMORY, _AdapterState, _number, _time, _Tx, log


class _Transactions(_AdapterState):
    """Transaction lifecycle and what stations report about it."""

    def _evse_for(self, cp: str, connector: Any) -> Evse | None:
        if not self._known_cp(cp):
            self._skip(f"event from unknown charge point {cp!r}")
            return None
        ok = isinstance(connector, int) and not isinstance(connector, bool)
        ev = self._evse.get((cp, connector)) if ok else None
        if ev is None:
            self._skip(f"charge point {cp!r}: unknown connector/EVSE {connector!r}")
        return ev

    def _tx_id(self, given: int | None) -> int:
        """A 1.6 ``transactionId``: ``given``, or the next of ours; ours never reuse one seen."""
        tid = self._next_tx if given is None else given
        self._next_tx = max(self._next_tx, tid + 1)
        return tid

    def _start(
        self,
        cp: str,
        ev: Evse,
        wire_id: int | str,
        at: datetime,
        meter_wh: float | None,
        departure: datetime | None,
        energy_kwh: float | None,
        **session_kw: Any,
    ) -> bool:
        sid = f"{cp}:{wire_id}"
        if sid in self._tx:
            return self._skip(
                f"charge point {cp!r}: transaction {wire_id!r} already started (duplicate event)"
            )
        if (cp, str(wire_id)) in self._ended:
            return self._skip(
                f"charge point {cp!r}: transaction {wire_id!r} already ended; late start ignored"
            )
        if self._future(at):
            return self._skip(
                f"charge point {cp!r} transaction {wire_id!r}: start stamped "
                f"{at.isoformat()}, in the future"
            )
        try:
            sess = self.controller.new_session(
                sid, ev.id, at, departure=departure, energy_kwh=energy_kwh, **session_kw
            )
            self.controller.start_session(sess)
        except (InputError, ValueError, OverflowError, TypeError) as e:
            return self._skip(f"charge point {cp!r} transaction {wire_id!r}: {e}")
        self._tx[sid] = _Tx(
            sid,
            cp,
            ev.connector_id,
            ev.id,
            wire_id,
            meter_start_wh=meter_wh,
            last_meter_at=at,
            last_event_at=at,
            phases_known="phases" in session_kw,
        )
        self._by_wire[(cp, wire_id)] = sid
        self.belief.active_tx[(cp, ev.connector_id)] = wire_id
        return True

    def _end(self, sid: str, at: datetime, why: str) -> None:
        """Every way a session ends goes here (once)."""
        tx = self._tx.pop(sid)
        self._by_wire.pop((tx.charge_point_id, tx.wire_id), None)
        self._ended[(tx.charge_point_id, str(tx.wire_id))] = None
        while len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)
        self._off_since.pop(sid, None)
        self._on_since.pop(sid, None)
        try:
            self.controller.stop_session(sid, at)
        except InputError as e:
            self._skip(str(e))
        cp, conn = tx.charge_point_id, tx.connector
        key = (cp, conn, "tx")
        if why != "ghost":  # the station said so: its TxProfile ends with its transaction
            self._forget_tx(cp, conn)
        # a ghost (no sign of life) may still be running on a silent station with its
        # TxProfile in force: that keeps counting until the station shows the transaction is
        # over (a stop, Available/Finishing, a new transaction on the connector, a reboot)
        for d in (self._intent, self._want, self._targets, self._rejected):
            d.pop(key, None)
        v = self.versions.get(cp)
        if v is not None:
            self._pending.append(
                (cp, "ClearChargingProfile", clear_payload(v, "tx", conn, self.ids))
            )
        log.info("session %s ended (%s)", sid, why)

    def _forget_tx(self, cp: str, conn: int) -> None:
        """The connector's transaction is over on the station: its TxProfile no longer counts."""
        self.belief.active_tx.pop((cp, conn), None)
        slot = self.belief.slot((cp, conn, "tx"))
        slot.base, slot.sent = None, []

    def _stop(self, cp: str, wire_id: int | str, at: datetime) -> bool:
        sid = self._by_wire.get((cp, wire_id))
        if sid is None:
            if (cp, str(wire_id)) in self._ended:
                log.info("charge point %r: stop for transaction %r that already ended", cp, wire_id)
                for (c, conn), held in list(self.belief.active_tx.items()):
                    if c == cp and str(held) == str(wire_id):  # a ghost's late stop
                        self._forget_tx(cp, conn)
                return True
            # a stop before its start: remember it, so a late start does not open a ghost
            self._ended[(cp, str(wire_id))] = None
            # or the stop of a transaction from before a CSMS restart: a TxProfile of it that
            # the station reported holding is over with it
            for (c, conn), _ in self._evse.items():
                if c == cp and (cp, conn) not in self.belief.active_tx:
                    slot = self.belief.slots.get((cp, conn, "tx"))
                    if slot is not None and any(
                        isinstance(h, Held) and str(h.transaction_id) == str(wire_id)
                        for h in slot.candidates()
                    ):
                        self._forget_tx(cp, conn)
            return self._skip(
                f"charge point {cp!r}: stop for transaction {wire_id!r} that was "
                "never started (a later start for it is ignored)"
            )
        self._end(sid, at, "stopped")
        return True

    def on_start_transaction(
        self,
        cp: str,
        payload: Any,
        *,
        transaction_id: Any = None,
        departure: datetime | None = None,
        energy_kwh: float | None = None,
    ) -> int:
        """1.6 ``StartTransaction.req``.

        The id is returned even when the event is skipped (the station needs an answer). A
        retried request (same connector, idTag, timestamp and meterStart, after a lost ``.conf``)
        gets the same id and opens no second session.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The request payload.
        transaction_id
            The CSMS's own id for it (default: the adapter numbers them).
        departure, energy_kwh
            What the CSMS knows of the vehicle (aware datetime; kWh); default the controller's.

        Returns
        -------
        int
            The ``transactionId`` for the ``.conf``.
        """
        if transaction_id is not None:
            try:
                transaction_id = int(transaction_id)
            except (TypeError, ValueError):
                self._skip(
                    f"charge point {cp!r}: transaction_id {transaction_id!r} is not an "
                    "integer; numbering it"
                )
                transaction_id = None
        if not isinstance(payload, dict):
            self._skip(f"charge point {cp!r}: StartTransaction payload is not an object")
            return self._tx_id(transaction_id)
        rkey = (
            cp,
            payload.get("connectorId"),
            payload.get("idTag"),
            payload.get("timestamp"),
            str(payload.get("meterStart")),
        )
        if rkey in self._starts16 and transaction_id is None:
            return self._starts16[rkey]
        transaction_id = self._tx_id(transaction_id)
        self._starts16[rkey] = transaction_id
        if len(self._starts16) > _ENDED_MEMORY:
            self._starts16.pop(next(iter(self._starts16)))
        ev = self._evse_for(cp, payload.get("connectorId"))
        at = _time(payload.get("timestamp"))
        if ev is not None and at is None:
            self._skip(f"charge point {cp!r}: StartTransaction without a valid timestamp")
        elif ev is not None and at is not None:
            meter = _number(payload.get("meterStart"))
            if self._start(cp, ev, transaction_id, at, meter, departure, energy_kwh):
                # a new transaction with an id given just now: no TxProfile from before it
                # (a restart) can be in force on the connector
                key = (cp, ev.connector_id, "tx")
                if self.belief.unsure(key):
                    self.belief.slot(key).base = None
        return transaction_id

    def on_stop_transaction(self, cp: str, payload: Any) -> bool:
        """1.6 ``StopTransaction.req``: the session ends.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The message payload (a dict, as received).

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
        if not isinstance(payload, dict):
            return self._skip(f"charge point {cp!r}: StopTransaction payload is not an object")
        at = _time(payload.get("timestamp")) or self._clock()
        tx = payload.get("transactionId")
        if not isinstance(tx, int) or isinstance(tx, bool):
            return self._skip(
                f"charge point {cp!r}: StopTransaction without an integer transactionId ({tx!r})"
            )
        return self._stop(cp, tx, at)

    def on_transaction_event(
        self,
        cp: str,
        payload: Any,
        *,
        departure: datetime | None = None,
        energy_kwh: float | None = None,
    ) -> bool:
        """2.x ``TransactionEventRequest`` (Started / Updated / Ended).

        A ``Started`` repeated for an open transaction is accepted once; any event for a
        transaction that already ended (a late ``Updated`` after ``Ended``, an ``Ended`` arriving
        before its ``Started``) never re-opens it.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The message payload (a dict, as received).
        departure, energy_kwh
            What the CSMS knows of the vehicle (aware datetime; kWh), for a ``Started``.

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
        if not isinstance(payload, dict):
            return self._skip(f"charge point {cp!r}: TransactionEvent payload is not an object")
        info = payload.get("transactionInfo")
        if not isinstance(info, dict):
            return self._skip(
                f"charge point {cp!r}: TransactionEvent transactionInfo is not an "
                f"object ({type(info).__name__})"
            )
        wire = info.get("transactionId")
        at = _time(payload.get("timestamp"))
        kind = payload.get("eventType")
        if not isinstance(wire, str) or not wire or at is None:
            return self._skip(
                f"charge point {cp!r}: TransactionEvent without transactionId or timestamp"
            )
        if not self._known_cp(cp):
            return self._skip(f"event from unknown charge point {cp!r}")
        sid = self._by_wire.get((cp, wire))
        if sid is None and (cp, wire) in self._ended:
            if kind == "Ended":
                return True
            return self._skip(
                f"charge point {cp!r}: {kind} for transaction {wire!r} that "
                "already ended (late event ignored)"
            )
        seq = payload.get("seqNo")
        if sid is not None and isinstance(seq, int):
            tx = self._tx[sid]
            if seq <= tx.last_seq:
                if kind == "Started":
                    return True  # a repeated Started (lost answer): already open
                return self._skip(
                    f"charge point {cp!r} transaction {wire!r}: seqNo {seq} "
                    f"already seen (last {tx.last_seq}); duplicate or out of order"
                )
        if kind == "Ended":
            if sid is None:
                return self._stop(cp, wire, at)
            self._end(sid, at, "Ended")
            return True
        if sid is None:
            evse_obj = payload.get("evse")
            if evse_obj is None:
                return self._skip(
                    f"charge point {cp!r}: {kind} for unknown transaction {wire!r} without an evse"
                )
            if not isinstance(evse_obj, dict):
                return self._skip(
                    f"charge point {cp!r}: TransactionEvent evse is not an object "
                    f"({type(evse_obj).__name__})"
                )
            ev = self._evse_for(cp, evse_obj.get("id"))
            if ev is None:
                return False
            kw: dict[str, Any] = {}
            nph = payload.get("numberOfPhasesUsed")
            if nph in (1, 2, 3) and not isinstance(nph, bool):
                # as reported: a 2-phase car modelled on 3 phases would be sent a W limit of
                # A x V x 3 and draw 1.5 x A on each of its two lines
                kw["phases"] = nph
            cable = _number(payload.get("cableMaxCurrent"))
            if cable is not None and cable > 0:
                kw["max_current"] = cable
            if not self._start(cp, ev, wire, at, None, departure, energy_kwh, **kw):
                return False
            sid = self._by_wire[(cp, wire)]
        else:
            self._phases_used(sid, payload.get("numberOfPhasesUsed"))
        tx = self._tx[sid]
        if isinstance(seq, int):
            tx.last_seq = seq
        tx.last_event_at = at
        mvs = payload.get("meterValue") or []
        if isinstance(mvs, list):
            for mv in mvs:
                self._meter(tx, mv)
        return True

    def _phases_used(self, sid: str, nph: Any) -> None:
        """A later ``TransactionEvent`` reports the car's phase count (2.x
        ``numberOfPhasesUsed``): the session is re-planned on that many phases and a ``W``
        TxProfile may be spread over them from now on. Where it *drops* below a count already
        reported (the car switched from three phases to one), a ``W`` TxProfile the station
        holds lets the car draw its whole power on fewer lines than it was written for: that
        connector's TxProfile slot is unknown (counted at the EVSE's hardware maximum) until a
        profile written for the new count is accepted."""
        if nph not in (1, 2, 3) or isinstance(nph, bool):
            return
        tx = self._tx[sid]
        sess = self.controller.sessions.get(sid)
        if sess is None:  # stopped on the controller behind the adapter's back
            self._skip(
                f"charge point {tx.charge_point_id!r} transaction {tx.wire_id!r}: "
                f"numberOfPhasesUsed for session {sid!r}, which the controller does not have"
            )
            return
        before = sess.phases
        if tx.phases_known and nph == before:
            return
        try:
            self.controller.update_session(sid, phases=nph)
        except (InputError, ValueError) as e:
            self._skip(f"charge point {tx.charge_point_id!r} transaction {tx.wire_id!r}: {e}")
            return
        if tx.phases_known and nph < before:
            key = (tx.charge_point_id, tx.connector, "tx")
            self.belief.set_unknown(key)
            # written for the old count: the planned and queued profile is not sent (the next
            # step writes one for the new count), one in flight is read as if the car took all
            # of its W on one line should it be accepted
            self._want.pop(key, None)
            self._targets.pop(key, None)
            v = self.versions.get(tx.charge_point_id, "2.0.1")
            volt = self._evse[(tx.charge_point_id, tx.connector)].voltage_v
            for m in self.belief.slot(key).sent:
                if m.held is not None:
                    m.held = held_from_payload(m.payload, v, volt, car_phases_known=False)
        tx.phases_known = True

    def on_meter_values(self, cp: str, payload: Any) -> bool:
        """1.6 / 2.x ``MeterValues``: cumulative energy (Wh, ``Energy.Active.Import.Register``) and
        per-phase current (A, ``Current.Import``) of a transaction; on a 2.1 station also the
        energy given back (``Energy.Active.Export.Register``, Wh or kWh like the import register),
        relative to its first reading in the transaction, as ``Controller.meter(exported_kwh=)``.

        A value stamped in the future (beyond ``future_skew_s``) or absurd is quarantined: it is
        skipped and does not move the 'last reading' mark, so later correct readings are kept.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The message payload (a dict, as received).

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
        if not isinstance(payload, dict):
            return self._skip(
                f"charge point {cp!r}: MeterValues payload is not an object "
                f"({type(payload).__name__})"
            )
        conn = payload.get("connectorId", payload.get("evseId"))
        tx = None
        wire = payload.get("transactionId")
        if wire is not None:
            try:
                sid = self._by_wire.get((cp, wire))
            except TypeError:
                sid = None
            tx = self._tx.get(sid) if sid else None
        if tx is None:  # 2.x carries no transactionId: find the connector's transaction
            tx = next(iter(self._txs_on(cp, conn)), None)
        if tx is None and isinstance(wire, int) and not isinstance(wire, bool) and wire > 0:
            tx = self._adopt16(cp, conn, wire, payload.get("meterValue"))
        if tx is None:
            if self._evse_for(cp, conn) is None:
                return False
            return self._skip(
                f"charge point {cp!r} connector {conn!r}: meter values without an "
                "active transaction"
            )
        mvs = payload.get("meterValue")
        if not isinstance(mvs, list):
            return self._skip(
                f"session {tx.session_id!r}: meterValue is not a list ({type(mvs).__name__})"
            )
        ok = True
        for mv in mvs:
            ok &= self._meter(tx, mv)
        return ok

    def _adopt16(self, cp: str, conn: Any, wire: int, mvs: Any) -> _Tx | None:
        """1.6 ``MeterValues`` naming a transaction this adapter never saw start (it began
        before a CSMS restart): the transaction is identified and opened as a session from its
        first reading on (arrival = that reading's time, energy counted from it), so the plan
        can send it a TxProfile. Not for a connector with a transaction already known, nor an
        ended one."""
        ev = self._evse.get((cp, conn)) if isinstance(conn, int) else None
        if ev is None or (cp, str(wire)) in self._ended or (cp, conn) in self.belief.active_tx:
            return None
        mvs = mvs if isinstance(mvs, list) else []
        stamps = [_time(mv.get("timestamp")) for mv in mvs if isinstance(mv, dict)]
        at = min((t for t in stamps if t is not None), default=None)
        if at is None or not self._start(cp, ev, wire, at, None, None, None):
            return None
        self._tx_id(wire)  # our numbering never reuses it
        log.info("charge point %r: transaction %r adopted from its meter values", cp, wire)
        return self._tx[f"{cp}:{wire}"]

    def _meter(self, tx: _Tx, mv: Any) -> bool:
        if not isinstance(mv, dict):
            return self._skip(f"session {tx.session_id!r}: meter value is not an object")
        at = _time(mv.get("timestamp"))
        if at is None:
            return self._skip(f"session {tx.session_id!r}: meter value without timestamp")
        if self._future(at):
            return self._skip(
                f"session {tx.session_id!r}: meter value stamped {at.isoformat()}"
                " is in the future; quarantined"
            )
        if tx.last_meter_at is not None and at < tx.last_meter_at:
            return self._skip(
                f"session {tx.session_id!r}: meter value at {at.isoformat()} is "
                f"older than the last one ({tx.last_meter_at.isoformat()})"
            )
        svs = mv.get("sampledValue")
        if not isinstance(svs, list):
            return self._skip(f"session {tx.session_id!r}: sampledValue is not a list")
        energy_wh, export_wh, amps = None, None, {}
        for sv in svs:
            if not isinstance(sv, dict):
                return self._skip(f"session {tx.session_id!r}: sampled value is not an object")
            meas = sv.get("measurand", "Energy.Active.Import.Register")
            val = _number(sv.get("value"))
            if val is None or val < 0:
                return self._skip(
                    f"session {tx.session_id!r}: {meas} value "
                    f"{sv.get('value')!r} is not a finite number >= 0"
                )
            uom = sv.get("unitOfMeasure")
            uom = uom if isinstance(uom, dict) else {}
            unit = sv.get("unit") or uom.get("unit")
            mult = uom.get("multiplier", 0) or 0
            if not isinstance(mult, int) or isinstance(mult, bool) or not -9 <= mult <= 9:
                return self._skip(
                    f"session {tx.session_id!r}: unitOfMeasure multiplier "
                    f"{mult!r} is not an integer in -9..9"
                )
            val *= 10.0**mult
            if meas == "Energy.Active.Import.Register":
                energy_wh = val * (1000.0 if unit == "kWh" else 1.0)
            elif meas == "Energy.Active.Export.Register":
                export_wh = val * (1000.0 if unit == "kWh" else 1.0)
            elif meas == "Current.Import":
                ph = str(sv.get("phase") or "L1")[:2]
                amps[ph] = val
        kwh = None
        if energy_wh is not None:
            if tx.meter_start_wh is None:
                tx.meter_start_wh = energy_wh
            kwh = max(energy_wh - tx.meter_start_wh, 0.0) / 1000.0
        out_kwh = None
        if export_wh is not None and self.versions.get(tx.charge_point_id) == "2.1":
            # V2G (only 2.1 discharges): grid kWh given back since the transaction's start
            if tx.export_start_wh is None:
                tx.export_start_wh = export_wh
            out_kwh = max(export_wh - tx.export_start_wh, 0.0) / 1000.0
        cur: float | tuple[float, float, float] | None = None
        if amps:
            cur = tuple(amps.get(p, 0.0) for p in ("L1", "L2", "L3"))  # type: ignore[assignment]
        if kwh is None and cur is None and out_kwh is None:
            return True
        try:
            self.controller.meter(
                tx.session_id, at, energy_kwh=kwh, current_a=cur, exported_kwh=out_kwh
            )
        except (InputError, ValueError, TypeError, OverflowError) as e:
            return self._skip(str(e))
        tx.last_meter_at = at
        tx.last_event_at = at
        return True

    def on_status_notification(self, cp: str, payload: Any) -> bool:
        """1.6 / 2.x ``StatusNotification``: recorded (connector 0 = the station).

        ``Available`` (and 1.6 ``Finishing``) on a connector with an open session ends it: the
        car is gone or the transaction is over even if the stop was lost.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The message payload (a dict, as received).

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
        if not isinstance(payload, dict):
            return self._skip(f"charge point {cp!r}: StatusNotification payload is not an object")
        conn = payload.get("connectorId") if "evseId" not in payload else payload.get("evseId")
        status = payload.get("status", payload.get("connectorStatus"))
        if not self._known_cp(cp):
            return self._skip(f"status from unknown charge point {cp!r}")
        if not isinstance(conn, int) or (conn != 0 and (cp, conn) not in self._evse):
            return self._skip(f"charge point {cp!r}: status for unknown connector {conn!r}")
        self.status[(cp, conn)] = str(status)
        if status in ("Available", "Finishing"):
            at = _time(payload.get("timestamp")) or self._clock()
            for t in self._txs_on(cp, conn):
                self._end(t.session_id, at, f"connector {status}")
            if conn != 0:  # also a ghost's transaction, ended here without the station
                self._forget_tx(cp, conn)
        return True

    def on_notify_ev_charging_needs(self, cp: str, payload: Any) -> bool:
        """2.x ``NotifyEVChargingNeeds`` (ISO 15118): departure time, energy (Wh) and the car's
        current range (A) feed the session on that EVSE (``Controller.update_session``).

        OCPP 2.1 ``v2xChargingParameters`` on a ``bidirectional`` EVSE also give the session its
        V2X parameters (:func:`loadopt.ocpp.v2x.v2x_parameters`: V2X energy floor and ceiling,
        maximum discharge current; ``evTargetEnergyRequest`` is the energy), so the next plan may
        discharge it. On a 1.6 / 2.0.1 station or an EVSE that is not bidirectional they are
        ignored with the reason in :attr:`problems` (the rest still applies: the session charges
        only). Invalid ones (no V2X energies, floor above ceiling, target above the ceiling) skip
        the whole message: the session is left unchanged.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The message payload (a dict, as received).

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
        if not isinstance(payload, dict) or not isinstance(payload.get("chargingNeeds"), dict):
            return self._skip(f"charge point {cp!r}: NotifyEVChargingNeeds without chargingNeeds")
        evse = payload.get("evseId")
        tx = next(iter(self._txs_on(cp, evse)), None)
        if tx is None:
            return self._skip(
                f"charge point {cp!r}: NotifyEVChargingNeeds for EVSE {evse!r} "
                "without an open transaction"
            )
        needs = payload["chargingNeeds"]
        upd: dict[str, Any] = {}
        dep = _time(needs.get("departureTime"))
        if dep is not None:
            upd["departure"] = dep
        for key in ("acChargingParameters", "dcChargingParameters", "v2xChargingParameters"):
            par = needs.get(key)
            if not isinstance(par, dict):
                continue
            e = _number(par.get("energyAmount", par.get("evTargetEnergyRequest")))
            if e is not None and e >= 0:  # the demand from now on (ISO 15118), not plug-in
                upd["remaining_kwh"] = e / 1000.0
            hi = _number(par.get("evMaxCurrent"))
            if key == "acChargingParameters" and hi is not None and hi > 0:
                upd["max_current"] = hi
            lo_ = _number(par.get("evMinCurrent"))
            if key == "acChargingParameters" and lo_ is not None and lo_ >= 0:
                upd["min_current"] = lo_
        par = needs.get("v2xChargingParameters")
        if isinstance(par, dict):
            why = self._v2x_refused(cp, tx)
            if why is not None:  # the rest of the needs still apply; this session charges only
                log.info("session %r: V2X parameters ignored: %s", tx.session_id, why)
                self.problems.append(f"session {tx.session_id!r}: V2X parameters ignored: {why}")
            else:
                ev = self._evse[(cp, tx.connector)]  # (checked by _v2x_refused)
                sess = getattr(self.controller, "sessions", {}).get(tx.session_id)
                n_ph = min(ev.phases, sess.phases) if sess is not None else ev.phases
                try:
                    upd["v2x"], _ = v2x_parameters(par, voltage_v=ev.voltage_v, phases=n_ph)
                except (InputError, ValueError, TypeError) as e:
                    return self._skip(f"session {tx.session_id!r}: NotifyEVChargingNeeds: {e}")
        if not upd:
            return True
        fn = getattr(self.controller, "update_session", None)
        if fn is None:
            return self._skip("NotifyEVChargingNeeds: the controller cannot update sessions")
        try:
            fn(tx.session_id, **upd)
        except (InputError, ValueError, TypeError) as e:
            return self._skip(f"session {tx.session_id!r}: NotifyEVChargingNeeds: {e}")
        return True

    def _v2x_refused(self, cp: str, tx: _Tx) -> str | None:
        """Why the V2X parameters of ``tx`` must not make it bidirectional (``None``: they may):
        only an OCPP 2.1 station can discharge, and only on an EVSE declared ``bidirectional``."""
        v = self.versions.get(cp)
        if v != "2.1":
            return f"charge point {cp!r} speaks OCPP {v}, which cannot discharge (2.1 only)"
        ev = self._evse.get((cp, tx.connector))
        if ev is None or not ev.bidirectional:
            return f"EVSE {tx.evse_id!r} is not bidirectional (Evse.bidirectional=False)"
        return None

    def on_notify_charging_limit(self, cp: str, payload: Any) -> bool:
        """2.x ``NotifyChargingLimit`` (K12): an external limit on the station becomes caps on its
        node from the next step on (:mod:`loadopt.grid.ocpp_constraints`); they replace the
        station's previous external limits.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The message payload (a dict, as received).

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
        return self._external(cp, payload, "notify_charging_limit")

    def on_cleared_charging_limit(self, cp: str, payload: Any) -> bool:
        """2.x ``ClearedChargingLimit``: the station's external limits are gone.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        payload
            The message payload (a dict, as received).

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
        return self._external(cp, None, "cleared")

    def _external(self, cp: str, payload: Any, how: str) -> bool:
        from ...grid import ocpp_constraints as oc

        if not self._known_cp(cp):
            return self._skip(f"external limit from unknown charge point {cp!r}")
        try:
            sigs = (
                ()
                if how == "cleared"
                else oc.notify_charging_limit(self.site, cp, payload, received_at=self._clock())
            )
            ctl = self.controller
            ctl.set_signals(ctl.signals.with_grid_signals(oc.source_of(cp), sigs))
        except (InputError, ValueError, TypeError, AttributeError) as e:
            return self._skip(f"charge point {cp!r}: external charging limit: {e}")
        return True

    def _end_ghosts(self, now: datetime) -> None:
        """End sessions far past their departure with no sign of life for as long."""
        lim = timedelta(hours=self.max_overstay_h)
        for sid, tx in list(self._tx.items()):
            sess = self.controller.sessions.get(sid)
            if sess is None:
                continue
            last = tx.last_event_at or sess.arrival
            if now - sess.departure > lim and now - last > lim:
                self._skip(
                    f"session {sid!r}: {self.max_overstay_h:g} h past its departure "
                    "without an event; ended as a ghost"
                )
                self._end(sid, now, "ghost")
