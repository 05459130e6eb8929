"""End to end on 127.0.0.1: the example CSMS (examples/csms_example.py) and five charge points
built on the real ``ocpp`` package (1.6, 2.0.1 and 2.1), in real time, with faults:

- CP16W (1.6, two connectors): listed as ``W`` on the site, but only accepts ``A``;
- CP201P (2.0.1): accepts at most 2 periods per schedule;
- CP16R (1.6): reboots mid-run (keeps its profiles, loses its transaction, new socket,
  BootNotification, a new transaction);
- CP201S (2.0.1): stops answering the CSMS after its boot (messages time out; it applies them
  or not) while its car charges;
- CP21 (2.1): on a feeder with unequal per-phase limits (``limit_L2``/``limit_L3`` on the wire);
- the grid import limit drops from 34.5 kW (50 A) to 20.7 kW (30 A), announced ahead.

A monitor samples, every few milliseconds, what each station's own profile store lets cars draw
(tests/ocpp_helpers.SimStation: the OCPP rules, written from the wire payloads only) and checks
every node, phase and the grid import limit in force at that instant. Every station starts from a
0 A factory default (as a load-managed installation is commissioned). At the end every session
has ended.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import websockets
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as c16
from ocpp.v21 import ChargePoint as CP21
from ocpp.v21 import call as c21
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as c201

import loadopt as lo

from .ocpp_helpers import SimStation, site_rows

_spec = importlib.util.spec_from_file_location(
    "csms_example", Path(__file__).resolve().parents[1] / "examples" / "csms_example.py"
)
csms_example = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["csms_example"] = csms_example
_spec.loader.exec_module(csms_example)  # type: ignore[union-attr]

_HANDLED = (
    "SetChargingProfile",
    "ClearChargingProfile",
    "GetConfiguration",
    "GetVariables",
    "GetCompositeSchedule",
    "GetChargingProfiles",
)


class _Sim:
    """A real ``ocpp`` charge point whose smart-charging calls go to a SimStation store."""

    sim: SimStation
    stall = False

    async def _handle_call(self, msg: Any) -> Any:
        if msg.action not in _HANDLED:
            return await super()._handle_call(msg)  # type: ignore[misc]
        resp = self.sim.handle(msg.action, msg.payload)
        if self.stall:  # applied (or not), but never answered
            return None
        await self._send(msg.create_call_result(resp).to_json())  # type: ignore[attr-defined]
        return None


class Sim16(_Sim, CP16):
    pass


class Sim201(_Sim, CP201):
    pass


class Sim21(_Sim, CP21):
    pass


def _site() -> lo.Site:
    e = lo.Evse
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection", max_current=63.0),
            lo.Node(id="f1", parent="grid", kind="feeder", max_current=32.0),
            lo.Node(id="f2", parent="grid", kind="feeder", max_current=(32.0, 20.0, 25.0)),
        ),
        evses=(
            e(
                id="w1",
                node="f1",
                charge_point_id="CP16W",
                connector_id=1,
                max_current=16.0,
                rate_unit="W",
            ),
            e(
                id="w2",
                node="f1",
                charge_point_id="CP16W",
                connector_id=2,
                max_current=16.0,
                rate_unit="W",
                phase_rotation="STR",
            ),
            e(
                id="p1",
                node="f1",
                charge_point_id="CP201P",
                connector_id=1,
                max_current=16.0,
                phase_rotation="TRS",
            ),
            e(
                id="r1",
                node="grid",
                charge_point_id="CP16R",
                connector_id=1,
                max_current=32.0,
                phases=1,
            ),
            e(
                id="s1",
                node="grid",
                charge_point_id="CP201S",
                connector_id=1,
                max_current=16.0,
                phase_rotation="STR",
            ),
            e(id="x1", node="f2", charge_point_id="CP21", connector_id=1, max_current=32.0),
        ),
    )


VERSIONS = {"CP16W": "1.6", "CP201P": "2.0.1", "CP16R": "1.6", "CP201S": "2.0.1", "CP21": "2.1"}
CLASSES = {"1.6": (Sim16, "ocpp1.6"), "2.0.1": (Sim201, "ocpp2.0.1"), "2.1": (Sim21, "ocpp2.1")}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _scenario() -> None:
    site = _site()
    t_start = datetime.now(UTC).replace(microsecond=0)
    t_drop = t_start + timedelta(seconds=3)
    kw_before, kw_after = 34.5, 20.7
    signals = lo.Signals(
        grid_import_limit_kw=(
            lo.SeriesPoint(start=t_start, value=kw_before),
            lo.SeriesPoint(start=t_drop, value=kw_after),
        )
    )
    csms = csms_example.make_csms(
        site,
        step_s=1,
        n_periods=12,
        method="lp",
        time_limit_s=1.0,
        signals=signals,
        adapter_kw={"send_timeout_s": 0.6, "backoff_s": (0.3, 1.0)},
        poll_s=0.05,
    )
    server = await csms.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sims = {
        cp: SimStation(
            cp,
            v,
            [e for e in site.evses if e.charge_point_id == cp],
            rejects_w=cp == "CP16W",
            max_periods=2 if cp == "CP201P" else 24,
        )
        for cp, v in VERSIONS.items()
    }
    clients: dict[str, Any] = {}
    tasks: list[asyncio.Task] = []
    violations: list[str] = []
    samples = 0

    def limit_kw(t: float) -> float:
        return kw_before if t < t_drop.timestamp() else kw_after

    async def monitor() -> None:
        nonlocal samples
        while True:
            t = time.time()
            for row, (load, lim) in site_rows(site, sims, t, limit_kw(t)).items():
                if load > lim + 1e-6:
                    violations.append(f"+{t - t_start.timestamp():.2f} s {row}: {load:.2f} > {lim}")
            samples += 1
            await asyncio.sleep(0.005)

    async def connect(cp: str) -> Any:
        cls, proto = CLASSES[VERSIONS[cp]]
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/{cp}", subprotocols=[proto])
        c = cls(cp, ws)
        c.sim = sims[cp]
        clients[cp] = c
        tasks.append(asyncio.create_task(c.start()))
        if VERSIONS[cp] == "1.6":
            await c.call(c16.BootNotification(charge_point_model="Sim", charge_point_vendor="x"))
        else:
            mod = c201 if VERSIONS[cp] == "2.0.1" else c21
            await c.call(
                mod.BootNotification(
                    charging_station={"model": "Sim", "vendor_name": "x"}, reason="PowerUp"
                )
            )
        return c

    async def start_tx(cp: str, conn: int, n: int) -> None:
        c, now = clients[cp], datetime.now(UTC)
        if VERSIONS[cp] == "1.6":
            res = await c.call(
                c16.StartTransaction(
                    connector_id=conn, id_tag="TAG", meter_start=0, timestamp=_iso(now)
                )
            )
            sims[cp].tx[conn] = res.transaction_id
        else:
            mod = c201 if VERSIONS[cp] == "2.0.1" else c21
            wire = f"{cp}-{conn}-{n}"
            sims[cp].tx[conn] = wire
            await c.call(
                mod.TransactionEvent(
                    event_type="Started",
                    timestamp=_iso(now),
                    trigger_reason="CablePluggedIn",
                    seq_no=0,
                    transaction_info={"transaction_id": wire},
                    evse={"id": conn, "connector_id": 1},
                )
            )

    async def stop_tx(cp: str, conn: int, lose_stop: bool = False) -> None:
        c, now = clients[cp], datetime.now(UTC)
        tx = sims[cp].tx.pop(conn)
        if lose_stop:  # the stop never arrives; the connector reports Available
            await c.call(
                c16.StatusNotification(
                    connector_id=conn, error_code="NoError", status="Available", timestamp=_iso(now)
                )
            )
        elif VERSIONS[cp] == "1.6":
            await c.call(
                c16.StopTransaction(meter_stop=1000, timestamp=_iso(now), transaction_id=tx)
            )
        else:
            mod = c201 if VERSIONS[cp] == "2.0.1" else c21
            await c.call(
                mod.TransactionEvent(
                    event_type="Ended",
                    timestamp=_iso(now),
                    trigger_reason="EVDeparted",
                    seq_no=9,
                    transaction_info={"transaction_id": tx},
                )
            )

    mon = asyncio.create_task(monitor())
    loop_task = asyncio.create_task(csms.control_loop(0.5))
    try:
        for cp in VERSIONS:
            await connect(cp)
        await asyncio.sleep(0.3)
        clients["CP201S"].stall = True  # silent from now on (its car keeps charging)
        for cp, conn in (
            ("CP16W", 1),
            ("CP16W", 2),
            ("CP201P", 1),
            ("CP16R", 1),
            ("CP201S", 1),
            ("CP21", 1),
        ):
            await start_tx(cp, conn, 0)
        await asyncio.sleep(0.8)
        # CP16R reboots: transaction lost without a stop, new socket, BootNotification
        sims["CP16R"].reboot(wipe=False)
        await clients["CP16R"]._connection.close()
        await connect("CP16R")
        await start_tx("CP16R", 1, 1)
        await asyncio.sleep(max((t_drop - datetime.now(UTC)).total_seconds(), 0) + 0.8)
        await stop_tx("CP16W", 1)
        await stop_tx("CP16W", 2, lose_stop=True)
        for cp in ("CP201P", "CP16R", "CP201S", "CP21"):
            await stop_tx(cp, 1)
        await asyncio.sleep(0.6)
        ad = csms.adapter
        assert violations == [], violations[:10]
        assert samples > 100
        assert ad.sessions == {} and csms.adapter.controller.sessions == {}
        # what each fault did
        assert ad.caps["w1"].rate_unit == "A" and ad.caps["p1"].max_periods == 2
        sent = csms.sent
        assert all(
            p["csChargingProfiles"]["chargingSchedule"]["chargingRateUnit"] == "A"
            for cp, a, p, _ in sent
            if cp == "CP16W" and a == "SetChargingProfile"
        )
        assert all(
            len(p["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]) <= 2
            for cp, a, p, _ in sent
            if cp == "CP201P" and a == "SetChargingProfile"
        )
        assert any(ans is None for cp, _, _, ans in sent if cp == "CP201S")  # timed out
        assert any("CP201S" in p and "no answer" in p for p in ad.problems)
        assert any("limit_L2" in str(p) for cp, a, p, _ in sent if cp == "CP21")
        # the drop reached the stations before it took effect, and was obeyed
        t_after = t_drop.timestamp() + 0.5
        kw = site_rows(site, sims, t_after, kw_after)["grid import kW"][0]
        assert kw <= kw_after + 1e-6
        for c in clients.values():
            await c._connection.close()
    finally:
        loop_task.cancel()
        mon.cancel()
        for t in tasks:
            t.cancel()
        server.close()
        await server.wait_closed()


def test_end_to_end_on_localhost_with_faults():
    asyncio.run(asyncio.wait_for(_scenario(), timeout=30))
