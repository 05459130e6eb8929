"""End to end on 127.0.0.1: the example CSMS and charge points simulated with the ``ocpp``
package (one 1.6, one 2.0.1). Transactions start, profiles are sent and Accepted, and the limits
the stations hold never exceed a site limit."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as c16
from ocpp.v16 import call_result as r16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as c201
from ocpp.v201 import call_result as r201

_spec = importlib.util.spec_from_file_location(
    "csms_example", Path(__file__).resolve().parents[1] / "examples" / "csms_example.py")
csms_example = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["csms_example"] = csms_example
_spec.loader.exec_module(csms_example)  # type: ignore[union-attr]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class _Store:
    """Profiles a simulated station holds, replaced and cleared by OCPP rules (by id)."""

    def __init__(self) -> None:
        self.profiles: dict[int, tuple[int, dict[str, Any]]] = {}  # id -> (connector, profile)
        self.received: list[tuple[str, dict[str, Any]]] = []

    def set(self, connector: int, prof: dict[str, Any], pid: int) -> None:
        # same purpose + stack level on the same connector also replaces (1.6 rule)
        for k, (c, p) in list(self.profiles.items()):
            if (c == connector and p["charging_profile_purpose"] == prof["charging_profile_purpose"]
                    and p["stack_level"] == prof["stack_level"]):
                del self.profiles[k]
        self.profiles[pid] = (connector, prof)


class Sim16(CP16):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.store = _Store()

    @on("SetChargingProfile")
    def on_set(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        self.store.received.append(("set", cs_charging_profiles))
        self.store.set(connector_id, cs_charging_profiles,
                       cs_charging_profiles["charging_profile_id"])
        return r16.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear(self, id: int | None = None, **_: Any) -> Any:
        self.store.received.append(("clear", {"id": id}))
        ok = self.store.profiles.pop(id, None) is not None
        return r16.ClearChargingProfile(status="Accepted" if ok else "Unknown")


class Sim201(CP201):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.store = _Store()

    @on("SetChargingProfile")
    def on_set(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.store.received.append(("set", charging_profile))
        sch = charging_profile["charging_schedule"][0]
        self.store.set(evse_id, {**charging_profile, "charging_schedule": sch},
                       charging_profile["id"])
        return r201.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear(self, charging_profile_id: int | None = None, **_: Any) -> Any:
        self.store.received.append(("clear", {"id": charging_profile_id}))
        ok = self.store.profiles.pop(charging_profile_id, None) is not None
        return r201.ClearChargingProfile(status="Accepted" if ok else "Unknown")


def _limit_at(prof: dict[str, Any], t: datetime) -> float | None:
    """Limit (A) in force at ``t``, None when the profile is not in force."""
    sch = prof["charging_schedule"]
    start = datetime.fromisoformat(sch["start_schedule"].replace("Z", "+00:00"))
    if t < start:
        return None
    vt = prof.get("valid_to")
    if vt and t >= datetime.fromisoformat(vt.replace("Z", "+00:00")):
        return None
    s = (t - start).total_seconds()
    lim = None
    for per in sch["charging_schedule_period"]:
        if per["start_period"] <= s:
            lim = float(per["limit"])
    assert sch["charging_rate_unit"] == "A"
    return lim


def _held(sims: dict[str, Any], site, active: dict[tuple[str, int], bool], t: datetime):
    """Worst case per site phase: every connector draws what its profiles allow at ``t``."""
    load = {n.id: [0.0, 0.0, 0.0] for n in site.nodes}
    parent = {n.id: n.parent for n in site.nodes}
    for cp, sim in sims.items():
        station_cap = None
        per_conn: dict[int, float] = {}
        for conn, prof in sim.store.profiles.values():
            lim = _limit_at(prof, t)
            if lim is None:
                continue
            purpose = prof["charging_profile_purpose"]
            if conn == 0:
                station_cap = lim
            elif purpose == "TxProfile" and active.get((cp, conn)):
                per_conn[conn] = lim
            elif purpose == "TxDefaultProfile" and conn not in per_conn:
                per_conn.setdefault(conn, lim)
        # a connector without any profile could draw its maximum
        for e in site.evses:
            if e.charge_point_id == cp:
                per_conn.setdefault(e.connector_id, e.max_current)
        total = {0: 0.0, 1: 0.0, 2: 0.0}
        for e in site.evses:
            if e.charge_point_id != cp:
                continue
            for j in range(e.phases):
                total[e.site_phases[j]] += per_conn[e.connector_id]
        node = next(e.node for e in site.evses if e.charge_point_id == cp)
        for ph in range(3):
            amps = total[ph] if station_cap is None else min(total[ph], station_cap)
            n = node
            while n is not None:
                load[n][ph] += amps
                n = parent[n]
    return load


async def _scenario() -> None:
    site = csms_example.demo_site()
    csms = csms_example.make_csms(site, n_periods=8, time_limit_s=2.0)
    server = await csms.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tasks = []
    try:
        ws16 = await websockets.connect(f"ws://127.0.0.1:{port}/CP16", subprotocols=["ocpp1.6"])
        ws201 = await websockets.connect(f"ws://127.0.0.1:{port}/CP201",
                                         subprotocols=["ocpp2.0.1"])
        s16, s201 = Sim16("CP16", ws16), Sim201("CP201", ws201)
        tasks = [asyncio.create_task(s16.start()), asyncio.create_task(s201.start())]
        await s16.call(c16.BootNotification(charge_point_model="Sim", charge_point_vendor="x"))
        await s201.call(c201.BootNotification(
            charging_station={"model": "Sim", "vendor_name": "x"}, reason="PowerUp"))
        for k in (1, 2):
            await s16.call(c16.StatusNotification(connector_id=k, error_code="NoError",
                                                  status="Available"))
        # transactions: two on the 1.6 station, one on the 2.0.1 station
        txs = []
        for k in (1, 2):
            res = await s16.call(c16.StartTransaction(connector_id=k, id_tag="TAG", meter_start=0,
                                                      timestamp=_iso(T0)))
            txs.append(res.transaction_id)
        assert len(set(txs)) == 2
        await s201.call(c201.TransactionEvent(
            event_type="Started", timestamp=_iso(T0), trigger_reason="CablePluggedIn", seq_no=0,
            transaction_info={"transaction_id": "tx-201-a"}, evse={"id": 1, "connector_id": 1}))
        sims = {"CP16": s16, "CP201": s201}
        active = {("CP16", 1): True, ("CP16", 2): True, ("CP201", 1): True}

        def check(at: datetime) -> None:
            for m in range(0, 8 * 15, 5):
                t = at + timedelta(minutes=m)
                load = _held(sims, site, active, t)
                for n in site.nodes:
                    lim = n.current_triplet()
                    for ph in range(3):
                        assert load[n.id][ph] <= lim[ph] + 1e-9, (n.id, ph, t, load)

        answers = await csms.tick(T0)
        assert answers and all(a == {"status": "Accepted"} for a in answers)
        tx_held = [p for _, p in s16.store.profiles.values()
                   if p["charging_profile_purpose"] == "TxProfile"]
        assert sorted(p["transaction_id"] for p in tx_held) == sorted(txs)
        assert any(p["charging_profile_purpose"] == "TxProfile" and
                   p["transaction_id"] == "tx-201-a" for _, p in s201.store.profiles.values())
        check(T0)

        # meter values and a second tick: only changed profiles go out
        await s16.call(c16.MeterValues(connector_id=1, transaction_id=txs[0], meter_value=[{
            "timestamp": _iso(T0 + timedelta(minutes=14)),
            "sampled_value": [{"value": "2500", "measurand": "Energy.Active.Import.Register",
                               "unit": "Wh"}]}]))
        t1 = T0 + timedelta(minutes=15)
        await csms.tick(t1)
        check(t1)

        # the 1.6 car on connector 2 leaves: its TxProfile is cleared, defaults follow
        await s16.call(c16.StopTransaction(meter_stop=4000, timestamp=_iso(t1 + timedelta(
            minutes=1)), transaction_id=txs[1]))
        active[("CP16", 2)] = False
        t2 = T0 + timedelta(minutes=30)
        answers = await csms.tick(t2)
        assert any(kind == "clear" for kind, _ in s16.store.received)
        assert all(a is not None and a["status"] in ("Accepted",) for a in answers)
        check(t2)
        # a second tick without news sends nothing new
        before = len(csms.sent)
        await csms.tick(t2)
        assert len(csms.sent) == before
        assert csms.adapter.problems == []
        await ws16.close()
        await ws201.close()
    finally:
        for t in tasks:
            t.cancel()
        server.close()
        await server.wait_closed()


def test_end_to_end_on_localhost():
    asyncio.run(asyncio.wait_for(_scenario(), timeout=30))


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
