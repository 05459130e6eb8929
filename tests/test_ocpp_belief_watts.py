"""The belief reads a ``W`` limit as a station's car may draw it (regression).

A ``W`` limit bounds power, not current per line: a car that charges on one phase may take all
of it on one line. Where the car's phase count is unknown when the profile is written (OCPP 1.6;
a 2.x ``TxDefaultProfile``, which a car that plugs in later receives) the worst line current is
``W / V``, whatever ``numberPhases`` says. The expected values are worked out by hand from the
raw payloads below, not with loadopt's conversion code.
"""

from __future__ import annotations

import numpy as np
import pytest

import loadopt as lo
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter, held_from_payload

from .ocpp_helpers import T0, SimStation

START = "2026-03-01T12:00:00Z"


def _payload(purpose: str, limit_w: float, number_phases: int) -> dict:
    sched = {
        "id": 1,
        "startSchedule": START,
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": limit_w, "numberPhases": number_phases}
        ],
    }
    prof = {
        "id": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [sched],
    }
    if purpose == "TxProfile":
        prof["transactionId"] = "t1"
    return {"evseId": 1, "chargingProfile": prof}


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_a_tx_default_in_watts_may_all_flow_on_one_line(version):
    # 3680 W on a 3-phase EVSE at 230 V: a 1-phase car that plugs in draws 16 A on L1
    held = held_from_payload(_payload("TxDefaultProfile", 3680.0, 3), version, 230.0)
    assert held is not None
    np.testing.assert_allclose(held.lines_a[0], [16.0, 16.0, 16.0])


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_a_tx_profile_in_watts_is_spread_over_its_phases(version):
    # a TxProfile is written for a known car: 11040 W on its 3 phases at 230 V is 16 A a line
    held = held_from_payload(_payload("TxProfile", 11040.0, 3), version, 230.0)
    assert held is not None
    np.testing.assert_allclose(held.lines_a[0], [16.0, 16.0, 16.0])


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_a_tx_profile_in_watts_for_a_car_of_unknown_phases_may_all_flow_on_one_line(version):
    # the station did not report how many phases the car uses: 3680 W may all be on L1, 16 A
    held = held_from_payload(
        _payload("TxProfile", 3680.0, 3), version, 230.0, car_phases_known=False
    )
    assert held is not None
    np.testing.assert_allclose(held.lines_a[0], [16.0, 16.0, 16.0])


class _WattsOnlyStation(SimStation):
    """A 2.0.1 station whose SmartChargingCtrlr.RateUnit is ``W`` only (home-made: no real
    station can run here; the ``ocpp`` package's charge point has no profile logic)."""

    def handle(self, action, payload):
        r = super().handle(action, payload)
        if action == "GetVariables":
            for x in r["getVariableResult"]:
                if x["variable"]["name"] == "RateUnit":
                    x["attributeValue"] = "W"
        return r


@pytest.mark.parametrize("phases_used", [None, 1, 3])
def test_a_car_of_unreported_phases_never_gets_more_than_the_site_on_one_line(phases_used):
    """2.x ``numberOfPhasesUsed`` is optional. Without it the car may be a 1-phase one, which a
    ``W`` TxProfile lets draw the whole power on L1: the 16 A grid connection must hold then too.
    Checked from the raw payload: W / (230 V x the phases the car reported, else 1)."""
    site = lo.Site(
        nodes=(lo.Node(id="g", kind="grid_connection", max_current=16.0),),
        evses=(lo.Evse(id="a1", node="g", charge_point_id="A", max_current=32, rate_unit="W"),),
    )
    ad = CsmsAdapter(Controller(site, step_s=900, n_periods=8, method="fast"))
    sim = _WattsOnlyStation("A", "2.0.1", list(site.evses))

    def deliver(msgs, now):
        sim.now_s = now.timestamp()
        out = []
        while msgs:
            out += msgs
            for cp, action, payload in msgs:
                ad.on_response(cp, action, payload, sim.handle(action, payload), now=now)
            msgs = ad.poll(now)
        return out

    ad.connect("A", "2.0.1")
    deliver(ad.poll(T0), T0)
    event = {
        "eventType": "Started",
        "timestamp": T0.isoformat().replace("+00:00", "Z"),
        "triggerReason": "CablePluggedIn",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "t1"},
        "evse": {"id": 1, "connectorId": 1},
    }
    if phases_used is not None:
        event["numberOfPhasesUsed"] = phases_used
    assert ad.on_transaction_event("A", event)
    sim.tx[1] = "t1"
    sent = deliver(ad.step(T0), T0)
    tx = [
        p["chargingProfile"]["chargingSchedule"][0]
        for _, a, p in sent
        if a == "SetChargingProfile"
        and p["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
    ]
    assert tx and all(s["chargingRateUnit"] == "W" for s in tx)
    on_one_line = phases_used or 1
    worst_l1_a = max(
        per["limit"] / (230.0 * on_one_line) for s in tx for per in s["chargingSchedulePeriod"]
    )
    assert 0.0 < worst_l1_a <= 16.0 + 1e-9
    # what the adapter believes the connector may draw covers that car
    assert ad.belief.worst_a(np.array([T0.timestamp() + 1.0]))[0, 0, 0] >= worst_l1_a - 1e-9
