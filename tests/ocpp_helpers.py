"""Shared builders and checks for the OCPP tests."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np

import loadopt as lo
from loadopt.ocpp import Profile, validate
from loadopt.ocpp.merge import value_at
from loadopt.safety import project
from loadopt.schedule import Schedule, ScheduleStatus

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def site(
    n_cp: int = 3,
    conns: int = 2,
    breaker_a: float = 40.0,
    grid_a: float = 63.0,
    grid_kw: float | None = None,
    rotations=("RST", "STR", "TRS"),
    phases=(3, 3, 1),
    rate_units=("A", "W"),
    max_periods=(24, 5),
) -> lo.Site:
    nodes = [
        lo.Node(id="grid", kind="grid_connection", max_current=grid_a, max_power_kw=grid_kw),
        lo.Node(id="f1", parent="grid", kind="feeder", max_current=breaker_a),
        lo.Node(id="f2", parent="grid", kind="feeder", max_current=(breaker_a, 25.0, 30.0)),
    ]
    evses = []
    for c in range(n_cp):
        for k in range(1, conns + 1):
            i = c * conns + k
            evses.append(
                lo.Evse(
                    id=f"e{c}-{k}",
                    node="f1" if c % 2 == 0 else "f2",
                    charge_point_id=f"CP{c}",
                    connector_id=k,
                    phases=phases[i % len(phases)],
                    phase_rotation=rotations[i % len(rotations)],
                    rate_unit=rate_units[c % len(rate_units)],
                    max_periods=max_periods[c % len(max_periods)],
                    phase_switching=(i % 4 == 0),
                )
            )
    return lo.Site(nodes=tuple(nodes), evses=tuple(evses))


def sessions(
    s: lo.Site,
    n: int,
    rng: np.random.Generator,
    start: datetime = T0,
) -> list[lo.Session]:
    out = []
    evs = list(s.evses)
    rng.shuffle(evs)
    for k, e in enumerate(evs[:n]):
        out.append(
            lo.Session(
                id=str(1000 + k),
                evse=e.id,
                arrival=start - timedelta(minutes=int(rng.integers(1, 60))),
                departure=start + timedelta(minutes=int(rng.integers(30, 600))),
                energy_kwh=float(rng.uniform(1, 40)),
                phases=int(rng.choice([1, 3])),
                max_current=float(rng.choice([16.0, 32.0])),
            )
        )
    return out


def random_schedule(
    s: lo.Site,
    sess: list[lo.Session],
    rng: np.random.Generator,
    n: int = 12,
    step_s: int = 900,
    signals: lo.Signals | None = None,
    start: datetime = T0,
) -> Schedule:
    """A safe schedule without a solver: random currents projected onto the limits."""
    p = lo.compile_problem(s, sess, lo.Horizon(start=start, step_s=step_s, n_periods=n), signals)
    raw = rng.uniform(0, 32, size=(p.n_sessions, p.n_periods))
    raw[rng.random(raw.shape) < 0.3] = 0.0
    return Schedule(p, project(p, raw), ScheduleStatus.FEASIBLE, "test")


def validate_all(msgs, version) -> None:
    for _cp, action, payload in msgs:
        validate(action, payload, version)


def worst_case_violations(schedule: Schedule, profiles: list[Profile]) -> list[str]:
    """Every limit broken if every plugged session draws its TxProfile limit and a newcomer on
    every idle EVSE draws its TxDefaultProfile limit on each of its lines, in every period;
    and whether each station's cap is ≥ 0 and ≤ what its EVSEs could draw under those profiles
    is irrelevant to safety, but the station caps alone must also hold when the station draws
    them (checked per node with the other stations at their own caps)."""
    p = schedule.problem
    T = p.n_periods
    starts = np.arange(T) * p.horizon.step_s
    tx_default = {
        (pr.charge_point_id, pr.connector): value_at(pr.starts, pr.limits, starts).T
        for pr in profiles
        if pr.purpose == "tx_default"
    }  # (3, T) deci-amps
    node_index = {n: k for k, n in enumerate(p.node_ids)}
    extra_a = np.zeros((len(p.node_ids), 3, T))
    extra_kw = np.zeros((len(p.node_ids), T))
    for e in p.site.evses:
        lim = tx_default.get((e.charge_point_id, e.connector_id))
        if lim is None:
            continue
        node = node_index[e.node]
        chain = []
        while node >= 0:
            chain.append(node)
            node = int(p.node_parent[node])
        for j in range(e.phases):
            ph = e.site_phases[j]
            # a newcomer (idle periods) or a car whose TxProfile is gone (busy periods)
            add = lim[j] / 10.0
            for n in chain:
                extra_a[n, ph] += add
                extra_kw[n] += add * e.voltage_v / 1000.0
    bad = []
    load = schedule.node_phase_current + extra_a
    over = load > p.node_current_limit + 1e-6
    for n, ph, t in zip(*np.nonzero(over), strict=True):
        bad.append(
            f"node {p.node_ids[n]} phase {ph} period {t}: {load[n, ph, t]:.2f} > "
            f"{p.node_current_limit[n, ph, t]}"
        )
    kw = schedule.node_power_kw + extra_kw
    for n, t in zip(*np.nonzero(kw > p.node_power_limit_kw + 1e-6), strict=True):
        bad.append(f"node {p.node_ids[n]} power period {t}")
    root = int(np.flatnonzero(p.node_parent < 0)[0])
    imp = schedule.import_kw + extra_kw[root]
    for t in np.flatnonzero(imp > p.import_cap_kw + 1e-6):
        bad.append(f"import period {t}")
    return bad


def station_cap_violations(schedule: Schedule, profiles: list[Profile]) -> list[str]:
    """Every node/phase limit broken if every station draws its station-max cap in full (per
    line, as emitted), counted on every site phase its EVSEs use."""
    p = schedule.problem
    node_index = {n: k for k, n in enumerate(p.node_ids)}
    T = p.n_periods
    starts = np.arange(T) * p.horizon.step_s
    extra = np.zeros((len(p.node_ids), 3, T))
    for pr in profiles:
        if pr.purpose != "station_max":
            continue
        k_of = np.searchsorted(pr.starts, starts, side="right") - 1
        evs = [e for e in p.site.evses if e.charge_point_id == pr.charge_point_id]
        phases_used = sorted({e.site_phases[j] for e in evs for j in range(e.phases)})
        nodes = set()
        for e in evs:
            n = node_index[e.node]
            while n >= 0:
                nodes.add(n)
                n = int(p.node_parent[n])
        rots = {e.site_phases for e in evs}
        for ph in phases_used:
            if len(rots) == 1:
                j = next(iter(rots)).index(ph)
                val = pr.limits[k_of, j] / 10.0
            else:
                val = pr.limits[k_of].min(axis=1) / 10.0
            for n in nodes:
                extra[n, ph] += val
    base = np.zeros_like(extra)
    base[p.node_carries_base] += p.base_load_a[None, None, :]
    load = base + extra
    over = load > p.node_current_limit + 1e-6
    return [
        f"node {p.node_ids[n]} phase {ph} period {t}: {load[n, ph, t]:.2f} > "
        f"{p.node_current_limit[n, ph, t]}"
        for n, ph, t in zip(*np.nonzero(over), strict=True)
    ]


# ---------------------------------------------------------------------------- simulated stations
# A station as the OCPP specs describe its profile store, written independently of
# loadopt.ocpp (it reads wire payloads only): used by the state-machine and bad-input tests.
# Not a real counterpart (tests/test_ocpp_e2e.py runs the real `ocpp` package); labelled as such.
def _t(v: str) -> float:
    return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


class SimStation:
    """Profile store + transactions of one charge point (1.6 or 2.x), applying messages in order.

    ``rejects_w`` / ``rejects_a``: answers ``Rejected`` to a W / an A profile; ``max_periods``:
    rejects longer schedules; a TxProfile for a transaction it does not run is rejected
    (TxNotFound). ``now_s``: the station's clock (epoch s; None: the wall clock), for
    ``GetCompositeSchedule``. ``GetChargingProfiles`` (2.x) queues its ``ReportChargingProfiles``
    payloads, ``TriggerMessage`` its ``StatusNotification``, in ``outgoing`` (the station's own
    calls, for the harness to deliver: :func:`deliver_outgoing`). ``car_phases``: connector →
    the phases the car plugged in there really draws on (a fact of the world, whatever the
    station reports); a connector without an entry may see any car: a ``W`` limit is judged
    for the worst of them (:func:`w_limit_lines`)."""

    def __init__(
        self,
        cp: str,
        version: str,
        evses: list,
        *,
        rejects_w: bool = False,
        rejects_a: bool = False,
        max_periods: int = 24,
        factory_default_a: float | None = 0.0,
    ) -> None:
        self.cp, self.version = cp, version
        self.evses = {e.connector_id: e for e in evses}
        self.rejects_w, self.max_periods = rejects_w, max_periods
        self.rejects_a = rejects_a
        self.store: dict[int, tuple[int, dict]] = {}  # profile id -> (connector, profile)
        self.tx: dict[int, int | str] = {}  # connector -> running transaction
        self.factory_default_a = factory_default_a
        self.now_s: float | None = None
        self.outgoing: list[tuple[str, dict]] = []
        self.car_phases: dict[int, int] = {}
        self._factory()

    def _factory(self) -> None:
        if self.factory_default_a is None:
            return
        self.store[1] = (
            0,
            {
                "id": 1,
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingSchedule": {
                    "startSchedule": "2000-01-01T00:00:00Z",
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": self.factory_default_a}],
                },
            },
        )

    def reboot(self, wipe: bool) -> None:
        self.tx.clear()
        if wipe:
            self.store.clear()
        else:  # profiles persist; TxProfiles end with their transactions
            self.store = {
                k: v for k, v in self.store.items() if v[1]["chargingProfilePurpose"] != "TxProfile"
            }

    def handle(self, action: str, payload: dict) -> dict:
        if action == "SetChargingProfile":
            return {"status": self._set(payload)}
        if action == "ClearChargingProfile":
            pid = payload.get("id", payload.get("chargingProfileId"))
            ok = self.store.pop(pid, None) is not None
            return {"status": "Accepted" if ok else "Unknown"}
        if action == "GetCompositeSchedule":
            return self._composite(payload)
        if action == "GetChargingProfiles":
            return self._report(payload)
        if action == "TriggerMessage" and payload.get("requestedMessage") == "StatusNotification":
            conn = payload.get("connectorId", (payload.get("evse") or {}).get("id"))
            if conn not in self.evses:
                return {"status": "Rejected"}
            busy = conn in self.tx
            if self.version == "1.6":
                status = {"connectorId": conn, "errorCode": "NoError"}
                status["status"] = "Charging" if busy else "Available"
            else:
                status = {"evseId": conn, "connectorId": 1}
                status["connectorStatus"] = "Occupied" if busy else "Available"
            stamp = self.now_s if self.now_s is not None else time.time()
            status["timestamp"] = datetime.fromtimestamp(stamp, UTC).isoformat()
            self.outgoing.append(("StatusNotification", status))
            return {"status": "Accepted"}
        if action == "GetConfiguration":
            unit = "Current" if self.rejects_w else "Current,Power"
            return {
                "configurationKey": [
                    {
                        "key": "ChargingScheduleAllowedChargingRateUnit",
                        "readonly": True,
                        "value": unit,
                    },
                    {
                        "key": "ChargingScheduleMaxPeriods",
                        "readonly": True,
                        "value": str(self.max_periods),
                    },
                ]
            }
        if action == "GetVariables":
            sc = {"name": "SmartChargingCtrlr"}
            return {
                "getVariableResult": [
                    {
                        "attributeStatus": "Accepted",
                        "component": sc,
                        "variable": {"name": "RateUnit"},
                        "attributeValue": "A" if self.rejects_w else "A,W",
                    },
                    {
                        "attributeStatus": "Accepted",
                        "component": sc,
                        "variable": {"name": "PeriodsPerSchedule"},
                        "attributeValue": str(self.max_periods),
                    },
                ]
            }
        return {"status": "Rejected"}

    def _composite(self, payload: dict) -> dict:
        """What the store lets the connector draw over ``duration`` from now, in A (the largest
        line, rounded up to 0.1 A: an upper bound, as the adapter reads ``limit`` per line)."""
        conn = payload.get("connectorId", payload.get("evseId"))
        if conn not in self.evses:
            return {"status": "Rejected"}
        start = math.floor(self.now_s if self.now_s is not None else time.time())
        dur = int(payload["duration"])
        pts = {0}
        for _, prof in self.store.values():
            sch = prof["chargingSchedule"]
            s0 = _t(sch["startSchedule"])
            ends = [s0 + q["startPeriod"] for q in sch["chargingSchedulePeriod"]]
            if "validTo" in prof:
                ends.append(_t(prof["validTo"]))
            pts |= {math.ceil(t - start) for t in ends if 0 < t - start < dur}
        periods = []
        for off in sorted(pts):
            got = self.may_draw(conn, start + off)
            lim = math.ceil(max(got[:3]) * 10 - 1e-9) / 10
            if not periods or periods[-1]["limit"] != lim:
                periods.append({"startPeriod": off, "limit": lim})
        iso = datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")
        sched = {"duration": dur, "chargingRateUnit": "A", "chargingSchedulePeriod": periods}
        if self.version == "1.6":
            return {
                "status": "Accepted",
                "connectorId": conn,
                "scheduleStart": iso,
                "chargingSchedule": {**sched, "startSchedule": iso},
            }
        return {"status": "Accepted", "schedule": {**sched, "evseId": conn, "scheduleStart": iso}}

    def _report(self, payload: dict) -> dict:
        """2.x GetChargingProfiles by id: the matching profiles, one report per EVSE (TxProfiles
        only of the transaction running there: a station deletes the others)."""
        ids = set((payload.get("chargingProfile") or {}).get("chargingProfileId") or [])
        by_evse: dict[int, list] = {}
        for pid, (c, p) in sorted(self.store.items()):
            if ids and pid not in ids:
                continue
            if p["chargingProfilePurpose"] == "TxProfile" and str(self.tx.get(c)) != str(
                p.get("transactionId")
            ):
                continue
            by_evse.setdefault(c, []).append({**p, "chargingSchedule": [p["chargingSchedule"]]})
        if not by_evse:
            return {"status": "NoProfiles"}
        evses = sorted(by_evse)
        for i, c in enumerate(evses):
            self.outgoing.append(
                (
                    "ReportChargingProfiles",
                    {
                        "requestId": payload["requestId"],
                        "chargingLimitSource": "CSO",
                        "evseId": c,
                        "tbc": i < len(evses) - 1,
                        "chargingProfile": by_evse[c],
                    },
                )
            )
        return {"status": "Accepted"}

    def _set(self, payload: dict) -> str:
        if self.version == "1.6":
            conn, prof = payload["connectorId"], payload["csChargingProfiles"]
            pid, sched = prof["chargingProfileId"], prof["chargingSchedule"]
        else:
            conn, prof = payload["evseId"], payload["chargingProfile"]
            pid, sched = prof["id"], prof["chargingSchedule"][0]
        if self.rejects_w and sched["chargingRateUnit"] == "W":
            return "Rejected"
        if self.rejects_a and sched["chargingRateUnit"] == "A":
            return "Rejected"
        if len(sched["chargingSchedulePeriod"]) > self.max_periods:
            return "Rejected"
        purpose = prof["chargingProfilePurpose"]
        if purpose == "TxProfile" and str(self.tx.get(conn)) != str(prof.get("transactionId")):
            return "Rejected"  # TxNotFound
        for k, (c, p) in list(self.store.items()):
            same = (
                c == conn
                and p["chargingProfilePurpose"] == purpose
                and p["stackLevel"] == prof["stackLevel"]
            )
            if same and k != pid:
                if self.version != "1.6":
                    return "Rejected"  # 2.x K01.FR.39: another id at that level and purpose
                del self.store[k]
        self.store[pid] = (conn, {**prof, "chargingSchedule": sched})
        return "Accepted"

    # ------------------------------------------------------------------ what it lets cars draw
    def _limit(self, prof: dict, conn: int, t: float) -> tuple[float, float, float, float] | None:
        """(L1, L2, L3 A, kW) a car may draw at ``t`` under ``prof``, None when not in force."""
        sch = prof["chargingSchedule"]
        start = _t(sch["startSchedule"])
        if t < start or ("validTo" in prof and t >= _t(prof["validTo"])):
            return None
        per = None
        for q in sch["chargingSchedulePeriod"]:
            if start + q["startPeriod"] <= t:
                per = q
        if per is None:
            return None
        ev = self.evses[conn]
        v, nph_evse = ev.voltage_v, ev.phases
        if "limit" not in per:  # 2.1: Idle moves nothing; any other mode without it: no limit
            lim = 0.0 if per.get("operationMode") == "Idle" else 1e9
        else:
            lim = float(per["limit"])
        if sch["chargingRateUnit"] == "W":
            if self.version == "2.1" and "limit_L2" in per:  # per line: `limit` is L1's
                vals = [lim, float(per["limit_L2"]), float(per.get("limit_L3", lim))]
                lines = [x / v for x in vals]
                kw = sum(vals[:nph_evse]) / 1000.0
            else:
                lines = w_limit_lines(lim, v, per, self.car_phases.get(conn))
                kw = lim / 1000.0
        else:
            lines = [lim, float(per.get("limit_L2", lim)), float(per.get("limit_L3", lim))]
            kw = None
        car = self.car_phases.get(conn)
        if car is not None:  # a car of k phases draws on its EVSE's first k lines only
            lines = [x if j < car else 0.0 for j, x in enumerate(lines)]
        lines = [min(x, ev.max_current) for x in lines[:nph_evse]] + [0.0] * (3 - nph_evse)
        if kw is None:
            kw = sum(lines) * v / 1000.0
        return (*lines, min(kw, ev.max_current * v * nph_evse / 1000.0))  # type: ignore

    def _in_force(self, conn: int, t: float) -> tuple[dict, dict] | None:
        """(profile, period) in force on ``conn`` at ``t`` by the precedence of
        :meth:`may_draw` (TxProfile of the running transaction, connector default, station
        default), None when none is."""
        tx = self.tx.get(conn)
        found: dict[str, tuple[dict, dict]] = {}
        for c, p in self.store.values():
            purpose = p["chargingProfilePurpose"]
            if purpose == "TxProfile" and (
                c != conn or tx is None or str(p.get("transactionId")) != str(tx)
            ):
                continue
            if purpose not in ("TxProfile", "TxDefaultProfile") or c not in (0, conn):
                continue
            sch = p["chargingSchedule"]
            start = _t(sch["startSchedule"])
            if t < start or ("validTo" in p and t >= _t(p["validTo"])):
                continue
            per = None
            for q in sch["chargingSchedulePeriod"]:
                if start + q["startPeriod"] <= t:
                    per = q
            if per is None:
                continue
            rank = "tx" if purpose == "TxProfile" else ("conn" if c == conn else "station")
            found[rank] = (p, per)
        for rank in ("tx", "conn", "station"):
            if rank in found:
                return found[rank]
        return None

    def may_discharge(self, conn: int, t: float) -> tuple[float, float, float, float]:
        """(L1, L2, L3 A, kW) connector ``conn`` lets an EV discharge at ``t`` (OCPP 2.1: the
        profile in force, a period whose ``operationMode`` is not ChargingOnly (the default) or
        Idle: ``|dischargeLimit|``, else ``|setpoint|``, per line with ``_L2``/``_L3``, else
        the whole value on any line; ``W`` over ``numberPhases``), up to the EVSE's discharge
        maximum; 0 on a station that is not 2.1 or an EVSE that is not bidirectional."""
        ev = self.evses[conn]
        got = self._in_force(conn, t)
        if self.version != "2.1" or not ev.bidirectional or got is None:
            return (0.0, 0.0, 0.0, 0.0)
        prof, per = got
        if per.get("operationMode", "ChargingOnly") in ("ChargingOnly", "Idle"):
            return (0.0, 0.0, 0.0, 0.0)
        name = "dischargeLimit" if "dischargeLimit" in per else "setpoint"
        hw = ev.max_current if ev.max_discharge_current is None else ev.max_discharge_current
        if name not in per:
            lines = [hw] * 3
        else:
            v1 = abs(float(per[name]))
            l2, l3 = per.get(f"{name}_L2"), per.get(f"{name}_L3")
            lines = [v1, v1 if l2 is None else abs(float(l2)), v1 if l3 is None else abs(float(l3))]
            if prof["chargingSchedule"]["chargingRateUnit"] == "W":
                if l2 is not None:  # 2.1 per-line values
                    lines = [x / ev.voltage_v for x in lines]
                else:
                    lines = w_limit_lines(lines[0], ev.voltage_v, per, self.car_phases.get(conn))
        lines = [min(x, hw) for x in lines[: ev.phases]] + [0.0] * (3 - ev.phases)
        return (*lines, sum(lines) * ev.voltage_v / 1000.0)  # type: ignore[return-value]

    def may_draw(self, conn: int, t: float) -> tuple[float, float, float, float]:
        """(L1, L2, L3 A, kW) connector ``conn`` lets a car draw at ``t`` (a car is assumed on
        every connector): its transaction's TxProfile, else its TxDefault, else the station-wide
        TxDefault, else the hardware maximum."""
        tx = self.tx.get(conn)
        found: dict[str, tuple] = {}
        for c, p in self.store.values():
            purpose = p["chargingProfilePurpose"]
            if purpose == "TxProfile" and (
                c != conn or tx is None or str(p.get("transactionId")) != str(tx)
            ):
                continue
            if purpose == "TxDefaultProfile" and c not in (0, conn):
                continue
            if purpose not in ("TxProfile", "TxDefaultProfile"):
                continue
            lim = self._limit(p, conn, t)
            if lim is None:
                continue
            rank = "tx" if purpose == "TxProfile" else ("conn" if c == conn else "station")
            found[rank] = lim
        for rank in ("tx", "conn", "station"):
            if rank in found:
                return found[rank]
        ev = self.evses[conn]
        lines = [ev.max_current] * ev.phases + [0.0] * (3 - ev.phases)
        return (*lines, ev.max_current * ev.voltage_v * ev.phases / 1000.0)  # type: ignore


def w_limit_lines(w: float, voltage_v: float, period: dict, car_phases: int | None) -> list[float]:
    """A per line (EVSE L1, L2, L3) a car draws under a ``W`` limit ``w``, from physics, not
    from loadopt: a car of ``k`` phases draws on its first ``m = min(k, numberPhases)`` lines
    (the station may not use more than ``numberPhases``, OCPP ChargingSchedulePeriod; 3 when
    absent), ``w / (voltage × m)`` on each. ``car_phases`` None (no car, or one the test does
    not pin): the worst car per line — line ``j`` carries at most ``w / (voltage × (j + 1))``
    (a 1-phase car puts it all on L1, a 2-phase car half on L2, …)."""
    n_p = max(1, min(3, int(period.get("numberPhases", 3))))
    if car_phases is None:
        return [w / (voltage_v * (j + 1)) if j < n_p else 0.0 for j in range(3)]
    m = min(int(car_phases), n_p)
    return [w / (voltage_v * m) if j < m else 0.0 for j in range(3)]


def deliver_outgoing(ad, cp: str, sim: SimStation) -> None:
    """Hand the station's own calls (reports, status notifications) to the adapter."""
    for action, payload in sim.outgoing:
        if action == "ReportChargingProfiles":
            ad.on_report_charging_profiles(cp, payload)
        elif action == "StatusNotification":
            ad.on_status_notification(cp, payload)
    sim.outgoing.clear()


def site_rows(
    site: lo.Site, stations: dict[str, SimStation], t: float, grid_kw: float | None
) -> dict[str, tuple[float, float]]:
    """Per limit, (load, limit) if cars draw what the stations' own stores let them at instant
    ``t`` (raw site data: node current per site phase along each EVSE's path, grid import kW)."""
    return _rows(
        site,
        lambda e: stations[e.charge_point_id].may_draw(e.connector_id, t),
        grid_kw,
        "",
        "grid import kW",
    )


def _rows(site, per_evse, grid_kw, prefix, grid_name, base_kw=0.0):
    """Per node phase and node kW limit, and the grid, (load, limit): ``per_evse(e)`` (L1, L2,
    L3 A, kW) summed up each EVSE's path by ``parent``, its lines on the site phases of its
    ``phase_rotation`` letters; ``base_kw`` the site's base load, balanced over the three phases
    (``kW · 1000 / (3 · site V)`` A each) on ``site.base_load_node`` (default: the root) and
    every node above it."""
    load = {n.id: [0.0, 0.0, 0.0] for n in site.nodes}
    node_kw = {n.id: 0.0 for n in site.nodes}
    parent = {n.id: n.parent for n in site.nodes}
    kw = 0.0
    for e in site.evses:
        got = per_evse(e)
        kw += got[3]
        n: str | None = e.node
        while n is not None:
            for j in range(e.phases):
                load[n]["RST".index(e.phase_rotation[j])] += got[j]
            node_kw[n] += got[3]
            n = parent[n]
    if base_kw:
        a = base_kw * 1000.0 / (3.0 * site.voltage_v)
        n = site.base_load_node or next(x.id for x in site.nodes if x.parent is None)
        while n is not None:
            load[n] = [x + a for x in load[n]]
            node_kw[n] += base_kw
            n = parent[n]
        kw += base_kw
    out = {}
    for node in site.nodes:
        lim = node.current_triplet()
        if lim is not None:
            for ph in range(3):
                out[f"{prefix}{node.id} phase {ph}"] = (load[node.id][ph], lim[ph])
        if node.max_power_kw is not None and not prefix:
            out[f"{node.id} kW"] = (node_kw[node.id], float(node.max_power_kw))
    if grid_kw is not None:
        out[grid_name] = (kw, grid_kw)
    return out


def stations_holding(
    site: lo.Site, payloads: list[tuple[str, dict]], version: str, cars: dict
) -> dict[str, SimStation]:
    """One :class:`SimStation` per charge point of ``site`` (no factory default) that applied
    every ``(charge point, SetChargingProfile payload)`` — each must be accepted; ``cars``:
    ``{(charge point, connector): (transaction id, phases the car draws on)}``."""
    sims = {
        cp: SimStation(
            cp,
            version,
            [e for e in site.evses if e.charge_point_id == cp],
            max_periods=10_000,
            factory_default_a=None,
        )
        for cp in {e.charge_point_id for e in site.evses}
    }
    for (cp, conn), (tx, phases) in cars.items():
        sims[cp].tx[conn] = tx
        sims[cp].car_phases[conn] = phases
    for cp, payload in payloads:
        got = sims[cp].handle("SetChargingProfile", payload)
        assert got["status"] == "Accepted", (cp, payload)
    return sims


def site_export_rows(
    site: lo.Site, stations: dict[str, SimStation], t: float, export_kw: float | None
) -> dict[str, tuple[float, float]]:
    """Per limit, (discharge, limit) in the export direction if every EV discharges what the
    stations' own stores let it at instant ``t`` (raw site data: node current per site phase
    along each EVSE's path, grid export kW; no PV, no credit for any load)."""
    return _rows(
        site,
        lambda e: stations[e.charge_point_id].may_discharge(e.connector_id, t),
        export_kw,
        "export ",
        "grid export kW",
    )


def site_excess(
    site: lo.Site,
    stations: dict[str, SimStation],
    t: float,
    grid_kw: float | None,
    base_kw: float = 0.0,
) -> list[str]:
    """Every limit broken at instant ``t`` (see :func:`site_rows`), with a constant base load
    of ``base_kw``."""
    rows = _rows(
        site,
        lambda e: stations[e.charge_point_id].may_draw(e.connector_id, t),
        grid_kw,
        "",
        "grid import kW",
        base_kw,
    )
    return [f"{k}: {a:.3f} > {b}" for k, (a, b) in rows.items() if a > b + 1e-6]
