"""The CSMS adapter: OCPP events in (as payload dicts), transition-safe messages out.

It has no network code and never blocks. The CSMS calls ``on_*`` with what stations send, and

- ``step(now)`` every control interval: budgets every connector the plan cannot control at what
  it may draw (:meth:`loadopt.controller.Controller.reserve`), runs the controller, and returns
  the **first wave** of messages: every decrease, and the increases already safe;
- ``on_response(cp, action, request, response)`` with each answer (``None``: no answer, a
  CallError or a time-out);
- ``poll(now)`` after answers and every fraction of a second: marks messages past their deadline
  unanswered (the station is then budgeted at its worst case and retried with back-off),
  releases the increases that became safe, and returns what to send.

What a station holds is a :class:`~loadopt.ocpp.belief.Belief` (accepted, not sent); whether a
message may go out is decided by :class:`~loadopt.ocpp.guard.SiteLimits` (see docs/ocpp.md, "The
per-instant invariant"). Change detection: a profile is sent when, at some instant, its limit
is lower than the one last sent (any decrease) or higher by more than ``threshold_a``, or its
phases, unit, transaction or ``validTo`` differ. A profile the station rejected is not re-sent
as is: the station's capabilities are asked again and the connector is budgeted at what it
holds until a different profile is accepted.

Bad events (unknown station or connector, a duplicate or out-of-order event, a malformed
payload, a NaN, negative, future-stamped or absurd value, a stop for a transaction never
started) never raise into the control loop: they are logged (``logging`` at WARNING, and
appended to :attr:`CsmsAdapter.problems`) and skipped; the ``on_*`` method returns ``False``.
With ``strict=True`` they raise :class:`~loadopt.errors.InputError` instead.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ..controller import Controller
from ..errors import InputError
from ..schedule import Schedule
from ..site import Evse
from .belief import UNKNOWN, Belief, Held, Sent, SlotKey, epoch_s, held_from_payload
from .guard import EPS, SiteLimits
from .ids import ProfileIds, Purpose, Version, check_version, wire_purpose
from .merge import merge_periods
from .profiles import (
    Profile,
    StationCaps,
    clear_payload,
    installation_caps,
    to_payload,
    tx_default_profiles,
    tx_profiles,
)

log = logging.getLogger("loadopt.ocpp")

Message = tuple[str, str, dict[str, Any]]

#: 1.6 configuration keys / 2.x variables asked from every station on connection.
CONFIG_KEYS_16 = (
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "ChargeProfileMaxStackLevel",
    "ConnectorSwitch3to1PhaseSupported",
    "ConnectorPhaseRotation",
)
VARIABLES_2X = ("RateUnit", "PeriodsPerSchedule", "ProfileStackLevel", "ACPhaseSwitchingSupported")
_ENDED_MEMORY = 10_000  #: ended transaction ids remembered (late events are skipped)


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
    last_event_at: datetime | None = None


@dataclass
class _Want:
    profile: Profile
    payload: dict[str, Any]
    held: Held | None


@dataclass
class _Rejected:
    profile: Profile
    until_s: float


class CsmsAdapter:
    """Keeps a site's OCPP state around a :class:`~loadopt.controller.Controller`.

    ``threshold_a``: increases smaller than this (A) are not sent. ``ids``: profile ids and stack
    levels. ``station_max`` / ``tx_default``: emit station caps and newcomer defaults.
    ``send_timeout_s``: a message not answered within this is *unanswered*: possibly applied,
    its station budgeted at its worst case and retried after a back-off that doubles from
    ``backoff_s[0]`` to ``backoff_s[1]``. ``future_skew_s``: events stamped further than this
    after the adapter's clock are quarantined. ``max_overstay_h``: a session still open this long
    after its expected departure with no event or meter value for as long is ended as a ghost.
    ``min_off_s``: a TxProfile that stopped a car (limit 0) keeps it stopped at least this long
    (hysteresis against on/off flapping; only ever lowers a limit). ``min_on_s``: a car the
    plan switched on is kept at its minimum current for at least this long after it started,
    when the plan would stop it earlier, but only while that fits every limit with everything
    stations may hold (a decrease a limit needs always goes out).
    """

    def __init__(
        self,
        controller: Controller,
        *,
        threshold_a: float = 0.5,
        ids: ProfileIds | None = None,
        station_max: bool = True,
        tx_default: bool = True,
        strict: bool = False,
        send_timeout_s: float = 10.0,
        backoff_s: tuple[float, float] = (2.0, 60.0),
        future_skew_s: float = 300.0,
        max_overstay_h: float = 12.0,
        min_off_s: float = 0.0,
        min_on_s: float = 0.0,
    ) -> None:
        self.controller = controller
        self.site = controller.site
        self.threshold_a = float(threshold_a)
        self.ids = ids or ProfileIds()
        self.station_max = station_max
        self.tx_default = tx_default
        self.strict = strict
        self.send_timeout_s = float(send_timeout_s)
        self.backoff_s = (float(backoff_s[0]), float(backoff_s[1]))
        self.future_skew_s = float(future_skew_s)
        self.max_overstay_h = float(max_overstay_h)
        self.min_off_s = float(min_off_s)
        self.min_on_s = float(min_on_s)
        self.versions: dict[str, Version] = {}  #: connected stations → OCPP version
        self.caps: dict[str, StationCaps] = {}  #: EVSE id → reported capabilities
        #: EVSE id → supply phases the station reports (1.6 ``ConnectorPhaseRotation``,
        #: 2.x ``EVSE.SupplyPhases``)
        self.supply_phases: dict[str, int] = {}
        #: EVSEs whose station reports more supply phases than the site model: held at 0 A
        self.phase_mismatch: set[str] = set()
        self.max_stack_level: dict[str, int] = {}  #: charge point → reported maximum
        self.problems: list[str] = []  #: every skipped event, as logged
        self.status: dict[tuple[str, int], str] = {}  #: (cp, connector) → last status
        self.last_schedule: Schedule | None = None
        self.belief = Belief(self.site)
        self._evse: dict[tuple[str, int], Evse] = {
            (e.charge_point_id, e.connector_id): e for e in self.site.evses
        }
        self._cps = {e.charge_point_id for e in self.site.evses}
        self._tx: dict[str, _Tx] = {}  #: session id → transaction
        self._by_wire: dict[tuple[str, int | str], str] = {}  #: (cp, wire tx id) → session id
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._starts16: dict[tuple[Any, ...], int] = {}  #: idempotent 1.6 StartTransaction
        self._next_tx = 1
        self._limits: SiteLimits | None = None
        self._targets: dict[SlotKey, Profile] = {}  #: what the last plan wants per slot
        self._intent: dict[SlotKey, Profile] = {}  #: last profile sent per slot
        self._want: dict[SlotKey, _Want] = {}  #: to send once safe
        #: slot → (the profile the station rejected, retry time), rejections in a row
        self._rejected: dict[SlotKey, tuple[_Rejected, int]] = {}
        self._backoff: dict[str, tuple[float, float]] = {}  #: cp → (until epoch s, delay s)
        self._conn: dict[str, int] = {}  #: cp → live connection token
        self._asking: dict[str, float] = {}  #: cp → capabilities asked, wait for them until
        #: slot → the boot default in flight (payload) and the units its station refused
        self._boot_zero: dict[SlotKey, dict[str, Any]] = {}
        self._zero_refused: dict[SlotKey, set[str]] = {}
        self._n_conn = 0
        self._n_requests = 0
        self._pending: list[Message] = []  #: non-profile messages to send
        self._off_since: dict[str, float] = {}  #: session id → when its limit went to 0
        self._on_since: dict[str, float] = {}  #: session id → when its limit went above 0
        self._now_s: float = -math.inf  #: the adapter's clock (last step/poll)
        self._reason: dict[str, str] = {}  #: EVSE id → why it is reserved
        self._theirs: dict[str, Any] = {}  #: the controller's own reservation we overrode

    # ------------------------------------------------------------------ faults
    def _skip(self, msg: str) -> bool:
        if self.strict:
            raise InputError(msg)
        log.warning("skipped: %s", msg)
        self.problems.append(msg)
        return False

    def _known_cp(self, cp: Any) -> bool:
        return isinstance(cp, str) and cp in self._cps

    def _clock(self) -> datetime:
        """The reference for 'future-stamped': the later of the wall clock and the last step."""
        wall = datetime.now(UTC)
        if math.isfinite(self._now_s):
            return max(wall, datetime.fromtimestamp(self._now_s, UTC))
        return wall

    def _future(self, at: datetime) -> bool:
        return at > self._clock() + timedelta(seconds=self.future_skew_s)

    # ------------------------------------------------------------------ stations
    def connect(self, cp: str, version: str = "1.6") -> int | bool:
        """A station's websocket is up (first connection or a reconnection, with or without a
        BootNotification). Returns a connection token for :meth:`disconnect` (``False`` when
        skipped). Its capabilities are asked, and its station cap, TxDefaultProfiles and
        TxProfiles go out again at the next :meth:`poll`, each when safe (counted at what the
        station may hold until it answers)."""
        if not self._known_cp(cp):
            return self._skip(f"unknown charge point {cp!r} (not on site {self.site.id!r})")
        try:
            v = check_version(version)
        except (ValueError, TypeError):
            return self._skip(f"charge point {cp!r}: unsupported OCPP version {version!r}")
        self.versions[cp] = v
        self._n_conn += 1
        self._conn[cp] = self._n_conn
        self._backoff.pop(cp, None)
        for key in [k for k in self._intent if k[0] == cp]:
            del self._intent[key]
        for key in [k for k in self._rejected if k[0] == cp]:
            del self._rejected[key]
        self._pending = [m for m in self._pending if m[0] != cp]
        self._pending.append(self._capability_request(cp, v))
        if v != "1.6":  # reconcile: the station reports what it holds of ours
            self._pending.append(self._profiles_request(cp))
        # profiles wait for the capabilities (rate unit, periods) up to one deadline
        self._asking[cp] = math.inf  # the deadline starts at the next poll (adapter time)
        if self.last_schedule is None:
            self._rebuild_targets()
        else:
            self._refresh_wants(cp)
        return self._n_conn

    def on_boot_notification(self, cp: str, version: str = "1.6") -> int | bool:
        """A station (re)booted: whatever it held is unknown (budgeted at its hardware maximum
        until it accepts our profiles) and its transactions are over (a reboot without
        StopTransaction must not leave a ghost). Then as :meth:`connect`."""
        if not self._known_cp(cp):
            return self._skip(f"BootNotification from unknown charge point {cp!r}")
        now = self._clock()
        for sid in [s for s, t in self._tx.items() if t.charge_point_id == cp]:
            self._end(sid, now, "station rebooted")
        self.belief.rebooted(cp)
        return self.connect(cp, version)

    def disconnect(self, cp: str, token: int | None = None) -> None:
        """A station's websocket closed. With ``token``, only that connection is meant: a stale
        socket closing after the station reconnected does not unregister the live one."""
        if token is not None and self._conn.get(cp) != token:
            return
        self.versions.pop(cp, None)
        self._conn.pop(cp, None)
        self._pending = [m for m in self._pending if m[0] != cp]
        for key, slot in self.belief.slots.items():  # no answer can come on a closed socket
            if key[0] == cp:
                for m in slot.sent:
                    m.expired = True

    def set_capabilities(
        self,
        cp: str,
        connector: int | None = None,
        *,
        rate_unit: str | None = None,
        max_periods: int | None = None,
        phase_switching: bool | None = None,
    ) -> bool:
        """Record what station ``cp`` (all connectors, or one) supports."""
        if not self._known_cp(cp):
            return self._skip(f"capabilities for unknown charge point {cp!r}")
        if rate_unit is not None and rate_unit not in ("A", "W"):
            return self._skip(f"charge point {cp!r}: unknown rate unit {rate_unit!r}")
        if max_periods is not None and (not isinstance(max_periods, int) or max_periods < 1):
            return self._skip(f"charge point {cp!r}: max periods {max_periods!r} < 1")
        changed = False
        for (c, k), ev in self._evse.items():
            if c == cp and (connector in (None, 0) or k == connector):
                old = self.caps.get(ev.id, StationCaps())
                new = StationCaps(
                    rate_unit=rate_unit or old.rate_unit,  # type: ignore[arg-type]
                    max_periods=max_periods or old.max_periods,
                    phase_switching=(
                        old.phase_switching if phase_switching is None else phase_switching
                    ),
                )
                changed |= new != old
                self.caps[ev.id] = new
        if changed:  # what was rejected in the old format may be accepted in the new one
            for key in [k for k in self._rejected if k[0] == cp]:
                del self._rejected[key]
            self._rebuild_targets()
        return True

    def on_get_configuration(self, cp: str, payload: Any) -> bool:
        """1.6 ``GetConfiguration.conf``: ``ChargingScheduleAllowedChargingRateUnit``
        (``Current``/``Power``; ``A`` is preferred when both are allowed),
        ``ChargingScheduleMaxPeriods``, ``ChargeProfileMaxStackLevel``,
        ``ConnectorSwitch3to1PhaseSupported``."""
        keys = payload.get("configurationKey") if isinstance(payload, dict) else None
        if keys is None:
            keys = []
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            return self._skip(
                f"charge point {cp!r}: GetConfiguration configurationKey is not a "
                f"list of key/value objects ({type(keys).__name__})"
            )
        kv = {k.get("key"): k.get("value") for k in keys}
        unit = None
        allowed = str(kv.get("ChargingScheduleAllowedChargingRateUnit") or "")
        if allowed:
            units = {u.strip() for u in allowed.split(",")}
            unit = "A" if "Current" in units else ("W" if "Power" in units else None)
        self._stack_from(cp, kv.get("ChargeProfileMaxStackLevel"))
        rot = kv.get("ConnectorPhaseRotation")
        if isinstance(rot, str) and rot.strip():
            for item in rot.split(","):  # "0.RST, 1.NotApplicable, 2.Unknown"
                conn, _, val = item.strip().partition(".")
                n = (
                    3
                    if val in ("RST", "RTS", "SRT", "STR", "TRS", "TSR")
                    else (1 if val == "NotApplicable" else None)
                )
                if n is not None and conn.isdigit():
                    self._phases_from(cp, int(conn), n)
        return self._caps_from(
            cp,
            None,
            unit,
            kv.get("ChargingScheduleMaxPeriods"),
            kv.get("ConnectorSwitch3to1PhaseSupported"),
        )

    def on_get_variables(self, cp: str, payload: Any) -> bool:
        """2.x ``GetVariablesResponse``: ``SmartChargingCtrlr.RateUnit`` (``A``/``W`` list),
        ``PeriodsPerSchedule``, ``ProfileStackLevel``, ``ACPhaseSwitchingSupported``."""
        results = payload.get("getVariableResult") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            return self._skip(f"charge point {cp!r}: GetVariables without a getVariableResult list")
        ok = True
        for r in results:
            if not isinstance(r, dict) or r.get("attributeStatus") != "Accepted":
                continue
            name = (r.get("variable") or {}).get("name")
            val = r.get("attributeValue")
            evse = ((r.get("component") or {}).get("evse") or {}).get("id")
            if name == "RateUnit" and val:
                units = {u.strip() for u in str(val).split(",")}
                ok &= self._caps_from(cp, evse, "A" if "A" in units else "W", None, None)
            elif name == "PeriodsPerSchedule":
                ok &= self._caps_from(cp, evse, None, val, None)
            elif name == "ProfileStackLevel":
                self._stack_from(cp, val)
            elif name == "MaxExternalConstraintsId":  # OCPP 2.1: ids up to it are reserved
                from ..grid.ocpp_constraints import ids_above

                try:
                    self.ids = ids_above(self.ids, int(str(val)))
                except (InputError, ValueError) as e:
                    ok = self._skip(f"charge point {cp!r}: MaxExternalConstraintsId: {e}")
            elif name == "SupplyPhases":  # EVSE component: 1 or 3 (0 = DC: nothing to learn)
                try:
                    n = int(str(val))
                except ValueError:
                    ok = self._skip(f"charge point {cp!r}: bad SupplyPhases {val!r}")
                    continue
                if n in (1, 2, 3) and isinstance(evse, int):
                    self._phases_from(cp, evse, n)
            elif name in ("ACPhaseSwitchingSupported", "PhaseSwitchingSupported"):
                ok &= self._caps_from(cp, evse, None, None, val)
        return ok

    def _phases_from(self, cp: str, connector: int, n: int) -> None:
        """Supply phases a station reports for a connector (0: all of them). More phases than the
        site model says is dangerous (a car could load lines the plan does not count): that
        connector is held at 0 A (TxProfile and TxDefault) and the fault recorded until the
        site model is fixed. Fewer is safe (the plan over-counts) and only noted."""
        changed = False
        for (c, k), ev in self._evse.items():
            if c != cp or connector not in (0, k):
                continue
            self.supply_phases[ev.id] = n
            if n > ev.phases and ev.id not in self.phase_mismatch:
                self.phase_mismatch.add(ev.id)
                changed = True
                self._skip(
                    f"EVSE {ev.id!r} (charge point {cp!r} connector {k}): the station reports "
                    f"{n} supply phases, the site model {ev.phases}; held at 0 A until the site "
                    "model is fixed"
                )
            elif n <= ev.phases and ev.id in self.phase_mismatch:
                self.phase_mismatch.discard(ev.id)
                changed = True
        if changed:
            self._rebuild_targets()

    def _stack_from(self, cp: str, v: Any) -> None:
        try:
            n = int(str(v))
        except (TypeError, ValueError):
            return
        self.max_stack_level[cp] = n
        top = max(self.ids.stack_level(p) for p in ("station_max", "tx_default", "tx"))
        if n < top:
            self._skip(
                f"charge point {cp!r}: maximum stack level {n} is below loadopt's "
                f"stack level {top} (ProfileIds); its profiles will be rejected"
            )

    def _caps_from(
        self, cp: str, connector: Any, unit: str | None, periods: Any, switch: Any
    ) -> bool:
        mp = None
        if periods not in (None, ""):
            try:
                mp = int(str(periods))
            except ValueError:
                return self._skip(f"charge point {cp!r}: bad max periods {periods!r}")
        if connector is not None and not isinstance(connector, int):
            return self._skip(f"charge point {cp!r}: bad EVSE id {connector!r} in capabilities")
        sw = None if switch in (None, "") else str(switch).lower() == "true"
        return self.set_capabilities(
            cp, connector, rate_unit=unit, max_periods=mp, phase_switching=sw
        )

    def _capability_request(self, cp: str, v: Version) -> Message:
        if v == "1.6":
            return (cp, "GetConfiguration", {"key": list(CONFIG_KEYS_16)})
        return (
            cp,
            "GetVariables",
            {
                "getVariableData": [
                    {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": n}}
                    for n in VARIABLES_2X
                ]
                + [
                    {
                        "component": {"name": "EVSE", "evse": {"id": k}},
                        "variable": {"name": "SupplyPhases"},
                    }
                    for (c, k) in sorted(self._evse)
                    if c == cp
                ]
            },
        )

    def _profiles_request(self, cp: str) -> Message:
        """2.x ``GetChargingProfiles`` for loadopt's own ids on this station (answered by
        ``ReportChargingProfiles``, see :meth:`on_report_charging_profiles`)."""
        conns = [0, *sorted(k for c, k in self._evse if c == cp)]
        pids = sorted(
            {self.ids.profile_id(p, k) for k in conns for p in ("station_max", "tx_default", "tx")}
        )
        self._n_requests += 1
        return (
            cp,
            "GetChargingProfiles",
            {"requestId": self._n_requests, "chargingProfile": {"chargingProfileId": pids}},
        )

    def _composite_request(self, cp: str, connector: int) -> Message:
        v = self.versions.get(cp, "1.6")
        dur = int(self.controller.step_s * self.controller.n_periods)
        if v == "1.6":
            return (
                cp,
                "GetCompositeSchedule",
                {"connectorId": connector, "duration": dur, "chargingRateUnit": "A"},
            )
        return (
            cp,
            "GetCompositeSchedule",
            {"evseId": connector, "duration": dur, "chargingRateUnit": "A"},
        )

    # ------------------------------------------------------------------ transactions
    def _evse_for(self, cp: str, connector: Any) -> Evse | None:
        if not self._known_cp(cp):
            self._skip(f"event from unknown charge point {cp!r}")
            return None
        ok = isinstance(connector, int) and not isinstance(connector, bool)
        ev = self._evse.get((cp, connector)) if ok else None
        if ev is None:
            self._skip(f"charge point {cp!r}: unknown connector/EVSE {connector!r}")
        return ev

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
        """1.6 ``StartTransaction.req``. Returns the integer ``transactionId`` for the ``.conf``.

        The CSMS may pass its own ``transaction_id``; otherwise the adapter numbers them. The id
        is returned even when the event is skipped (the station needs an answer). A retried
        request (same connector, idTag, timestamp and meterStart, after a lost ``.conf``) gets
        the same id and opens no second session.
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
            tid = self._next_tx if transaction_id is None else transaction_id
            self._next_tx = max(self._next_tx, tid + 1)
            return tid
        rkey = (
            cp,
            payload.get("connectorId"),
            payload.get("idTag"),
            payload.get("timestamp"),
            str(payload.get("meterStart")),
        )
        if rkey in self._starts16 and transaction_id is None:
            return self._starts16[rkey]
        if transaction_id is None:
            transaction_id = self._next_tx
        self._next_tx = max(self._next_tx, transaction_id + 1)
        self._starts16[rkey] = transaction_id
        if len(self._starts16) > _ENDED_MEMORY:
            self._starts16.pop(next(iter(self._starts16)))
        ev = self._evse_for(cp, payload.get("connectorId"))
        at = _time(payload.get("timestamp"))
        if ev is not None and at is None:
            self._skip(f"charge point {cp!r}: StartTransaction without a valid timestamp")
        elif ev is not None and at is not None:
            meter = _number(payload.get("meterStart"))
            self._start(cp, ev, transaction_id, at, meter, departure, energy_kwh)
        return transaction_id

    def on_stop_transaction(self, cp: str, payload: Any) -> bool:
        """1.6 ``StopTransaction.req``."""
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
        transaction that already ended (a late ``Updated`` after ``Ended``, an ``Ended``
        arriving before its ``Started``) never re-opens it."""
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
                kw["phases"] = 3 if nph == 2 else nph
            cable = _number(payload.get("cableMaxCurrent"))
            if cable is not None and cable > 0:
                kw["max_current"] = cable
            if not self._start(cp, ev, wire, at, None, departure, energy_kwh, **kw):
                return False
            sid = self._by_wire[(cp, wire)]
        tx = self._tx[sid]
        if isinstance(seq, int):
            tx.last_seq = seq
        tx.last_event_at = at
        mvs = payload.get("meterValue") or []
        if isinstance(mvs, list):
            for mv in mvs:
                self._meter(tx, mv)
        return True

    def on_meter_values(self, cp: str, payload: Any) -> bool:
        """1.6 / 2.x ``MeterValues``: cumulative energy and per-phase current of a transaction.

        A value stamped in the future (beyond ``future_skew_s``) or absurd is quarantined: it is
        skipped and does not move the 'last reading' mark, so later correct readings are kept."""
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
            tx = next(
                (t for t in self._tx.values() if t.charge_point_id == cp and t.connector == conn),
                None,
            )
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
        energy_wh, amps = None, {}
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
        except (InputError, ValueError, TypeError, OverflowError) as e:
            return self._skip(str(e))
        tx.last_meter_at = at
        tx.last_event_at = at
        return True

    def on_status_notification(self, cp: str, payload: Any) -> bool:
        """1.6 / 2.x ``StatusNotification``: recorded (connector 0 = the station).

        ``Available`` (and 1.6 ``Finishing``) on a connector with an open session ends it: the
        car is gone or the transaction is over even if the stop was lost."""
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
            for sid in [
                s for s, t in self._tx.items() if t.charge_point_id == cp and t.connector == conn
            ]:
                self._end(sid, at, f"connector {status}")
            if conn != 0:  # also a ghost's transaction, ended here without the station
                self._forget_tx(cp, conn)
        return True

    def on_notify_ev_charging_needs(self, cp: str, payload: Any) -> bool:
        """2.x ``NotifyEVChargingNeeds`` (ISO 15118): departure time, energy and the car's
        current range feed the session on that EVSE (``Controller.update_session``)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("chargingNeeds"), dict):
            return self._skip(f"charge point {cp!r}: NotifyEVChargingNeeds without chargingNeeds")
        evse = payload.get("evseId")
        tx = next(
            (t for t in self._tx.values() if t.charge_point_id == cp and t.connector == evse), None
        )
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
            if e is not None and e >= 0:
                upd["energy_kwh"] = e / 1000.0
            hi = _number(par.get("evMaxCurrent"))
            if key == "acChargingParameters" and hi is not None and hi > 0:
                upd["max_current"] = hi
            lo_ = _number(par.get("evMinCurrent"))
            if key == "acChargingParameters" and lo_ is not None and lo_ >= 0:
                upd["min_current"] = lo_
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

    def on_notify_charging_limit(self, cp: str, payload: Any) -> bool:
        """2.x ``NotifyChargingLimit`` (K12): an external limit on the station becomes caps on
        its node from the next step on (:mod:`loadopt.grid.ocpp_constraints`); they replace the
        station's previous external limits."""
        return self._external(cp, payload, "notify_charging_limit")

    def on_cleared_charging_limit(self, cp: str, payload: Any) -> bool:
        """2.x ``ClearedChargingLimit``: the station's external limits are gone."""
        return self._external(cp, None, "cleared")

    def _external(self, cp: str, payload: Any, how: str) -> bool:
        from ..grid import ocpp_constraints as oc

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

    def on_report_charging_profiles(self, cp: str, payload: Any) -> bool:
        """2.x ``ReportChargingProfiles`` (answer to ``GetChargingProfiles``): a profile of ours
        the station reports is what it holds (when nothing is in flight for its slot); any
        other profile on a connector makes the connector's default unknown (budgeted at its
        maximum) since it may override ours."""
        if not isinstance(payload, dict) or not isinstance(payload.get("chargingProfile"), list):
            return self._skip(f"charge point {cp!r}: ReportChargingProfiles without a list")
        v = self.versions.get(cp, "2.0.1")
        evse = payload.get("evseId")
        from ..grid.ocpp_constraints import PURPOSE, report_charging_profiles, source_of

        ok = True
        if any(
            isinstance(p, dict) and p.get("chargingProfilePurpose") == PURPOSE
            for p in payload["chargingProfile"]
        ):
            # external constraints (EMS, grid operator) are hard caps on the station's node
            try:
                sigs = report_charging_profiles(self.site, cp, payload, received_at=self._clock())
                ctl = self.controller
                ctl.set_signals(ctl.signals.with_grid_signals(source_of(cp), sigs))
            except (InputError, ValueError, TypeError, AttributeError) as e:
                ok = self._skip(f"charge point {cp!r}: ReportChargingProfiles: {e}")
        for prof in payload["chargingProfile"]:
            if isinstance(prof, dict) and prof.get("chargingProfilePurpose") == PURPOSE:
                continue
            if not isinstance(prof, dict) or not isinstance(evse, int):
                continue
            key = self._key_of(cp, {"evseId": evse, "chargingProfile": prof})
            pid = prof.get("id")
            ours = key[2] in ("station_max", "tx_default", "tx") and pid == self.ids.profile_id(
                key[2],  # type: ignore[arg-type]
                evse,
            )
            if ours:
                ev = self._evse.get((cp, evse))
                held = held_from_payload(
                    {"evseId": evse, "chargingProfile": prof},
                    v,
                    ev.voltage_v if ev else self.site.voltage_v,
                )
                slot = self.belief.slot(key)
                if not slot.sent and held is not None:
                    slot.base = held
            elif (cp, evse) in self._evse:
                self._skip(
                    f"charge point {cp!r} EVSE {evse}: holds a foreign profile {pid!r} "
                    "that may override loadopt's; budgeted at its maximum"
                )
                self.belief.slot((cp, evse, "tx_default")).base = UNKNOWN
        return ok

    # ------------------------------------------------------------------ answers
    def on_response(
        self, cp: str, action: str, request: Any, response: Any, now: datetime | None = None
    ) -> bool:
        """What the station answered to a message from :meth:`step` / :meth:`poll`; ``None``:
        no answer (time-out, CallError, closed socket). Call :meth:`poll` afterwards to send
        what became safe."""
        if not isinstance(request, dict):
            return self._skip(
                f"charge point {cp!r}: {action} answer for a request that is not an object"
            )
        if response is not None and not isinstance(response, dict):
            return self._skip(
                f"charge point {cp!r}: {action} answer is not an object ({type(response).__name__})"
            )
        now_s = epoch_s(now) if now is not None else self._clock().timestamp()
        if response is not None:
            self._backoff.pop(cp, None)
        if action in ("GetConfiguration", "GetVariables"):
            self._asking.pop(cp, None)
            if response is None:
                return True
            if action == "GetConfiguration":
                return self.on_get_configuration(cp, response)
            return self.on_get_variables(cp, response)
        if action == "GetCompositeSchedule":
            return True if response is None else self._reconcile(cp, request, response)
        if action != "SetChargingProfile":
            return True
        try:
            key = self._key_of(cp, request)
        except (TypeError, ValueError, KeyError) as e:
            return self._skip(
                f"charge point {cp!r}: SetChargingProfile answer for a malformed request ({e!r})"
            )
        slot = self.belief.slots.get(key)
        msg = None
        if slot is not None:
            msg = next((m for m in slot.sent if m.payload is request), None)
            if msg is None:
                msg = next((m for m in slot.sent if m.payload == request), None)
        if msg is None:
            return self._skip(
                f"charge point {cp!r}: answer to a SetChargingProfile that is not "
                f"in flight ({key[2]} on connector {key[1]})"
            )
        if response is None:
            msg.expired = True
            self._back_off(cp, now_s)
            self._intent.pop(key, None)
            self._refresh_wants(cp)  # retried once the back-off is over
            return self._skip(
                f"charge point {cp!r}: no answer to SetChargingProfile {key[2]} "
                f"on connector {key[1]}; budgeted at its worst case, retried "
                "with back-off"
            )
        status = response.get("status")
        if status == "Accepted":
            self.belief.answered(msg, True)
            self._rejected.pop(key, None)
            return True
        self.belief.answered(msg, False)
        zero = self._boot_zero.get(key)
        if zero is not None and (zero is request or zero == request):
            self._zero_refused.setdefault(key, set()).add(_unit_of(request))
        prof = self._intent.pop(key, None)
        _, n = self._rejected.get(key, (None, 0))
        delay = min(self.backoff_s[0] * 2**n, self.backoff_s[1])
        if prof is not None:
            self._rejected[key] = (_Rejected(prof, now_s + delay), n + 1)
        if cp not in self._asking:  # (already being asked: no second request)
            self._pending.append(self._capability_request(cp, self.versions.get(cp, "1.6")))
        if key[1] != 0:
            self._pending.append(self._composite_request(cp, key[1]))
        return self._skip(
            f"charge point {cp!r}: SetChargingProfile {key[2]} on connector "
            f"{key[1]} answered {status!r}; budgeted at what it holds, "
            "capabilities asked again"
        )

    def _reconcile(self, cp: str, request: dict[str, Any], response: dict[str, Any]) -> bool:
        """``GetCompositeSchedule``: if the station would let a connector draw more than the
        belief says at some instant, it holds something unknown: budget it at its maximum."""
        sched = response.get("chargingSchedule", response.get("schedule"))
        conn = request.get("connectorId", request.get("evseId"))
        if response.get("status") != "Accepted" or not isinstance(sched, dict):
            return True
        k = self.belief.index.get((cp, conn)) if isinstance(conn, int) else None
        if k is None:
            return True
        ev = self.belief.evses[k]
        start = sched.get("startSchedule", sched.get("scheduleStart"))
        one = {**sched, "startSchedule": start}
        wrap = {
            "evseId": conn,
            "chargingProfile": {"chargingProfilePurpose": "composite", "chargingSchedule": [one]},
        }
        try:
            held = held_from_payload(wrap, self.versions.get(cp, "1.6"), ev.voltage_v)
        except (TypeError, ValueError):
            return self._skip(f"charge point {cp!r}: malformed GetCompositeSchedule answer")
        if held is None:
            return True
        t = held.at_s
        worst = self.belief.worst_a(t, only=[k])[:, k]
        got = np.minimum(held.limit_at(t), self.belief.hw_a[k][None, :])
        if np.any(np.nan_to_num(got) > worst + 0.1 + EPS):
            self.belief.slot((cp, ev.connector_id, "tx_default")).base = UNKNOWN
            return self._skip(
                f"charge point {cp!r} connector {conn}: composite schedule above "
                "what loadopt sent; budgeted at its maximum until re-synced"
            )
        return True

    def _back_off(self, cp: str, now_s: float) -> None:
        _, delay = self._backoff.get(cp, (0.0, 0.0))
        delay = min(max(2 * delay, self.backoff_s[0]), self.backoff_s[1])
        self._backoff[cp] = (now_s + delay, delay)

    def _backing_off(self, cp: str, now_s: float) -> bool:
        b = self._backoff.get(cp)
        return b is not None and now_s < b[0]

    # ------------------------------------------------------------------ the step
    def step(self, now: datetime) -> list[Message]:
        """One control interval: budget what the plan cannot control, run the controller,
        and return the first wave of messages (decreases, and the increases already safe)."""
        now = now.astimezone(UTC).replace(microsecond=0)  # real time, whole seconds
        now_s = now.timestamp()
        self._now_s = max(self._now_s, now_s)
        self._expire(now_s)
        self._end_ghosts(now)
        self._reserve(now, now_s)
        try:
            schedule = self.controller.step(now)
        except Exception as e:  # never crash the control loop: keep what stations hold
            log.exception("controller step failed")
            self.problems.append(f"controller step at {now.isoformat()} failed: {e!r}")
            return self.poll(now)
        self.last_schedule = schedule
        self._limits = SiteLimits(schedule.problem)
        self._rebuild_targets()
        return self.poll(now)

    def poll(self, now: datetime) -> list[Message]:
        """Deadlines, back-off and the increases that became safe: what to send now."""
        now_s = epoch_s(now)
        self._now_s = max(self._now_s, now_s)
        self._expire(now_s)
        for cp, until in self._asking.items():
            if until == math.inf:
                self._asking[cp] = now_s + self.send_timeout_s
        out, self._pending = self._pending, []
        out = [m for m in out if m[0] in self.versions]
        return out + self._release(now_s)

    def _expire(self, now_s: float) -> None:
        cps = set()
        for m in self.belief.expire(now_s):
            self._skip(
                f"charge point {m.key[0]!r}: no answer to SetChargingProfile {m.key[2]} "
                f"on connector {m.key[1]} within {self.send_timeout_s:g} s; budgeted at "
                "its worst case, retried with back-off"
            )
            self._intent.pop(m.key, None)
            cps.add(m.key[0])
        for cp in cps:
            self._back_off(cp, now_s)
            self._refresh_wants(cp)  # retried once the back-off is over

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

    def _reserve(self, now: datetime, now_s: float) -> None:
        """Budget (Controller.reserve) every connector the plan cannot lower right now: station
        offline, backing off, rejecting, unknown, or with a message unanswered."""
        try:  # the plan's span (uniform or tiered horizon)
            H = (self.controller.horizon(now).end - now).total_seconds()
        except Exception:  # a bad horizon must not stop the loop
            H = self.controller.step_s * self.controller.n_periods
        times = self._times(now_s, now_s + H)
        worst = self.belief.worst_a(times)
        for k, e in enumerate(self.belief.evses):
            cp = e.charge_point_id
            why = None
            if cp not in self.versions:
                why = "station offline"
            elif self._backing_off(cp, now_s):
                why = "station not answering"
            elif any(key[0] == cp and key[1] == e.connector_id for key in self._rejected):
                why = "station rejected a profile"
            elif not self.belief.synced(k):
                why = "profiles not confirmed"
            ctl = self.controller
            if why is None:
                if e.id in self._reason:  # only ours: the controller reserves overdraw itself
                    ctl.release(e.id)
                    theirs = self._theirs.pop(e.id, None)
                    if theirs is not None:
                        ctl.reserve(
                            e.id, theirs.current_a, until=theirs.until, reason=theirs.reason
                        )
                    del self._reason[e.id]
                continue
            amps = worst[:, k].max(axis=0)
            amps = np.where(np.isfinite(amps), amps, self.belief.hw_a[k])
            other = ctl.reservations.get(e.id)
            if other is not None and e.id not in self._reason:
                self._theirs[e.id] = other
            theirs = self._theirs.get(e.id)
            if theirs is not None:
                amps = np.maximum(amps, theirs.current_a)
            ctl.reserve(
                e.id, (float(amps[0]), float(amps[1]), float(amps[2])), reason=f"ocpp: {why}"
            )
            self._reason[e.id] = why

    def _rebuild_targets(self) -> None:
        """Profiles the last plan wants, per slot (TxProfile per open transaction, TxDefault per
        connector, the static station cap), and what of them must be sent."""
        sched = self.last_schedule
        targets: dict[SlotKey, Profile] = {}
        if sched is not None:
            p = sched.problem
            active = [sid for sid in p.session_ids if sid in self._tx]
            wire = {sid: self._tx[sid].wire_id for sid in active}
            for prof in tx_profiles(
                sched, session_ids=active, transaction_ids=wire, caps=self.caps
            ):
                targets[prof.key] = self._hysteresis(prof)
            self._on_dwell(targets)
            if self.tx_default:
                for prof in tx_default_profiles(sched, caps=self.caps):
                    targets[prof.key] = prof
            for e_id in self.phase_mismatch:  # more supply phases than modelled: 0 A
                ev = self.site.evse(e_id)
                for purpose in ("tx", "tx_default"):
                    key: SlotKey = (ev.charge_point_id, ev.connector_id, purpose)
                    held = targets.get(key)
                    if held is not None:
                        targets[key] = replace(
                            held, limits=np.zeros_like(held.limits), min_rate_da=None
                        )
        start = (
            sched.problem.horizon.start
            if sched is not None
            else datetime.fromtimestamp(max(self._now_s, 0), UTC).replace(microsecond=0)
        )
        if self.station_max:
            for prof in installation_caps(self.site, start, caps=self.caps):
                old = self._targets.get(prof.key)
                targets[prof.key] = (
                    old
                    if old is not None
                    and old.rate_unit == prof.rate_unit
                    and np.array_equal(old.limits, prof.limits)
                    else prof
                )
        if sched is None and self.tx_default:  # before the first plan: nothing may start
            for e in self.site.evses:
                z = Profile(
                    e.charge_point_id,
                    e.connector_id,
                    "tx_default",
                    start,
                    np.zeros(1, np.int64),
                    np.zeros((1, 3), np.int64),
                    np.array([e.phases]),
                    e.voltage_v,
                    self.caps.get(e.id, StationCaps()).apply(e)[0],
                )
                targets[z.key] = z
        self._targets = targets
        for cp in self.versions:
            self._refresh_wants(cp)

    def _hysteresis(self, prof: Profile) -> Profile:
        """Keep a car that was stopped (limit 0) stopped for ``min_off_s`` (only lowers)."""
        if self.min_off_s <= 0 or prof.session_id is None:
            return prof
        start = epoch_s(prof.start)
        first = int(prof.limits[0].max())
        sid = prof.session_id
        if first == 0:
            self._off_since.setdefault(sid, self._now_s)
            return prof
        since = self._off_since.get(sid)
        if since is None:
            return prof
        until = since + self.min_off_s
        if until <= start:
            self._off_since.pop(sid, None)
            return prof
        cut = math.ceil(until - start)
        t = np.union1d(prof.starts, [cut])
        lim = prof.limits[np.searchsorted(prof.starts, t, side="right") - 1].copy()
        ph = prof.phases[np.searchsorted(prof.starts, t, side="right") - 1]
        lim[t < cut] = 0
        ev = self.site.evse(self._tx[sid].evse_id) if sid in self._tx else None
        maxp = (
            self.caps.get(ev.id, StationCaps()).apply(ev)[1] if ev is not None else prof.starts.size
        )
        end = int(t[-1]) + 1
        st, lm, phs = merge_periods(t, lim, ph, maxp, end)
        return replace(prof, starts=st, limits=lm, phases=phs)

    def _on_dwell(self, targets: dict[SlotKey, Profile]) -> None:
        """The minimum ON dwell (``min_on_s``), in place on the TxProfile ``targets``: a car
        switched on less than ``min_on_s`` ago whose plan drops to 0 before the dwell ends is
        kept at its minimum current (``min_rate_da``, else the EVSE's ``min_current``) until
        then, if, counted as possibly held next to everything every station may hold now, that
        keeps every row it loads within its limit at every instant (the release rule 2 test,
        docs/ocpp.md); otherwise the plan's 0 stands (safety wins). A car is *on* from the first
        target with a first limit above 0 until one at 0."""
        lim = self._limits
        now_s = self._now_s
        base = None
        for key in list(targets):
            prof = targets[key]
            sid = prof.session_id
            if key[2] != "tx" or sid is None:
                continue
            since = self._on_since.get(sid)
            k = self.belief.index.get((key[0], key[1]))
            v = self.versions.get(key[0])
            if self.min_on_s > 0 and since is not None and lim is not None and k is not None:
                cand = self._kept_on(prof, since + self.min_on_s, k) if v is not None else None
                if cand is not None and v is not None:
                    times = self._times(now_s)
                    if base is None:
                        base = self.belief.worst_a(times)
                    try:
                        payload: dict[str, Any] | None = to_payload(cand, v, self.ids)
                    except InputError:
                        payload = None
                    if payload is not None and base.shape[0] == times.size:
                        held = held_from_payload(payload, v, cand.voltage_v)
                        after = base.copy()
                        after[:, k] = self.belief.worst_a(times, {key: held}, only=[k])[:, k]
                        if lim.within_for(k, after, times):
                            targets[key] = cand
                            base = after
                            self._off_since.pop(sid, None)  # it did not stop
            if int(targets[key].limits[0].max()) > 0:
                self._on_since.setdefault(sid, now_s)
            else:
                self._on_since.pop(sid, None)

    def _kept_on(self, prof: Profile, until_s: float, k: int) -> Profile | None:
        """``prof`` with its 0 periods before ``until_s`` (epoch s) raised to the car's minimum
        current on the lines it was using; None when nothing is to raise."""
        cut = math.ceil(until_s - epoch_s(prof.start))
        if cut <= 0:
            return None
        t = np.union1d(prof.starts, [cut])
        idx = np.searchsorted(prof.starts, t, side="right") - 1
        lim = prof.limits[idx].copy()
        ph = prof.phases[idx]
        off = (t < cut) & (lim.max(axis=1) == 0)
        if not off.any():
            return None
        ev = self.belief.evses[k]
        min_da = prof.min_rate_da or math.ceil(ev.min_current * 10)
        if min_da <= 0:
            return None
        old = self._intent.get(prof.key)
        lines = (
            old.limits[0] > 0
            if old is not None and old.limits[0].max() > 0
            else np.arange(3) < ev.phases
        )
        lim[np.ix_(off, lines)] = min_da
        maxp = self.caps.get(ev.id, StationCaps()).apply(ev)[1]
        st, lm, phs = merge_periods(t, lim, ph, maxp, int(t[-1]) + 1)
        return replace(prof, starts=st, limits=lm, phases=phs)

    def _refresh_wants(self, cp: str) -> None:
        v = self.versions.get(cp)
        if v is None:
            return
        for key, prof in self._targets.items():
            if key[0] != cp:
                continue
            if not self._changed(self._intent.get(key), prof):
                self._want.pop(key, None)
                continue
            try:
                payload = to_payload(prof, v, self.ids)
            except InputError as e:
                self._skip(str(e))
                continue
            rej = self._rejected.get(key)
            if (
                rej is not None
                and rej[0].until_s > self._now_s
                and not self._changed(rej[0].profile, prof)
            ):
                continue  # rejected as is: not re-sent before its back-off is over
            ev = self._evse.get((cp, key[1]))
            volt = ev.voltage_v if ev is not None else prof.voltage_v
            self._want[key] = _Want(prof, payload, held_from_payload(payload, v, volt))

    def _times(self, now_s: float, end_s: float | None = None) -> np.ndarray:
        """Instants at which to check: now, every breakpoint of a possibly-held or wanted
        profile, every limit period start, up to the end of the plan."""
        lim = self._limits
        if end_s is None:
            end_s = lim.end_s if lim is not None else now_s + 1.0
        end_s = max(end_s, now_s + 1.0)
        pts = [np.array([now_s]), self.belief.breakpoints()]
        pts += [w.held.breakpoints() for w in self._want.values() if w.held is not None]
        if lim is not None:
            pts.append(lim.period_bounds_s())
        t = np.unique(np.concatenate(pts))
        return t[(t >= now_s) & (t < end_s)]

    def _release(self, now_s: float) -> list[Message]:
        """Send every wanted profile that is safe now (the per-instant invariant, docs/ocpp.md).

        A profile no higher, at any instant, than the lowest its slot may hold now cannot let
        any car draw more: it goes out at once (a decrease). Any other goes out only when, with
        it counted as possibly held, every row its connector loads stays within its limit at
        every instant (greedy, in connector order). A blocked TxDefault for a connector whose
        default is unknown (after a boot) is replaced by a 0 A one first, so that it becomes
        known without ever letting it draw more. While a station's capabilities are being
        asked, such unknown defaults get their 0 at once (:meth:`_boot_defaults`).
        """
        boot = self._boot_defaults(now_s)
        ready = [
            key
            for key in self._want
            if key[0] in self.versions
            and not self._backing_off(key[0], now_s)
            and self._asking.get(key[0], -math.inf) <= now_s
            and self.belief.slot(key).pending is None
        ]
        if not ready:
            return boot
        times = self._times(now_s)
        out: list[Message] = boot
        incs = []
        for key in ready:
            k = self.belief.index.get((key[0], key[1]))
            w = self._want[key]
            if k is None or key[2] == "station_max":  # the cap is never relied upon
                out.append(self._send(key, now_s))
                continue
            new = self.belief.value_a(key, w.held, times)
            if np.all(new <= self.belief.lowest_a(key, times) + EPS):
                out.append(self._send(key, now_s))
            else:
                incs.append((key, k))
        if self._limits is None or not incs:
            return out
        base = self.belief.worst_a(times)
        for key, k in incs:
            w = self._want[key]
            after = base.copy()
            after[:, k] = self.belief.worst_a(times, {key: w.held}, only=[k])[:, k]
            if self._limits.within_for(k, after, times):
                out.append(self._send(key, now_s))
                base = after
            elif key[2] == "tx_default" and self.belief.slot(key).base is UNKNOWN:
                out.append(self._send_zero(key, now_s))
        return out

    def _boot_defaults(self, now_s: float) -> list[Message]:
        """The boot window: a TxDefaultProfile slot whose content is unknown (first connection,
        or a BootNotification: the station may have wiped its profiles and let a car draw its
        hardware maximum) gets a limit-0 default at once, in parallel with the capability
        queries, instead of after their answer (one round trip less). It is sent in ``A``
        (OCPP 1.6 §3.13 / 2.x K01: every smart-charging station takes ``A``; the site entry's
        unit is not yet confirmed) and, if the station rejects it, in ``W``. Until it is
        ``Accepted`` the slot stays unknown, i.e. budgeted at the hardware maximum; the wanted
        default stays wanted and goes out once the capabilities are in and it is safe."""
        out: list[Message] = []
        for key in list(self._want):
            cp = key[0]
            if (
                key[2] != "tx_default"
                or cp not in self.versions
                or self._asking.get(cp, -math.inf) <= now_s
                or self._backing_off(cp, now_s)
            ):
                continue
            slot = self.belief.slot(key)
            if slot.base is not UNKNOWN or slot.pending is not None:
                continue
            refused = self._zero_refused.get(key, set())
            unit = next((u for u in ("A", "W") if u not in refused), None)
            if unit is not None:
                msg = self._send_zero(key, now_s, unit)
                self._boot_zero[key] = msg[2]
                out.append(msg)
        return out

    def _send_zero(self, key: SlotKey, now_s: float, unit: str | None = None) -> Message:
        """A 0 TxDefault (in ``unit``, default the wanted one's) in place of the wanted one
        (kept wanted for later)."""
        w = self._want[key]
        v = self.versions[key[0]]
        zero = replace(
            w.profile,
            rate_unit=unit or w.profile.rate_unit,  # type: ignore[arg-type]
            starts=np.zeros(1, np.int64),
            limits=np.zeros((1, 3), np.int64),
            phases=w.profile.phases[:1],
        )
        payload = to_payload(zero, v, self.ids)
        ev = self._evse[(key[0], key[1])]
        held = held_from_payload(payload, v, ev.voltage_v)
        self.belief.sent(
            Sent(key, "SetChargingProfile", payload, held, now_s, now_s + self.send_timeout_s)
        )
        return (key[0], "SetChargingProfile", payload)

    def _send(self, key: SlotKey, now_s: float) -> Message:
        w = self._want.pop(key)
        self.belief.sent(
            Sent(key, "SetChargingProfile", w.payload, w.held, now_s, now_s + self.send_timeout_s)
        )
        self._intent[key] = w.profile
        return (key[0], "SetChargingProfile", w.payload)

    def _changed(self, old: Profile | None, new: Profile) -> bool:
        if old is None:
            return True
        if (
            old.rate_unit != new.rate_unit
            or old.transaction_id != new.transaction_id
            or old.valid_to != new.valid_to
            or old.min_rate_da != new.min_rate_da
        ):
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

    # ------------------------------------------------------------------ queries
    def on_sent(self, cp: str, payload: dict[str, Any], now: datetime) -> None:
        """The CSMS put a message from :meth:`step`/:meth:`poll` on the wire only now (it waited
        in a station's outbox): its deadline starts now."""
        try:
            slot = self.belief.slots.get(self._key_of(cp, payload))
        except (TypeError, ValueError, KeyError):
            return
        for m in slot.sent if slot is not None else ():
            if m.payload is payload and not m.expired:
                m.sent_s = epoch_s(now)
                m.deadline_s = m.sent_s + self.send_timeout_s

    def still_wanted(self, cp: str, action: str, payload: dict[str, Any]) -> bool:
        """Should a message queued for ``cp`` still go out? Not when the station went away, nor
        a SetChargingProfile past its deadline (it is budgeted as possibly held and retried)."""
        if cp not in self.versions:
            return False
        if action != "SetChargingProfile":
            return True
        try:
            slot = self.belief.slots.get(self._key_of(cp, payload))
        except (TypeError, ValueError, KeyError):
            return False
        return slot is not None and any(m.payload is payload and not m.expired for m in slot.sent)

    def in_force(self, cp: str) -> list[Profile]:
        """The profiles last sent to station ``cp`` (see :attr:`belief` for what it holds)."""
        return [p for k, p in self._intent.items() if k[0] == cp]

    def waiting(self) -> list[SlotKey]:
        """Slots with a profile to send once safe (or once their station answers)."""
        return list(self._want)

    @property
    def reserved(self) -> dict[str, str]:
        """EVSE id → why the plan budgets it at what it may draw."""
        return dict(self._reason)

    @property
    def sessions(self) -> dict[str, str]:
        """Active session id → EVSE id."""
        return {sid: t.evse_id for sid, t in self._tx.items()}

    def transaction_of(self, session_id: str) -> int | str:
        return self._tx[session_id].wire_id

    def _key_of(self, cp: str, req: dict[str, Any]) -> SlotKey:
        if "csChargingProfiles" in req:
            conn, prof = req.get("connectorId"), req["csChargingProfiles"]
        else:
            conn, prof = req.get("evseId"), req.get("chargingProfile")
        if not isinstance(conn, int) or isinstance(conn, bool) or not isinstance(prof, dict):
            raise ValueError("no connectorId/evseId or profile in the request")
        purpose = prof.get("chargingProfilePurpose")
        names: dict[str, Purpose] = {}
        for v in ("1.6", "2.0.1"):
            for p in ("station_max", "tx_default", "tx"):
                names[wire_purpose(v, p)] = p
        return (cp, conn, names.get(str(purpose), str(purpose)))


def _unit_of(request: dict[str, Any]) -> str:
    """The ``chargingRateUnit`` of a SetChargingProfile request (1.6 or 2.x), ``""`` if none."""
    prof = request.get("csChargingProfiles") or request.get("chargingProfile") or {}
    sch = prof.get("chargingSchedule") if isinstance(prof, dict) else None
    if isinstance(sch, list):
        sch = sch[0] if sch else None
    unit = sch.get("chargingRateUnit") if isinstance(sch, dict) else None
    return unit if isinstance(unit, str) else ""


def _number(v: Any) -> float | None:
    """A finite float from an OCPP value (1.6 sends strings), else None."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _time(v: Any) -> datetime | None:
    """An OCPP timestamp → aware UTC datetime (naive ones are taken as UTC), else None."""
    if isinstance(v, datetime):
        t = v
    elif isinstance(v, str) and v:
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    try:
        return t.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


__all__ = ["CsmsAdapter", "Message"]
