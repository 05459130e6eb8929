"""OCPP external constraints (NotifyChargingLimit, ReportChargingProfiles) as grid signals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import loadopt as lo
from loadopt.grid.ocpp_constraints import (
    ids_above,
    notify_charging_limit,
    report_charging_profiles,
    source_of,
    station_node,
)
from loadopt.ocpp.ids import ProfileIds

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def site() -> lo.Site:
    """grid → two panels; station CP1 has EVSE 1 on p1 and EVSE 2 on p2, CP2 one EVSE on p2."""
    return lo.Site(
        nodes=(
            lo.Node(id="grid"),
            lo.Node(id="p1", parent="grid"),
            lo.Node(id="p2", parent="grid"),
        ),
        evses=(
            lo.Evse(id="a", node="p1", charge_point_id="CP1", connector_id=1),
            lo.Evse(id="b", node="p2", charge_point_id="CP1", connector_id=2),
            lo.Evse(id="c", node="p2", charge_point_id="CP2", connector_id=1),
        ),
    )


def test_station_node():
    assert station_node(site(), "CP1", 1) == "p1"
    assert station_node(site(), "CP1", None) == "grid"
    assert station_node(site(), "CP2", 0) == "p2"
    with pytest.raises(lo.InputError, match="unknown charging station"):
        station_node(site(), "CPX", None)
    with pytest.raises(lo.InputError, match="EVSE 5"):
        station_node(site(), "CP1", 5)


def test_notify_charging_limit_amps_become_a_current_cap_on_the_evse_node():
    payload = {
        "chargingLimit": {"chargingLimitSource": "SO", "isGridCritical": True},
        "evseId": 1,
        "chargingSchedule": [
            {
                "id": 7,
                "chargingRateUnit": "A",
                "startSchedule": "2026-03-02T08:00:00Z",
                "duration": 7200,
                "chargingSchedulePeriod": [
                    {"startPeriod": 3600, "limit": 10.0},
                    {"startPeriod": 0, "limit": 16.0},
                ],
            }
        ],
    }
    a, b = notify_charging_limit(site(), "CP1", payload, received_at=T0)
    assert (a.current_cap_a, a.start, a.end) == (16.0, T0, T0 + timedelta(hours=1))
    assert (b.current_cap_a, b.end) == (10.0, T0 + timedelta(hours=2))
    assert a.node == "p1" and a.source == source_of("CP1") and a.ref == "SO:7"
    assert a.priority == 100
    sess = [
        lo.Session(
            id="s", evse="a", arrival=T0, departure=T0 + timedelta(hours=3), energy_kwh=100.0
        )
    ]
    signals = lo.Signals().with_grid_signals(source_of("CP1"), (a, b))
    p = lo.compile_problem(site(), sess, lo.Horizon(start=T0, step_s=3600, n_periods=3), signals)
    sched = lo.solve(p)
    sched.check()
    np.testing.assert_allclose(sched.current[0], [16.0, 10.0, 32.0])
    assert all(d.compliant for d in sched.kpis().demand_response)


def test_watts_snake_case_station_wide_open_ended():
    payload = {
        "charging_limit": {"charging_limit_source": "EMS"},
        "charging_schedule": [
            {
                "id": 1,
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 11000}],
            }
        ],
    }
    (s,) = notify_charging_limit(site(), "CP1", payload, received_at=T0)
    assert s.import_cap_kw == 11.0 and s.node == "grid" and s.start == T0
    assert s.end - s.start == timedelta(days=365)
    assert (
        notify_charging_limit(
            site(), "CP1", {"chargingLimit": {"chargingLimitSource": "EMS"}}, received_at=T0
        )
        == ()
    )


def test_report_charging_profiles_keeps_only_external_constraints():
    sched = {
        "id": 3,
        "chargingRateUnit": "A",
        "startSchedule": "2026-03-02T08:00:00+00:00",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20}],
    }
    payload = {
        "requestId": 1,
        "chargingLimitSource": "CSO",
        "evseId": 0,
        "chargingProfile": [
            {
                "id": 3,
                "stackLevel": 0,
                "chargingProfilePurpose": "ChargingStationExternalConstraints",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [sched],
            },
            {
                "id": 700001,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [sched],
            },
        ],
    }
    (s,) = report_charging_profiles(site(), "CP2", payload, received_at=T0)
    assert s.current_cap_a == 20 and s.node == "p2" and s.ref == "CSO:3"


@pytest.mark.parametrize(
    "bad, match",
    [
        (
            {"chargingRateUnit": "kW", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1}]},
            "chargingRateUnit",
        ),
        ({"chargingRateUnit": "A", "chargingSchedulePeriod": []}, "no chargingSchedulePeriod"),
        ({"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0}]}, "numeric"),
        (
            {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": -1}]},
            "limit",
        ),
        (
            {
                "chargingRateUnit": "A",
                "startSchedule": "yesterday",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1}],
            },
            "timestamp",
        ),
    ],
)
def test_bad_schedules_are_named_errors(bad, match):
    with pytest.raises(lo.InputError, match=match):
        notify_charging_limit(
            site(), "CP1", {"chargingLimit": {}, "chargingSchedule": [bad]}, received_at=T0
        )


def test_profile_ids_stay_above_max_external_constraints_id():
    ids = ProfileIds()
    assert ids_above(ids, 1000) is ids
    moved = ids_above(ids, 700_000)
    assert moved.base == 701_000
    assert (
        min(
            moved.profile_id(p, c)
            for p in ("station_max", "tx_default", "tx")
            for c in (0, 1, 9999)
        )
        > 700_000
    )
    with pytest.raises(lo.InputError, match="no room"):
        ids_above(ids, 2**31 - 10)


def test_csms_adapter_hook_caps_the_station_and_clears_it():
    from loadopt.ocpp.adapter import CsmsAdapter

    ctl = lo.Controller(site(), step_s=900, n_periods=4)
    ad = CsmsAdapter(ctl)
    ad.on_boot_notification("CP1", "2.0.1")
    payload = {
        "chargingLimit": {"chargingLimitSource": "SO"},
        "evseId": 1,
        "chargingSchedule": [
            {
                "id": 7,
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}],
            }
        ],
    }
    assert ad.on_notify_charging_limit("CP1", payload)
    (g,) = ctl.signals.grid_signals
    assert g.current_cap_a == 10.0 and g.node == "p1" and g.source == source_of("CP1")
    assert not ad.on_notify_charging_limit("CPX", payload)  # unknown station: logged, skipped
    bad = {"chargingLimit": {}, "chargingSchedule": [{"chargingRateUnit": "kW"}]}
    assert not ad.on_notify_charging_limit("CP1", bad) and ad.problems
    assert ctl.signals.grid_signals == (g,)  # nothing half-applied
    assert ad.on_cleared_charging_limit("CP1", {"chargingLimitSource": "SO"})
    assert ctl.signals.grid_signals == ()
    # OCPP 2.1 MaxExternalConstraintsId moves loadopt's ids above it
    ad.on_get_variables(
        "CP1",
        {
            "getVariableResult": [
                {
                    "attributeStatus": "Accepted",
                    "attributeValue": "800000",
                    "component": {"name": "SmartChargingCtrlr"},
                    "variable": {"name": "MaxExternalConstraintsId"},
                }
            ]
        },
    )
    assert ad.ids.profile_id("station_max", 0) > 800_000


def _cap_at(signals, t: datetime) -> float | None:
    """The tightest current cap of ``signals`` in force at ``t`` (None: no cap)."""
    caps = [s.current_cap_a for s in signals if s.start <= t < s.end]
    return min(caps) if caps else None


def _recurring_report(kind: str, recurrency: str | None, duration: int | None = None) -> dict:
    sched = {
        "id": 9,
        "chargingRateUnit": "A",
        "startSchedule": "2026-03-01T00:00:00+00:00",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 10},
            {"startPeriod": 8 * 3600, "limit": 32},
        ],
    }
    if duration is not None:
        sched["duration"] = duration
    prof = {
        "id": 9,
        "stackLevel": 0,
        "chargingProfilePurpose": "ChargingStationExternalConstraints",
        "chargingProfileKind": kind,
        "chargingSchedule": [sched],
    }
    if recurrency is not None:
        prof["recurrencyKind"] = recurrency
    return {"requestId": 1, "chargingLimitSource": "SO", "evseId": 0, "chargingProfile": [prof]}


def test_a_daily_recurring_external_constraint_repeats_every_night():
    """A grid operator's daily limit (10 A from midnight, 32 A from 08:00) reported as a
    Recurring profile: it was laid out once, so from the first 08:00 on the station was planned
    at 32 A for a year — every following night above the 10 A it is held to. Now it repeats
    every day from the cycle running at receipt, and after the laid-out cycles the smallest
    limit holds (conservative)."""
    sig = report_charging_profiles(
        site(), "CP2", _recurring_report("Recurring", "Daily"), received_at=T0
    )
    day = timedelta(days=1)
    for d in range(0, 31):
        night, noon = T0 - timedelta(hours=5) + d * day, T0 + timedelta(hours=4) + d * day
        assert _cap_at(sig, night) == 10 and _cap_at(sig, noon) == 32, d
    assert _cap_at(sig, T0 + 40 * day) == 10  # beyond the laid-out cycles: the smallest limit
    assert _cap_at(sig, T0 - day) is None  # cycles before the one running at receipt: none
    assert len({s.id for s in sig}) == len(sig) and all(s.node == "p2" for s in sig)
    # a schedule shorter than its cycle leaves the rest of each day free
    short = report_charging_profiles(
        site(), "CP2", _recurring_report("Recurring", "Daily", duration=12 * 3600), received_at=T0
    )
    assert _cap_at(short, T0 + day + timedelta(hours=2)) == 32
    assert _cap_at(short, T0 + day + timedelta(hours=6)) is None
    # weekly: the same pattern one week apart, none in between beyond the schedule's periods
    weekly = report_charging_profiles(
        site(), "CP2", _recurring_report("Recurring", "Weekly"), received_at=T0
    )
    assert _cap_at(weekly, T0 + timedelta(days=5, hours=19)) == 10  # Sunday 2026-03-08 03:00
    assert _cap_at(weekly, T0 + timedelta(days=6, hours=17)) == 32  # Monday 01:00
    # an absolute profile is laid out once, as before
    once = report_charging_profiles(
        site(), "CP2", _recurring_report("Absolute", None), received_at=T0
    )
    assert _cap_at(once, T0 + day + timedelta(hours=-5)) == 32


@pytest.mark.parametrize(
    "recurrency, periods, match",
    [
        (None, None, "recurrencyKind"),
        ("Monthly", None, "recurrencyKind"),
        ("Daily", [{"startPeriod": 90_000, "limit": 5}], "beyond its daily cycle"),
    ],
)
def test_bad_recurring_profiles_are_named_errors(recurrency, periods, match):
    payload = _recurring_report("Recurring", recurrency)
    if periods is not None:
        payload["chargingProfile"][0]["chargingSchedule"][0]["chargingSchedulePeriod"] = periods
    with pytest.raises(lo.InputError, match=match):
        report_charging_profiles(site(), "CP2", payload, received_at=T0)
