"""Schedule → OCPP ``SetChargingProfile`` payloads (1.6, 2.0.1, 2.1) as wire dicts.

Three purposes are emitted (see docs/ocpp.md):

- ``TxProfile`` per active transaction: ``Absolute``, ``startSchedule`` = the horizon start,
  one period per change of the session's limit, ``validTo`` = the expected departure. Without
  ``duration`` the last period continues until the profile is replaced (OCPP: "the last period
  continues indefinitely or until end of the transaction").
- ``ChargePointMaxProfile`` (1.6) / ``ChargingStationMaxProfile`` (2.x) on connector/EVSE 0: a
  hard cap per station and period = what the station's transactions are scheduled to draw plus
  the newcomer allowance of its idle connectors, so the caps of all stations together keep every
  node, phase, power, grid and demand-response limit.
- ``TxDefaultProfile`` per connector/EVSE, one period per change: what a vehicle that plugs in
  before the next control call may draw — every limit's spare capacity (per phase, per period)
  is shared equally among the idle connectors below it that could receive a newcomer; 0 in the
  periods the connector is busy (a car whose TxProfile is gone falls back to 0, never to
  something unbudgeted) and below the EVSE's minimum current.
- :func:`installation_caps`: the static station cap the CSMS adapter sends (see there).

Numbers: limits are computed in integer deci-amps and rounded **down** (a limit is never rounded
up); ``W`` limits are ``A × voltage × numberPhases`` (× 1 where the car's phases are unknown, see
:func:`_w_phases`) rounded
down to 0.1 W in exact rational arithmetic. Every limit is emitted as ``n / 10`` — the double
nearest the one-decimal value, which serialises as e.g. ``8.1`` and passes the 1.6 schema's
``multipleOf 0.1`` under the ``ocpp`` package's Decimal validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from ..compile.tree import _site_tree
from ..errors import InputError
from ..schedule import Schedule
from ..site import Evse, Site
from ..wiring import branch_line_weights
from .guard import has_phasor_lines
from .ids import ProfileIds, Purpose, Version, check_version, wire_purpose
from .merge import merge_periods
from .numbers import _num, _watts_deci
from .v2x import schedule_periods, v2x_periods

RateUnit = Literal["A", "W"]
#: Relative margin kept below kW limits (float sums), as in :mod:`loadopt.safety`.
POWER_MARGIN = 1e-9


@dataclass(frozen=True)
class StationCaps:
    """What a station reported it can do (overrides the :class:`~loadopt.site.Evse` fields).

    From 1.6 ``GetConfiguration`` (``ChargingScheduleAllowedChargingRateUnit``,
    ``ChargingScheduleMaxPeriods``, ``ConnectorSwitch3to1PhaseSupported``) or 2.x ``GetVariables``
    (``SmartChargingCtrlr.RateUnit``/``PeriodsPerSchedule``, ``ACPhaseSwitchingSupported``).
    ``None`` keeps the site's value.
    """

    rate_unit: RateUnit | None = None
    max_periods: int | None = None
    phase_switching: bool | None = None

    def apply(self, evse: Evse) -> tuple[RateUnit, int, bool]:
        """What the station does, the reported capabilities over the EVSE's own fields.

        Parameters
        ----------
        evse
            The EVSE of the site.

        Returns
        -------
        tuple
            ``(rate unit "A" or "W", maximum periods per schedule, phase switching)``.
        """
        return (
            self.rate_unit or evse.rate_unit,
            int(self.max_periods or evse.max_periods),
            evse.phase_switching if self.phase_switching is None else self.phase_switching,
        )


@dataclass(frozen=True, eq=False)
class Profile:
    """One charging profile before serialisation.

    ``limits`` are integer deci-amps per line L1, L2, L3 of the EVSE (station profiles: of the
    station), ``starts`` seconds from ``start``, ``phases`` the ``numberPhases`` per period.
    """

    charge_point_id: str
    connector: int  #: 1.6 connectorId / 2.x evseId; 0 = the whole station
    purpose: Purpose
    start: datetime
    starts: np.ndarray
    limits: np.ndarray
    phases: np.ndarray
    voltage_v: float
    rate_unit: RateUnit
    session_id: str | None = None
    transaction_id: int | str | None = None
    valid_to: datetime | None = None
    min_rate_da: int | None = None
    phase_switching: bool = False
    per_phase: bool = False  #: line limits may differ (2.1 ``limit_L2``/``limit_L3``)
    #: V2G TxProfile: deci-amps per phase to discharge per period (2.1 ``operationMode``s, see
    #: :mod:`loadopt.ocpp.v2x`); None = a charge-only profile
    discharge: np.ndarray | None = None
    duration_s: int | None = None  #: ``chargingSchedule.duration`` (V2G TxProfiles: the horizon)
    #: TxProfile: the car's phase count is known (reported by the station), so a ``W`` limit is
    #: spread over ``numberPhases``; ``False``: a 1-phase car may take it all on one line
    car_phases_known: bool = True

    @property
    def key(self) -> tuple[str, int, str]:
        """What a station replaces on receipt: (charge point, connector, purpose)."""
        return (self.charge_point_id, self.connector, self.purpose)


# ---------------------------------------------------------------------------- helpers
def iso(t: datetime) -> str:
    """RFC 3339 UTC timestamp with ``Z`` as OCPP uses (seconds resolution, never rounded up)."""
    if t.tzinfo is None:
        raise InputError(f"timestamp {t!r} is not timezone-aware")
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _deci(x: np.ndarray | float) -> np.ndarray:
    """Amps → integer deci-amps, rounded down (NaN/negative → 0)."""
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, np.where(np.isposinf(x), 1e9, 0.0))
    return np.maximum(np.floor(x * 10.0 + 1e-7), 0).astype(np.int64)


def session_phases(schedule: Schedule) -> np.ndarray:
    """(S, T) numberPhases per session and period: the MILP's choice, else min(EVSE, vehicle)."""
    p = schedule.problem
    base = p.session_phase_mask.sum(axis=1).astype(np.int64)
    if schedule.n_phases is not None:
        nph = np.asarray(schedule.n_phases, dtype=np.int64)
        return np.where(nph > 0, np.minimum(nph, base[:, None]), base[:, None])
    return np.broadcast_to(base[:, None], (p.n_sessions, p.n_periods)).copy()


# ---------------------------------------------------------------------------- TxProfile
def tx_profiles(
    schedule: Schedule,
    *,
    session_ids: Iterable[str] | None = None,
    transaction_ids: Mapping[str, int | str] | None = None,
    caps: Mapping[str, StationCaps] | None = None,
) -> list[Profile]:
    """One ``TxProfile`` per session plugged in at the horizon start (or per ``session_ids``).

    Numbers come from the problem's arrays (EVSE voltage, phases, current range; departures);
    the EVSE objects only for the station's identity and settings. Periods are merged to the
    EVSE's maximum number of periods by minima.

    Parameters
    ----------
    schedule
        A safe schedule.
    session_ids
        The sessions (default: those plugged in at the horizon start).
    transaction_ids
        Session id -> OCPP transaction id (1.6: the CSMS's integer, 2.x: the station's string);
        default the session id.
    caps
        EVSE id -> :class:`StationCaps`.

    Returns
    -------
    list of Profile
        Limits in integer deci-amps (0 below the session's minimum current), ``validTo`` the
        departure.
    """
    p = schedule.problem
    caps = caps or {}
    h = p.horizon
    bounds = h.period_bounds_s().astype(np.int64)
    end_s = int(bounds[-1])
    if session_ids is None:  # plugged in at the horizon start (s from it: arrival <= 0 < departure)
        idx = np.flatnonzero((p.session_arrival_s <= 0) & (p.session_departure_s > 0)).tolist()
    else:
        idx = [p.session_index(sid) for sid in session_ids]
    cur_da = _deci(schedule.current)
    nph = session_phases(schedule)
    starts = bounds[:-1]
    out = []
    for i in idx:
        sid = p.session_ids[i]
        k = int(p.session_evse[i])
        ev = p.site.evses[k]  # identity and station settings; the numbers are the Problem's
        unit, maxp, switch = caps.get(ev.id, StationCaps()).apply(ev)
        min_da = int(_deci(p.session_min_current[i]))
        row = cur_da[i]
        row = np.where(row < min_da, 0, row)  # a car cannot follow a limit in (0, minimum)
        dis = None
        if schedule.discharge is not None and schedule.discharge[i].any():
            # V2G: periods kept as planned (merging by minima would cut the discharge a grid
            # cap counts on), cut with an idle period past the station's maximum
            st, c_da, dis = v2x_periods(row, _deci(schedule.discharge[i]), starts, maxp)
            lm = np.repeat(c_da[:, None], 3, axis=1)
            ph = np.full(st.size, int(nph[i].max()))
        else:
            lim = np.repeat(row[:, None], 3, axis=1)
            st, lm, ph = merge_periods(starts, lim, nph[i], maxp, end_s)
        tx = (transaction_ids or {}).get(sid, sid)
        dep_s = float(p.session_departure_s[i])
        out.append(
            Profile(
                charge_point_id=ev.charge_point_id,
                connector=ev.connector_id,
                purpose="tx",
                start=h.start,
                starts=st,
                limits=lm,
                phases=ph,
                voltage_v=float(p.evse_voltage_v[k]),
                rate_unit=unit,
                session_id=sid,
                transaction_id=tx,
                valid_to=h.start_utc + timedelta(seconds=dep_s) if dep_s > 0 else None,
                min_rate_da=min_da if min_da > 0 else None,
                phase_switching=switch,
                discharge=dis,
                duration_s=None if dis is None else int(end_s),
            )
        )
    return out


# ---------------------------------------------------------------------------- newcomers
@dataclass(frozen=True)
class Allowances:
    """Newcomer allowances and per-EVSE facts derived from a schedule (all deci-amps).

    ``newcomer`` (E, 3, T): what a vehicle plugging into idle EVSE ``e`` may draw on each of its
    lines in each period, all idle EVSEs at once included; ``idle`` (E, T): no session plugged in;
    ``evse_line_phase`` (E, 3): site phase of each EVSE line, -1 for lines the EVSE lacks.
    """

    newcomer: np.ndarray
    idle: np.ndarray
    evse_line_phase: np.ndarray
    load_da: np.ndarray  #: (E, 3, T) scheduled draw per EVSE line (deci-amps)


def allowances(schedule: Schedule) -> Allowances:
    """Share every limit's spare capacity among the idle EVSEs below it (see module docstring).

    Current rows are handled in exact integer deci-amps (the load of the schedule on the 0.1 A
    grid against ``floor(10 · (limit − base load))``); power and import rows (kW) in floating
    point with a relative margin of ``POWER_MARGIN``.

    Parameters
    ----------
    schedule
        A safe schedule.

    Returns
    -------
    Allowances
        Newcomer allowances (deci-amps per EVSE line and period), idle EVSEs, line phases and
        the scheduled draw per EVSE line.
    """
    p = schedule.problem
    E, T = len(p.evse_ids), p.n_periods
    evse_node, anc = p.evse_node, p.evse_anc
    has_line = np.arange(3)[None, :] < p.evse_phases.reshape(E, 1)
    line_phase = np.where(has_line, p.evse_site_phases.reshape(E, 3), -1).astype(np.int64)
    e_mask = np.zeros((E, 3), dtype=bool)  # site phases each EVSE can load
    for j in range(3):
        ok = line_phase[:, j] >= 0
        e_mask[np.flatnonzero(ok), line_phase[ok, j]] = True
    e_volt = p.evse_voltage_v.reshape(E)
    e_kwpa = e_volt * p.evse_phases.reshape(E) / 1000.0
    e_max_da = _deci(p.evse_max_current.reshape(E))

    # a reserved EVSE may draw its reservation whatever the plan: that is its load, and it takes
    # no newcomer share (Problem.evse_reserved_a)
    res = (
        np.zeros((E, 3, T))
        if p.evse_reserved_a is None
        else np.asarray(p.evse_reserved_a, dtype=np.float64)
    )
    res_da = np.ceil(res * 10.0 - 1e-7).astype(np.int64)
    plugged = res.max(axis=1) > 0
    if p.n_sessions:
        np.logical_or.at(plugged, p.session_evse, p.avail > 0)
    idle = ~plugged

    # scheduled load in deci-amps, per session → per EVSE line → per node and site phase
    cur_da = _deci(schedule.unreserved_current)  # (S, T), outside reservations
    load_e = res_da * (line_phase >= 0)[:, :, None]
    sess_load_phase = np.zeros((E, 3, T), dtype=np.int64)  # by site phase
    for ph in range(3):
        m = p.session_phase_mask[:, ph]
        if m.any():
            np.add.at(sess_load_phase[:, ph], p.session_evse[m], cur_da[m])
    for j in range(3):  # site phase → EVSE line
        ok = line_phase[:, j] >= 0
        load_e[ok, j] += sess_load_phase[np.flatnonzero(ok), line_phase[ok, j]]
    for j in range(3):  # reserved draw, EVSE line → site phase
        has = np.flatnonzero(line_phase[:, j] >= 0)
        np.add.at(sess_load_phase, (has, line_phase[has, j]), res_da[has, j])
    At = anc.T.tocsr().astype(np.int64)
    node_load = np.stack([At @ sess_load_phase[:, ph] for ph in range(3)], axis=1)  # (N,3,T)
    base = p.node_carries_base  # the base load flows through these nodes
    lim = p.node_current_limit.copy()
    lim[base] = lim[base] - p.base_load_a[None, None, :]
    with np.errstate(invalid="ignore"):
        cap_da = np.where(np.isfinite(lim), np.floor(np.maximum(lim, 0) * 10.0), np.inf)
    spare_cur = np.maximum(cap_da - node_load, 0)  # (N,3,T) deci-amps, inf = no limit

    # power rows (kW) and the site import row
    kw_load = np.asarray(
        anc.T
        @ (_session_kw_by_evse(p, schedule, E) + res.sum(axis=1) * e_volt.reshape(E, 1) / 1000.0)
    )
    kw_load[base] += p.base_load_kw[None, :]
    spare_kw = np.maximum(p.node_power_limit_kw * (1 - POWER_MARGIN) - kw_load, 0)  # (N,T)
    imp_cap = p.import_cap_kw * (1 - POWER_MARGIN)
    spare_imp = np.maximum(imp_cap - schedule.import_kw, 0)  # (T,)

    # how many newcomers each row must carry
    n_cur = np.stack(
        [anc.T @ (idle & e_mask[:, ph, None]).astype(np.float64) for ph in range(3)], axis=1
    )  # (N,3,T)
    w_kw = anc.T @ (idle * e_kwpa[:, None])  # (N,T) kW per A if every idle EVSE draws 1 A
    w_imp = (idle * e_kwpa[:, None]).sum(axis=0)  # (T,)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_cur = np.where(n_cur > 0, np.floor(spare_cur / np.maximum(n_cur, 1)), np.inf)
        a_kw = np.where(w_kw > 0, np.floor(spare_kw / np.where(w_kw > 0, w_kw, 1) * 10.0), np.inf)
        a_imp = np.where(
            w_imp > 0, np.floor(spare_imp / np.where(w_imp > 0, w_imp, 1) * 10.0), np.inf
        )

    # min over each EVSE's ancestors, walking up the tree by depth
    best = np.minimum(np.full((E, 3, T), np.inf), np.broadcast_to(a_imp, (E, 3, T)))
    cur_node, alive = evse_node.copy(), np.arange(E)
    while alive.size:
        for j in range(3):
            phs = line_phase[alive, j]
            ok = phs >= 0
            rows = alive[ok]
            best[rows, j] = np.minimum(best[rows, j], a_cur[cur_node[ok], phs[ok]])
        best[alive] = np.minimum(best[alive], a_kw[cur_node][:, None, :])
        nxt = p.node_parent[cur_node]
        keep = nxt >= 0
        alive, cur_node = alive[keep], nxt[keep]
    if has_phasor_lines(p.site):
        best = np.minimum(best, _phasor_line_allowance(schedule, idle, has_line))
    best = np.minimum(best, e_max_da[:, None, None])
    best[line_phase < 0] = 0
    newcomer = np.where(np.isfinite(best), best, 0).astype(np.int64)
    return Allowances(newcomer=newcomer, idle=idle, evse_line_phase=line_phase, load_da=load_e)


def _phasor_line_allowance(
    schedule: Schedule, idle: np.ndarray, has_line: np.ndarray
) -> np.ndarray:
    """(E, 3, T) deci-amps per idle EVSE branch from every line limit of a site with
    line-to-line EVSEs or delta/wye transformers (:mod:`loadopt.wiring`), whose line currents
    are phasor sums that the per-site-phase count above does not see.

    A branch adds at most ``w`` A per A to the magnitude of each line it reaches (1 on both
    lines of a line-to-line pair; through a transformer of ratio ``n`` up to ``2/n`` on a
    primary line: the triangle inequality), so sharing each line's room (its limit less the
    exact magnitude of what is planned, base load and reservations) in proportion to the
    idle branches' weights keeps every line within its limit with all newcomers at once.
    """
    p = schedule.problem
    E, T = has_line.shape[0], p.n_periods
    tree = _site_tree(p.site)
    weight = branch_line_weights(
        tree.line_to_line, p.evse_site_phases, p.evse_phases, p.evse_node, p.node_parent, tree.ratio
    )
    lim = p.line_limit
    with np.errstate(invalid="ignore"):
        room = np.where(
            np.isfinite(lim),
            np.maximum(
                np.floor(lim * 10.0 + 1e-7) - np.ceil(schedule.line_current * 10.0 - 1e-7), 0
            ),
            np.inf,
        )
    newcomers = (idle[:, None, :] & has_line[:, :, None]).reshape(3 * E, T)
    share = weight.T @ newcomers  # (6N, T) A of line magnitude per A of every newcomer
    with np.errstate(divide="ignore", invalid="ignore"):
        per_a = np.where(share > 1e-12, np.floor(room / np.where(share > 1e-12, share, 1)), np.inf)
    r, g = np.nonzero(weight > 0)
    out = np.full((3 * E, T), np.inf)
    np.minimum.at(out, r, per_a[g])
    return out.reshape(E, 3, T)


def _session_kw_by_evse(p: Any, schedule: Schedule, E: int) -> np.ndarray:
    """(E, T) kW of the scheduled sessions per EVSE."""
    out = np.zeros((E, p.n_periods))
    if p.n_sessions:
        np.add.at(out, p.session_evse, schedule.unreserved_current * p.session_kw_per_a[:, None])
    return out


def tx_default_profiles(
    schedule: Schedule,
    *,
    allow: Allowances | None = None,
    caps: Mapping[str, StationCaps] | None = None,
    charge_points: Iterable[str] | None = None,
) -> list[Profile]:
    """One multi-period ``TxDefaultProfile`` per EVSE: in each period, its newcomer allowance
    where it is idle and 0 where a session (or an expected vehicle) is planned on it.

    So whatever falls back to the default is budgeted: a newcomer on an idle connector (the
    allowance shares every limit's spare capacity among all idle connectors), and on a busy one
    a car whose TxProfile the station dropped or that stayed past ``validTo`` gets 0 until the
    next step. Per period, an allowance below the EVSE's minimum current (IEC 61851: about 6 A)
    is 0. Periods are merged to the station's maximum by taking minima (never raising a limit).

    Parameters
    ----------
    schedule
        A safe schedule.
    allow
        Its :func:`allowances` (computed when not given).
    caps
        EVSE id -> :class:`StationCaps`.
    charge_points
        Only these stations (default: all).

    Returns
    -------
    list of Profile
        Limits in integer deci-amps per EVSE line.
    """
    p = schedule.problem
    allow = allow or allowances(schedule)
    caps = caps or {}
    cps = None if charge_points is None else set(charge_points)
    h = p.horizon
    T = p.n_periods
    bounds = h.period_bounds_s().astype(np.int64)
    starts = bounds[:-1]
    out = []
    for k, ev in enumerate(p.site.evses):  # identity and station settings; numbers: arrays
        if cps is not None and ev.charge_point_id not in cps:
            continue
        unit, maxp, switch = caps.get(ev.id, StationCaps()).apply(ev)
        n_ph = int(p.evse_phases[k])
        lines = np.where(allow.idle[k][None, :], allow.newcomer[k], 0).T.copy()  # (T, 3)
        lines[:, n_ph:] = 0
        low = lines[:, :n_ph].min(axis=1) < int(_deci(p.evse_min_current[k]))
        lines[low] = 0
        st, lm, ph = merge_periods(starts, lines, np.full(T, n_ph), maxp, int(bounds[-1]))
        out.append(
            Profile(
                charge_point_id=ev.charge_point_id,
                connector=ev.connector_id,
                purpose="tx_default",
                start=h.start,
                starts=st,
                limits=lm,
                phases=ph,
                voltage_v=float(p.evse_voltage_v[k]),
                rate_unit=unit,
                phase_switching=switch,
                per_phase=n_ph == 3,
            )
        )
    return out


def installation_caps(
    site: Site,
    start: datetime,
    *,
    caps: Mapping[str, StationCaps] | None = None,
    charge_points: Iterable[str] | None = None,
) -> list[Profile]:
    """One static ``ChargePointMaxProfile`` / ``ChargingStationMaxProfile`` per station: per line,
    the smallest rated current of the nodes above it on that site phase, and at most the sum of
    its EVSEs' maxima (integer deci-amps, rounded down).

    This is the installation limit a station may keep in flash: it changes only when the site
    does, so the adapter sends it on (re)connection and when it changes, never every step; the
    time-varying limits are carried by TxProfiles and TxDefaultProfiles.

    Parameters
    ----------
    site
        The site.
    start
        ``startSchedule`` (aware datetime).
    caps
        EVSE id -> :class:`StationCaps`.
    charge_points
        Only these stations (default: all).

    Returns
    -------
    list of Profile
    """
    caps = caps or {}
    cps = None if charge_points is None else set(charge_points)
    nodes = {n.id: n for n in site.nodes}
    by_cp: dict[str, list[Evse]] = {}
    for ev in site.evses:
        by_cp.setdefault(ev.charge_point_id, []).append(ev)
    out = []
    for cp, evs in by_cp.items():
        if cps is not None and cp not in cps:
            continue
        per_phase = np.zeros(3)
        used = np.zeros(3, dtype=bool)
        room = np.full(3, np.inf)
        for ev in evs:
            for j in range(ev.phases):
                ph = ev.site_phases[j]
                used[ph] = True
                per_phase[ph] += ev.max_current
            node: Any = nodes[ev.node]
            while node is not None:
                trip = node.current_triplet()
                if trip is not None:
                    room = np.minimum(room, np.asarray(trip, dtype=np.float64))
                node = nodes.get(node.parent) if node.parent else None
        cap = _deci(np.minimum(per_phase, room))
        rots = {ev.site_phases for ev in evs}
        nph = max(ev.phases for ev in evs)
        if len(rots) == 1:
            rot = next(iter(rots))
            lines = np.array([cap[rot[j]] for j in range(3)], dtype=np.int64)
            lines[nph:] = 0
            per_line = nph == 3
        else:
            lines = np.full(3, cap[used].min(), dtype=np.int64)
            per_line = False
        unit = caps.get(evs[0].id, StationCaps()).apply(evs[0])[0]
        if any(caps.get(ev.id, StationCaps()).apply(ev)[0] != unit for ev in evs):
            unit = "A"
        out.append(
            Profile(
                charge_point_id=cp,
                connector=0,
                purpose="station_max",
                start=start,
                starts=np.zeros(1, np.int64),
                limits=lines[None, :],
                phases=np.array([nph]),
                voltage_v=min(ev.voltage_v for ev in evs),
                rate_unit=unit,
                per_phase=per_line,
            )
        )
    return out


def station_max_profiles(
    schedule: Schedule,
    *,
    allow: Allowances | None = None,
    caps: Mapping[str, StationCaps] | None = None,
    charge_points: Iterable[str] | None = None,
    only_needed: bool = False,
) -> list[Profile]:
    """One ``ChargePointMaxProfile`` / ``ChargingStationMaxProfile`` per charge point (EVSE 0).

    Per period and line: the station's scheduled draw plus the newcomer allowance of its idle
    EVSEs — so every station together stays within every limit. Lines follow the station's
    phase rotation when all its EVSEs share one; otherwise every line gets the minimum over the
    site phases the station uses.

    Parameters
    ----------
    schedule
        A safe schedule.
    allow
        Its :func:`allowances` (computed when not given).
    caps
        EVSE id -> :class:`StationCaps`.
    charge_points
        Only these stations (default: all).
    only_needed
        Skip stations whose cap never falls below what their EVSEs could draw anyway.

    Returns
    -------
    list of Profile
        Limits in integer deci-amps per line, merged to the station's maximum periods by minima.
    """
    p = schedule.problem
    allow = allow or allowances(schedule)
    caps = caps or {}
    h = p.horizon
    T = h.n_periods
    cps = None if charge_points is None else set(charge_points)
    by_cp: dict[str, list[int]] = {}
    for k, ev in enumerate(p.site.evses):
        by_cp.setdefault(ev.charge_point_id, []).append(k)
    bounds = h.period_bounds_s().astype(np.int64)
    starts = bounds[:-1]
    out = []
    for cp, ks in by_cp.items():
        if cps is not None and cp not in cps:
            continue
        evs = [p.site.evses[k] for k in ks]  # identity and station settings
        # per site phase: own scheduled draw + newcomer allowance of idle EVSEs
        per_phase = np.zeros((3, T), dtype=np.int64)
        used = np.zeros(3, dtype=bool)
        rated = np.zeros(3, dtype=np.int64)
        for k in ks:
            for j in range(int(p.evse_phases[k])):
                site_ph = int(allow.evse_line_phase[k, j])
                used[site_ph] = True
                rated[site_ph] += int(_deci(p.evse_max_current[k]))
                per_phase[site_ph] += allow.load_da[k, j] + np.where(
                    allow.idle[k], allow.newcomer[k, j], 0
                )
        rots = {tuple(int(x) for x in p.evse_site_phases[k]) for k in ks}
        nph = int(max(p.evse_phases[k] for k in ks))
        if len(rots) == 1:
            rot = next(iter(rots))
            lines = np.stack([per_phase[rot[j]] for j in range(3)], axis=1)  # (T, 3)
            lines[:, nph:] = 0
            per_line = nph == 3
        else:
            m = per_phase[used].min(axis=0)
            lines = np.repeat(m[:, None], 3, axis=1)
            per_line = False
        if only_needed and np.all(per_phase[used] >= rated[used, None]):
            continue
        maxp = min(caps.get(ev.id, StationCaps()).apply(ev)[1] for ev in evs)
        unit = caps.get(evs[0].id, StationCaps()).apply(evs[0])[0]
        if any(caps.get(ev.id, StationCaps()).apply(ev)[0] != unit for ev in evs):
            unit = "A"
        st, lm, ph = merge_periods(starts, lines, np.full(T, nph), maxp, int(bounds[-1]))
        out.append(
            Profile(
                charge_point_id=cp,
                connector=0,
                purpose="station_max",
                start=h.start,
                starts=st,
                limits=lm,
                phases=ph,
                voltage_v=float(min(p.evse_voltage_v[k] for k in ks)),
                rate_unit=unit,
                per_phase=per_line,
            )
        )
    return out


# ---------------------------------------------------------------------------- serialisation
def _period_dicts(prof: Profile, version: Version) -> list[dict[str, Any]]:
    out = []
    for k in range(prof.starts.size):
        nph = int(prof.phases[k])
        lines = prof.limits[k]
        used = lines[:nph] if nph > 0 else lines[:1]
        d: dict[str, Any] = {"startPeriod": int(prof.starts[k])}
        split = version == "2.1" and prof.per_phase and nph == 3 and not np.all(lines == lines[0])
        if split:
            if prof.rate_unit == "A":
                vals = [int(v) for v in lines]
            else:
                vals = [_watts_deci(int(v), prof.voltage_v, 1) for v in lines]
            d["limit"] = _num(vals[0])
            d["limit_L2"] = _num(vals[1])
            d["limit_L3"] = _num(vals[2])
        else:
            da = int(used.min())
            d["limit"] = _num(
                da
                if prof.rate_unit == "A"
                else _watts_deci(
                    da, prof.voltage_v, _w_phases(version, nph, prof.purpose, prof.car_phases_known)
                )
            )
        if nph > 0:
            d["numberPhases"] = nph
            if version != "1.6" and prof.phase_switching and nph == 1:
                d["phaseToUse"] = 1
        out.append(d)
    return out


def _w_phases(
    version: Version, nph: int, purpose: Purpose = "tx", car_phases_known: bool = True
) -> int:
    """Phases a ``W`` limit is spread over. Where nobody knows how many phases the car uses, a
    1-phase car may draw the whole power on one line, so the ``W`` limit is the per-line current
    × voltage × **1** and no line is ever overloaded (a 3-phase car then gets a third; prefer
    ``A`` where the station allows it): every OCPP 1.6 profile (1.6 cannot say), the 2.x
    TxDefault and station cap (no car is known yet), and a 2.x TxProfile of a car whose phase
    count the station did not report (``numberPhases`` is what it *may* use, OCPP 2.x
    ChargingSchedulePeriodType). Otherwise a 2.x TxProfile: its ``numberPhases``."""
    if version == "1.6" or purpose != "tx" or not car_phases_known:
        return 1
    return max(nph, 1)


def to_payload(prof: Profile, version: Version, ids: ProfileIds | None = None) -> dict[str, Any]:
    """The ``SetChargingProfile`` (1.6) / ``SetChargingProfileRequest`` (2.x) payload dict.

    Parameters
    ----------
    prof
        The profile.
    version
        ``"1.6"``, ``"2.0.1"`` or ``"2.1"``.
    ids
        Profile ids and stack levels (default :class:`ProfileIds`).

    Returns
    -------
    dict
        The request payload (limits as ``n / 10``: A, or W rounded down exactly).

    Raises
    ------
    InputError
        An unknown version, a transaction id 1.6 cannot carry, a V2G profile before 2.1.
    """
    version = check_version(version)
    ids = ids or ProfileIds()
    pid = ids.profile_id(prof.purpose, prof.connector)
    sched: dict[str, Any] = {
        "startSchedule": iso(prof.start),
        "chargingRateUnit": prof.rate_unit,
        "chargingSchedulePeriod": (
            _period_dicts(prof, version)
            if prof.discharge is None
            else schedule_periods(prof, version)
        ),
    }
    if prof.duration_s is not None:  # a discharge never outlives the plan that decided it
        sched["duration"] = int(prof.duration_s)
    if prof.min_rate_da:
        nph = int(prof.phases.min())
        v = (
            prof.min_rate_da
            if prof.rate_unit == "A"
            else _watts_deci(
                prof.min_rate_da,
                prof.voltage_v,
                _w_phases(version, nph, prof.purpose, prof.car_phases_known),
            )
        )
        sched["minChargingRate"] = _num(v)
    profile: dict[str, Any] = {
        "stackLevel": ids.stack_level(prof.purpose),
        "chargingProfilePurpose": wire_purpose(version, prof.purpose),
        "chargingProfileKind": "Absolute",
    }
    if prof.purpose == "tx":
        profile["transactionId"] = _tx_id(prof, version)
    if prof.valid_to is not None:
        profile["validTo"] = iso(prof.valid_to)
    if version == "1.6":
        profile = {"chargingProfileId": pid, **profile, "chargingSchedule": sched}
        return {"connectorId": prof.connector, "csChargingProfiles": profile}
    profile = {"id": pid, **profile, "chargingSchedule": [{"id": pid, **sched}]}
    return {"evseId": prof.connector, "chargingProfile": profile}


def _tx_id(prof: Profile, version: Version) -> int | str:
    tx = prof.transaction_id
    if version == "1.6":
        try:
            return int(tx)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(
                f"session {prof.session_id!r}: OCPP 1.6 needs an integer transactionId, got "
                f"{tx!r} (pass transaction_ids)"
            ) from None
    s = str(tx)
    if not 1 <= len(s) <= 36:
        raise InputError(
            f"session {prof.session_id!r}: OCPP 2.x transactionId {s!r} must be 1..36 characters"
        )
    return s


def clear_payload(
    version: Version, purpose: Purpose, connector: int, ids: ProfileIds | None = None
) -> dict[str, Any]:
    """``ClearChargingProfile`` for loadopt's profile of ``purpose`` on ``connector`` (by id).

    Parameters
    ----------
    version
        ``"1.6"``, ``"2.0.1"`` or ``"2.1"``.
    purpose
        ``"tx"``, ``"tx_default"`` or ``"station_max"``.
    connector
        1.6 ``connectorId`` / 2.x ``evseId`` (0 = the station).
    ids
        Profile ids and stack levels (default :class:`ProfileIds`).

    Returns
    -------
    dict
        The request payload.
    """
    version = check_version(version)
    pid = (ids or ProfileIds()).profile_id(purpose, connector)
    if version == "1.6":
        return {"id": pid}
    return {"chargingProfileId": pid}


def build_profiles(
    schedule: Schedule,
    *,
    transaction_ids: Mapping[str, int | str] | None = None,
    caps: Mapping[str, StationCaps] | None = None,
    charge_points: Iterable[str] | None = None,
    session_ids: Iterable[str] | None = None,
    station_max: bool = True,
    tx_default: bool = True,
    only_needed: bool = False,
) -> list[Profile]:
    """Every profile of a schedule: station caps, TxDefault per EVSE, TxProfile per session.

    Parameters
    ----------
    schedule
        A safe schedule.
    transaction_ids
        Session id -> OCPP transaction id (1.6 integer, 2.x string); default the session id.
    caps
        EVSE id -> :class:`StationCaps` reported by the station.
    charge_points
        Only these stations (default: all).
    session_ids
        TxProfiles for these sessions (default: those plugged in at the horizon start).
    station_max, tx_default
        Emit the station caps / the TxDefaultProfiles.
    only_needed
        Skip station caps that never fall below what the station's EVSEs could draw.

    Returns
    -------
    list of Profile
        Limits in integer deci-amps, rounded down.
    """
    cps = None if charge_points is None else set(charge_points)
    allow = allowances(schedule) if (station_max or tx_default) else None
    out: list[Profile] = []
    if station_max:
        out += station_max_profiles(
            schedule, allow=allow, caps=caps, charge_points=cps, only_needed=only_needed
        )
    if tx_default:
        out += tx_default_profiles(schedule, allow=allow, caps=caps, charge_points=cps)
    txs = tx_profiles(schedule, session_ids=session_ids, transaction_ids=transaction_ids, caps=caps)
    out += [t for t in txs if cps is None or t.charge_point_id in cps]
    return out


def set_charging_profiles(
    schedule: Schedule,
    version: Version | Mapping[str, Version] = "2.0.1",
    *,
    ids: ProfileIds | None = None,
    **kw: Any,
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(charge point id, "SetChargingProfile", payload)`` for every profile of ``schedule``.

    Parameters
    ----------
    schedule
        A safe schedule.
    version
        One OCPP version for all stations, or charge point id -> version.
    ids
        Profile ids and stack levels (default :class:`ProfileIds`).
    **kw
        Passed to :func:`build_profiles`.

    Returns
    -------
    list of tuple
        ``(charge point id, "SetChargingProfile", payload dict)``; limits in A (or W) on the
        0.1 grid, never rounded up.

    Raises
    ------
    InputError
        An unknown version, or a profile that cannot be written in its station's version.
    """
    out = []
    for prof in build_profiles(schedule, **kw):
        v = version if isinstance(version, str) else version[prof.charge_point_id]
        out.append((prof.charge_point_id, "SetChargingProfile", to_payload(prof, v, ids)))
    return out


def validate(action: str, payload: dict[str, Any], version: Version) -> None:
    """Validate a request payload against the official schema shipped by the ``ocpp`` package.

    Uses the package's own validation path (``ocpp.messages._validate_payload``), so 1.6
    ``SetChargingProfile`` is checked with Decimal floats exactly as a station running ``ocpp``
    checks it.

    Parameters
    ----------
    action
        The OCPP action (``"SetChargingProfile"`` …).
    payload
        The request payload.
    version
        ``"1.6"``, ``"2.0.1"`` or ``"2.1"``.

    Raises
    ------
    ocpp.exceptions.ValidationError
        The package's subclasses (``FormatViolationError`` …) on a bad payload.
    """
    import copy

    from ocpp.messages import Call, _validate_payload

    _validate_payload(Call("loadopt", action, copy.deepcopy(payload)), check_version(version))


__all__ = [
    "Allowances",
    "Profile",
    "StationCaps",
    "allowances",
    "build_profiles",
    "clear_payload",
    "installation_caps",
    "iso",
    "set_charging_profiles",
    "station_max_profiles",
    "to_payload",
    "tx_default_profiles",
    "tx_profiles",
    "validate",
]
