"""OCPP external constraints → :class:`~loadopt.signals.GridSignal` s on the station's node.

A charging station may be limited by something other than the CSMS: a local EMS, the grid
operator through a local controller, the CPO (OCPP 2.0.1 / 2.1 ``ChargingLimitSourceEnumType``:
``EMS``, ``Other``, ``SO``, ``CSO``). It tells the CSMS with **NotifyChargingLimit** (K12: the
limit and, optionally, its schedule) or when asked with **ReportChargingProfiles** for profiles of
purpose ``ChargingStationExternalConstraints`` (K09/K10). loadopt must plan *within* those limits
— they are physical for the station — so each period of such a schedule becomes a hard cap on the
station's node:

- ``chargingRateUnit`` ``A`` → ``current_cap_a`` (per phase, whatever ``numberPhases`` says: a
  per-phase limit holds on every phase), ``W`` → ``import_cap_kw`` (= limit / 1000);
- ``evseId`` > 0 → the node of that EVSE; absent or 0 → the lowest node above all of the station's
  EVSEs (when that node also feeds other stations, the cap is conservative for them);
- ``startSchedule`` (default: when the message was received) + ``startPeriod``; a period lasts
  until the next one, or ``duration``, or — the last one of a schedule without a duration — one
  year;
- a ``Recurring`` profile (``chargingProfileKind``, K01 / 1.6 §7.9: the schedule restarts every
  day or week, ``recurrencyKind``, counted from ``startSchedule``) is laid out cycle by cycle from
  the one running when the message was received: :data:`RECURRING_CYCLES` cycles (31 days, 5
  weeks), each period ending at the next one, at ``duration`` or at the end of its cycle; after
  the last cycle the schedule's smallest limit holds for a year (conservative: a signal stream
  cannot repeat for ever; the station's next report replaces it);
- ``isGridCritical`` → priority 100 (else 0); ``chargingLimitSource`` and the schedule id are the
  provenance (``source`` = :func:`source_of` the station, ``ref`` = ``"<source>:<id>"``).

Profile ids: OCPP 2.1 reserves ids up to the station's ``MaxExternalConstraintsId``
(``SmartChargingCtrlr``) for external constraints; :func:`ids_above` moves loadopt's own id
scheme above it.

Pure functions: no network, no state. The CSMS adapter (:mod:`loadopt.ocpp`) calls them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InputError
from ..ocpp.ids import ProfileIds
from ..signals import GridSignal
from ..site import Site

PURPOSE = "ChargingStationExternalConstraints"
OPEN_END = timedelta(days=365)
#: ``recurrencyKind`` -> (cycle length in s, cycles laid out) of a ``Recurring`` profile.
RECURRING_CYCLES = {"Daily": (86_400, 31), "Weekly": (604_800, 5)}


def source_of(charge_point_id: str) -> str:
    """The ``GridSignal.source`` of a station's external constraints (one stream per station)."""
    return f"ocpp:{charge_point_id}"


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _norm(obj: Any) -> Any:
    """camelCase (wire JSON) and snake_case (the ``ocpp`` library's handlers) alike."""
    if isinstance(obj, dict):
        return {_snake(k): _norm(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_norm(v) for v in obj]
    return obj


def _time(v: Any, what: str) -> datetime:
    if isinstance(v, datetime):
        t = v
    else:
        try:
            t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{what}: bad timestamp {v!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def station_node(site: Site, charge_point_id: str, evse_id: int | None) -> str:
    """The node an external constraint of this station (or one of its EVSEs) applies to."""
    evses = [e for e in site.evses if e.charge_point_id == charge_point_id]
    if not evses:
        raise InputError(
            f"external constraint from unknown charging station "
            f"{charge_point_id!r} (no EVSE of site {site.id!r} has it)"
        )
    if evse_id:
        for e in evses:
            if e.connector_id == evse_id:
                return e.node
        raise InputError(
            f"external constraint for EVSE {evse_id} of station "
            f"{charge_point_id!r}: no such EVSE on site {site.id!r}"
        )
    parent = {n.id: n.parent for n in site.nodes}

    def path(n: str) -> list[str]:
        out = []
        cur: str | None = n
        while cur is not None:
            out.append(cur)
            cur = parent[cur]
        return out[::-1]  # root first

    paths = [path(e.node) for e in evses]
    common = paths[0]
    for p in paths[1:]:
        k = 0
        while k < min(len(common), len(p)) and common[k] == p[k]:
            k += 1
        common = common[:k]
    return common[-1]


def schedule_to_signals(
    site: Site,
    charge_point_id: str,
    schedule: dict,
    *,
    evse_id: int | None,
    received_at: datetime,
    limit_source: str = "Other",
    grid_critical: bool = False,
    kind: str | None = None,
    recurrency: str | None = None,
) -> tuple[GridSignal, ...]:
    """The caps of one OCPP ``ChargingScheduleType`` (camelCase or snake_case keys).

    Parameters
    ----------
    site
        The site the station belongs to.
    charge_point_id
        The station.
    schedule
        The ``ChargingScheduleType`` (limits in A per phase or W).
    evse_id
        The EVSE it applies to (``None`` / 0: the whole station).
    received_at
        When the message arrived (aware datetime): the start of a schedule without
        ``startSchedule``.
    limit_source, grid_critical
        ``chargingLimitSource`` and ``isGridCritical`` (provenance, priority 100).
    kind, recurrency
        The profile's ``chargingProfileKind`` (``Absolute`` when ``None``, ``Relative``,
        ``Recurring``) and ``recurrencyKind`` (``Daily`` / ``Weekly``, for ``Recurring``).

    Returns
    -------
    tuple of GridSignal
        One hard cap per period (per cycle for a recurring profile) on the station's node.

    Raises
    ------
    InputError
        A unit other than A or W, no period, a period without a numeric start and limit, a
        negative limit, a bad timestamp, a recurring profile without a known ``recurrencyKind``
        or with a period starting beyond its cycle.
    """
    sch = _norm(schedule)
    sid = sch.get("id", 0)
    what = f"station {charge_point_id!r} external schedule {sid}"
    unit = sch.get("charging_rate_unit")
    if unit not in ("A", "W"):
        raise InputError(f"{what}: chargingRateUnit must be 'A' or 'W', got {unit!r}")
    periods = sch.get("charging_schedule_period") or []
    if not periods:
        raise InputError(f"{what}: no chargingSchedulePeriod")
    start = (
        _time(sch["start_schedule"], what)
        if sch.get("start_schedule") is not None
        else _time(received_at, what)
    )
    dur = sch.get("duration")
    node = station_node(site, charge_point_id, evse_id)
    offsets = []
    for k, per in enumerate(periods):
        try:
            offsets.append((float(per["start_period"]), float(per["limit"])))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{what}: period {k} needs numeric startPeriod and limit") from None
    offsets.sort()
    for k, (_, lim) in enumerate(offsets):
        if lim < 0 or lim != lim:
            raise InputError(f"{what}: period {k} has limit {lim}")
    src = source_of(charge_point_id)

    def cap(sig_id: str, a: datetime, b: datetime, lim: float) -> GridSignal:
        kw = {"current_cap_a": lim} if unit == "A" else {"import_cap_kw": lim / 1000.0}
        return GridSignal(
            id=sig_id,
            start=a,
            end=b,
            node=node,
            priority=100 if grid_critical else 0,
            source=src,
            ref=f"{limit_source}:{sid}",
            **kw,
        )

    out = []
    if kind == "Recurring":
        if recurrency not in RECURRING_CYCLES:
            raise InputError(
                f"{what}: a Recurring profile needs recurrencyKind 'Daily' or 'Weekly', "
                f"got {recurrency!r}"
            )
        cycle_s, n_cycles = RECURRING_CYCLES[recurrency]
        if offsets[-1][0] >= cycle_s:
            raise InputError(
                f"{what}: period starting at {offsets[-1][0]:g} s is beyond its "
                f"{recurrency.lower()} cycle"
            )
        span_s = cycle_s if dur is None else min(float(dur), cycle_s)
        since_s = (_time(received_at, what) - start).total_seconds()
        first = max(int(since_s // cycle_s), 0)
        for c in range(first, first + n_cycles):
            base = start + timedelta(seconds=c * cycle_s)
            for k, (sp, lim) in enumerate(offsets):
                end_s = offsets[k + 1][0] if k + 1 < len(offsets) else span_s
                end_s = min(end_s, span_s)
                if end_s <= sp:
                    continue
                out.append(
                    cap(
                        f"{src}:{evse_id or 0}:{sid}:{c}:{k}",
                        base + timedelta(seconds=sp),
                        base + timedelta(seconds=end_s),
                        lim,
                    )
                )
        tail = start + timedelta(seconds=(first + n_cycles) * cycle_s)
        out.append(
            cap(
                f"{src}:{evse_id or 0}:{sid}:after",
                tail,
                tail + OPEN_END,
                min(lim for _, lim in offsets),
            )
        )
        return tuple(out)
    for k, (sp, lim) in enumerate(offsets):
        a = start + timedelta(seconds=sp)
        if k + 1 < len(offsets):
            b = start + timedelta(seconds=offsets[k + 1][0])
        elif dur is not None:
            b = start + timedelta(seconds=float(dur))
        else:
            b = a + OPEN_END
        if b <= a:
            continue
        out.append(cap(f"{src}:{evse_id or 0}:{sid}:{k}", a, b, lim))
    return tuple(out)


def notify_charging_limit(
    site: Site, charge_point_id: str, payload: dict, *, received_at: datetime
) -> tuple[GridSignal, ...]:
    """Signals of a **NotifyChargingLimitRequest** (OCPP 2.0.1 / 2.1, K12).

    Without ``chargingSchedule`` the message only says that a limit exists (its value comes in
    the station's composite schedule): no signal, an empty tuple.
    """
    p = _norm(payload)
    lim = p.get("charging_limit") or {}
    source = lim.get("charging_limit_source", "Other")
    out: list[GridSignal] = []
    for sch in p.get("charging_schedule") or []:
        out.extend(
            schedule_to_signals(
                site,
                charge_point_id,
                sch,
                evse_id=p.get("evse_id"),
                received_at=received_at,
                limit_source=source,
                grid_critical=bool(lim.get("is_grid_critical")),
            )
        )
    return tuple(out)


def report_charging_profiles(
    site: Site, charge_point_id: str, payload: dict, *, received_at: datetime
) -> tuple[GridSignal, ...]:
    """Signals of the ``ChargingStationExternalConstraints`` profiles in a
    **ReportChargingProfilesRequest** (other purposes are loadopt's or the CSMS's own: skipped)."""
    p = _norm(payload)
    source = p.get("charging_limit_source", "Other")
    out: list[GridSignal] = []
    for prof in p.get("charging_profile") or []:
        if prof.get("charging_profile_purpose") != PURPOSE:
            continue
        scheds = prof.get("charging_schedule") or []
        if isinstance(scheds, dict):  # OCPP 1.6 shape: one schedule
            scheds = [scheds]
        for sch in scheds:
            sch = {**sch, "id": sch.get("id", prof.get("id", 0))}
            out.extend(
                schedule_to_signals(
                    site,
                    charge_point_id,
                    sch,
                    evse_id=p.get("evse_id"),
                    received_at=received_at,
                    limit_source=source,
                    kind=prof.get("charging_profile_kind"),
                    recurrency=prof.get("recurrency_kind"),
                )
            )
    return tuple(out)


def ids_above(ids: ProfileIds, max_external_constraints_id: int) -> ProfileIds:
    """``ids`` with its base moved (to the next multiple of 1000) so that every loadopt profile
    id is above the station's ``MaxExternalConstraintsId``; unchanged when it already is."""
    m = int(max_external_constraints_id)
    if m < 0:
        raise InputError(f"MaxExternalConstraintsId must be >= 0, got {m}")
    if ids.base > m:
        return ids
    base = (m // 1000 + 1) * 1000
    if base + 30_000 > 2**31 - 1:
        raise InputError(f"MaxExternalConstraintsId {m} leaves no room for loadopt's profile ids")
    return replace(ids, base=base)
