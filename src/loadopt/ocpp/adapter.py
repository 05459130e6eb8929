"""A thin CSMS adapter: OCPP events in (as payload dicts), charging profiles out.

It has no network code. The CSMS calls ``on_*`` with what it receives from a station (1.6
``StartTransaction``/``StopTransaction``/``MeterValues``/``StatusNotification``, 2.x
``TransactionEvent``/``MeterValues``/``StatusNotification``, capabilities from
``GetConfiguration``/``GetVariables``), and every control interval ``step(now)`` returns
``(charge point id, action, payload)`` to send: ``SetChargingProfile`` for profiles whose limits
changed by more than ``threshold_a``, and ``ClearChargingProfile`` for ended transactions.

Change detection (what "changed" means): a new profile is sent when, at any instant from its
start, a limit of it is **lower** than the one in force on the station (any decrease, however
small: the site may need it) or higher by more than ``threshold_a``, or when its phase count,
unit, transaction or ``validTo`` differ. A profile the station rejected is sent again next step.

Bad events (unknown station or connector, a duplicate or out-of-order event, a NaN or negative
meter value, a stop for a transaction never started) never raise into the control loop: they
are logged (``logging`` at WARNING, and appended to :attr:`CsmsAdapter.problems`) and skipped;
the ``on_*`` method returns ``False``. With ``strict=True`` they raise
:class:`~loadopt.errors.InputError` instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..controller import Controller
from ..errors import InputError
from ..site import Evse
from .ids import ProfileIds, Purpose, Version, check_version, wire_purpose
from .profiles import Profile, StationCaps, build_profiles, clear_payload, to_payload

log = logging.getLogger("loadopt.ocpp")

Message = tuple[str, str, dict[str, Any]]


@dataclass
class _Tx:
    session_id: str
    charge_point_id: str
    connector: int
    evse_id: str
    wire_id: int | str  #: 1.6 int / 2.x string
    meter_start_wh: float | None = None
    last_meter_at: datetime | None = None
    last_seq: int = -1


class CsmsAdapter:
    """Keeps a site's OCPP state around a :class:`~loadopt.controller.Controller`.

    ``threshold_a``: increases smaller than this (A) are not sent. ``ids``: profile ids and stack
    levels. ``station_max`` / ``tx_default``: emit station caps and newcomer defaults.
    """

    def __init__(self, controller: Controller, *, threshold_a: float = 0.5,
                 ids: ProfileIds | None = None, station_max: bool = True,
                 tx_default: bool = True, strict: bool = False) -> None:
        self.controller = controller
        self.site = controller.site
        self.threshold_a = float(threshold_a)
        self.ids = ids or ProfileIds()
        self.station_max = station_max
        self.tx_default = tx_default
        self.strict = strict
        self.versions: dict[str, Version] = {}  #: connected stations → OCPP version
        self.caps: dict[str, StationCaps] = {}  #: EVSE id → reported capabilities
        self.problems: list[str] = []  #: every skipped event, as logged
        self.status: dict[tuple[str, int], str] = {}  #: (cp, connector) → last status
        self.last_schedule = None
        self._evse: dict[tuple[str, int], Evse] = {
            (e.charge_point_id, e.connector_id): e for e in self.site.evses}
        self._cps = {e.charge_point_id for e in self.site.evses}
        self._tx: dict[str, _Tx] = {}  #: session id → transaction
        self._by_wire: dict[tuple[str, int | str], str] = {}  #: (cp, wire tx id) → session id
        self._next_tx = 1
        self._sent: dict[tuple[str, int, str], Profile] = {}
        self._pending: list[Message] = []

    # ------------------------------------------------------------------ faults
    def _skip(self, msg: str) -> bool:
        if self.strict:
            raise InputError(msg)
        log.warning("skipped: %s", msg)
        self.problems.append(msg)
        return False

    def _known_cp(self, cp: str) -> bool:
        return cp in self._cps

    # ------------------------------------------------------------------ stations
    def connect(self, cp: str, version: str = "1.6") -> bool:
        """A station connected (or rebooted: BootNotification). Everything is re-sent to it."""
        if not self._known_cp(cp):
            return self._skip(f"unknown charge point {cp!r} (not on site {self.site.id!r})")
        self.versions[cp] = check_version(version)
        for key in [k for k in self._sent if k[0] == cp]:
            del self._sent[key]
        return True

    def disconnect(self, cp: str) -> None:
        self.versions.pop(cp, None)
        for key in [k for k in self._sent if k[0] == cp]:
            del self._sent[key]
        self._pending = [m for m in self._pending if m[0] != cp]

    def set_capabilities(self, cp: str, connector: int | None = None, *,
                         rate_unit: str | None = None, max_periods: int | None = None,
                         phase_switching: bool | None = None) -> bool:
        """Record what station ``cp`` (all connectors, or one) supports."""
        if not self._known_cp(cp):
            return self._skip(f"capabilities for unknown charge point {cp!r}")
        if rate_unit is not None and rate_unit not in ("A", "W"):
            return self._skip(f"charge point {cp!r}: unknown rate unit {rate_unit!r}")
        if max_periods is not None and max_periods < 1:
            return self._skip(f"charge point {cp!r}: max periods {max_periods} < 1")
        for (c, k), ev in self._evse.items():
            if c == cp and (connector in (None, 0) or k == connector):
                old = self.caps.get(ev.id, StationCaps())
                self.caps[ev.id] = StationCaps(
                    rate_unit=rate_unit or old.rate_unit,  # type: ignore[arg-type]
                    max_periods=max_periods or old.max_periods,
                    phase_switching=(old.phase_switching if phase_switching is None
                                     else phase_switching))
        return True

    def on_get_configuration(self, cp: str, payload: dict[str, Any]) -> bool:
        """1.6 ``GetConfiguration.conf``: ``ChargingScheduleAllowedChargingRateUnit``
        (``Current``/``Power``), ``ChargingScheduleMaxPeriods``,
        ``ConnectorSwitch3to1PhaseSupported``."""
        kv = {k.get("key"): k.get("value") for k in payload.get("configurationKey") or []}
        unit = None
        allowed = str(kv.get("ChargingScheduleAllowedChargingRateUnit") or "")
        if allowed:
            units = {u.strip() for u in allowed.split(",")}
            unit = "A" if "Current" in units else ("W" if "Power" in units else None)
        return self._caps_from(cp, None, unit, kv.get("ChargingScheduleMaxPeriods"),
                               kv.get("ConnectorSwitch3to1PhaseSupported"))

    def on_get_variables(self, cp: str, payload: dict[str, Any]) -> bool:
        """2.x ``GetVariablesResponse``: ``SmartChargingCtrlr.RateUnit`` (``A``/``W`` list),
        ``SmartChargingCtrlr.PeriodsPerSchedule``, ``ACPhaseSwitchingSupported`` (per EVSE)."""
        ok = True
        for r in payload.get("getVariableResult") or []:
            if r.get("attributeStatus") != "Accepted":
                continue
            name = (r.get("variable") or {}).get("name")
            val = r.get("attributeValue")
            evse = ((r.get("component") or {}).get("evse") or {}).get("id")
            if name == "RateUnit" and val:
                units = {u.strip() for u in str(val).split(",")}
                ok &= self._caps_from(cp, evse, "A" if "A" in units else "W", None, None)
            elif name == "PeriodsPerSchedule":
                ok &= self._caps_from(cp, evse, None, val, None)
            elif name in ("ACPhaseSwitchingSupported", "PhaseSwitchingSupported"):
                ok &= self._caps_from(cp, evse, None, None, val)
        return ok

    def _caps_from(self, cp: str, connector: int | None, unit: str | None, periods: Any,
                   switch: Any) -> bool:
        mp = None
        if periods not in (None, ""):
            try:
                mp = int(str(periods))
            except ValueError:
                return self._skip(f"charge point {cp!r}: bad max periods {periods!r}")
        sw = None if switch in (None, "") else str(switch).lower() == "true"
        return self.set_capabilities(cp, connector, rate_unit=unit, max_periods=mp,
                                     phase_switching=sw)

    # ------------------------------------------------------------------ transactions
    def _evse_for(self, cp: str, connector: Any) -> Evse | None:
        if not self._known_cp(cp):
            self._skip(f"event from unknown charge point {cp!r}")
            return None
        ev = self._evse.get((cp, connector)) if isinstance(connector, int) else None
        if ev is None:
            self._skip(f"charge point {cp!r}: unknown connector/EVSE {connector!r}")
        return ev

    def _start(self, cp: str, ev: Evse, wire_id: int | str, at: datetime, meter_wh: float | None,
               departure: datetime | None, energy_kwh: float | None, **session_kw: Any) -> bool:
        sid = f"{cp}:{wire_id}"
        if sid in self._tx:
            return self._skip(f"charge point {cp!r}: transaction {wire_id!r} already started "
                              "(duplicate event)")
        try:
            sess = self.controller.new_session(sid, ev.id, at, departure=departure,
                                               energy_kwh=energy_kwh, **session_kw)
            self.controller.start_session(sess)
        except (InputError, ValueError) as e:  # pydantic ValidationError is a ValueError
            return self._skip(f"charge point {cp!r} transaction {wire_id!r}: {e}")
        self._tx[sid] = _Tx(sid, cp, ev.connector_id, ev.id, wire_id,
                            meter_start_wh=meter_wh, last_meter_at=at)
        self._by_wire[(cp, wire_id)] = sid
        return True

    def _stop(self, cp: str, wire_id: int | str, at: datetime) -> bool:
        sid = self._by_wire.get((cp, wire_id))
        if sid is None:
            return self._skip(f"charge point {cp!r}: stop for transaction {wire_id!r} that was "
                              "never started (or already stopped)")
        tx = self._tx.pop(sid)
        del self._by_wire[(cp, wire_id)]
        try:
            self.controller.stop_session(sid, at)
        except InputError as e:
            self._skip(str(e))
        key = (cp, tx.connector, "tx")
        self._sent.pop(key, None)
        v = self.versions.get(cp)
        if v is not None:
            self._pending.append((cp, "ClearChargingProfile",
                                  clear_payload(v, "tx", tx.connector, self.ids)))
        return True

    def on_start_transaction(self, cp: str, payload: dict[str, Any], *,
                             transaction_id: int | None = None,
                             departure: datetime | None = None,
                             energy_kwh: float | None = None) -> int:
        """1.6 ``StartTransaction.req``. Returns the integer ``transactionId`` for the ``.conf``.

        The CSMS may pass its own ``transaction_id``; otherwise the adapter numbers them. The id
        is returned even when the event is skipped (the station needs an answer).
        """
        if transaction_id is None:
            transaction_id = self._next_tx
        self._next_tx = max(self._next_tx, int(transaction_id) + 1)
        ev = self._evse_for(cp, payload.get("connectorId"))
        at = _time(payload.get("timestamp"))
        if ev is not None and at is None:
            self._skip(f"charge point {cp!r}: StartTransaction without a valid timestamp")
        elif ev is not None and at is not None:
            meter = _number(payload.get("meterStart"))
            self._start(cp, ev, int(transaction_id), at, meter, departure, energy_kwh)
        return int(transaction_id)

    def on_stop_transaction(self, cp: str, payload: dict[str, Any]) -> bool:
        """1.6 ``StopTransaction.req``."""
        at = _time(payload.get("timestamp")) or datetime.now(UTC)
        tx = payload.get("transactionId")
        if not isinstance(tx, int):
            return self._skip(f"charge point {cp!r}: StopTransaction without an integer "
                              f"transactionId ({tx!r})")
        return self._stop(cp, tx, at)

    def on_transaction_event(self, cp: str, payload: dict[str, Any], *,
                             departure: datetime | None = None,
                             energy_kwh: float | None = None) -> bool:
        """2.x ``TransactionEventRequest`` (Started / Updated / Ended)."""
        info = payload.get("transactionInfo") or {}
        wire = info.get("transactionId")
        at = _time(payload.get("timestamp"))
        kind = payload.get("eventType")
        if not isinstance(wire, str) or not wire or at is None:
            return self._skip(f"charge point {cp!r}: TransactionEvent without transactionId or "
                              "timestamp")
        sid = self._by_wire.get((cp, wire))
        seq = payload.get("seqNo")
        if sid is not None and isinstance(seq, int):
            tx = self._tx[sid]
            if seq <= tx.last_seq:
                return self._skip(f"charge point {cp!r} transaction {wire!r}: seqNo {seq} "
                                  f"already seen (last {tx.last_seq}); duplicate or out of order")
        if kind == "Ended":
            ok = self._stop(cp, wire, at)
            return ok
        if sid is None:
            evse = (payload.get("evse") or {}).get("id")
            if evse is None:
                return self._skip(f"charge point {cp!r}: {kind} for unknown transaction {wire!r} "
                                  "without an evse")
            ev = self._evse_for(cp, evse)
            if ev is None:
                return False
            kw: dict[str, Any] = {}
            nph = payload.get("numberOfPhasesUsed")
            if nph in (1, 2, 3):
                kw["phases"] = nph
            cable = _number(payload.get("cableMaxCurrent"))
            if cable is not None and cable > 0:
                kw["max_current"] = cable
            if not self._start(cp, ev, wire, at, None, departure, energy_kwh, **kw):
                return False
            sid = self._by_wire[(cp, wire)]
        tx = self._tx[sid]
        if isinstance(seq, int):
            tx.last_seq = seq
        for mv in payload.get("meterValue") or []:
            self._meter(tx, mv)
        return True

    def on_meter_values(self, cp: str, payload: dict[str, Any]) -> bool:
        """1.6 / 2.x ``MeterValues``: cumulative energy and per-phase current of a transaction."""
        conn = payload.get("connectorId", payload.get("evseId"))
        tx = None
        wire = payload.get("transactionId")
        if wire is not None:
            sid = self._by_wire.get((cp, wire))
            tx = self._tx.get(sid) if sid else None
        if tx is None:  # 2.x carries no transactionId: find the connector's transaction
            tx = next((t for t in self._tx.values()
                       if t.charge_point_id == cp and t.connector == conn), None)
        if tx is None:
            if self._evse_for(cp, conn) is None:
                return False
            return self._skip(f"charge point {cp!r} connector {conn!r}: meter values without an "
                              "active transaction")
        ok = True
        for mv in payload.get("meterValue") or []:
            ok &= self._meter(tx, mv)
        return ok

    def _meter(self, tx: _Tx, mv: dict[str, Any]) -> bool:
        at = _time(mv.get("timestamp"))
        if at is None:
            return self._skip(f"session {tx.session_id!r}: meter value without timestamp")
        if tx.last_meter_at is not None and at < tx.last_meter_at:
            return self._skip(f"session {tx.session_id!r}: meter value at {at.isoformat()} is "
                              f"older than the last one ({tx.last_meter_at.isoformat()})")
        energy_wh, amps = None, {}
        for sv in mv.get("sampledValue") or []:
            meas = sv.get("measurand", "Energy.Active.Import.Register")
            val = _number(sv.get("value"))
            if val is None or val < 0:
                return self._skip(f"session {tx.session_id!r}: {meas} value "
                                  f"{sv.get('value')!r} is not a finite number >= 0")
            unit = sv.get("unit") or (sv.get("unitOfMeasure") or {}).get("unit")
            mult = (sv.get("unitOfMeasure") or {}).get("multiplier", 0) or 0
            val *= 10.0 ** int(mult)
            if meas == "Energy.Active.Import.Register":
                energy_wh = val * (1000.0 if unit == "kWh" else 1.0)
            elif meas == "Current.Import":
                ph = str(sv.get("phase") or "L1")[:2]
                amps[ph] = val
        kwh = None
        if energy_wh is not None:
            if tx.meter_start_wh is None:
                tx.meter_start_wh = energy_wh
            kwh = max(energy_wh - tx.meter_start_wh, 0.0) / 1000.0
        cur: float | tuple[float, float, float] | None = None
        if amps:
            cur = tuple(amps.get(p, 0.0) for p in ("L1", "L2", "L3"))  # type: ignore[assignment]
        if kwh is None and cur is None:
            return True
        try:
            self.controller.meter(tx.session_id, at, energy_kwh=kwh, current_a=cur)
        except InputError as e:
            return self._skip(str(e))
        tx.last_meter_at = at
        return True

    def on_status_notification(self, cp: str, payload: dict[str, Any]) -> bool:
        """1.6 / 2.x ``StatusNotification``: recorded (connector 0 = the station)."""
        conn = payload.get("connectorId") if "evseId" not in payload else payload.get("evseId")
        status = payload.get("status", payload.get("connectorStatus"))
        if not self._known_cp(cp):
            return self._skip(f"status from unknown charge point {cp!r}")
        if conn != 0 and (cp, conn) not in self._evse:
            return self._skip(f"charge point {cp!r}: status for unknown connector {conn!r}")
        self.status[(cp, int(conn))] = str(status)
        return True

    def on_response(self, cp: str, action: str, request: dict[str, Any],
                    response: dict[str, Any] | None) -> None:
        """What the station answered to a message from :meth:`step`. A profile that was not
        ``Accepted`` is forgotten, so the next step sends it again."""
        if action != "SetChargingProfile":
            return
        status = (response or {}).get("status")
        if status == "Accepted":
            return
        key = _key_of(cp, request)
        self._sent.pop(key, None)
        self._skip(f"charge point {cp!r}: SetChargingProfile {key[2]} on connector {key[1]} "
                   f"answered {status!r}; will retry")

    # ------------------------------------------------------------------ the step
    def step(self, now: datetime) -> list[Message]:
        """Run the controller and return what to send to connected stations."""
        out, self._pending = self._pending, []
        try:
            schedule = self.controller.step(now)
        except Exception as e:  # never crash the control loop: keep what stations hold
            log.exception("controller step failed")
            self.problems.append(f"controller step at {now.isoformat()} failed: {e!r}")
            return out
        self.last_schedule = schedule
        active = [sid for sid in schedule.problem.session_ids if sid in self._tx]
        wire = {sid: self._tx[sid].wire_id for sid in active}
        profiles = build_profiles(schedule, transaction_ids=wire, caps=self.caps,
                                  charge_points=set(self.versions), session_ids=active,
                                  station_max=self.station_max, tx_default=self.tx_default)
        for prof in profiles:
            v = self.versions.get(prof.charge_point_id)
            if v is None:
                continue
            if not self._changed(self._sent.get(prof.key), prof):
                continue
            try:
                payload = to_payload(prof, v, self.ids)
            except InputError as e:
                self._skip(str(e))
                continue
            self._sent[prof.key] = prof
            out.append((prof.charge_point_id, "SetChargingProfile", payload))
        return out

    def in_force(self, cp: str) -> list[Profile]:
        """The profiles loadopt believes station ``cp`` holds (sent and not rejected)."""
        return [p for k, p in self._sent.items() if k[0] == cp]

    def _changed(self, old: Profile | None, new: Profile) -> bool:
        if old is None:
            return True
        if (old.rate_unit != new.rate_unit or old.transaction_id != new.transaction_id
                or old.valid_to != new.valid_to or old.min_rate_da != new.min_rate_da):
            return True
        off = new.start.timestamp() - old.start.timestamp()  # real seconds
        if off < 0:
            return True
        # breakpoints of both, in seconds from new.start, from 0 on
        t = np.union1d(new.starts, old.starts - off)
        t = t[t >= 0]
        k_new = np.searchsorted(new.starts, t, side="right") - 1
        k_old = np.searchsorted(old.starts, t + off, side="right") - 1
        if np.any(k_new < 0) or np.any(k_old < 0):
            return True
        if np.any(new.phases[k_new] != old.phases[k_old]):
            return True
        a, b = new.limits[k_new], old.limits[k_old]
        thr = math.floor(self.threshold_a * 10 + 1e-9)
        return bool(np.any(a < b) or np.any(a > b + thr))

    @property
    def sessions(self) -> dict[str, str]:
        """Active session id → EVSE id."""
        return {sid: t.evse_id for sid, t in self._tx.items()}

    def transaction_of(self, session_id: str) -> int | str:
        return self._tx[session_id].wire_id


def _key_of(cp: str, req: dict[str, Any]) -> tuple[str, int, str]:
    if "csChargingProfiles" in req:
        conn, prof = req.get("connectorId", 0), req["csChargingProfiles"]
    else:
        conn, prof = req.get("evseId", 0), req.get("chargingProfile") or {}
    purpose = prof.get("chargingProfilePurpose")
    names: dict[str, Purpose] = {}
    for v in ("1.6", "2.0.1"):
        for p in ("station_max", "tx_default", "tx"):
            names[wire_purpose(v, p)] = p  # type: ignore[arg-type]
    return (cp, int(conn), names.get(purpose, str(purpose)))


def _number(v: Any) -> float | None:
    """A finite float from an OCPP value (1.6 sends strings), else None."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _time(v: Any) -> datetime | None:
    """An OCPP timestamp → aware datetime (naive ones are taken as UTC), else None."""
    if isinstance(v, datetime):
        t = v
    elif isinstance(v, str) and v:
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


__all__ = ["CsmsAdapter", "Message"]
