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

from loadopt.ocpp import held_from_payload

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
