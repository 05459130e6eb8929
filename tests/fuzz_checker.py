"""An independent limit checker for the fuzz suite, written from the raw inputs.

It reads the site tree, the sessions, the signals and the horizon as a user gives them and
computes, with plain Python loops over POSIX timestamps, what every breaker, phase, power, grid
and grid-signal limit allows in each period — it never looks at ``Problem.G``/``h``,
``horizon.sample`` or anything else the library computes. A schedule is then checked instant by
instant (currents are constant within a period, limits are taken at their lowest within it,
because a limit that drops mid-period holds from that instant on).

Physical rules encoded here (docs/formulation.md states the same from the user's side):

- a vehicle draws on ``min(EVSE phases, vehicle phases)`` lines of its EVSE, EVSE line ``j`` on
  site phase ``phase_rotation[j]``; its power is ``A · V · lines``;
- the site's base load is balanced over the three phases, ``kW · 1000 / (3 · site V)`` A each,
  and loads ``base_load_node`` (default: the root) and every node above it; PV offsets only the
  grid import;
- a limit that the base load alone exceeds leaves the vehicles nothing (0), not a negative;
- a reservation (current an EVSE draws whatever the plan says, e.g. a vehicle metered above its
  limit) is what that EVSE's lines draw when it exceeds the plan: each line counts ``max(plan,
  reservation)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

TOL_A = 1e-6
TOL_KW = 1e-6


def _ts(t: datetime) -> float:
    return t.timestamp()


def _step_series(
    default: float | None, points: Sequence[Any] | None, a: float, b: float, how: str
) -> float:
    """Lowest (``how="min"``) or highest value in force at any instant of ``[a, b)``: the value
    at ``a`` and every point that starts inside. ``default=None``: the first point's value (no
    points: +inf)."""
    if not points:
        return math.inf if default is None else float(default)
    pts = sorted((_ts(p.start), p.value) for p in points)
    val = pts[0][1] if default is None else default
    for t, v in pts:
        if t <= a:
            val = v
    vals = [val] + [v for t, v in pts if a < t < b]
    return float(min(vals) if how == "min" else max(vals))


def _phase_value(v: Any, p: int) -> float:
    return float(v[p]) if isinstance(v, tuple | list) else float(v)


class Limits:
    """Every limit of the raw inputs on every period, computed independently."""

    def __init__(self, site: Any, sessions: Sequence[Any], horizon: Any, signals: Any) -> None:
        self.site, self.sessions, self.horizon = site, list(sessions), horizon
        self.signals = signals
        t0 = _ts(horizon.start)
        step = horizon.step_s
        self.T = T = horizon.n_periods
        self.a = [t0 + k * step for k in range(T)]
        self.b = [t0 + (k + 1) * step for k in range(T)]
        nodes = {n.id: n for n in site.nodes}
        self.nodes = nodes
        root = next(n.id for n in site.nodes if n.parent is None)
        self.root = root

        def chain(nid: str | None) -> list[str]:
            out = []
            while nid is not None:
                out.append(nid)
                nid = nodes[nid].parent
            return out

        self.chain = chain
        self.evse = {e.id: e for e in site.evses}
        carries = set(chain(site.base_load_node or root))
        self.carries = carries
        V = site.voltage_v
        base = [_series_signal(signals.base_load_kw, a, b, "max") for a, b in self.ab]
        pv = [_series_signal(signals.pv_kw, a, b, "min") for a, b in self.ab]
        grid = [_series_signal(signals.grid_import_limit_kw, a, b, "min") for a, b in self.ab]
        self.base_kw, self.pv_kw = base, pv
        # node current (per site phase) and power limits, base load taken off where it flows
        self.cur_room: dict[tuple[str, int], list[float]] = {}
        self.kw_room: dict[str, list[float]] = {}
        for nid, n in nodes.items():
            for p in range(3):
                static = None if n.max_current is None else _phase_value(n.max_current, p)
                pts = None
                if n.current_series:
                    pts = [_Pt(c.start, _phase_value(c.value, p)) for c in n.current_series]
                lim = [_step_series(static, pts, a, b, "min") for a, b in self.ab]
                base_a = [(x * 1000.0 / (3.0 * V)) if nid in carries else 0.0 for x in base]
                self.cur_room[(nid, p)] = [
                    max(l_ - ba, 0.0) for l_, ba in zip(lim, base_a, strict=True)
                ]
            kw = [_step_series(n.max_power_kw, n.power_series_kw, a, b, "min") for a, b in self.ab]
            kw = [min(k, c) for k, c in zip(kw, self._signal_caps(nid), strict=True)]
            self.kw_room[nid] = [
                max(k - (bk if nid in carries else 0.0), 0.0)
                for k, bk in zip(kw, base, strict=True)
            ]
        caps = self._signal_caps(None)
        self.import_room = [
            max(min(g, c) - bk + pk, 0.0) for g, c, bk, pk in zip(grid, caps, base, pv, strict=True)
        ]

    @property
    def ab(self) -> list[tuple[float, float]]:
        return list(zip(self.a, self.b, strict=True))

    def _signal_caps(self, node: str | None) -> list[float]:
        """Hard caps (kW) of the grid signals on ``node`` (None: the root's net import)."""
        caps = [math.inf] * self.T
        for s in getattr(self.signals, "grid_signals", ()):
            target = s.node if s.node is not None and s.node != self.root else None
            if target != node:
                continue
            if s.import_cap_kw is not None:
                cap = float(s.import_cap_kw)
            elif s.reduction_kw is not None and isinstance(s.baseline_kw, float | int):
                cap = max(float(s.baseline_kw) - float(s.reduction_kw), 0.0)
            else:
                raise AssertionError(f"the fuzz checker does not model grid signal {s.id!r}")
            a_s, b_s = _ts(s.start), _ts(s.end)
            stale = _ts(s.valid_until) if s.valid_until is not None else math.inf
            for k, (a, b) in enumerate(self.ab):
                if min(b, b_s, stale) - max(a, a_s) > 0:
                    caps[k] = min(caps[k], cap)
                if b > stale:  # the stream went stale: its fallback cap from then on
                    caps[k] = min(caps[k], float(s.fallback_kw))
        return caps

    # ---------------------------------------------------------------------------- checking
    def breaches(
        self,
        current: np.ndarray,
        session_ids: Sequence[str],
        reserved: dict[str, tuple[float, float, float]] | None = None,
        reserved_periods: dict[str, int] | None = None,
    ) -> list[str]:
        """Every limit ``current`` (``(S, T)`` A, rows in ``session_ids`` order) breaks.

        ``reserved``: EVSE id -> A per EVSE line drawn whatever the plan says, in the first
        ``reserved_periods[evse]`` periods (default: all)."""
        by_id = {s.id: s for s in self.sessions}
        cur = np.asarray(current, dtype=np.float64)
        out: list[str] = []
        T = self.T
        # per EVSE: the planned current per line and period
        lines: dict[str, np.ndarray] = {e.id: np.zeros((3, T)) for e in self.site.evses}
        for i, sid in enumerate(session_ids):
            s = by_id[sid]
            e = self.evse[s.evse]
            a_s, b_s = _ts(s.arrival), _ts(s.departure)
            vmax = min(e.max_current, s.max_current)
            n_ph = min(e.phases, s.phases)
            for k, (a, b) in enumerate(self.ab):
                x = cur[i, k]
                if not math.isfinite(x) or x < 0:
                    out.append(f"session {sid} period {k}: current {x}")
                    continue
                if x > 0 and not min(b, b_s) - max(a, a_s) > 0:
                    out.append(f"session {sid} period {k}: {x} A while not plugged in")
                if x > vmax + TOL_A:
                    out.append(f"session {sid} period {k}: {x} A above its max {vmax}")
                for j in range(n_ph):
                    lines[s.evse][j, k] += x
        for eid, amps in (reserved or {}).items():
            n_res = (reserved_periods or {}).get(eid, T)
            for j in range(self.evse[eid].phases):
                lines[eid][j, :n_res] = np.maximum(lines[eid][j, :n_res], amps[j])
        res_lines = {e.id: np.zeros((3, T)) for e in self.site.evses}
        for eid, amps in (reserved or {}).items():
            n_res = (reserved_periods or {}).get(eid, T)
            res_lines[eid][:, :n_res] = np.asarray(amps, dtype=np.float64)[:, None]
            res_lines[eid][self.evse[eid].phases :] = 0.0  # a 1-phase EVSE has no L2, L3
        load_a, load_kw = self._loads(lines)
        # where a reservation alone already breaks a limit, the plan may add nothing there
        res_a, res_kw = self._loads(res_lines)
        for (nid, p), room in self.cur_room.items():
            for k in range(T):
                allowed = max(room[k], res_a[(nid, p)][k])
                if load_a[(nid, p)][k] > allowed + TOL_A:
                    out.append(
                        f"node {nid} phase {'RST'[p]} period {k}: "
                        f"{load_a[(nid, p)][k]:.4f} A > room {allowed:.4f}"
                    )
        for nid, room in self.kw_room.items():
            for k in range(T):
                allowed = max(room[k], res_kw[nid][k])
                if load_kw[nid][k] > allowed + TOL_KW:
                    out.append(
                        f"node {nid} power period {k}: {load_kw[nid][k]:.6f} kW > "
                        f"room {allowed:.6f}"
                    )
        for k in range(T):
            allowed = max(self.import_room[k], res_kw[self.root][k])
            if load_kw[self.root][k] > allowed + TOL_KW:
                out.append(
                    f"grid import period {k}: {load_kw[self.root][k]:.6f} kW > room {allowed:.6f}"
                )
        return out

    def _loads(self, lines: dict[str, np.ndarray]):
        """Per (node, site phase) A and per node kW of EVSE line currents ``(3, T)``."""
        T = self.T
        load_a = {key: np.zeros(T) for key in self.cur_room}
        load_kw = {nid: np.zeros(T) for nid in self.nodes}
        for eid, ln in lines.items():
            e = self.evse[eid]
            rot = ["RST".index(c) for c in e.phase_rotation]
            kw = ln.sum(axis=0) * e.voltage_v / 1000.0
            for nid in self.chain(e.node):
                for j in range(3):
                    load_a[(nid, rot[j])] += ln[j]
                load_kw[nid] += kw
        return load_a, load_kw


class _Pt:
    def __init__(self, start: datetime, value: float) -> None:
        self.start, self.value = start, value


def _series_signal(v: Any, a: float, b: float, how: str) -> float:
    if isinstance(v, tuple):
        return _step_series(None, v, a, b, how)
    return math.inf if v is None else float(v)


# ------------------------------------------------------------------------------ OCPP output
def _parse(payload: dict) -> tuple[Any, str, float, float, list[dict]]:
    prof = payload.get("csChargingProfiles") or payload.get("chargingProfile")
    sched = prof["chargingSchedule"]
    sched = sched[0] if isinstance(sched, list) else sched
    t0 = datetime.fromisoformat(sched["startSchedule"].replace("Z", "+00:00")).timestamp()
    valid_to = prof.get("validTo")
    end = (
        datetime.fromisoformat(valid_to.replace("Z", "+00:00")).timestamp()
        if valid_to
        else math.inf
    )
    periods = sorted(sched["chargingSchedulePeriod"], key=lambda d: d["startPeriod"])
    return prof, sched["chargingRateUnit"], t0, end, periods


def _lines_at(unit: str, d: dict, phases: int, voltage: float, v16: bool) -> list[float]:
    """Worst-case A per line of one schedule period: A limits on the lines ``numberPhases`` and
    the hardware allow. A W limit: in 1.6 all of it on one line (``W / V``: 1.6 cannot say how
    many phases the car uses, a 1-phase car may put it all on L1); in 2.x ``W / (V ·
    numberPhases)`` on each of ``numberPhases`` lines (the station applies ``numberPhases``)."""
    nph = int(d.get("numberPhases", 3))
    if unit == "A":
        if "limit_L2" in d:
            return [float(d["limit"]), float(d["limit_L2"]), float(d["limit_L3"])]
        return [float(d["limit"]) if j < min(nph, phases) else 0.0 for j in range(3)]
    if "limit_L2" in d:
        return [float(d[k]) / voltage for k in ("limit", "limit_L2", "limit_L3")]
    if v16:
        one = float(d["limit"]) / voltage
        return [one if j < phases else 0.0 for j in range(3)]
    n = max(min(nph, phases), 1)
    return [float(d["limit"]) / (voltage * n) if j < n else 0.0 for j in range(3)]


def ocpp_breaches(
    lim: Limits, messages: Sequence[tuple[str, str, dict]], session_ids_at_start: set[str]
) -> list[str]:
    """Limits broken when every transaction draws its TxProfile limit (parsed from the wire
    payloads, A or W) at every instant, and a newcomer on every EVSE that has no session in the
    horizon draws its TxDefaultProfile limit, each station within its station-max profile
    (OCPP's composite schedule: the minimum of the two).

    W limits follow :func:`_lines_at` (1.6: all on one line). A station cap applies per site phase
    when all its EVSEs share one phase rotation; otherwise its largest line is used for every
    phase (never less strict than the station).
    """
    site = lim.site
    by_conn = {(e.charge_point_id, e.connector_id): e for e in site.evses}
    busy = {s.evse for s in lim.sessions}
    plugged_at_start = {s.evse for s in lim.sessions if s.id in session_ids_at_start}
    instants = set(lim.a)
    profiles = []
    station_caps: dict[str, tuple] = {}
    for cp, action, payload in messages:
        if action != "SetChargingProfile":
            continue
        conn = payload.get("connectorId", payload.get("evseId"))
        prof, unit, t0, end, periods = _parse(payload)
        purpose = prof["chargingProfilePurpose"]
        v16 = "csChargingProfiles" in payload
        for d in periods:
            instants.add(t0 + d["startPeriod"])
        if conn == 0:
            if purpose in ("ChargePointMaxProfile", "ChargingStationMaxProfile"):
                station_caps[cp] = (unit, t0, end, periods, v16)
            continue
        e = by_conn[(cp, conn)]
        if purpose == "TxDefaultProfile" and e.id not in busy:
            profiles.append((e, unit, t0, end, periods, v16))
        elif purpose == "TxProfile" and e.id in plugged_at_start:
            profiles.append((e, unit, t0, end, periods, v16))
    stations = {e.charge_point_id for e in site.evses}
    out = []
    horizon_end = lim.b[-1]
    for t in sorted(x for x in instants if lim.a[0] <= x < horizon_end):
        k = min(int((t - lim.a[0]) // lim.horizon.step_s), lim.T - 1)
        # per station and node: worst-case A per site phase and kW of its EVSEs under the node
        st_a = {(cp, nid): [0.0, 0.0, 0.0] for cp in stations for nid in lim.nodes}
        st_kw = {(cp, nid): 0.0 for cp in stations for nid in lim.nodes}
        for e, unit, t0, end, periods, v16 in profiles:
            if t < t0 or t >= end:
                continue
            d = [p for p in periods if t0 + p["startPeriod"] <= t][-1]
            per_line = [
                min(x, e.max_current) for x in _lines_at(unit, d, e.phases, e.voltage_v, v16)
            ]
            rot = ["RST".index(c) for c in e.phase_rotation]
            for nid in lim.chain(e.node):
                for j in range(3):
                    st_a[(e.charge_point_id, nid)][rot[j]] += per_line[j]
                st_kw[(e.charge_point_id, nid)] += sum(per_line) * e.voltage_v / 1000.0
        # the station cap bounds what its EVSEs draw together: under any node, at most the cap
        for cp, (unit, t0, end, periods, v16) in station_caps.items():
            if t < t0 or t >= end:
                continue
            evs = [e for e in site.evses if e.charge_point_id == cp]
            d = [p for p in periods if t0 + p["startPeriod"] <= t][-1]
            v = max(e.voltage_v for e in evs)
            cap_line = _lines_at(unit, d, 3, v, v16)
            rots = {e.phase_rotation for e in evs}
            if len(rots) == 1:
                rot = ["RST".index(c) for c in next(iter(rots))]
                cap_phase = [0.0, 0.0, 0.0]
                for j in range(3):
                    cap_phase[rot[j]] = cap_line[j]
            else:
                cap_phase = [max(cap_line)] * 3
            for nid in lim.nodes:
                a = [min(x, c) for x, c in zip(st_a[(cp, nid)], cap_phase, strict=True)]
                st_a[(cp, nid)] = a
                st_kw[(cp, nid)] = min(st_kw[(cp, nid)], sum(a) * v / 1000.0)
        load_a: dict[tuple[str, int], float] = {key: 0.0 for key in lim.cur_room}
        load_kw = {nid: 0.0 for nid in lim.nodes}
        for (cp, nid), a in st_a.items():
            for p in range(3):
                load_a[(nid, p)] += a[p]
            load_kw[nid] += st_kw[(cp, nid)]
        for key, room in lim.cur_room.items():
            if load_a[key] > room[k] + TOL_A:
                out.append(
                    f"OCPP at +{t - lim.a[0]:.0f} s: node {key[0]} phase "
                    f"{'RST'[key[1]]}: {load_a[key]:.2f} A > room {room[k]:.2f}"
                )
        for nid, room in lim.kw_room.items():
            if load_kw[nid] > room[k] + TOL_KW:
                out.append(
                    f"OCPP at +{t - lim.a[0]:.0f} s: node {nid} power "
                    f"{load_kw[nid]:.4f} kW > room {room[k]:.4f}"
                )
        if load_kw[lim.root] > lim.import_room[k] + TOL_KW:
            out.append(
                f"OCPP at +{t - lim.a[0]:.0f} s: import {load_kw[lim.root]:.4f} kW > "
                f"room {lim.import_room[k]:.4f}"
            )
    return out
