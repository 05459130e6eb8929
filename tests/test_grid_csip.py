"""IEEE 2030.5 / CSIP-AUS DERControl documents (written by the envoy utility server's own schema
models) as grid signals, and what they do to a plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo

sep2 = pytest.importorskip("envoy_schema.server.schema.sep2.der")
from envoy_schema.server.schema.sep2.der_control_types import ActivePower  # noqa: E402
from envoy_schema.server.schema.sep2.event import EventStatus  # noqa: E402
from envoy_schema.server.schema.sep2.types import DateTimeIntervalType  # noqa: E402

from loadopt.grid.csip import der_controls_to_signals  # noqa: E402

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
E0 = int(T0.timestamp())


def control(
    mrid: str, start_h: float, dur_h: float, status: int = 1, rand: int | None = None, **base
) -> sep2.DERControlResponse:
    return sep2.DERControlResponse(
        mRID=mrid,
        creationTime=E0,
        interval=DateTimeIntervalType(start=E0 + int(start_h * 3600), duration=int(dur_h * 3600)),
        EventStatus_=EventStatus(currentStatus=status, dateTime=E0, potentiallySuperseded=False),
        randomizeStart=rand,
        DERControlBase_=sep2.DERControlBase(**base),
    )


def xml_list(*controls) -> bytes:
    return sep2.DERControlListResponse(
        all_=len(controls), results=len(controls), DERControl=list(controls)
    ).to_xml(skip_empty=True)


def xml_default(**base) -> bytes:
    return sep2.DefaultDERControl(mRID="d0", DERControlBase_=sep2.DERControlBase(**base)).to_xml(
        skip_empty=True
    )


def test_controls_and_default_control_become_signals_and_cap_the_plan():
    doc = xml_list(
        control(
            "a1",
            1,
            1,
            opModImpLimW=ActivePower(multiplier=3, value=20),
            opModExpLimW=ActivePower(multiplier=0, value=5000),
            rand=-120,
        ),
        control(
            "a2",
            2,
            1,
            opModLoadLimW=ActivePower(multiplier=0, value=7000),
            opModGenLimW=ActivePower(multiplier=0, value=1),
        ),
        control("dead", 0, 4, status=2, opModImpLimW=ActivePower(multiplier=0, value=0)),
    )
    out = der_controls_to_signals(
        doc,
        now=T0,
        default_xml=xml_default(opModImpLimW=ActivePower(multiplier=0, value=30000)),
        span_s=4 * 3600,
        load_node="feeder",
        stale_after_s=3600,
    )
    by = {s.id: s for s in out.signals}
    assert by["csip:a1:0"].import_cap_kw == 20.0 and by["csip:a1:0"].randomize_s == 120
    assert by["csip:a1:1"].export_cap_kw == 5.0
    assert by["csip:a2:0"].import_cap_kw == 7.0 and by["csip:a2:0"].node == "feeder"
    assert not any("dead" in k for k in by)
    defaults = sorted((s.start, s.end) for s in out.signals if s.ref == "default:d0")
    assert defaults == [  # until a1's latest randomised start (120 s after its nominal one)
        (T0, T0 + timedelta(hours=1, seconds=120)),
        (T0 + timedelta(hours=3), T0 + timedelta(hours=4)),
    ]
    assert out.default_import_kw == 30.0 and out.ignored == ("opModGenLimW",)
    assert all(
        s.fallback_kw == 30.0 and s.valid_until == T0 + timedelta(hours=1) for s in out.signals
    )
    site = lo.Site(
        nodes=(lo.Node(id="grid"), lo.Node(id="feeder", parent="grid")),
        evses=tuple(lo.Evse(id=f"e{k}", node="feeder", charge_point_id=f"CP{k}") for k in range(3)),
    )
    sessions = [
        lo.Session(
            id=f"s{k}",
            evse=f"e{k}",
            arrival=T0,
            departure=T0 + timedelta(hours=5),
            energy_kwh=200.0,
        )
        for k in range(3)
    ]
    p = lo.compile_problem(
        site,
        sessions,
        lo.Horizon(start=T0, step_s=3600, n_periods=4),
        lo.Signals(grid_signals=out.signals),
    )
    # default 30 kW, then 20 kW (with the fallback from 1 h on: 30, the lower holds; a randomised
    # delay of the 20 kW window reaches into the next hour), then 7 kW on the feeder
    late = by["csip:a1:0"].offset_s(site.id) > 0
    cap = [30, 20, 20 if late else 30, 30]
    np.testing.assert_allclose(p.import_cap_kw, cap)
    # the feeder signal's own fallback holds on the feeder once the stream is stale
    np.testing.assert_allclose(p.node_power_limit_kw[1], [np.inf, 30, 7, 30])
    sched = lo.solve(p)
    sched.check()
    assert np.all(sched.import_kw <= np.array(cap) + 1e-9)
    assert sched.node_power_kw[1, 2] <= 7.0


def test_disconnect_and_errors():
    out = der_controls_to_signals(xml_list(control("ff", 0, 1, opModConnect=False)), now=T0)
    (s,) = out.signals
    assert s.import_cap_kw == 0.0 and s.valid_until is None
    with pytest.raises(lo.InputError, match="does not parse"):
        der_controls_to_signals(b"<DERControlList>", now=T0)
    with pytest.raises(lo.InputError, match="never 'no limit'"):
        der_controls_to_signals(xml_list(), now=T0, stale_after_s=60)
