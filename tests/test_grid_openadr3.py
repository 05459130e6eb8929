"""OpenADR 3: the event mapping and reports, and a VTN (a labelled test double: no installable
OpenADR 3 VTN runs on Python 3.11, see tests/openadr3_vtn.py) on 127.0.0.1 driving a Controller."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo

aiohttp = pytest.importorskip("aiohttp")

from loadopt.grid.compliance import compliance  # noqa: E402
from loadopt.grid.openadr3 import (  # noqa: E402
    OpenAdr3Ven,
    UnsupportedPayload,
    compliance_report,
    event_to_signals,
    parse_duration,
)

from .openadr3_vtn import BL_ID, BL_SECRET, CLIENT_ID, CLIENT_SECRET, TestVtn  # noqa: E402

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def ev(
    payloads: list[tuple[str, float]],
    *,
    units: str = "KW",
    rand: str | None = None,
    per_interval_period: bool = False,
    **extra,
) -> dict:
    ip = {"start": T0.isoformat(), "duration": "PT1H"}
    if rand:
        ip["randomizeStart"] = rand
    intervals = []
    for k, (typ, v) in enumerate(payloads):
        iv = {"id": k, "payloads": [{"type": typ, "values": [v]}]}
        if per_interval_period:
            iv["intervalPeriod"] = {
                "start": (T0 + timedelta(hours=2 * k)).isoformat(),
                "duration": "PT30M",
            }
        intervals.append(iv)
    return {
        "id": "e1",
        "programID": "p1",
        "intervalPeriod": ip,
        "intervals": intervals,
        "payloadDescriptors": [{"payloadType": t, "units": units} for t, _ in payloads],
        **extra,
    }


def test_durations():
    assert parse_duration("PT15M") == timedelta(minutes=15)
    assert parse_duration("P1DT2H") == timedelta(days=1, hours=2)
    assert parse_duration("P9999Y") == timedelta(days=365)
    with pytest.raises(lo.InputError, match="duration"):
        parse_duration("15 minutes")


def test_mapping_of_each_payload_type_and_intervals():
    sigs = event_to_signals(
        ev(
            [
                ("IMPORT_CAPACITY_LIMIT", 20.0),
                ("EXPORT_CAPACITY_LIMIT", 5.0),
                ("PRICE", 0.3),
                ("DISPATCH_SETPOINT", 12.0),
                ("SIMPLE", 2),
            ],
            rand="PT5M",
            priority=3,
        ),
        node="f",
    )
    a, b, c, d, e = sigs
    assert a.import_cap_kw == 20.0 and a.node == "f" and a.start == T0
    assert b.export_cap_kw == 5.0 and b.start == T0 + timedelta(hours=1)
    assert c.import_price_adder == 0.3 and d.setpoint_kw == 12.0 and e.level == 2
    assert e.end == T0 + timedelta(hours=5)
    assert all(s.randomize_s == 300 and s.priority == 997 and s.ref == "e1" for s in sigs)
    (w,) = event_to_signals(ev([("IMPORT_CAPACITY_LIMIT", 20000.0)], units="W"))
    assert w.import_cap_kw == 20.0
    x, y = event_to_signals(ev([("SIMPLE", 1), ("SIMPLE", 3)], per_interval_period=True))
    assert (x.start, x.end, y.start) == (T0, T0 + timedelta(minutes=30), T0 + timedelta(hours=2))


def test_unsupported_and_malformed():
    with pytest.raises(UnsupportedPayload, match="IMPORT_CAPACITY_SUBSCRIPTION"):
        event_to_signals(ev([("IMPORT_CAPACITY_SUBSCRIPTION", 1.0)]))
    with pytest.raises(UnsupportedPayload, match="units"):
        event_to_signals(ev([("IMPORT_CAPACITY_LIMIT", 1.0)], units="A"))
    bad = ev([("SIMPLE", 1)])
    bad["intervals"][0]["payloads"][0]["values"] = ["high"]
    with pytest.raises(lo.InputError, match="numeric"):
        event_to_signals(bad)
    with pytest.raises(lo.InputError, match="without an id"):
        event_to_signals({"intervals": []})


def _site() -> lo.Site:
    return lo.Site(
        nodes=(lo.Node(id="grid", kind="grid_connection"),),
        evses=tuple(lo.Evse(id=f"e{k}", node="grid", charge_point_id=f"CP{k}") for k in range(2)),
    )


async def _token(base: str, cid: str, secret: str) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base}/auth/token",
            data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
        ) as r,
    ):
        assert r.status == 200
        return (await r.json())["access_token"]


def test_vtn_event_caps_the_next_step_and_the_report_says_met():
    async def run() -> None:
        vtn = TestVtn()
        base = await vtn.start()
        try:
            bl = {"Authorization": f"Bearer {await _token(base, BL_ID, BL_SECRET)}"}
            async with aiohttp.ClientSession(headers=bl) as s:
                async with s.post(f"{base}/programs", json={"programName": "flex"}) as r:
                    pid = (await r.json())["id"]
            ctl = lo.Controller(_site(), step_s=900, n_periods=8)
            ven = OpenAdr3Ven(
                base,
                ven_name="ven1",
                program_id=pid,
                fallback_kw=10.0,
                token=await _token(base, CLIENT_ID, CLIENT_SECRET),
                stale_after_s=7200.0,
            )
            now = datetime.now(UTC)
            for k in range(2):
                ctl.start_session(
                    lo.Session(
                        id=f"s{k}",
                        evse=f"e{k}",
                        arrival=now,
                        departure=now + timedelta(hours=4),
                        energy_kwh=80.0,
                    )
                )
            ctl.set_signals(ctl.signals.with_grid_signals("openadr3", await ven.poll()))
            assert ctl.step(now).import_kw[0] > 40.0
            event = {
                "programID": pid,
                "eventName": "evening cap",
                "priority": 1,
                "targets": [{"type": "VEN_NAME", "values": ["ven1"]}],
                "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
                "intervalPeriod": {"start": now.isoformat(), "duration": "PT1H"},
                "intervals": [
                    {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [20.0]}]}
                ],
            }
            other = {
                **event,
                "targets": [{"type": "VEN_NAME", "values": ["someone-else"]}],
                "intervals": [
                    {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [1.0]}]}
                ],
            }
            async with aiohttp.ClientSession(headers=bl) as s:
                for body in (event, other):
                    async with s.post(f"{base}/events", json=body) as r:
                        assert r.status == 201
                        if body is event:
                            eid = (await r.json())["id"]
            now2 = datetime.now(UTC)
            ctl.set_signals(ctl.signals.with_grid_signals("openadr3", await ven.poll()))
            sched = ctl.step(now2)
            sched.check()
            assert sched.import_kw[0] <= 20.0 + 1e-9 and sched.import_kw[0] > 15.0
            metered = np.full(sched.problem.n_periods, np.nan)
            metered[0] = sched.import_kw[0]  # the site drew what it was told
            c = next(x for x in compliance(sched, metered) if x.kind == "import_cap_kw")
            stored = await ven.send_report(
                compliance_report(c, program_id=pid, event_id=eid, client_name="ven1")
            )
            assert stored["objectType"] == "REPORT"
            (rep,) = vtn.reports
            first = rep["resources"][0]["intervals"][0]["payloads"]
            got = {p["type"]: p["values"][0] for p in first}
            assert got == {
                "DEMAND": pytest.approx(metered[0]),
                "IMPORT_CAPACITY_LIMIT": 20.0,
                "x-LOADOPT_MET": 1,
            }
            # the event is withdrawn: the next poll lifts the cap
            async with aiohttp.ClientSession(headers=bl) as s:
                async with s.delete(f"{base}/events/{eid}") as r:
                    assert r.status == 200
            ctl.set_signals(ctl.signals.with_grid_signals("openadr3", await ven.poll()))
            assert ctl.step(datetime.now(UTC)).import_kw[0] > 40.0
            # a VTN that refuses: the VEN keeps its signals and says why
            ven.token = "wrong"
            await ven.poll()
            assert any("401" in p for p in ven.problems)
        finally:
            await vtn.stop()

    asyncio.run(run())


def test_a_vtn_that_is_gone_leaves_only_the_fallback():
    async def run() -> None:
        ven = OpenAdr3Ven("http://127.0.0.1:9", ven_name="v", program_id="p", fallback_kw=7.0)
        (sigs,) = await ven.poll()  # no event ever: the staleness rule alone, in force now
        assert ven.problems and sigs.fallback_kw == 7.0
        assert sigs.valid_until <= datetime.now(UTC) and sigs.import_cap_kw == 7.0
        hz = lo.Horizon(start=datetime.now(UTC).replace(microsecond=0), step_s=900, n_periods=4)
        site = lo.Site(
            nodes=(lo.Node(id="grid", max_current=100.0),),
            evses=(lo.Evse(id="e", node="grid", charge_point_id="CP", max_current=32.0),),
        )
        car = lo.Session(id="c", evse="e", arrival=hz.start, departure=hz.end, energy_kwh=80.0)
        sc = lo.Scenario(
            site=site, horizon=hz, sessions=(car,), signals=lo.Signals(grid_signals=(sigs,))
        )
        s = lo.solve(sc.compile())
        kw = s.current[0] * 3 * 230.0 / 1000.0  # from the raw currents, not the library's rows
        assert kw.max() <= 7.0 + 1e-9 and kw.max() > 6.0
        ven.events = {"e1": event_to_signals(ev([("IMPORT_CAPACITY_LIMIT", 30.0)]))}
        (s,) = ven.signals()
        assert s.fallback_kw == 7.0 and s.valid_until <= datetime.now(UTC)

    asyncio.run(run())
