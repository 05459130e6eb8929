"""A minimal CSMS on mobilityhouse ``ocpp`` + ``websockets`` driving loadopt's CSMS adapter.

Stations connect to ``ws://HOST:PORT/<charge point id>`` with subprotocol ``ocpp1.6`` or
``ocpp2.0.1``. Their events go to :class:`loadopt.ocpp.CsmsAdapter`; every control interval
:meth:`Csms.tick` runs the controller and sends the profiles that changed; each answer
(Accepted/Rejected) goes back to the adapter (a rejected profile is retried next tick).

Run it against the demo site::

    python examples/csms_example.py --port 9000 --interval 10

Note: the ``ocpp`` package converts dict keys with ``snake_to_camel_case`` on the way out; the
camelCase keys of loadopt's payloads pass unchanged, except 2.1's ``limit_L2``/``limit_L3``,
which it would turn into ``limitL2``. Stations on 2.1 therefore need an OCPP stack that sends
the dict as is.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

import loadopt as lo
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter

log = logging.getLogger("csms")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _camel(kwargs: dict[str, Any]) -> dict[str, Any]:
    return snake_to_camel_case(kwargs)


class _Common:
    """Sending adapter messages through the ``ocpp`` package."""

    adapter: CsmsAdapter
    id: str
    _call_module: Any

    async def send(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        kwargs = {_snake(k): v for k, v in payload.items()}  # top level only
        req = getattr(self._call_module, action)(**kwargs)
        try:
            res = await self.call(req)  # type: ignore[attr-defined]
        except Exception as e:  # a station that errors must not stop the loop
            log.warning("%s %s failed: %r", self.id, action, e)
            self.adapter.on_response(self.id, action, payload, None)
            return None
        answer = {"status": getattr(res, "status", None)}
        self.adapter.on_response(self.id, action, payload, answer)
        return answer


class Station16(_Common, ChargePoint16):
    """OCPP 1.6 station as seen from the CSMS."""

    _call_module = call16

    def __init__(self, cp_id: str, ws: Any, adapter: CsmsAdapter) -> None:
        super().__init__(cp_id, ws)
        self.adapter = adapter

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        self.adapter.connect(self.id, "1.6")
        return result16.BootNotification(current_time=_now(), interval=30, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self) -> Any:
        return result16.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> Any:
        self.adapter.on_status_notification(self.id, _camel(kw))
        return result16.StatusNotification()

    @on("StartTransaction")
    def on_start(self, **kw: Any) -> Any:
        tx = self.adapter.on_start_transaction(self.id, _camel(kw))
        return result16.StartTransaction(transaction_id=tx, id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    def on_stop(self, **kw: Any) -> Any:
        self.adapter.on_stop_transaction(self.id, _camel(kw))
        return result16.StopTransaction()

    @on("MeterValues")
    def on_meter(self, **kw: Any) -> Any:
        self.adapter.on_meter_values(self.id, _camel(kw))
        return result16.MeterValues()


class Station201(_Common, ChargePoint201):
    """OCPP 2.0.1 station as seen from the CSMS."""

    _call_module = call201

    def __init__(self, cp_id: str, ws: Any, adapter: CsmsAdapter) -> None:
        super().__init__(cp_id, ws)
        self.adapter = adapter

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        self.adapter.connect(self.id, "2.0.1")
        return result201.BootNotification(current_time=_now(), interval=30, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self) -> Any:
        return result201.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> Any:
        self.adapter.on_status_notification(self.id, _camel(kw))
        return result201.StatusNotification()

    @on("TransactionEvent")
    def on_tx(self, **kw: Any) -> Any:
        self.adapter.on_transaction_event(self.id, _camel(kw))
        return result201.TransactionEvent()

    @on("MeterValues")
    def on_meter(self, **kw: Any) -> Any:
        self.adapter.on_meter_values(self.id, _camel(kw))
        return result201.MeterValues()


class Csms:
    """Accepts station connections and runs the adapter every control interval."""

    def __init__(self, adapter: CsmsAdapter) -> None:
        self.adapter = adapter
        self.stations: dict[str, _Common] = {}
        self.sent: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []

    async def on_connect(self, ws: Any) -> None:
        cp_id = ws.request.path.strip("/").split("/")[-1]
        proto = ws.subprotocol
        cls = Station16 if proto == "ocpp1.6" else Station201 if proto == "ocpp2.0.1" else None
        if cls is None or not cp_id:
            log.warning("refused %r (subprotocol %r)", cp_id, proto)
            await ws.close()
            return
        st = cls(cp_id, ws, self.adapter)
        self.stations[cp_id] = st
        try:
            await st.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.stations.pop(cp_id, None)
            self.adapter.disconnect(cp_id)

    async def tick(self, now: datetime | None = None) -> list[Any]:
        """One control interval: step the adapter, send everything, hand answers back."""
        msgs = self.adapter.step(now or datetime.now(UTC))
        jobs = []
        for cp, action, payload in msgs:
            st = self.stations.get(cp)
            if st is None:
                continue
            jobs.append(self._send(st, cp, action, payload))
        return list(await asyncio.gather(*jobs))

    async def _send(self, st: _Common, cp: str, action: str, payload: dict[str, Any]) -> Any:
        ans = await st.send(action, payload)
        self.sent.append((cp, action, payload, ans))
        return ans

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> Any:
        return await websockets.serve(self.on_connect, host, port,
                                      subprotocols=["ocpp1.6", "ocpp2.0.1"])

    async def run(self, interval_s: float, host: str, port: int) -> None:
        server = await self.serve(host, port)
        log.info("CSMS listening on %s", [s.getsockname() for s in server.sockets])
        async with server:
            while True:
                await self.tick()
                await asyncio.sleep(interval_s)


def demo_site() -> lo.Site:
    """Two 11 kW stations (1.6 "CP16", 2.0.1 "CP201"), two connectors each, on a 32 A feeder."""
    return lo.Site(
        nodes=(lo.Node(id="grid", kind="grid_connection", max_current=63.0),
               lo.Node(id="feeder", parent="grid", kind="feeder", max_current=32.0)),
        evses=tuple(lo.Evse(id=f"{cp}-{k}", node="feeder", charge_point_id=cp, connector_id=k,
                            max_current=16.0, phase_rotation=rot)
                    for cp, rot in (("CP16", "RST"), ("CP201", "STR")) for k in (1, 2)),
    )


def make_csms(site: lo.Site | None = None, **controller_kw: Any) -> Csms:
    kw = {"step_s": 900, "n_periods": 16, "method": "lp", "time_limit_s": 2.0}
    kw.update(controller_kw)
    return Csms(CsmsAdapter(Controller(site or demo_site(), **kw)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--interval", type=float, default=10.0, help="control interval (s)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(make_csms().run(a.interval, a.host, a.port))


if __name__ == "__main__":
    main()
