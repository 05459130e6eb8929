"""The thin CSMS adapter on the real Controller: events in, only changed profiles out, bad
events skipped with a clear message, never a crash."""

from __future__ import annotations

from datetime import timedelta

import pytest

import loadopt as lo
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter, validate

from .ocpp_helpers import T0


def _iso(t):
    return t.isoformat().replace("+00:00", "Z")


def _site():
    return lo.Site(
        nodes=(lo.Node(id="g", kind="grid_connection", max_current=32.0),),
        evses=(lo.Evse(id="a1", node="g", charge_point_id="A", connector_id=1, max_current=16),
               lo.Evse(id="a2", node="g", charge_point_id="A", connector_id=2, max_current=16),
               lo.Evse(id="b1", node="g", charge_point_id="B", connector_id=1, max_current=32,
                       rate_unit="W")),
    )


def _adapter(**kw):
    ctl = Controller(_site(), step_s=900, n_periods=8, method="fast")
    ad = CsmsAdapter(ctl, **kw)
    assert ad.connect("A", "1.6") and ad.connect("B", "2.0.1")
    return ad


def _check(msgs, ad):
    for cp, action, payload in msgs:
        validate(action, payload, ad.versions[cp])


def test_start_step_only_changes_then_clear():
    ad = _adapter()
    tx = ad.on_start_transaction("A", {"connectorId": 1, "idTag": "t", "meterStart": 1000,
                                       "timestamp": _iso(T0)})
    assert isinstance(tx, int)
    assert ad.on_transaction_event("B", {
        "eventType": "Started", "timestamp": _iso(T0), "triggerReason": "CablePluggedIn",
        "seqNo": 0, "transactionInfo": {"transactionId": "b-tx"}, "evse": {"id": 1}})
    msgs = ad.step(T0)
    _check(msgs, ad)
    purposes = sorted((cp, p.get("csChargingProfiles", p.get("chargingProfile"))[
        "chargingProfilePurpose"]) for cp, _, p in msgs)
    assert ("A", "TxProfile") in purposes and ("B", "TxProfile") in purposes
    assert ("A", "ChargePointMaxProfile") in purposes
    assert ("B", "ChargingStationMaxProfile") in purposes
    tx_a = next(p for cp, _, p in msgs if cp == "A" and "transactionId" in p["csChargingProfiles"])
    assert tx_a["csChargingProfiles"]["transactionId"] == tx
    # same situation a minute later: nothing to send
    assert ad.step(T0 + timedelta(minutes=1)) == []
    # meter values, then stop: a ClearChargingProfile for the TxProfile
    assert ad.on_meter_values("A", {"connectorId": 1, "transactionId": tx, "meterValue": [{
        "timestamp": _iso(T0 + timedelta(minutes=2)),
        "sampledValue": [{"value": "3000"}, {"value": "10.2", "measurand": "Current.Import",
                                             "phase": "L1"}]}]})
    assert ad.on_stop_transaction("A", {"transactionId": tx, "meterStop": 5000,
                                        "timestamp": _iso(T0 + timedelta(minutes=3))})
    msgs = ad.step(T0 + timedelta(minutes=4))
    _check(msgs, ad)
    assert ("A", "ClearChargingProfile", {"id": ad.ids.profile_id("tx", 1)}) in msgs
    assert ad.problems == []


def test_bad_events_are_logged_and_skipped(caplog):
    ad = _adapter()
    tx = ad.on_start_transaction("A", {"connectorId": 1, "idTag": "t", "meterStart": 0,
                                       "timestamp": _iso(T0)})
    n = 0

    def skipped(ok):
        nonlocal n
        assert ok is False
        n += 1
        assert len(ad.problems) == n

    # unknown station / connector
    assert ad.connect("ZZ", "1.6") is False
    n += 1
    ad.on_start_transaction("A", {"connectorId": 9, "meterStart": 0, "timestamp": _iso(T0)})
    n += 1
    assert "connector/EVSE 9" in ad.problems[-1]
    # duplicate start on a busy connector, duplicate transaction id
    ad.on_start_transaction("A", {"connectorId": 1, "meterStart": 0, "timestamp": _iso(T0)})
    n += 1
    assert "busy" in ad.problems[-1]
    # stop for a transaction never started
    skipped(ad.on_stop_transaction("A", {"transactionId": 999, "meterStop": 0,
                                         "timestamp": _iso(T0)}))
    assert "never started" in ad.problems[-1]
    # NaN / negative meter values
    for bad in ("NaN", "-5", "abc"):
        skipped(ad.on_meter_values("A", {"connectorId": 1, "transactionId": tx, "meterValue": [
            {"timestamp": _iso(T0 + timedelta(minutes=5)), "sampledValue": [{"value": bad}]}]}))
    # out of order meter value
    assert ad.on_meter_values("A", {"connectorId": 1, "transactionId": tx, "meterValue": [
        {"timestamp": _iso(T0 + timedelta(minutes=10)), "sampledValue": [{"value": "100"}]}]})
    skipped(ad.on_meter_values("A", {"connectorId": 1, "transactionId": tx, "meterValue": [
        {"timestamp": _iso(T0 + timedelta(minutes=6)), "sampledValue": [{"value": "50"}]}]}))
    # 2.x: duplicate seqNo, Ended for unknown transaction
    ev = {"eventType": "Started", "timestamp": _iso(T0), "triggerReason": "CablePluggedIn",
          "seqNo": 0, "transactionInfo": {"transactionId": "x"}, "evse": {"id": 1}}
    assert ad.on_transaction_event("B", ev)
    skipped(ad.on_transaction_event("B", {**ev, "eventType": "Updated"}))
    skipped(ad.on_transaction_event("B", {**ev, "eventType": "Ended", "seqNo": 5,
                                          "transactionInfo": {"transactionId": "nope"}}))
    skipped(ad.on_status_notification("Q", {"connectorId": 1, "status": "Available"}))
    # the loop still runs and emits valid payloads
    msgs = ad.step(T0 + timedelta(minutes=15))
    _check(msgs, ad)
    assert msgs
    assert all("skipped" in r.message for r in caplog.records if r.name == "loadopt.ocpp")


def test_strict_mode_raises_named_errors():
    ad = _adapter(strict=True)
    with pytest.raises(lo.InputError, match=r"'A'.*never started"):
        ad.on_stop_transaction("A", {"transactionId": 7, "meterStop": 0, "timestamp": _iso(T0)})


def test_rejected_profile_is_resent_and_capabilities_apply():
    ad = _adapter(station_max=False, tx_default=False)
    ad.on_get_configuration("A", {"configurationKey": [
        {"key": "ChargingScheduleAllowedChargingRateUnit", "value": "Power", "readonly": True},
        {"key": "ChargingScheduleMaxPeriods", "value": "2", "readonly": True}]})
    tx = ad.on_start_transaction("A", {"connectorId": 1, "meterStart": 0, "timestamp": _iso(T0)})
    [(cp, action, payload)] = ad.step(T0)
    sched = payload["csChargingProfiles"]["chargingSchedule"]
    assert sched["chargingRateUnit"] == "W" and len(sched["chargingSchedulePeriod"]) <= 2
    assert payload["csChargingProfiles"]["transactionId"] == tx
    validate(action, payload, "1.6")
    assert ad.step(T0) == []
    ad.on_response(cp, action, payload, {"status": "Rejected"})
    assert "Rejected" in ad.problems[-1]
    assert len(ad.step(T0)) == 1


def test_controller_failure_does_not_crash_the_loop(monkeypatch):
    ad = _adapter()

    def boom(now):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(ad.controller, "step", boom)
    assert ad.step(T0) == []
    assert "solver exploded" in ad.problems[-1]
