"""OpenADR 2.0b: the event mapping, and a real openleadr VTN on 127.0.0.1 driving a Controller."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo

openleadr = pytest.importorskip("openleadr")

from loadopt.grid.openadr2 import (  # noqa: E402
    OpenAdr2Ven,
    UnsupportedSignal,
    event_to_signals,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def event(
    name: str,
    typ: str,
    values,
    *,
    eid: str = "evt-1",
    priority: int = 0,
    startafter: timedelta | None = None,
    measurement=None,
) -> dict:
    """An event as openleadr hands it to a VEN's on_event handler."""
    ap = {"dtstart": T0, "duration": timedelta(hours=len(values))}
    if startafter is not None:
        ap["tolerance"] = {"tolerate": {"startafter": startafter}}
    es = {
        "signal_name": name,
        "signal_type": typ,
        "signal_id": "sig",
        "intervals": [
            {
                "dtstart": T0 + timedelta(hours=k),
                "duration": timedelta(hours=1),
                "signal_payload": v,
                "uid": k,
            }
            for k, v in enumerate(values)
        ],
    }
    if measurement:
        es["measurement"] = measurement
    return {
        "event_descriptor": {
            "event_id": eid,
            "modification_number": 0,
            "priority": priority,
            "event_status": "far",
        },
        "active_period": ap,
        "event_signals": [es],
        "response_required": "always",
    }


def test_mapping_of_each_signal():
    (s,) = event_to_signals(event("SIMPLE", "level", [2]))
    assert s.level == 2 and s.source == "openadr2" and s.ref == "evt-1"
    a, b = event_to_signals(event("ELECTRICITY_PRICE", "priceRelative", [0.1, 0.3]))
    assert (a.import_price_adder, b.import_price_adder) == (0.1, 0.3)
    assert b.start == T0 + timedelta(hours=1) and b.end == T0 + timedelta(hours=2)
    (s,) = event_to_signals(
        event("LOAD_DISPATCH", "setpoint", [15000.0], measurement={"unit": "W", "scale": "none"})
    )
    assert s.setpoint_kw == pytest.approx(15.0)
    (s,) = event_to_signals(event("LOAD_DISPATCH", "delta", [-8.0]))
    assert s.reduction_kw == 8.0 and s.baseline_kw is None
    (s,) = event_to_signals(event("LOAD_CONTROL", "x-loadControlSetpoint", [30.0]), node="f")
    assert s.import_cap_kw == 30.0 and s.node == "f"
    (s,) = event_to_signals(event("LOAD_CONTROL", "x-loadControlCapacity", [0.5]), capacity_kw=80.0)
    assert s.import_cap_kw == 40.0
    (s,) = event_to_signals(
        event("LOAD_CONTROL", "x-loadControlPercentOffset", [-25]), capacity_kw=80.0
    )
    assert s.reduction_kw == 20.0
    (s,) = event_to_signals(event("LOAD_CONTROL", "x-loadControlLevelOffset", [7]))
    assert s.level == 3
    (s,) = event_to_signals(
        event("SIMPLE", "level", [1], startafter=timedelta(minutes=5), priority=1),
        valid_until=T0,
        fallback_kw=11.0,
    )
    assert s.randomize_s == 300 and s.priority == 999
    assert s.valid_until == T0 and s.fallback_kw == 11.0


def test_unsupported_and_malformed():
    with pytest.raises(UnsupportedSignal, match="priceMultiplier"):
        event_to_signals(event("ELECTRICITY_PRICE", "priceMultiplier", [2.0]))
    with pytest.raises(UnsupportedSignal, match="capacity_kw"):
        event_to_signals(event("LOAD_CONTROL", "x-loadControlCapacity", [0.5]))
    with pytest.raises(UnsupportedSignal, match="more load"):
        event_to_signals(event("LOAD_CONTROL", "x-loadControlPercentOffset", [10]), capacity_kw=1.0)
    bad = event("SIMPLE", "level", [1])
    del bad["event_signals"][0]["intervals"][0]["duration"]
    with pytest.raises(lo.InputError, match="lacks dtstart"):
        event_to_signals(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _site() -> lo.Site:
    return lo.Site(
        nodes=(lo.Node(id="grid", kind="grid_connection"),),
        evses=tuple(lo.Evse(id=f"e{k}", node="grid", charge_point_id=f"CP{k}") for k in range(2)),
    )


async def _until(cond, timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting for the VTN/VEN exchange")


def test_vtn_event_caps_the_next_step_and_the_report_says_met():
    """A real openleadr VTN announces a LOAD_CONTROL cap; the VEN opts in; the next controller
    step keeps the site under it; the site draws what it was told; the VTN's report says met,
    with the metered import. An unsupported event is opted out of."""

    async def run() -> None:
        port = _free_port()
        vtn = openleadr.OpenADRServer(
            vtn_id="VTN",
            http_port=port,
            http_host="127.0.0.1",
            requested_poll_freq=timedelta(seconds=1),
            show_fingerprint=False,
        )
        reports: dict[str, list[float]] = {"import": [], "required": [], "met": []}
        opts: dict[str, str] = {}

        def on_create_party_registration(info):
            return "ven1", "reg1"

        async def on_register_report(report):
            out = []
            for d in report["report_descriptions"]:
                r_id = d["r_id"]

                def cb(values, r_id=r_id):
                    reports.setdefault(r_id, []).extend(v for _, v in values)

                out.append((r_id, cb, timedelta(seconds=1)))
            return out

        vtn.add_handler("on_create_party_registration", on_create_party_registration)
        vtn.add_handler("on_register_report", on_register_report)
        await vtn.run()
        ctl = lo.Controller(_site(), step_s=900, n_periods=8)
        ven = OpenAdr2Ven(
            "ven",
            f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b",
            fallback_kw=10.0,
            report_sampling_s=1.0,
            stale_after_s=1800.0,
            on_signals=lambda sigs: ctl.set_signals(
                ctl.signals.with_grid_signals("openadr2", sigs)
            ),
        )
        try:
            await ven.run()
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
            before = ctl.step(now)
            assert before.import_kw[0] > 40.0  # both cars at full power
            vtn.add_event(
                ven_id="ven1",
                signal_name="LOAD_CONTROL",
                signal_type="x-loadControlSetpoint",
                event_id="cap-20",
                intervals=[
                    {"dtstart": now, "duration": timedelta(hours=1), "signal_payload": 20.0}
                ],
                callback=lambda ven_id, event_id, opt_type: opts.__setitem__(event_id, opt_type),
            )
            vtn.add_event(
                ven_id="ven1",
                signal_name="ELECTRICITY_PRICE",
                signal_type="priceMultiplier",
                event_id="mult",
                intervals=[{"dtstart": now, "duration": timedelta(hours=1), "signal_payload": 2.0}],
                callback=lambda ven_id, event_id, opt_type: opts.__setitem__(event_id, opt_type),
            )
            await _until(lambda: {"cap-20", "mult"} <= opts.keys())
            assert opts == {"cap-20": "optIn", "mult": "optOut"}
            assert any("priceMultiplier" in p for p in ven.problems)
            now2 = datetime.now(UTC)
            sched = ctl.step(now2)
            sched.check()
            assert sched.import_kw[0] <= 20.0 + 1e-9
            (kpi,) = sched.kpis().demand_response
            assert kpi.compliant
            # the cap in its hour; past the VEN's validity (30 min), the fallback
            (c,) = sched.problem.signal_required_kw
            assert c[0] == 20.0 and np.all(c[3:] == 10.0)
            # the site draws what it was told; the meter sees it; the report carries it
            metered = float(sched.import_kw[0])
            from loadopt.grid.compliance import compliance

            (c,) = compliance(sched, np.r_[metered, np.full(7, np.nan)])
            ven.record(now2, metered, float(c.required_kw[0]), bool(c.met[0]))
            await _until(lambda: 1.0 in reports["met"] and metered in reports["import"])
            assert 20.0 in reports["required"]
            # a meter above the cap: the report says missed
            ven.record(now2, 25.0, 20.0)
            await _until(lambda: 0.0 in reports["met"])
        finally:
            await ven.stop()
            await vtn.stop()

    asyncio.run(run())


def test_a_ven_without_events_still_falls_back_when_stale():
    """No event (none yet, or all completed): the staleness rule must not vanish with them."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ven = OpenAdr2Ven(
        "ven", "http://127.0.0.1:9/x", fallback_kw=5.0, stale_after_s=60.0, clock=lambda: now
    )
    (s,) = ven.signals()
    assert s.fallback_kw == 5.0 and s.valid_until == now + timedelta(seconds=60)
    assert s.import_cap_kw == 5.0 and s.node is None  # asks only its fallback
