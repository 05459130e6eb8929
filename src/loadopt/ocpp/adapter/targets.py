"""What the plan wants per profile slot in a :class:`~loadopt.ocpp.adapter.CsmsAdapter`:
TxProfiles, TxDefaultProfiles and station caps from the last schedule, the off hysteresis and
the minimum ON dwell, change detection, and the payloads waiting to be sent.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ...errors import InputError
from ..belief import SlotKey, epoch_s, held_from_payload
from ..merge import merge_periods
from ..profiles import (
    Profile,
    StationCaps,
    installation_caps,
    to_payload,
    tx_default_profiles,
    tx_profiles,
)
from .state import _AdapterState, _Want


class _Targets(_AdapterState):
    """Target profiles per slot and what of them must be sent."""

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
                known = self._tx[str(prof.session_id)].phases_known
                targets[prof.key] = self._hysteresis(replace(prof, car_phases_known=known))
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
        """Keep a car that was stopped (limit 0) stopped for ``min_off_s`` (only lowers). Not a
        V2G TxProfile: its periods are the plan's operation modes (a discharge is not flapping)."""
        if self.min_off_s <= 0 or prof.session_id is None or prof.discharge is not None:
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
        base = base_d = None
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
                        base_d = self.belief.worst_discharge_a(times)
                    try:
                        payload: dict[str, Any] | None = to_payload(cand, v, self.ids)
                    except InputError:
                        payload = None
                    if payload is not None and base.shape[0] == times.size:
                        held = held_from_payload(
                            payload, v, cand.voltage_v, car_phases_known=cand.car_phases_known
                        )
                        after = base.copy()
                        after[:, k] = self.belief.worst_a(times, {key: held}, only=[k])[:, k]
                        if lim.within_for(k, after, times, held_discharge_a=base_d):
                            targets[key] = cand
                            base = after
                            self._off_since.pop(sid, None)  # it did not stop
            if int(targets[key].limits[0].max()) > 0:
                self._on_since.setdefault(sid, now_s)
            else:
                self._on_since.pop(sid, None)

    def _kept_on(self, prof: Profile, until_s: float, k: int) -> Profile | None:
        """``prof`` with its 0 periods before ``until_s`` (epoch s) raised to the car's minimum
        current on the lines it was using; None when nothing is to raise (or ``prof`` is a V2G
        TxProfile: its periods are the plan's operation modes)."""
        cut = math.ceil(until_s - epoch_s(prof.start))
        if cut <= 0 or prof.discharge is not None:
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
            held = held_from_payload(payload, v, volt, car_phases_known=prof.car_phases_known)
            self._want[key] = _Want(prof, payload, held)

    def _changed(self, old: Profile | None, new: Profile) -> bool:
        if old is None:
            return True
        if (
            old.rate_unit != new.rate_unit
            or old.transaction_id != new.transaction_id
            or old.valid_to != new.valid_to
            or old.min_rate_da != new.min_rate_da
            # a W profile is written over the car's phases once they are known (more power)
            or old.car_phases_known != new.car_phases_known
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
