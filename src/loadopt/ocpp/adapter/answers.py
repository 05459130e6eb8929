"""Answers and reconciliation in a :class:`~loadopt.ocpp.adapter.CsmsAdapter`: what stations
answer to SetChargingProfile (accepted, rejected, unanswered: back-off, capabilities asked
again), what they report holding (ReportChargingProfiles, GetCompositeSchedule) folded into the
belief.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ...errors import InputError
from ..belief import COMPOSITE, epoch_s, held_from_payload
from ..guard import EPS
from .state import _AdapterState, _number, _Rejected, _time, _unit_of


class _Answers(_AdapterState):
    """Station answers and reconciliation with what they hold."""

    def on_report_charging_profiles(self, cp: str, payload: Any) -> bool:
        """2.x ``ReportChargingProfiles`` (answer to ``GetChargingProfiles``): a profile of ours the
        station reports is what it holds (when nothing is in flight for its slot); any other
        profile on a connector makes the connector's default unknown (budgeted at its maximum)
        since it may override ours.

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
        if not isinstance(payload, dict) or not isinstance(payload.get("chargingProfile"), list):
            return self._skip(f"charge point {cp!r}: ReportChargingProfiles without a list")
        v = self.versions.get(cp, "2.0.1")
        evse = payload.get("evseId")
        rid = payload.get("requestId")
        rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else -1
        # only an answer to our own request describes a slot (its generation when asked)
        req = self._reports.get(rid)
        if req is not None and req[0] != cp:
            req = None
        from ...grid.ocpp_constraints import PURPOSE, report_charging_profiles, source_of

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
                    car_phases_known=self._car_phases_known(cp, evse, _phases_written(prof)),
                )
                if held is not None and req is not None:
                    req[2].add(key)
                    gen = req[1].get(key, self.belief.slot(key).gen)
                    self.belief.resolve(key, held, gen)
            elif (cp, evse) in self._evse:
                self._skip(
                    f"charge point {cp!r} EVSE {evse}: holds a foreign profile {pid!r} "
                    "that may override loadopt's; budgeted at its maximum"
                )
                self.belief.set_unknown((cp, evse, "tx_default"))
        if req is not None and not payload.get("tbc", False):
            self._reports.pop(rid)  # the last report: TxProfiles not reported are not held
            for key, gen in req[1].items():
                if key not in req[2]:
                    self.belief.resolve(key, None, gen)
        return ok

    def on_response(
        self, cp: str, action: str, request: Any, response: Any, now: datetime | None = None
    ) -> bool:
        """What the station answered to a message from :meth:`step` / :meth:`poll`. Call
        :meth:`poll` afterwards to send what became safe.

        Parameters
        ----------
        cp
            The charge point id.
        action
            The OCPP action of the request.
        request
            The request payload (the very object returned).
        response
            The answer's payload; ``None``: no answer (time-out, CallError, closed socket).
        now
            When it arrived (aware datetime; default the adapter's clock).

        Returns
        -------
        bool
            Whether it was applied (``False``: skipped, logged in :attr:`problems`; with
            ``strict=True`` an :class:`~loadopt.errors.InputError` instead).
        """
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
            if response is not None:
                return self._reconcile(cp, request, response)
            conn = request.get("connectorId", request.get("evseId"))
            if isinstance(conn, int):  # no answer: asked again after the station's back-off
                self._composites.pop((cp, conn), None)
                self._back_off(cp, now_s)
            return True
        if action == "GetChargingProfiles":
            return self._profiles_answered(cp, request, response)
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
        asked = self._composites.pop((cp, conn), None) if isinstance(conn, int) else None
        if response.get("status") != "Accepted" or not isinstance(sched, dict):
            return True
        k = self.belief.index.get((cp, conn)) if isinstance(conn, int) else None
        if k is None:
            return True
        ev = self.belief.evses[k]
        start = sched.get("startSchedule", sched.get("scheduleStart"))
        dur = _number(sched.get("duration", request.get("duration")))
        start_s = _time(start)
        one = {**sched, "startSchedule": start}
        prof: dict[str, Any] = {"chargingProfilePurpose": COMPOSITE, "chargingSchedule": [one]}
        if dur is not None and dur > 0 and start_s is not None:  # unknown after its span
            prof["validTo"] = (start_s + timedelta(seconds=dur)).isoformat()
        wrap = {"evseId": conn, "chargingProfile": prof}
        try:
            held = held_from_payload(wrap, self.versions.get(cp, "1.6"), ev.voltage_v)
        except (TypeError, ValueError):
            return self._skip(f"charge point {cp!r}: malformed GetCompositeSchedule answer")
        if held is None:
            return True
        t = held.at_s
        worst = self.belief.worst_a(t, only=[k])[:, k]
        got = np.minimum(held.limit_at(t), self.belief.hw_a[k][None, :])
        if asked is not None and "validTo" in prof:
            # a snapshot of everything the station lets the connector draw: it bounds an
            # unknown TxProfile slot (a transaction from before this adapter) over its span
            self.belief.resolve((cp, ev.connector_id, "tx"), held, asked[0])
        if np.any(np.nan_to_num(got) > worst + 0.1 + EPS):
            self.belief.set_unknown((cp, ev.connector_id, "tx_default"))
            return self._skip(
                f"charge point {cp!r} connector {conn}: composite schedule above "
                "what loadopt sent; budgeted at its maximum until re-synced"
            )
        return True

    def _profiles_answered(self, cp: str, request: dict[str, Any], response: Any) -> bool:
        """2.x ``GetChargingProfilesResponse``: ``NoProfiles`` means the station holds none of
        loadopt's profiles, so no TxProfile of ours from before a restart either; anything but
        ``Accepted`` (reports follow) ends the request."""
        rid = request.get("requestId")
        status = response.get("status") if isinstance(response, dict) else None
        if status == "Accepted" or not isinstance(rid, int):
            return True
        req = self._reports.pop(rid, None)
        if req is not None and req[0] == cp and status == "NoProfiles":
            for key, gen in req[1].items():
                self.belief.resolve(key, None, gen)
        return True


def _phases_written(prof: dict[str, Any]) -> int:
    """The most phases a reported profile's periods are written for (``numberPhases``, 3 where
    absent or not an int: OCPP 2.x ChargingSchedulePeriodType)."""
    scheds = prof.get("chargingSchedule")
    scheds = scheds if isinstance(scheds, list) else [scheds]
    periods = [
        per
        for s in scheds
        if isinstance(s, dict) and isinstance(s.get("chargingSchedulePeriod"), list)
        for per in s["chargingSchedulePeriod"]
        if isinstance(per, dict)
    ]
    nphs = [
        n if isinstance(n := per.get("numberPhases"), int) and not isinstance(n, bool) else 3
        for per in periods
    ]
    return max(nphs, default=3)
