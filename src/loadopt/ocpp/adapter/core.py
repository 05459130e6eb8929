"""The :class:`CsmsAdapter`: its settings, the control step (``step``: budget, run the
controller, rebuild the targets; ``poll``: deadlines and what became safe) and the queries a
CSMS asks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import datetime
from typing import Any

from ..._base import to_utc
from ...controller import Controller
from ...errors import UnknownIdError
from ...schedule import Schedule
from ...site import Evse
from ..belief import Belief, SlotKey, epoch_s
from ..guard import SiteLimits
from ..ids import ProfileIds, Version
from ..profiles import Profile, StationCaps
from .answers import _Answers
from .release import _Release
from .state import Message, _Rejected, _Tx, _Want, log
from .stations import _Stations
from .targets import _Targets
from .transactions import _Transactions


class CsmsAdapter(_Stations, _Transactions, _Answers, _Targets, _Release):
    """Keeps a site's OCPP state around a :class:`~loadopt.controller.Controller`.

    Parameters
    ----------
    controller
        The site's controller (its site names the stations and connectors).
    threshold_a
        Increases smaller than this (A) are not sent.
    ids
        Profile ids and stack levels (default :class:`~loadopt.ocpp.ids.ProfileIds`).
    station_max, tx_default
        Emit station caps and newcomer defaults.
    strict
        Raise :class:`~loadopt.errors.InputError` on a bad event instead of skipping it.
    send_timeout_s
        A message not answered within this (s) is *unanswered*: possibly applied, its station
        budgeted at its worst case and retried after a back-off.
    backoff_s
        The back-off doubles from ``backoff_s[0]`` to ``backoff_s[1]`` (s).
    future_skew_s
        Events stamped further than this (s) after the adapter's clock are quarantined.
    max_overstay_h
        A session still open this long (h) after its expected departure with no event or meter
        value for as long is ended as a ghost.
    min_off_s
        A TxProfile that stopped a car (limit 0) keeps it stopped at least this long (s;
        hysteresis against on/off flapping; only ever lowers a limit).
    min_on_s
        A car the plan switched on is kept at its minimum current for at least this long (s)
        after it started, when the plan would stop it earlier, but only while that fits every
        limit with everything stations may hold (a decrease a limit needs always goes out).
    first_transaction_id
        The first 1.6 ``transactionId`` the adapter gives (then counting up). A CSMS that
        restarts must not reuse the ids it gave before (cars may still charge under them), so
        it seeds this past them (from its database, or the clock as the example CSMS does).
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
        first_transaction_id: int = 1,
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
        self._next_tx = int(first_transaction_id)
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
        #: GetChargingProfiles request id → (charge point, TxProfile slot generations when
        #: asked, TxProfile slots reported so far): resolves unknown TxProfile slots (a restart)
        self._reports = {}
        #: (cp, connector) → (TxProfile slot generation, epoch s) of a GetCompositeSchedule asked
        self._composites = {}
        self._pending: list[Message] = []  #: non-profile messages to send
        self._off_since: dict[str, float] = {}  #: session id → when its limit went to 0
        self._on_since: dict[str, float] = {}  #: session id → when its limit went above 0
        self._now_s: float = -math.inf  #: the adapter's clock (last step/poll)
        self._reason: dict[str, str] = {}  #: EVSE id → why it is reserved
        self._theirs: dict[str, Any] = {}  #: the controller's own reservation we overrode

    def step(self, now: datetime) -> list[Message]:
        """One control interval: budget what the plan cannot control, run the controller, and
        return the first wave of messages (decreases, and the increases already safe).

        Parameters
        ----------
        now
            The interval's time (aware datetime; whole seconds are used; a naive one is an
            :class:`~loadopt.errors.InputError`, never read as the machine's local time).

        Returns
        -------
        list of (str, str, dict)
            ``(charge point id, action, payload)`` to send. A controller failure is logged and
            what stations hold is kept (nothing is raised into the loop).
        """
        now = to_utc(now, "CsmsAdapter.step now").replace(microsecond=0)  # whole seconds
        now_s = now.timestamp()
        self._now_s = max(self._now_s, now_s)
        self._expire(now_s)
        self._end_ghosts(now)
        for cp in list(self.versions):
            self._reconcile_tx(cp, now_s)
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
        """Deadlines, back-off and the increases that became safe: what to send now.

        Parameters
        ----------
        now
            The adapter's time (aware datetime).

        Returns
        -------
        list of (str, str, dict)
            ``(charge point id, action, payload)`` to send.
        """
        now_s = epoch_s(now)
        self._now_s = max(self._now_s, now_s)
        self._expire(now_s)
        for cp, until in self._asking.items():
            if until == math.inf:
                self._asking[cp] = now_s + self.send_timeout_s
        for ck, (gen, at) in self._composites.items():
            if at == math.inf:
                self._composites[ck] = (gen, now_s)
        out, self._pending = self._pending, []
        out = [m for m in out if m[0] in self.versions]
        return out + self._release(now_s)

    def on_sent(self, cp: str, payload: dict[str, Any], now: datetime) -> None:
        """The CSMS put a message from :meth:`step` / :meth:`poll` on the wire only now (it
        waited in a station's outbox): its deadline starts now.

        Parameters
        ----------
        cp
            The charge point id.
        payload
            The very payload object returned.
        now
            When it was sent (aware datetime).
        """
        try:
            slot = self.belief.slots.get(self._key_of(cp, payload))
        except (TypeError, ValueError, KeyError):
            return
        for m in slot.sent if slot is not None else ():
            if m.payload is payload and not m.expired:
                m.sent_s = epoch_s(now)
                m.deadline_s = m.sent_s + self.send_timeout_s

    def still_wanted(self, cp: str, action: str, payload: dict[str, Any]) -> bool:
        """Should a message queued for ``cp`` still go out? Not when the station went away, nor a
        SetChargingProfile past its deadline (it is budgeted as possibly held and retried).

        Parameters
        ----------
        cp
            The charge point id.
        action
            The OCPP action.
        payload
            The very payload object returned.

        Returns
        -------
        bool
        """
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
        """The profiles last sent to station ``cp`` (see :attr:`belief` for what it holds).

        Parameters
        ----------
        cp
            The charge point id.

        Returns
        -------
        list of Profile
        """
        return [p for k, p in self._intent.items() if k[0] == cp]

    def waiting(self) -> list[SlotKey]:
        """Slots with a profile to send once safe (or once their station answers).

        Returns
        -------
        list of (str, int, str)
            ``(charge point, connector, purpose)``.
        """
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
        """The OCPP transaction id of a session the adapter opened.

        Parameters
        ----------
        session_id
            The session.

        Returns
        -------
        int or str
            1.6: the integer id; 2.x: the station's string.

        Raises
        ------
        UnknownIdError
            No open transaction for that session (an :class:`~loadopt.errors.InputError` and a
            ``KeyError``).
        """
        try:
            return self._tx[session_id].wire_id
        except KeyError:
            raise UnknownIdError(f"no open transaction for session {session_id!r}") from None
