"""A minimal CSMS on mobilityhouse ``ocpp`` + ``websockets`` driving loadopt's CSMS adapter.

Stations connect to ``ws://HOST:PORT/<charge point id>`` with subprotocol ``ocpp1.6``,
``ocpp2.0.1`` or ``ocpp2.1``. Their events go to :class:`loadopt.ocpp.CsmsAdapter`.

The control loop never waits on a station:

- every station has its own outbox and sender task; each message is sent with the adapter's
  deadline (``send_timeout_s``, not the ``ocpp`` package's 30 s), and its answer (``None`` on a
  time-out or CallError) goes straight back to the adapter;
- :meth:`Csms.tick` (every control interval) only runs ``adapter.step`` and drops the first wave
  into the outboxes; :meth:`Csms.pump` (after every answer and every ``poll_s``) hands the
  adapter's newly safe increases, retries and pending requests to the outboxes;
- a message whose deadline passed while it waited behind a silent station's earlier message is
  not sent late (the adapter already budgets it as possibly held and retries with back-off).

Messages go out as raw OCPP-J calls: the payload dict is validated against the official schema
and sent as is, so 2.1's ``limit_L2``/``limit_L3`` are not renamed by the package's
``snake_to_camel_case``.

Run it against the demo site::

    python examples/csms_example.py --port 9000 --interval 10
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.messages import Call, MessageType, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v21 import call_result as result21
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201

import loadopt as lo
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter

log = logging.getLogger("csms")
SUBPROTOCOLS = ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _camel(kwargs: dict[str, Any]) -> dict[str, Any]:
    return snake_to_camel_case(kwargs)


class _Common:
    """What every station connection shares: the raw sender with its own deadline."""

    adapter: CsmsAdapter
    csms: Csms
    id: str
    token: int | bool
    _ocpp_version: str

    def _setup(self, csms: Csms) -> None:
        self.csms = csms
        self.adapter = csms.adapter
        self.outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.token = False

    async def send_raw(
        self, action: str, payload: dict[str, Any], timeout_s: float
    ) -> dict[str, Any] | None:
        """One OCPP-J CALL with ``payload`` exactly as given (camelCase); the answer payload,
        or ``None`` on a time-out, a CallError or a closed socket."""
        call = Call(unique_id=str(uuid.uuid4()), action=action, payload=payload)
        await validate_payload(call, self._ocpp_version)
        async with self._call_lock:  # type: ignore[attr-defined]
            await self._send(call.to_json())  # type: ignore[attr-defined]
            res = await self._get_specific_response(  # type: ignore[attr-defined]
                call.unique_id, timeout_s
            )
        if res.message_type_id == MessageType.CallError:
            log.warning("%s %s: CallError %s", self.id, action, res)
            return None
        return res.payload

    async def sender(self) -> None:
        """This station's outbox, one message at a time, each with its own deadline."""
        ad = self.adapter
        while True:
            action, payload = await self.outbox.get()
            if not ad.still_wanted(self.id, action, payload):
                continue
            ad.on_sent(self.id, payload, datetime.now(UTC))
            try:
                ans = await self.send_raw(action, payload, ad.send_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # time-out, closed socket, schema: never stops the loop
                log.warning("%s %s failed: %r", self.id, action, e)
                ans = None
            self.csms.sent.append((self.id, action, payload, ans))
            ad.on_response(self.id, action, payload, ans, now=datetime.now(UTC))
            self.csms.pump()

    # ---------------------------------------------------------------- shared handlers
    def _boot(self, version: str) -> None:
        self.token = self.adapter.on_boot_notification(self.id, version)
        asyncio.get_running_loop().call_soon(self.csms.pump)

    def _status(self, kw: dict[str, Any]) -> None:
        self.adapter.on_status_notification(self.id, _camel(kw))

    def _meter(self, kw: dict[str, Any]) -> None:
        self.adapter.on_meter_values(self.id, _camel(kw))


class Station16(_Common, ChargePoint16):
    """OCPP 1.6 station as seen from the CSMS."""

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        self._boot("1.6")
        return result16.BootNotification(current_time=_now(), interval=30, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self) -> Any:
        return result16.Heartbeat(current_time=_now())

    @on("Authorize")
    def on_authorize(self, id_tag: str) -> Any:
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return result16.DataTransfer(status="UnknownVendorId")

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> Any:
        self._status(kw)
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
        self._meter(kw)
        return result16.MeterValues()


class _Station2x(_Common):
    """OCPP 2.0.1 / 2.1 handlers (``_results`` is the version's call_result module)."""

    _results: Any

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        self._boot(self._ocpp_version)
        return self._results.BootNotification(current_time=_now(), interval=30, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self) -> Any:
        return self._results.Heartbeat(current_time=_now())

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return self._results.Authorize(id_token_info={"status": "Accepted"})

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return self._results.DataTransfer(status="UnknownVendorId")

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> Any:
        self._status(kw)
        return self._results.StatusNotification()

    @on("TransactionEvent")
    def on_tx(self, **kw: Any) -> Any:
        self.adapter.on_transaction_event(self.id, _camel(kw))
        return self._results.TransactionEvent()

    @on("MeterValues")
    def on_meter(self, **kw: Any) -> Any:
        self._meter(kw)
        return self._results.MeterValues()

    @on("NotifyEVChargingNeeds")
    def on_needs(self, **kw: Any) -> Any:
        self.adapter.on_notify_ev_charging_needs(self.id, _camel(kw))
        return self._results.NotifyEVChargingNeeds(status="Accepted")

    @on("NotifyChargingLimit")
    def on_limit(self, **kw: Any) -> Any:
        # an external limit (EMS, grid operator): planned within from the next tick on
        self.adapter.on_notify_charging_limit(self.id, _camel(kw))
        return self._results.NotifyChargingLimit()

    @on("ReportChargingProfiles")
    def on_report(self, **kw: Any) -> Any:
        self.adapter.on_report_charging_profiles(self.id, _camel(kw))
        return self._results.ReportChargingProfiles()


class Station201(_Station2x, ChargePoint201):
    _results = result201


class Station21(_Station2x, ChargePoint21):
    _results = result21


_CLASSES: dict[str, tuple[type, str]] = {
    "ocpp1.6": (Station16, "1.6"),
    "ocpp2.0.1": (Station201, "2.0.1"),
    "ocpp2.1": (Station21, "2.1"),
}


class Csms:
    """Accepts station connections, runs the adapter every control interval, never blocks."""

    def __init__(self, adapter: CsmsAdapter, *, poll_s: float = 0.2) -> None:
        self.adapter = adapter
        self.poll_s = poll_s
        self.stations: dict[str, _Common] = {}
        self.sent: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []

    async def on_connect(self, ws: Any) -> None:
        cp_id = ws.request.path.strip("/").split("/")[-1]
        cls_v = _CLASSES.get(ws.subprotocol or "")
        if cls_v is None or not cp_id:
            log.warning("refused %r (subprotocol %r)", cp_id, ws.subprotocol)
            await ws.close()
            return
        cls, version = cls_v
        st = cls(cp_id, ws, response_timeout=self.adapter.send_timeout_s)
        st._setup(self)
        self.stations[cp_id] = st  # a second socket under one id replaces the first
        st.token = self.adapter.connect(cp_id, version)
        sender = asyncio.create_task(st.sender())
        self.pump()
        try:
            await st.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            sender.cancel()
            if self.stations.get(cp_id) is st:  # a stale socket must not unregister the live one
                del self.stations[cp_id]
            if isinstance(st.token, int):
                self.adapter.disconnect(cp_id, st.token)

    def _queue(self, msgs: list[tuple[str, str, dict[str, Any]]]) -> None:
        for cp, action, payload in msgs:
            st = self.stations.get(cp)
            if st is not None:
                st.outbox.put_nowait((action, payload))

    def pump(self, now: datetime | None = None) -> None:
        """Hand what became safe (and pending requests, retries) to the stations' outboxes."""
        self._queue(self.adapter.poll(now or datetime.now(UTC)))

    def tick(self, now: datetime | None = None) -> None:
        """One control interval: step the adapter and queue the first wave. Never waits."""
        self._queue(self.adapter.step(now or datetime.now(UTC)))

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> Any:
        return await websockets.serve(self.on_connect, host, port, subprotocols=SUBPROTOCOLS)

    async def control_loop(self, interval_s: float) -> None:
        """Tick every ``interval_s`` and pump every ``poll_s`` in between."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            if loop.time() >= next_tick:
                self.tick()
                next_tick += interval_s
            else:
                self.pump()
            await asyncio.sleep(min(self.poll_s, max(next_tick - loop.time(), 0.0)))

    async def run(self, interval_s: float, host: str, port: int) -> None:
        server = await self.serve(host, port)
        log.info("CSMS listening on %s", [s.getsockname() for s in server.sockets])
        async with server:
            await self.control_loop(interval_s)


def demo_site() -> lo.Site:
    """Two 11 kW stations (1.6 "CP16", 2.0.1 "CP201"), two connectors each, on a 32 A feeder."""
    return lo.Site(
        nodes=(
            lo.Node(id="grid", kind="grid_connection", max_current=63.0),
            lo.Node(id="feeder", parent="grid", kind="feeder", max_current=32.0),
        ),
        evses=tuple(
            lo.Evse(
                id=f"{cp}-{k}",
                node="feeder",
                charge_point_id=cp,
                connector_id=k,
                max_current=16.0,
                phase_rotation=rot,
            )
            for cp, rot in (("CP16", "RST"), ("CP201", "STR"))
            for k in (1, 2)
        ),
    )


def make_csms(
    site: lo.Site | None = None,
    *,
    adapter_kw: dict[str, Any] | None = None,
    poll_s: float = 0.2,
    **controller_kw: Any,
) -> Csms:
    # align_to_grid: period boundaries on a fixed UTC grid, so profiles are re-sent only when a
    # limit changed (docs/ocpp.md, "Time")
    kw = {
        "step_s": 900,
        "n_periods": 16,
        "method": "lp",
        "time_limit_s": 2.0,
        "align_to_grid": True,
    }
    kw.update(controller_kw)
    # 1.6 transaction ids are ours: after a restart, never reuse one a car may still charge
    # under (a real CSMS takes them from its database; here: seconds since 2025, which stays
    # below 2**31 for decades)
    ad_kw = {"first_transaction_id": int(time.time()) - 1_735_689_600}
    ad_kw.update(adapter_kw or {})
    return Csms(CsmsAdapter(Controller(site or demo_site(), **kw), **ad_kw), poll_s=poll_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--interval", type=float, default=10.0, help="control interval (s)")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-message deadline (s)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    csms = make_csms(adapter_kw={"send_timeout_s": a.timeout})
    asyncio.run(csms.run(a.interval, a.host, a.port))


if __name__ == "__main__":
    main()
