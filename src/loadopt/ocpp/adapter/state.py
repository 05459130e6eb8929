"""What a :class:`~loadopt.ocpp.adapter.CsmsAdapter` keeps: its message type, the records of
transactions, wanted and rejected profiles, the adapter's attributes as one declared base the
other parts (stations, transactions, answers, targets, release) are written against, the fault
helpers and the OCPP value parsers.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from ...controller import Controller
from ...errors import InputError
from ...schedule import Schedule
from ...site import Evse, Site
from ..belief import Belief, Held, SlotKey
from ..guard import SiteLimits
from ..ids import ProfileIds, Purpose, Version, wire_purpose
from ..profiles import Profile, StationCaps

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
_ANY: Any = object()  #: "any connector" for :meth:`_AdapterState._txs_on`


@dataclass
class _Tx:
    session_id: str
    charge_point_id: str
    connector: int
    evse_id: str
    wire_id: int | str  #: 1.6 int / 2.x string
    meter_start_wh: float | None = None
    export_start_wh: float | None = None  #: 2.1: first Energy.Active.Export.Register (Wh)
    last_meter_at: datetime | None = None
    last_seq: int = -1
    last_event_at: datetime | None = None
    #: 2.x ``numberOfPhasesUsed`` was reported: a ``W`` TxProfile may be spread over the phases
    phases_known: bool = False


@dataclass
class _Want:
    profile: Profile
    payload: dict[str, Any]
    held: Held | None


@dataclass
class _Rejected:
    profile: Profile
    until_s: float


class _AdapterState:
    """The attributes of a :class:`~loadopt.ocpp.adapter.CsmsAdapter` (set in its ``__init__``)
    and the helpers every part uses."""

    controller: Controller
    site: Site
    threshold_a: float
    ids: ProfileIds
    station_max: bool
    tx_default: bool
    strict: bool
    send_timeout_s: float
    backoff_s: tuple[float, float]
    future_skew_s: float
    max_overstay_h: float
    min_off_s: float
    min_on_s: float
    versions: dict[str, Version]
    caps: dict[str, StationCaps]
    supply_phases: dict[str, int]
    phase_mismatch: set[str]
    max_stack_level: dict[str, int]
    problems: list[str]
    status: dict[tuple[str, int], str]
    last_schedule: Schedule | None
    belief: Belief
    _evse: dict[tuple[str, int], Evse]
    _cps: set[str]
    _tx: dict[str, _Tx]
    _by_wire: dict[tuple[str, int | str], str]
    _ended: OrderedDict[tuple[str, str], None]
    _starts16: dict[tuple[Any, ...], int]
    _next_tx: int
    _limits: SiteLimits | None
    _targets: dict[SlotKey, Profile]
    _intent: dict[SlotKey, Profile]
    _want: dict[SlotKey, _Want]
    _rejected: dict[SlotKey, tuple[_Rejected, int]]
    _backoff: dict[str, tuple[float, float]]
    _conn: dict[str, int]
    _asking: dict[str, float]
    _boot_zero: dict[SlotKey, dict[str, Any]]
    _zero_refused: dict[SlotKey, set[str]]
    _n_conn: int
    _n_requests: int
    _reports: dict[int, tuple[str, dict[SlotKey, int], set[SlotKey]]]
    _composites: dict[tuple[str, int], tuple[int, float]]
    _pending: list[Message]
    _off_since: dict[str, float]
    _on_since: dict[str, float]
    _now_s: float
    _reason: dict[str, str]
    _theirs: dict[str, Any]

    if TYPE_CHECKING:  # what one part calls of another (defined in the part named)

        def _end(self, sid: str, at: datetime, why: str) -> None: ...  # transactions
        def on_get_configuration(self, cp: str, payload: Any) -> bool: ...  # stations
        def on_get_variables(self, cp: str, payload: Any) -> bool: ...  # stations
        def _capability_request(self, cp: str, v: Version) -> Message: ...  # stations
        def _composite_request(self, cp: str, connector: int) -> Message: ...  # stations
        def _reconcile_tx(self, cp: str, now_s: float) -> None: ...  # stations
        def _rebuild_targets(self) -> None: ...  # targets
        def _refresh_wants(self, cp: str) -> None: ...  # targets
        def _times(self, now_s: float, end_s: float | None = None) -> np.ndarray: ...  # release

    def _skip(self, msg: str) -> bool:
        if self.strict:
            raise InputError(msg)
        log.warning("skipped: %s", msg)
        self.problems.append(msg)
        return False

    def _txs_on(self, cp: str, conn: Any = _ANY) -> list[_Tx]:
        """The open transactions of charge point ``cp`` (on connector/EVSE ``conn`` if given; a
        ``None`` from a payload matches none), as a list (safe to end them while iterating)."""
        return [
            t
            for t in self._tx.values()
            if t.charge_point_id == cp and (conn is _ANY or t.connector == conn)
        ]

    def _car_phases_known(self, cp: str, conn: Any, written_for: int = 0) -> bool:
        """Whether the car of the open transaction on ``cp``/``conn`` reported its phase count
        (else a ``W`` TxProfile may all flow on one line: ``profiles._w_phases``) and still uses
        at least the ``written_for`` phases a profile was written for (fewer: its ``W`` flows
        on fewer lines than it was spread over)."""
        sessions = getattr(self.controller, "sessions", {})
        for t in self._txs_on(cp, conn):
            sess = sessions.get(t.session_id) if t.phases_known else None
            if sess is not None and sess.phases >= written_for:
                return True
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

    def _back_off(self, cp: str, now_s: float) -> None:
        _, delay = self._backoff.get(cp, (0.0, 0.0))
        delay = min(max(2 * delay, self.backoff_s[0]), self.backoff_s[1])
        self._backoff[cp] = (now_s + delay, delay)

    def _backing_off(self, cp: str, now_s: float) -> bool:
        b = self._backoff.get(cp)
        return b is not None and now_s < b[0]

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
