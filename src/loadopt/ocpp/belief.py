"""What every connector of a site may draw right now and later: the CSMS's belief.

The adapter never assumes that a station does what it was told. Per charge point, connector and
profile purpose it keeps a *slot*:

- ``base``: the profile the station **confirmed** holding (an ``Accepted`` answer), ``None`` when
  it holds none of ours, or :data:`UNKNOWN` (never seen, or rebooted: it may hold anything, so
  nothing of ours limits it);
- ``sent``: the messages sent for the slot since ``base`` that were not answered yet, in send
  order. A pending message may have been applied already; an unanswered one (past its deadline)
  may be applied at any time. Both count as *possibly held*. An ``Accepted`` answer to the
  ``k``-th resolves every earlier one too (OCPP-J: one CALL at a time per connection, in order;
  a station applies messages in the order it receives them), a ``Rejected`` one removes only that
  message.

What a connector may draw at instant ``t`` (:meth:`Belief.worst_a`, A per EVSE line) is the
largest limit any possibly-held state gives it:

- the ``TxDefaultProfile`` part: the largest limit of its possibly-held defaults in force at
  ``t``; ``UNKNOWN``, none, or one not in force (before ``startSchedule``, after ``validTo``)
  means the hardware maximum;
- the ``TxProfile`` part: the largest limit of the possibly-held TxProfiles in force at ``t``
  of the connector's open transaction, or of any transaction when the adapter knows none there
  (a station may run one the adapter never saw: a CSMS restart). ``UNKNOWN`` (a connector first
  seen by this adapter, or rebooted: a TxProfile from before may be in force, whatever its
  transaction) means the hardware maximum, with or without a known transaction, until the slot
  is confirmed (:meth:`Belief.resolve`, or an ``Accepted`` TxProfile). A *snapshot* read from a
  ``GetCompositeSchedule`` answer (purpose :data:`COMPOSITE`) bounds the connector over the
  span the station reported and means the hardware maximum outside it;
- ``min(hardware maximum, max(both parts))``. Taking the maximum of both, not the TxProfile
  alone, also covers a station that dropped the TxProfile (transaction unknown to it, a stop that
  never arrived) and falls back to its default.

Station caps (``ChargePointMaxProfile``) are not counted: the belief never relies on them, so a
station that ignores its cap cannot break it.

**The export direction** (OCPP 2.1 V2X, :mod:`loadopt.ocpp.v2x`): what a connector may
*discharge* at ``t`` (:meth:`Belief.worst_discharge_a`, A per EVSE line) is, by the same
candidates, the largest discharge any possibly-held profile in force at ``t`` allows
(``dischargeLimit``, else ``setpoint``, in a period whose ``operationMode`` is neither
``ChargingOnly`` nor ``Idle``), capped by the EVSE's discharge maximum (0 for an EVSE that is
not bidirectional). An ``UNKNOWN`` slot, or a composite snapshot (it is read for charging only),
may discharge that maximum; a known slot with no profile of ours, or one not in force, discharges
nothing (2.1: without an operation mode that allows it, the EV only charges). An old setpoint
still held while a new one travels therefore counts in both directions until it is resolved.

Limits are read from the **wire payload** that was sent, the way a station reads it: ``W`` is
turned into amps per line with the phase count the car may draw it on (one phase where the car's
phase count is unknown when the profile is written: OCPP 1.6, a 2.x ``TxDefaultProfile``,
whatever its ``numberPhases``, and a 2.x ``TxProfile`` of a car whose phase count the station did
not report; otherwise a 2.x ``TxProfile``: ``numberPhases``), 2.1
``limit_L2``/``limit_L3`` per line, otherwise ``limit`` on every line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..errors import InputError
from ..site import Site

SlotKey = tuple[str, int, str]  #: (charge point id, connector/EVSE id, purpose)


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


#: A slot whose content is not known (never seen, rebooted): it does not limit the connector.
UNKNOWN = _Unknown()

#: ``Held.purpose`` of a snapshot read from a ``GetCompositeSchedule`` answer: everything the
#: station lets the connector draw over the reported span (its ``validTo`` is the span's end).
COMPOSITE = "composite"


def epoch_s(t: datetime) -> float:
    """Seconds since 1970-01-01 UTC of an aware datetime (real time, DST-proof).

    Parameters
    ----------
    t
        A timezone-aware datetime.

    Returns
    -------
    float
        Epoch seconds (s).

    Raises
    ------
    InputError
        ``t`` is naive (or not a datetime).
    """
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise InputError(f"timestamp {t!r} is not a timezone-aware datetime")
    return t.astimezone(UTC).timestamp()


def _wire_time_s(v: Any) -> float | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


@dataclass(frozen=True, eq=False)
class Held:
    """One charging profile as a station holds it: a step function in real time.

    ``at_s`` (K,) absolute period starts (epoch s), ``lines_a`` (K, 3) A per EVSE line,
    ``valid_to_s`` (+inf = none), ``transaction_id`` (TxProfile only), ``discharge_a`` (K, 3)
    A per EVSE line the EV may discharge (None: a charge-only profile).
    """

    purpose: str
    at_s: np.ndarray
    lines_a: np.ndarray
    valid_to_s: float = math.inf
    transaction_id: int | str | None = None
    discharge_a: np.ndarray | None = None

    def limit_at(self, times_s: np.ndarray) -> np.ndarray:
        """The limit in force at each time.

        Parameters
        ----------
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, 3)`` A per EVSE line; NaN where the profile is not in force.
        """
        k = np.searchsorted(self.at_s, times_s, side="right") - 1
        out = self.lines_a[np.clip(k, 0, None)].astype(np.float64)
        out[(k < 0) | (times_s >= self.valid_to_s)] = np.nan
        return out

    def discharge_at(self, times_s: np.ndarray) -> np.ndarray:
        """What the EV may discharge at each time (OCPP 2.1 V2X).

        Parameters
        ----------
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, 3)`` A per EVSE line; 0 where the profile allows none, NaN where it is not in
            force.
        """
        k = np.searchsorted(self.at_s, times_s, side="right") - 1
        if self.discharge_a is None:
            out = np.zeros((times_s.size, 3))
        else:
            out = self.discharge_a[np.clip(k, 0, None)].astype(np.float64)
        out[(k < 0) | (times_s >= self.valid_to_s)] = np.nan
        return out

    def breakpoints(self) -> np.ndarray:
        """Every instant at which this profile changes (period starts, ``validTo``).

        Returns
        -------
        numpy.ndarray
            Epoch s.
        """
        b = self.at_s
        return np.append(b, self.valid_to_s) if math.isfinite(self.valid_to_s) else b


def held_from_payload(
    payload: dict[str, Any], version: str, voltage_v: float, *, car_phases_known: bool = True
) -> Held | None:
    """The :class:`Held` a station builds from a ``SetChargingProfile`` payload (camelCase).

    Only ``Absolute`` profiles are supported (all loadopt sends).

    Parameters
    ----------
    payload
        The 1.6 or 2.x request payload.
    version
        ``"1.6"``, ``"2.0.1"`` or ``"2.1"``.
    voltage_v
        The EVSE's voltage (V), to read ``W`` limits as A.
    car_phases_known
        A 2.x TxProfile's car reported its phase count (``numberOfPhasesUsed``): a ``W`` limit
        is spread over ``numberPhases``; ``False``: it may all flow on one line.

    Returns
    -------
    Held or None
        ``None`` when it is not a charging profile.
    """
    if "csChargingProfiles" in payload:
        prof = payload.get("csChargingProfiles") or {}
        sched = prof.get("chargingSchedule") or {}
    else:
        prof = payload.get("chargingProfile") or {}
        scheds = prof.get("chargingSchedule") or [{}]
        sched = scheds[0] if isinstance(scheds, list) and scheds else {}
    start = _wire_time_s(sched.get("startSchedule"))
    periods = sched.get("chargingSchedulePeriod") or []
    if start is None or not periods:
        return None
    unit = sched.get("chargingRateUnit", "A")
    tx_profile = prof.get("chargingProfilePurpose") == "TxProfile"
    at, lines, dis = [], [], []
    for per in periods:
        nph = int(per.get("numberPhases") or 3)
        # the phases a W value is spread over (see below): the same for charge and discharge
        n_w = max(nph, 1) if version != "1.6" and tx_profile and car_phases_known else 1
        dis.append(_discharge_row(per, unit, version, voltage_v, n_w))
        if per.get("limit") is None:  # 2.1: optional; Idle moves nothing, otherwise no limit
            row = [0.0 if per.get("operationMode") == "Idle" else math.inf] * 3
        elif unit == "W":
            # power, not current: where the car's phase count is unknown when the profile is
            # written (1.6; a 2.x profile other than a TxProfile, read by a car that plugs in
            # later) a 1-phase car may draw all of it on one line (profiles._w_phases)
            vals = [per.get("limit"), per.get("limit_L2"), per.get("limit_L3")]
            if version == "2.1" and vals[1] is not None:
                row = [float(x if x is not None else vals[0]) / voltage_v for x in vals]
            else:
                row = [float(vals[0]) / (voltage_v * n_w)] * 3
        else:
            lim = float(per.get("limit"))
            l2, l3 = per.get("limit_L2"), per.get("limit_L3")
            if version == "2.1" and l2 is not None:
                row = [lim, float(l2), float(l3 if l3 is not None else lim)]
            else:
                row = [lim] * 3
        at.append(start + float(per.get("startPeriod", 0)))
        lines.append(row)
    vt = _wire_time_s(prof.get("validTo"))
    return Held(
        purpose=str(prof.get("chargingProfilePurpose")),
        at_s=np.asarray(at),
        lines_a=np.asarray(lines, dtype=np.float64),
        valid_to_s=math.inf if vt is None else vt,
        transaction_id=prof.get("transactionId"),
        discharge_a=np.asarray(dis, dtype=np.float64) if any(r.any() for r in dis) else None,
    )


#: 2.1 operation modes in which the EV never discharges (OCPP 2.1 ``OperationModeEnumType``)
_NO_DISCHARGE_MODES = ("ChargingOnly", "Idle")


def _discharge_row(
    per: dict[str, Any], unit: str, version: str, voltage_v: float, n_w: int
) -> np.ndarray:
    """(3,) A per EVSE line a 2.1 period lets the EV discharge: ``|dischargeLimit|``, else
    ``|setpoint|``, in any mode but ``ChargingOnly`` / ``Idle`` (the default mode). In ``A``
    with ``_L2``/``_L3`` per line; without them the value is the sum over the phases, so it may
    all flow on one line; in ``W`` per line ``W / (V · n_w)``, ``n_w`` the phases a ``W`` value
    is spread over (``numberPhases`` where the car's phase count is known, else 1: a 1-phase car
    may feed it all in on one line, as for charging)."""
    mode = per.get("operationMode", "ChargingOnly")
    if version != "2.1" or mode in _NO_DISCHARGE_MODES:
        return np.zeros(3)
    name = "dischargeLimit" if per.get("dischargeLimit") is not None else "setpoint"
    v1 = per.get(name)
    if v1 is None:  # a discharging mode with no bound: as much as the EVSE can
        return np.full(3, np.inf)
    vals = [v1, per.get(f"{name}_L2"), per.get(f"{name}_L3")]
    per_line = vals[1] is not None
    row = np.array([abs(float(x if x is not None else v1)) for x in vals])
    if unit == "W":
        return row / voltage_v if per_line else row / (voltage_v * n_w)
    return row


@dataclass(eq=False)
class Sent:
    """A message sent for a slot and not answered yet."""

    key: SlotKey
    action: str
    payload: dict[str, Any]
    held: Held | None  #: what the station holds if it applies it (None: a clear)
    sent_s: float
    deadline_s: float
    expired: bool = False


@dataclass(eq=False)
class Slot:
    base: Held | _Unknown | None = UNKNOWN
    sent: list[Sent] = field(default_factory=list)
    #: bumped whenever ``base`` becomes unknown: a snapshot (report, composite schedule) asked
    #: in an older generation is stale and resolves nothing
    gen: int = 0

    def candidates(self) -> list[Held | _Unknown | None]:
        return [self.base, *[s.held for s in self.sent]]

    @property
    def pending(self) -> Sent | None:
        """The message still awaiting its answer within its deadline (at most one)."""
        return next((s for s in self.sent if not s.expired), None)


class Belief:
    """Per-connector belief of a site's stations (see the module docstring).

    Connector order is ``site.evses``; :meth:`worst_a` returns ``(n_times, E, 3)`` A per EVSE
    line (lines an EVSE lacks are 0).

    Parameters
    ----------
    site
        The site (its EVSEs are the connectors; their hardware maxima bound everything).
    """

    def __init__(self, site: Site) -> None:
        self.site = site
        self.evses = list(site.evses)
        self.index = {(e.charge_point_id, e.connector_id): k for k, e in enumerate(self.evses)}
        E = len(self.evses)
        self.hw_a = np.zeros((E, 3))
        self.dhw_a = np.zeros((E, 3))  #: A per line each EVSE can discharge (0: charge only)
        for k, e in enumerate(self.evses):
            self.hw_a[k, : e.phases] = e.max_current
            if e.bidirectional:
                d = e.max_current if e.max_discharge_current is None else e.max_discharge_current
                self.dhw_a[k, : e.phases] = d
        self.slots: dict[SlotKey, Slot] = {}
        #: (cp, connector) → the transaction the adapter believes active there
        self.active_tx: dict[tuple[str, int], int | str] = {}

    def slot(self, key: SlotKey) -> Slot:
        """The slot of ``key``; a slot first seen is unknown (the station may hold anything from
        before this adapter existed, a TxProfile of a transaction it never saw included).

        Parameters
        ----------
        key
            The slot: ``(charge point, connector, purpose)``.

        Returns
        -------
        Slot
        """
        s = self.slots.get(key)
        if s is None:
            s = self.slots[key] = Slot(UNKNOWN)
        return s

    def _cands(
        self, key: SlotKey, override: dict[SlotKey, Held | None] | None = None
    ) -> list[Held | _Unknown | None]:
        """What slot ``key`` may hold, plus ``override[key]`` if given (an admission test)."""
        s = self.slots.get(key)
        cands: list[Held | _Unknown | None] = s.candidates() if s is not None else [UNKNOWN]
        if override and key in override:
            cands = [*cands, override[key]]
        return cands

    def unsure(self, key: SlotKey) -> bool:
        """Whether slot ``key`` is unknown or known only from a composite snapshot.

        Parameters
        ----------
        key
            The slot: ``(charge point, connector, purpose)``.

        Returns
        -------
        bool
        """
        s = self.slots.get(key)
        b = UNKNOWN if s is None else s.base
        return b is UNKNOWN or (isinstance(b, Held) and b.purpose == COMPOSITE)

    def set_unknown(self, key: SlotKey) -> None:
        """Whatever slot ``key`` holds is unknown from now on (messages in flight stay).

        Parameters
        ----------
        key
            The slot: ``(charge point, connector, purpose)``.
        """
        s = self.slot(key)
        s.base = UNKNOWN
        s.gen += 1

    def resolve(self, key: SlotKey, held: Held | None, gen: int) -> bool:
        """A snapshot of what the station holds (``ReportChargingProfiles``: ``held`` or ``None``
        for none of ours; ``GetCompositeSchedule``: a :data:`COMPOSITE` ``held``) asked while the
        slot was in generation ``gen``. It replaces the base only while the base is unsure and
        still of that generation: a base confirmed since (an ``Accepted`` answer, an end of
        transaction) is newer than the snapshot, and a slot that became unknown since (a reboot)
        is not described by it. Messages in flight stay possibly held.

        Parameters
        ----------
        key
            The slot: ``(charge point, connector, purpose)``.
        held
            What the snapshot says it holds.
        gen
            The slot's generation when the snapshot was asked.

        Returns
        -------
        bool
            Whether it replaced the base.
        """
        s = self.slot(key)
        if s.gen != gen or not self.unsure(key):
            return False
        s.base = held
        return True

    # ---------------------------------------------------------------- events
    def sent(self, msg: Sent) -> None:
        """A message went out: it is possibly held from now on (until answered or replaced).

        Parameters
        ----------
        msg
            The message.
        """
        self.slot(msg.key).sent.append(msg)

    def answered(self, msg: Sent, accepted: bool) -> None:
        """``msg`` got an answer: Accepted resolves it and every earlier message of its slot.

        Parameters
        ----------
        msg
            The message.
        accepted
            ``status == "Accepted"``.
        """
        slot = self.slot(msg.key)
        if msg not in slot.sent:
            return
        i = slot.sent.index(msg)
        if accepted:
            slot.base = msg.held
            del slot.sent[: i + 1]
        else:
            del slot.sent[i]

    def expire(self, now_s: float) -> list[Sent]:
        """Mark messages past their deadline unanswered (they stay possibly held).

        Parameters
        ----------
        now_s
            Now (epoch s).

        Returns
        -------
        list of Sent
            The messages that expired now.
        """
        out = []
        for slot in self.slots.values():
            for m in slot.sent:
                if not m.expired and now_s >= m.deadline_s:
                    m.expired = True
                    out.append(m)
        return out

    def rebooted(self, cp: str) -> None:
        """A station (re)booted: whatever it held is unknown, its transactions are gone.

        Parameters
        ----------
        cp
            The charge point id.
        """
        for e in self.evses:
            if e.charge_point_id != cp:
                continue
            # messages in flight stay tracked: an answer after the boot means it applied them.
            # The TxProfile is unknown too: a station may resume a transaction after a reboot.
            self.set_unknown((cp, e.connector_id, "tx_default"))
            self.set_unknown((cp, e.connector_id, "tx"))
            self.active_tx.pop((cp, e.connector_id), None)
        self.set_unknown((cp, 0, "station_max"))

    # ---------------------------------------------------------------- queries
    def synced(self, k: int) -> bool:
        """EVSE ``k``'s slots are all known, nothing sent for them went unanswered, and no TxProfile
        of a transaction the adapter does not know is held there (one it could not lower: reported
        after a restart).

        Parameters
        ----------
        k
            EVSE index (order of ``site.evses``).

        Returns
        -------
        bool
        """
        e = self.evses[k]
        for purpose in ("tx_default", "tx"):
            key = (e.charge_point_id, e.connector_id, purpose)
            slot = self.slots.get(key)
            if slot is None or self.unsure(key) or any(m.expired for m in slot.sent):
                return False
        if (e.charge_point_id, e.connector_id) not in self.active_tx:
            tx_held = self._cands((e.charge_point_id, e.connector_id, "tx"))
            if any(isinstance(c, Held) for c in tx_held):
                return False
        return True

    def worst_a(
        self,
        times_s: np.ndarray,
        override: dict[SlotKey, Held | None] | None = None,
        only: list[int] | None = None,
    ) -> np.ndarray:
        """The most each EVSE line may draw at each time under any possibly-held state.

        Parameters
        ----------
        times_s
            ``(n,)`` instants (epoch s).
        override
            One more possibly-held profile per slot (an admission test).
        only
            Only these EVSE indices (the others are 0).

        Returns
        -------
        numpy.ndarray
            ``(n, E, 3)`` A.
        """
        times_s = np.asarray(times_s, dtype=np.float64)
        n, E = times_s.size, len(self.evses)
        out = np.zeros((n, E, 3))
        ks = range(E) if only is None else only
        for k in ks:
            out[:, k] = self._worst_one(k, times_s, override or {})
        return out

    def _worst_one(
        self, k: int, times_s: np.ndarray, override: dict[SlotKey, Held | None]
    ) -> np.ndarray:
        e = self.evses[k]
        hw = self.hw_a[k]
        n = times_s.size
        dkey = (e.charge_point_id, e.connector_id, "tx_default")
        cands = self._cands(dkey, override)
        default = np.full((n, 3), -np.inf)
        for c in cands:
            if isinstance(c, Held):
                v = c.limit_at(times_s)
                v[np.isnan(v)] = np.inf
            else:  # UNKNOWN or none of ours: nothing limits it
                v = np.full((n, 3), np.inf)
            default = np.maximum(default, v)
        worst = default
        tx = self.active_tx.get((e.charge_point_id, e.connector_id))
        tkey = (e.charge_point_id, e.connector_id, "tx")
        tc = self._cands(tkey, override)
        for c in tc:
            if c is UNKNOWN:
                worst = np.maximum(worst, np.inf)
            elif isinstance(c, Held) and c.purpose == COMPOSITE:  # unknown outside its span
                v = c.limit_at(times_s)
                worst = np.maximum(worst, np.where(np.isnan(v), np.inf, v))
            elif isinstance(c, Held) and (tx is None or _same_tx(c.transaction_id, tx)):
                v = c.limit_at(times_s)
                worst = np.maximum(worst, np.where(np.isnan(v), 0.0, v))
        return np.minimum(worst, hw[None, :])

    def worst_discharge_a(
        self,
        times_s: np.ndarray,
        override: dict[SlotKey, Held | None] | None = None,
        only: list[int] | None = None,
    ) -> np.ndarray:
        """The most each EVSE line may discharge at each time under any possibly-held state (the
        export direction; see the module docstring).

        Parameters
        ----------
        times_s
            ``(n,)`` instants (epoch s).
        override
            One more possibly-held profile per slot (an admission test).
        only
            Only these EVSE indices (the others are 0).

        Returns
        -------
        numpy.ndarray
            ``(n, E, 3)`` A.
        """
        times_s = np.asarray(times_s, dtype=np.float64)
        out = np.zeros((times_s.size, len(self.evses), 3))
        for k in range(len(self.evses)) if only is None else only:
            if not self.dhw_a[k].any():
                continue  # cannot discharge whatever it holds
            e = self.evses[k]
            tx = self.active_tx.get((e.charge_point_id, e.connector_id))
            worst = np.zeros((times_s.size, 3))
            for purpose in ("tx_default", "tx"):
                key = (e.charge_point_id, e.connector_id, purpose)
                for c in self._cands(key, override):
                    if isinstance(c, Held) and purpose == "tx" and c.purpose != COMPOSITE:
                        if tx is not None and not _same_tx(c.transaction_id, tx):
                            continue
                    worst = np.maximum(worst, self._discharge_values(c, times_s))
            out[:, k] = np.minimum(worst, self.dhw_a[k][None, :])
        return out

    def _discharge_values(self, c: Held | _Unknown | None, times_s: np.ndarray) -> np.ndarray:
        if c is UNKNOWN or (isinstance(c, Held) and c.purpose == COMPOSITE):
            return np.full((times_s.size, 3), np.inf)
        if isinstance(c, Held):
            return np.nan_to_num(c.discharge_at(times_s), nan=0.0)
        return np.zeros((times_s.size, 3))

    def lowest_discharge_a(self, key: SlotKey, times_s: np.ndarray) -> np.ndarray:
        """The least slot ``key`` may let its connector discharge at each time (unknown: 0; no
        profile of ours, or one not in force: 0).

        Parameters
        ----------
        key
            The slot: ``(charge point, connector, purpose)``.
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, 3)`` A.
        """
        zero = np.zeros((times_s.size, 3))
        vals = [
            self._discharge_values(c, times_s)
            if isinstance(c, Held) and c.purpose != COMPOSITE
            else zero  # unknown, none of ours, a snapshot: may allow none
            for c in self._cands(key)
        ]
        return np.min(vals, axis=0)

    def _slot_values(
        self, c: Held | _Unknown | None, times_s: np.ndarray, fallback: np.ndarray, unknown: float
    ) -> np.ndarray:
        if isinstance(c, Held):
            v = c.limit_at(times_s)
            return np.where(np.isnan(v), fallback, v)
        if c is UNKNOWN:
            return np.full((times_s.size, 3), unknown)
        return fallback

    def lowest_a(self, key: SlotKey, times_s: np.ndarray) -> np.ndarray:
        """The lowest limit slot ``key`` may hold at each time, counting an unknown slot as 0, no
        profile of ours (or one not in force) as what then applies (a default: the hardware
        maximum; a TxProfile: the lowest default).

        Parameters
        ----------
        key
            The slot: ``(charge point, connector, purpose)``.
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, 3)`` A.
        """
        k = self.index[(key[0], key[1])]
        hw = np.broadcast_to(self.hw_a[k], (times_s.size, 3))
        dkey = (key[0], key[1], "tx_default")
        low_d = np.min([self._slot_values(c, times_s, hw, 0.0) for c in self._cands(dkey)], axis=0)
        if key[2] == "tx_default":
            return np.minimum(low_d, hw)
        tx = self.active_tx.get((key[0], key[1]))
        vals = []
        for c in self._cands(key):
            if isinstance(c, Held) and c.purpose == COMPOSITE:
                c = UNKNOWN  # a snapshot of everything: says nothing about our TxProfile
            elif isinstance(c, Held) and not _same_tx(c.transaction_id, tx):
                c = None
            vals.append(self._slot_values(c, times_s, low_d, 0.0))
        return np.minimum(np.min(vals, axis=0), hw)

    def value_a(self, key: SlotKey, held: Held | None, times_s: np.ndarray) -> np.ndarray:
        """What slot ``key`` gives at each time if it holds ``held`` (not in force: the hardware
        maximum, which bounds what then applies).

        Parameters
        ----------
        key
            The slot: ``(charge point, connector, purpose)``.
        held
            A held profile, or ``None`` for none.
        times_s
            ``(n,)`` instants (epoch s).

        Returns
        -------
        numpy.ndarray
            ``(n, 3)`` A.
        """
        k = self.index[(key[0], key[1])]
        hw = np.broadcast_to(self.hw_a[k], (times_s.size, 3))
        return np.minimum(self._slot_values(held, times_s, hw, np.inf), hw)

    def breakpoints(self) -> np.ndarray:
        """Every instant at which some possibly-held profile changes.

        Returns
        -------
        numpy.ndarray
            Epoch s.
        """
        pts = [np.zeros(0)]
        for slot in self.slots.values():
            for c in slot.candidates():
                if isinstance(c, Held):
                    pts.append(c.breakpoints())
        return np.unique(np.concatenate(pts))


def _same_tx(a: Any, b: Any) -> bool:
    return a is not None and str(a) == str(b)


__all__ = ["COMPOSITE", "UNKNOWN", "Belief", "Held", "Sent", "Slot", "epoch_s", "held_from_payload"]
