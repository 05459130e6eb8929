"""Issue 10: every malformed event the CsmsAdapter used to crash on is logged and skipped (and
raises InputError only with strict=True); the control loop keeps running."""

from __future__ import annotations

from datetime import timedelta

import pytest

import loadopt as lo
from loadopt.controller import Controller
from loadopt.ocpp import CsmsAdapter

from .ocpp_helpers import T0


def _iso(t):
    return t.isoformat().replace("+00:00", "Z")


def _adapter(strict=False):
    s = lo.Site(
        nodes=(lo.Node(id="g", max_current=32.0),),
        evses=(
            lo.Evse(id="a1", node="g", charge_point_id="A", connector_id=1),
            lo.Evse(id="b1", node="g", charge_point_id="B", connector_id=1),
        ),
    )
    ad = CsmsAdapter(Controller(s, step_s=900, n_periods=4, method="fast"), strict=strict)
    ad.connect("A", "1.6")
    ad.connect("B", "2.0.1")
    tx = ad.on_start_transaction(
        "A", {"connectorId": 1, "meterStart": 0, "idTag": "t", "timestamp": _iso(T0)}
    )
    ad.on_transaction_event(
        "B",
        {
            "eventType": "Started",
            "timestamp": _iso(T0),
            "seqNo": 0,
            "triggerReason": "CablePluggedIn",
            "transactionInfo": {"transactionId": "bt"},
            "evse": {"id": 1},
        },
    )
    assert len(ad.sessions) == 2 and ad.problems == []
    return ad, tx


def _mv(tx, **sv):
    return {
        "connectorId": 1,
        "transactionId": tx,
        "meterValue": [
            {"timestamp": _iso(T0 + timedelta(minutes=1)), "sampledValue": [{"value": "100", **sv}]}
        ],
    }


CASES = {
    "meter values None": lambda ad, tx: ad.on_meter_values("A", None),
    "meterValue a string": lambda ad, tx: ad.on_meter_values(
        "A", {"connectorId": 1, "transactionId": tx, "meterValue": "lots"}
    ),
    "multiplier abc": lambda ad, tx: ad.on_meter_values(
        "A", _mv(tx, unitOfMeasure={"unit": "Wh", "multiplier": "abc"})
    ),
    "multiplier 400": lambda ad, tx: ad.on_meter_values(
        "A", _mv(tx, unitOfMeasure={"unit": "Wh", "multiplier": 400})
    ),
    "transactionInfo a string": lambda ad, tx: ad.on_transaction_event(
        "B",
        {
            "eventType": "Started",
            "timestamp": _iso(T0),
            "seqNo": 0,
            "transactionInfo": "tx-9",
            "evse": {"id": 1},
        },
    ),
    "evse a list": lambda ad, tx: ad.on_transaction_event(
        "B",
        {
            "eventType": "Started",
            "timestamp": _iso(T0),
            "seqNo": 0,
            "transactionInfo": {"transactionId": "n"},
            "evse": [1],
        },
    ),
    "StartTransaction stamped 9999-12-31": lambda ad, tx: (
        ad.on_start_transaction(
            "A",
            {"connectorId": 1, "meterStart": 0, "idTag": "z", "timestamp": "9999-12-31T23:59:59Z"},
        )
        and False
    ),
    "on_response with a string": lambda ad, tx: ad.on_response(
        "A", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {}}, "Accepted"
    ),
    "request without evseId": lambda ad, tx: ad.on_response(
        "B",
        "SetChargingProfile",
        {"chargingProfile": {"chargingProfilePurpose": "TxProfile"}},
        {"status": "Accepted"},
    ),
    "configurationKey not a list": lambda ad, tx: ad.on_get_configuration(
        "A", {"configurationKey": "ChargingScheduleMaxPeriods=3"}
    ),
    "connect to OCPP 3.0": lambda ad, tx: ad.connect("A", "3.0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logged_and_skipped_and_the_loop_runs_on(case, caplog):
    ad, tx = _adapter()
    if case == "StartTransaction stamped 9999-12-31":
        ad.on_stop_transaction("A", {"transactionId": tx, "meterStop": 0, "timestamp": _iso(T0)})
    n = len(ad.problems)
    assert CASES[case](ad, tx) is False
    assert len(ad.problems) == n + 1, ad.problems
    assert any("skipped" in r.message for r in caplog.records if r.name == "loadopt.ocpp")
    # the loop still runs: a step plans and returns messages
    ad.step(T0 + timedelta(minutes=2))
    assert ad.last_schedule is not None


def test_transaction_id_not_an_integer_is_numbered():
    ad, tx = _adapter()
    got = ad.on_start_transaction(
        "A",
        {"connectorId": 1, "meterStart": 0, "idTag": "q", "timestamp": _iso(T0)},
        transaction_id="abc",
    )
    assert isinstance(got, int) and got != tx
    assert "not an integer" in ad.problems[0]


@pytest.mark.parametrize("case", [c for c in CASES if c != "StartTransaction stamped 9999-12-31"])
def test_strict_raises_input_error(case):
    ad, tx = _adapter(strict=True)
    with pytest.raises(lo.InputError):
        CASES[case](ad, tx)


def test_strict_far_future_start_raises():
    ad, tx = _adapter(strict=True)
    ad.on_stop_transaction("A", {"transactionId": tx, "meterStop": 0, "timestamp": _iso(T0)})
    with pytest.raises(lo.InputError, match="future"):
        ad.on_start_transaction(
            "A",
            {"connectorId": 1, "meterStart": 0, "idTag": "z", "timestamp": "9999-12-31T23:59:59Z"},
        )


def test_step_with_a_naive_time_is_an_input_error():
    """A naive ``now`` was read as the host's local time (``astimezone``): on a host not in UTC
    the plan, its DR periods and tariffs ran hours off, silently. Now an InputError, as
    ``Controller.step`` gives, and nothing changes."""
    ad, _ = _adapter()
    with pytest.raises(lo.InputError, match="naive"):
        ad.step(T0.replace(tzinfo=None))
    assert ad.last_schedule is None
    ad.step(T0)
    assert ad.last_schedule is not None


def test_the_belief_clock_rejects_a_naive_time_with_an_input_error():
    """``ocpp.belief.epoch_s`` (the adapter's clock arithmetic) raises from the one error family:
    a naive timestamp has no instant, so it is an InputError naming the value, never read as the
    host's local time."""
    from loadopt.ocpp.belief import epoch_s

    with pytest.raises(lo.InputError, match="timezone-aware"):
        epoch_s(T0.replace(tzinfo=None))
    with pytest.raises(lo.InputError, match="timezone-aware"):
        epoch_s("2026-01-01T00:00:00Z")  # type: ignore[arg-type]
    assert epoch_s(T0) == T0.timestamp()
