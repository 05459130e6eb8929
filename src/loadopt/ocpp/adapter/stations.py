"""Stations of a :class:`~loadopt.ocpp.adapter.CsmsAdapter`: the connection registry
(connect, reconnect, boot, disconnect with stale-socket tokens) and what each station supports
(1.6 GetConfiguration / 2.x GetVariables: rate unit, periods, stack level, phase switching,
supply phases).
"""

from __future__ import annotations

import math
from typing import Any

from ...errors import InputError
from ..belief import Held
from ..ids import Version, check_version
from ..profiles import StationCaps
from .state import CONFIG_KEYS_16, VARIABLES_2X, Message, _AdapterState


class _Stations(_AdapterState):
    """Connections and capabilities."""

    def connect(self, cp: str, version: str = "1.6") -> int | bool:
        """A station's websocket is up (first connection or a reconnection, with or without a
        BootNotification). Its capabilities are asked, and its station cap, TxDefaultProfiles and
        TxProfiles go out again at the next :meth:`poll`, each when safe (counted at what the
        station may hold until it answers).

        Parameters
        ----------
        cp
            The charge point id (on the site).
        version
            Its OCPP version (``"1.6"``, ``"2.0.1"``, ``"2.1"``).

        Returns
        -------
        int or bool
            A connection token for :meth:`disconnect`; ``False`` when skipped.
        """
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
        self._forget_requests(cp)
        if v != "1.6":  # reconcile: the station reports what it holds of ours
            self._pending.append(self._profiles_request(cp))
        else:  # 1.6 has no GetChargingProfiles: status and composite of each unsure connector
            self._reconcile_tx(cp, self._now_s)
        # profiles wait for the capabilities (rate unit, periods) up to one deadline
        self._asking[cp] = math.inf  # the deadline starts at the next poll (adapter time)
        if self.last_schedule is None:
            self._rebuild_targets()
        else:
            self._refresh_wants(cp)
        return self._n_conn

    def on_boot_notification(self, cp: str, version: str = "1.6") -> int | bool:
        """A station (re)booted: whatever it held is unknown (budgeted at its hardware maximum until
        it accepts our profiles) and its transactions are over (a reboot without StopTransaction
        must not leave a ghost). Then as :meth:`connect`.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        version
            Its OCPP version.

        Returns
        -------
        int or bool
            As :meth:`connect`.
        """
        if not self._known_cp(cp):
            return self._skip(f"BootNotification from unknown charge point {cp!r}")
        now = self._clock()
        for t in self._txs_on(cp):
            self._end(t.session_id, now, "station rebooted")
        self.belief.rebooted(cp)
        return self.connect(cp, version)

    def disconnect(self, cp: str, token: int | None = None) -> None:
        """A station's websocket closed.

        Parameters
        ----------
        cp
            The charge point id.
        token
            The connection :meth:`connect` returned: only that connection is meant, so a stale
            socket closing after the station reconnected does not unregister the live one.
            ``None``: whatever connection the station has.
        """
        if token is not None and self._conn.get(cp) != token:
            return
        self.versions.pop(cp, None)
        self._conn.pop(cp, None)
        self._pending = [m for m in self._pending if m[0] != cp]
        self._forget_requests(cp)
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
        """Record what station ``cp`` (all connectors, or one) supports.

        Parameters
        ----------
        cp
            The charge point id (on the site).
        connector
            One connector (``None`` or 0: all of them).
        rate_unit
            ``"A"`` or ``"W"``.
        max_periods
            Periods per charging schedule (>= 1).
        phase_switching
            It can switch a car between 1 and 3 phases.

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
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
        ``ConnectorSwitch3to1PhaseSupported``, ``ConnectorPhaseRotation``.

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
        ``PeriodsPerSchedule``, ``ProfileStackLevel``, ``ACPhaseSwitchingSupported``,
        ``EVSE.SupplyPhases``, 2.1 ``MaxExternalConstraintsId``.

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
                from ...grid.ocpp_constraints import ids_above

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
        gens = {
            (cp, k, "tx"): self.belief.slot((cp, k, "tx")).gen for c, k in self._evse if c == cp
        }
        self._reports[self._n_requests] = (cp, gens, set())
        return (
            cp,
            "GetChargingProfiles",
            {"requestId": self._n_requests, "chargingProfile": {"chargingProfileId": pids}},
        )

    def _forget_requests(self, cp: str) -> None:
        """No answer to an earlier snapshot request can come any more (socket gone)."""
        for rid in [r for r, v in self._reports.items() if v[0] == cp]:
            del self._reports[rid]
        for key in [k for k in self._composites if k[0] == cp]:
            del self._composites[key]

    def _reconcile_tx(self, cp: str, now_s: float) -> None:
        """Reconciliation of unsure TxProfile slots (a connector first seen, or after a reboot:
        a car may charge under a TxProfile from before this adapter; or a composite snapshot
        whose span ends within one plan span): per such connector of a connected station, a
        ``TriggerMessage`` for its ``StatusNotification`` (``Available``: no transaction, so
        no TxProfile) and a ``GetCompositeSchedule`` (a snapshot bounding what it lets a car
        draw, until the transaction is identified and our TxProfile for it accepted), unless
        one is outstanding (until answered: no backlog builds up in a silent station's outbox)
        or a ``GetChargingProfiles`` is, or the station is backing off (a composite schedule
        not answered). Until then the connector counts at its hardware maximum; a station that
        never answers stays there (the safe side)."""
        if cp not in self.versions or self._backing_off(cp, now_s):
            return
        if any(v[0] == cp for v in self._reports.values()):
            return
        span = self._dur_s() / 2  # one plan span
        for c, k in sorted(self._evse):
            key = (cp, k, "tx")
            if c != cp or not self.belief.unsure(key):
                continue
            base = self.belief.slot(key).base
            if isinstance(base, Held) and base.valid_to_s > now_s + span:
                continue  # a fresh snapshot
            if (cp, k) in self._composites:  # one outstanding at a time: no backlog
                continue
            v = self.versions[cp]
            where: dict[str, Any] = (
                {"connectorId": k} if v == "1.6" else {"evse": {"id": k, "connectorId": 1}}
            )
            self._pending.append(
                (cp, "TriggerMessage", {"requestedMessage": "StatusNotification", **where})
            )
            self._pending.append(self._composite_request(cp, k))

    def _dur_s(self) -> int:
        """GetCompositeSchedule duration (s): two plan spans."""
        return int(2 * self.controller.step_s * self.controller.n_periods)

    def _composite_request(self, cp: str, connector: int) -> Message:
        v = self.versions.get(cp, "1.6")
        dur = self._dur_s()
        gen = self.belief.slot((cp, connector, "tx")).gen
        # sent when the CSMS polls: its deadline starts at the next poll (adapter time)
        self._composites[(cp, connector)] = (gen, math.inf)
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
