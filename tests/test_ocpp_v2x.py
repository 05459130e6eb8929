"""OCPP 2.1 V2G output: operation modes, their rules, the official 2.1 schemas; 1.6 / 2.0.1
stations never discharge."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo
from loadopt.errors import InputError
from loadopt.ocpp import held_from_payload, set_charging_profiles, to_payload, tx_profiles, validate
from loadopt.ocpp.v2x import discharging_sessions, period_dict, v2x_parameters, v2x_periods
from loadopt.session import V2xParameters

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _schedule(rate_unit="A", phases=3, max_periods=24, n=16):
    price = tuple(
        lo.SeriesPoint(start=T0 + timedelta(hours=h), value=v)
        for h, v in ((0, 0.1), (1, 1.0), (2, 0.1))
    )
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=63.0),),
        evses=(
            lo.Evse(
                id="e1",
                node="grid",
                charge_point_id="CP1",
                max_current=16.0,
                bidirectional=True,
                rate_unit=rate_unit,
                phases=phases,
                max_periods=max_periods,
            ),
            lo.Evse(id="e2", node="grid", charge_point_id="CP2"),
        ),
    )
    ss = [
        lo.Session(
            id="v1",
            evse="e1",
            arrival=T0,
            departure=T0 + timedelta(hours=4),
            energy_kwh=8.0,
            phases=phases,
            v2x=V2xParameters(min_v2x_energy_kwh=-10.0, max_v2x_energy_kwh=40.0),
        ),
        lo.Session(
            id="c2", evse="e2", arrival=T0, departure=T0 + timedelta(hours=4), energy_kwh=10.0
        ),
    ]
    hz = lo.Horizon(start=T0, step_s=900, n_periods=n)
    s = lo.solve(
        lo.compile_problem(site, ss, hz, lo.Signals(import_price=price, export_price=price))
    )
    s.check()
    assert discharging_sessions(s) == {"v1"}
    return s


def _tx(payloads, cp="CP1"):
    return next(
        pl
        for c, _, pl in payloads
        if c == cp and pl["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
    )


def _check_mode_rules(periods, rate_unit, phases):
    for d in periods:
        mode = d["operationMode"]
        vals = {k: v for k, v in d.items() if k.startswith(("limit", "setpoint", "discharge"))}
        if mode == "Idle":
            assert vals == {}
        elif mode == "ChargingOnly":
            assert d["limit"] > 0 and "setpoint" not in d and "dischargeLimit" not in d
        else:
            assert mode in ("CentralSetpoint", "ExternalLimits")
            for sfx in ("", "_L2", "_L3") if rate_unit == "A" and phases >= 2 else ("",):
                assert d["dischargeLimit" + sfx] <= 0 <= d["limit" + sfx]
                if mode == "CentralSetpoint":
                    assert d["dischargeLimit" + sfx] <= d["setpoint" + sfx] <= d["limit" + sfx]


@pytest.mark.parametrize(("unit", "phases"), [("A", 3), ("A", 1), ("W", 3), ("W", 1)])
def test_v2g_tx_profile_passes_the_official_2_1_schema_and_the_mode_rules(unit, phases):
    s = _schedule(unit, phases)
    out = set_charging_profiles(s, "2.1")
    for _, action, pl in out:
        validate(action, pl, "2.1")
    tx = _tx(out)
    sched = tx["chargingProfile"]["chargingSchedule"][0]
    periods = sched["chargingSchedulePeriod"]
    _check_mode_rules(periods, unit, phases)
    modes = [d["operationMode"] for d in periods]
    assert "CentralSetpoint" in modes and "ChargingOnly" in modes
    assert sched["duration"] == 16 * 900  # never outlives the plan
    # the setpoint is what the plan discharges, rounded toward zero, per phase in A
    k = modes.index("CentralSetpoint")
    t = periods[k]["startPeriod"] // 900
    amps = s.discharge[0, t]
    if unit == "A":
        assert periods[k]["setpoint"] == -amps
        if phases == 3:
            assert periods[k]["setpoint_L2"] == periods[k]["setpoint_L3"] == -amps
        else:
            assert "setpoint_L2" not in periods[k]
    else:
        assert periods[k]["setpoint"] == -np.floor(amps * 230.0 * phases * 10) / 10
    # the charge-only car keeps a plain limit
    assert all(
        "operationMode" not in d
        for d in _tx(out, "CP2")["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    )


def test_a_v2g_w_profile_for_a_car_of_unreported_phases_is_written_and_read_for_one_line():
    """A 3-phase V2G car whose phase count the station did not report may be a 1-phase one
    that takes or feeds a whole ``W`` value on L1: the TxProfile is written at A x 230 V x 1
    (not x 3), and a W profile written for three phases is believed to feed all of it on one
    line when the count is not known. Judged from the raw payload: W / 230 V."""
    s = _schedule("W", 3)
    prof = next(p for p in tx_profiles(s) if p.session_id == "v1")
    payload = to_payload(replace(prof, car_phases_known=False), "2.1")
    periods = payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert {d["operationMode"] for d in periods} >= {"CentralSetpoint", "ChargingOnly"}
    for d in periods:
        t = d["startPeriod"] // 900
        # on one line the raw W never exceeds what the plan gives a line (A per phase)
        assert d.get("limit", 0.0) / 230.0 <= s.current[0, t] + 1e-9
        assert -d.get("dischargeLimit", 0.0) / 230.0 <= s.discharge[0, t] + 1e-9
    k = next(i for i, d in enumerate(periods) if d["operationMode"] == "CentralSetpoint")
    amps = s.discharge[0, periods[k]["startPeriod"] // 900]
    assert periods[k]["setpoint"] == -np.floor(amps * 230.0 * 10) / 10
    # written for three phases (a car that reported three), read for one that did not
    written = to_payload(prof, "2.1")
    w_periods = written["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    held = held_from_payload(written, "2.1", 230.0, car_phases_known=False)
    assert held is not None and held.discharge_a is not None
    for d, row in zip(w_periods, held.discharge_a, strict=True):
        assert np.all(row >= -d.get("dischargeLimit", 0.0) / 230.0 - 1e-9)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_older_versions_never_discharge(version):
    s = _schedule()
    with pytest.raises(InputError, match="cannot discharge"):
        set_charging_profiles(s, version, transaction_ids={"v1": 1, "c2": 2})
    # a mapping that puts only the V2G station on 2.1 is fine
    out = set_charging_profiles(
        s,
        {"CP1": "2.1", "CP2": version},
        transaction_ids={"v1": "v1", "c2": 2 if version == "1.6" else "c2"},
    )
    for cp, action, pl in out:
        validate(action, pl, "2.1" if cp == "CP1" else version)


def test_too_many_changes_are_cut_with_an_idle_period():
    c = np.array([160, 0, 160, 0, 160, 0], dtype=np.int64)
    d = np.array([0, 100, 0, 100, 0, 100], dtype=np.int64)
    st, cc, dd = v2x_periods(c, d, np.arange(6) * 900, max_periods=3)
    assert st.tolist() == [0, 900, 1800]
    assert cc.tolist() == [160, 0, 0] and dd.tolist() == [0, 100, 0]  # idle from the cut
    s = _schedule(max_periods=2)
    periods = _tx(set_charging_profiles(s, "2.1"))["chargingProfile"]["chargingSchedule"][0][
        "chargingSchedulePeriod"
    ]
    assert len(periods) == 2 and periods[-1]["operationMode"] == "Idle"


def test_external_limits_mode_and_no_negative_zero():
    d = period_dict(0, 0, 123, 3, "A", 230.0, discharge_mode="limits")
    assert d["operationMode"] == "ExternalLimits" and "setpoint" not in d
    assert d["dischargeLimit"] == -12.3 and d["limit"] == 0.0
    assert str(d["limit"]) == "0.0"
    idle = period_dict(900, 0, 0, 1, "W", 230.0)
    assert idle == {"startPeriod": 900, "numberPhases": 1, "operationMode": "Idle"}


def test_v2x_parameters_from_notify_ev_charging_needs():
    needs = {
        "evseId": 1,
        "chargingNeeds": {
            "requestedEnergyTransfer": "AC_BPT",
            "controlMode": "DynamicControl",
            "v2xChargingParameters": {
                "evMinV2XEnergyRequest": -12000,
                "evMaxV2XEnergyRequest": 30000,
                "evTargetEnergyRequest": 20000,
                "maxDischargeCurrent": 16,
            },
        },
    }
    validate("NotifyEVChargingNeeds", needs, "2.1")
    v, target = v2x_parameters(needs["chargingNeeds"]["v2xChargingParameters"])
    assert (v.min_v2x_energy_kwh, v.max_v2x_energy_kwh, v.max_discharge_current) == (
        -12.0,
        30.0,
        16.0,
    )
    assert target == 20.0
    s = lo.Session(
        id="x", evse="e1", arrival=T0, departure=T0 + timedelta(hours=2), energy_kwh=target, v2x=v
    )
    assert s.v2x is v
    with pytest.raises(InputError, match="evMaxV2XEnergyRequest"):
        v2x_parameters({"evMinV2XEnergyRequest": -1000})
    v, _ = v2x_parameters(
        {"evMinV2XEnergyRequest": 0, "evMaxV2XEnergyRequest": 1000, "maxDischargePower": 6900}
    )
    assert v.max_discharge_current == pytest.approx(10.0)
    # over the EVSE's own branches: 6.9 kW is 30 A on one 230 V phase, 33.2 A on a 208 V pair
    par = {"evMinV2XEnergyRequest": 0, "evMaxV2XEnergyRequest": 1000, "maxDischargePower": 6900}
    assert v2x_parameters(par, voltage_v=230.0, phases=1)[0].max_discharge_current == 30.0
    v208, _ = v2x_parameters(par, voltage_v=208.0, phases=1)
    assert v208.max_discharge_current == pytest.approx(6900 / 208)
    with pytest.raises(InputError, match="positive voltage"):
        v2x_parameters(par, voltage_v=0.0)
