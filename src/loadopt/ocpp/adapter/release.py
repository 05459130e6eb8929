"""Transition safety in a :class:`~loadopt.ocpp.adapter.CsmsAdapter` (docs/ocpp.md, "The
per-instant invariant"): unanswered messages expired, connectors the plan cannot lower budgeted
with ``Controller.reserve``, and wanted profiles released only when safe at every instant
(decreases at once, increases when every row they load stays within its limit; boot defaults).
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

import numpy as np

from ..belief import UNKNOWN, Held, Sent, SlotKey, held_from_payload
from ..guard import EPS
from ..profiles import to_payload
from .state import Message, _AdapterState


class _Release(_AdapterState):
    """Budgeting and the release of what is safe to send."""

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

        A profile no higher, at any instant, than the lowest its slot may hold now, in both
        directions (what it lets a car draw, and discharge: OCPP 2.1 V2X), cannot let any car
        draw or discharge more: it goes out at once (a decrease). Any other goes out only when,
        with it counted as possibly held, every row its connector loads stays within its limit
        at every instant (greedy, in connector order): the import rows, and the export rows
        when it may let the connector discharge more than it may now. A blocked TxDefault or
        TxProfile whose slot is unknown (a boot, a CSMS restart) is replaced by a 0 A one
        first, so that it becomes known without ever letting it draw more. While a station's
        capabilities are being asked, such unknown defaults get their 0 at once
        (:meth:`_boot_defaults`).
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
            if np.all(new <= self.belief.lowest_a(key, times) + EPS) and np.all(
                _discharge(w.held, times) <= self.belief.lowest_discharge_a(key, times) + EPS
            ):
                out.append(self._send(key, now_s))
            else:
                incs.append((key, k))
        if self._limits is None or not incs:
            return out
        base = self.belief.worst_a(times)
        base_d = self.belief.worst_discharge_a(times)
        for key, k in incs:
            w = self._want[key]
            after = base.copy()
            after[:, k] = self.belief.worst_a(times, {key: w.held}, only=[k])[:, k]
            after_d = base_d.copy()
            after_d[:, k] = self.belief.worst_discharge_a(times, {key: w.held}, only=[k])[:, k]
            more_d = bool(np.any(after_d[:, k] > base_d[:, k] + EPS))
            if self._limits.within_for(
                k, after, times, after_d if more_d else None, held_discharge_a=after_d
            ):
                out.append(self._send(key, now_s))
                base, base_d = after, after_d
            elif key[2] in ("tx_default", "tx") and self.belief.unsure(key):
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
        """A 0 TxDefault or TxProfile (in ``unit``, default the wanted one's) in place of the
        wanted one (kept wanted for later): it makes an unknown slot known without ever letting
        its connector draw more."""
        w = self._want[key]
        v = self.versions[key[0]]
        zero = replace(
            w.profile,
            rate_unit=unit or w.profile.rate_unit,  # type: ignore[arg-type]
            starts=np.zeros(1, np.int64),
            limits=np.zeros((1, 3), np.int64),
            phases=w.profile.phases[:1],
            min_rate_da=None,
            discharge=None,
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


def _discharge(held: Held | None, times_s: np.ndarray) -> np.ndarray:
    """(n, 3) A ``held`` lets the EV discharge (none, or not in force: 0)."""
    if held is None:
        return np.zeros((times_s.size, 3))
    return np.nan_to_num(held.discharge_at(times_s), nan=0.0)
