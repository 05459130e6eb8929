"""The belief reads a ``W`` limit as a station's car may draw it (regression).

A ``W`` limit bounds power, not current per line: a car that charges on one phase may take all
of it on one line. Where the car's phase count is unknown when the profile is written (OCPP 1.6;
a 2.x ``TxDefaultProfile``, which a car that plugs in later receives) the worst line current is
``W / V``, whatever ``numberPhases`` says. The expected values are worked out by hand from the
raw payloads below, not with loadopt's conversion code.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

import loadopt as lo
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter, held_from_payload

from .ocpp_helpers import T0, SimStation, deliver_outgoing

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


class _WattsSite:
    """One 32 A W-only EVSE (``_WattsOnlyStation``) on a 16 A grid connection, an adapter on a
    fast-path controller, and the car's transaction ``t1``; :meth:`event` hands a 2.x
    TransactionEvent to the adapter, :meth:`step` delivers a step's messages (every answer)."""

    def __init__(self) -> None:
        site = lo.Site(
            nodes=(lo.Node(id="g", kind="grid_connection", max_current=16.0),),
            evses=(lo.Evse(id="a1", node="g", charge_point_id="A", max_current=32, rate_unit="W"),),
        )
        self.ad = CsmsAdapter(Controller(site, step_s=900, n_periods=8, method="fast"))
        self.sim = _WattsOnlyStation("A", "2.0.1", list(site.evses))
        self.seq = 0
        self.ad.connect("A", "2.0.1")
        self.deliver(self.ad.poll(T0), T0)

    def deliver(self, msgs, now):
        self.sim.now_s = now.timestamp()
        out = []
        while msgs:
            out += msgs
            for cp, action, payload in msgs:
                self.ad.on_response(cp, action, payload, self.sim.handle(action, payload), now=now)
            msgs = self.ad.poll(now)
        return out

    def event(self, kind, at, phases_used=None):
        event = {
            "eventType": kind,
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "triggerReason": "CablePluggedIn" if kind == "Started" else "ChargingStateChanged",
            "seqNo": self.seq,
            "transactionInfo": {"transactionId": "t1"},
            "evse": {"id": 1, "connectorId": 1},
        }
        self.seq += 1
        if phases_used is not None:
            event["numberOfPhasesUsed"] = phases_used
        assert self.ad.on_transaction_event("A", event)
        self.sim.tx[1] = "t1"

    def step(self, now):
        """The TxProfile schedules sent at ``now`` (all in W)."""
        sent = self.deliver(self.ad.step(now), now)
        tx = [
            p["chargingProfile"]["chargingSchedule"][0]
            for _, a, p in sent
            if a == "SetChargingProfile"
            and p["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
        ]
        assert all(s["chargingRateUnit"] == "W" for s in tx)
        return tx

    def held_w(self):
        """The W limits of the TxProfiles the station holds now (its own store)."""
        return [
            per["limit"]
            for _, prof in self.sim.store.values()
            if prof["chargingProfilePurpose"] == "TxProfile"
            for per in prof["chargingSchedule"]["chargingSchedulePeriod"]
        ]

    def believed_l1_a(self, at):
        return self.ad.belief.worst_a(np.array([at.timestamp() + 1.0]))[0, 0, 0]


@pytest.mark.parametrize("phases_used", [None, 1, 2, 3])
def test_a_car_of_unreported_phases_never_gets_more_than_the_site_on_one_line(phases_used):
    """2.x ``numberOfPhasesUsed`` is optional. Without it the car may be a 1-phase one, which a
    ``W`` TxProfile lets draw the whole power on L1: the 16 A grid connection must hold then too.
    Checked from the raw payload: W / (230 V x the phases the car reported, else 1). A 2-phase
    car is planned and written on its 2 phases (modelled on 3 it drew 24 A on a 16 A line)."""
    w = _WattsSite()
    w.event("Started", T0, phases_used)
    tx = w.step(T0)
    assert tx
    on_one_line = phases_used or 1
    worst_l1_a = max(
        per["limit"] / (230.0 * on_one_line) for s in tx for per in s["chargingSchedulePeriod"]
    )
    assert 0.0 < worst_l1_a <= 16.0 + 1e-9
    # what the adapter believes the connector may draw covers that car
    assert w.believed_l1_a(T0) >= worst_l1_a - 1e-9


def test_phases_reported_later_spread_the_next_w_profile_over_them():
    """The count arrives in an ``Updated`` event: the session is re-planned on 3 phases and the
    next TxProfile spreads 16 A x 230 V over them (was written over 1 phase: a third)."""
    w = _WattsSite()
    w.event("Started", T0)
    w.step(T0)
    assert max(w.held_w()) == pytest.approx(16.0 * 230.0)
    t1 = T0 + timedelta(minutes=15)
    w.event("Updated", t1, 3)
    assert w.ad.controller.sessions["A:t1"].phases == 3
    w.step(t1)
    assert max(w.held_w()) == pytest.approx(16.0 * 230.0 * 3)
    assert w.believed_l1_a(t1) >= 16.0 - 1e-9


def test_a_car_switching_to_fewer_phases_is_counted_at_its_hardware_maximum_until_rewritten():
    """Reported 3 phases, then 1: the 11,040 W the station holds lets the car draw 48 A on L1
    (32 A, the EVSE's maximum). The adapter counts that connector at its maximum until a
    profile for one phase is held; the next one is 3,680 W (16 A on L1)."""
    w = _WattsSite()
    w.event("Started", T0, 3)
    w.step(T0)
    assert max(w.held_w()) == pytest.approx(16.0 * 230.0 * 3)
    t1 = T0 + timedelta(minutes=5)
    w.event("Updated", t1, 1)
    held_l1_a = min(max(w.held_w()) / 230.0, 32.0)  # the car on one line, capped by the EVSE
    assert w.believed_l1_a(t1) >= held_l1_a - 1e-9
    t2 = T0 + timedelta(minutes=15)
    w.step(t2)
    assert max(w.held_w()) / 230.0 <= 16.0 + 1e-9
    assert w.believed_l1_a(t2) >= max(w.held_w()) / 230.0 - 1e-9
    # the same count again changes nothing
    w.event("Updated", t2, 1)
    assert w.ad.controller.sessions["A:t1"].phases == 1


def test_a_w_profile_in_flight_when_the_car_drops_phases_counts_on_one_line_once_accepted():
    """Reported 3 phases; the 11,040 W TxProfile for them is still in flight when the car reports
    1 phase. Accepted afterwards, the station holds it for a 1-phase car (48 A on L1, the EVSE's
    32 A): the adapter must not believe it spread over three lines (16 A each)."""
    w = _WattsSite()
    w.event("Started", T0, 3)
    in_flight = []
    msgs = w.ad.step(T0)
    while msgs:
        for cp, action, payload in msgs:
            prof = payload.get("chargingProfile", {}) if isinstance(payload, dict) else {}
            if action == "SetChargingProfile" and prof.get("chargingProfilePurpose") == "TxProfile":
                in_flight.append((cp, action, payload))
            else:
                w.sim.now_s = T0.timestamp()
                w.ad.on_response(cp, action, payload, w.sim.handle(action, payload), now=T0)
        msgs = w.ad.poll(T0)
    assert in_flight
    t1 = T0 + timedelta(minutes=1)
    w.event("Updated", t1, 1)
    w.sim.now_s = t1.timestamp()
    for cp, action, payload in in_flight:
        w.ad.on_response(cp, action, payload, w.sim.handle(action, payload), now=t1)
    # the station's own store, read for a car on one line (capped by the EVSE)
    held_l1_a = min(max(w.held_w()) / 230.0, 32.0)
    assert held_l1_a > 16.0
    assert w.believed_l1_a(t1) >= held_l1_a - 1e-9


def test_a_report_of_the_w_profile_for_more_phases_than_the_car_now_uses_counts_on_one_line():
    """Reported 3 phases, the 11,040 W TxProfile for them held; the car then reports 1 phase.
    After a reconnect, neither the profile planned for three phases is re-sent nor does the
    station's ``ReportChargingProfiles`` of the one it holds (``numberPhases`` 3) settle the
    connector at 16 A per line: the car draws it on one line (the EVSE's 32 A)."""
    w = _WattsSite()
    w.event("Started", T0, 3)
    w.step(T0)
    t1 = T0 + timedelta(minutes=1)
    w.event("Updated", t1, 1)
    w.ad.connect("A", "2.0.1")  # a reconnect: the station reports what it holds
    sent = w.deliver(w.ad.poll(t1), t1)
    assert any(a == "GetChargingProfiles" for _, a, _ in sent)
    # the profile planned for three phases is not re-sent before a step plans for one
    assert not any(
        a == "SetChargingProfile" and p["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
        for _, a, p in sent
    )
    assert any(a == "ReportChargingProfiles" for a, _ in w.sim.outgoing)
    deliver_outgoing(w.ad, "A", w.sim)
    held_l1_a = min(max(w.held_w()) / 230.0, 32.0)
    assert held_l1_a > 16.0
    assert w.believed_l1_a(t1) >= held_l1_a - 1e-9


def test_phases_reported_for_a_session_the_controller_no_longer_has_are_skipped():
    """An ``Updated`` event with ``numberOfPhasesUsed`` for an open transaction whose session
    was stopped on the controller directly (not through the adapter) is logged and skipped,
    like the adapter's other paths: the event handler does not fail with a KeyError."""
    w = _WattsSite()
    w.event("Started", T0, 3)
    w.step(T0)
    w.ad.controller.stop_session("A:t1", T0 + timedelta(minutes=1))
    w.event("Updated", T0 + timedelta(minutes=5), 1)  # (asserts it was applied)
    assert any("A:t1" in p for p in w.ad.problems)
