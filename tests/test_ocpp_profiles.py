"""Schedule → SetChargingProfile payloads: schema validity, numbers, merging, safety."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.exceptions import FormatViolationError

import loadopt as lo
from loadopt.ocpp import (
    ProfileIds,
    build_profiles,
    clear_payload,
    merge_periods,
    set_charging_profiles,
    to_payload,
    tx_profiles,
    validate,
)
from loadopt.ocpp.merge import value_at
from loadopt.schedule import Schedule, ScheduleStatus

from .ocpp_helpers import (
    T0,
    random_schedule,
    sessions,
    site,
    site_excess,
    station_cap_violations,
    stations_holding,
    validate_all,
    worst_case_violations,
)

VERSIONS = ("1.6", "2.0.1", "2.1")


def _tx_ids(schedule):
    return {sid: int(sid) for sid in schedule.problem.session_ids}


def _one_session_schedule(
    values, phases=3, rate_unit="A", max_periods=24, voltage=230.0, switch=False, n_phases=None
):
    s = lo.Site(
        nodes=(lo.Node(id="g", max_current=80.0),),
        evses=(
            lo.Evse(
                id="e",
                node="g",
                charge_point_id="CP",
                connector_id=2,
                phases=phases,
                rate_unit=rate_unit,
                max_periods=max_periods,
                voltage_v=voltage,
                phase_switching=switch,
            ),
        ),
    )
    sess = lo.Session(
        id="42",
        evse="e",
        arrival=T0 - timedelta(minutes=5),
        departure=T0 + timedelta(hours=len(values)),
        energy_kwh=50.0,
    )
    p = lo.compile_problem(s, [sess], lo.Horizon(start=T0, step_s=3600, n_periods=len(values)))
    return Schedule(
        p, np.array([values], dtype=float), ScheduleStatus.FEASIBLE, "test", n_phases=n_phases
    )


# ------------------------------------------------------------------------------ payload shape
@pytest.mark.parametrize("version", VERSIONS)
def test_every_payload_validates_against_the_official_schema(version):
    rng = np.random.default_rng(3)
    s = site()
    sch = random_schedule(s, sessions(s, 4, rng), rng)
    msgs = set_charging_profiles(
        sch, version, transaction_ids=_tx_ids(sch) if version == "1.6" else None
    )
    purposes = set()
    assert msgs
    for cp, action, payload in msgs:
        validate(action, payload, version)
        body = payload.get("csChargingProfiles") or payload["chargingProfile"]
        purposes.add(body["chargingProfilePurpose"])
        sched = body["chargingSchedule"]
        sched = sched if version == "1.6" else sched[0]
        starts = [q["startPeriod"] for q in sched["chargingSchedulePeriod"]]
        assert starts[0] == 0 and all(b > a for a, b in itertools.pairwise(starts))
        assert body["chargingProfileKind"] == "Absolute"
        assert cp.startswith("CP")
    assert purposes == {
        "ChargePointMaxProfile" if version == "1.6" else "ChargingStationMaxProfile",
        "TxDefaultProfile",
        "TxProfile",
    }
    for purpose in ("tx", "tx_default", "station_max"):
        validate("ClearChargingProfile", clear_payload(version, purpose, 1), version)


def test_1_6_txprofile_fields_exact():
    sch = _one_session_schedule([16.0, 16.0, 8.1, 0.0])
    [msg] = set_charging_profiles(
        sch, "1.6", transaction_ids={"42": 42}, station_max=False, tx_default=False
    )
    cp, action, payload = msg
    assert (cp, action) == ("CP", "SetChargingProfile")
    ids = ProfileIds()
    assert payload == {
        "connectorId": 2,
        "csChargingProfiles": {
            "chargingProfileId": ids.profile_id("tx", 2),
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "transactionId": 42,
            "validTo": "2026-03-02T12:00:00Z",
            "chargingSchedule": {
                "startSchedule": "2026-03-02T08:00:00Z",
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
                    {"startPeriod": 7200, "limit": 8.1, "numberPhases": 3},
                    {"startPeriod": 10800, "limit": 0.0, "numberPhases": 3},
                ],
                "minChargingRate": 6.0,
            },
        },
    }
    validate(action, payload, "1.6")
    assert '"limit":8.1' in json.dumps(payload, separators=(",", ":"))


def test_2x_txprofile_fields():
    sch = _one_session_schedule([10.0, 10.0])
    for v in ("2.0.1", "2.1"):
        [(_, _, pl)] = set_charging_profiles(sch, v, station_max=False, tx_default=False)
        prof = pl["chargingProfile"]
        assert pl["evseId"] == 2
        assert prof["transactionId"] == "42" and prof["id"] == prof["chargingSchedule"][0]["id"]
        assert prof["chargingSchedule"][0]["chargingSchedulePeriod"] == [
            {"startPeriod": 0, "limit": 10.0, "numberPhases": 3}
        ]
        validate("SetChargingProfile", pl, v)


def test_1_6_needs_an_integer_transaction_id():
    sch = _one_session_schedule([10.0])
    sch2 = Schedule(sch.problem, sch.current, sch.status, "t")
    prof = tx_profiles(sch2, transaction_ids={"42": "abc"})[0]
    with pytest.raises(lo.InputError, match=r"'42'.*integer transactionId"):
        to_payload(prof, "1.6")
    prof = tx_profiles(sch2, transaction_ids={"42": "x" * 37})[0]
    with pytest.raises(lo.InputError, match=r"1\.\.36"):
        to_payload(prof, "2.0.1")


@pytest.mark.parametrize("deci", [*range(0, 400), 801, 811, 1234, 3199])
def test_one_decimal_limits_pass_multiple_of(deci):
    """Every value on the 0.1 grid (binary floats included: 8.1, 0.3 …) passes 1.6's
    multipleOf 0.1 under the ocpp package's own Decimal validation."""
    sch = _one_session_schedule([deci / 10])
    [(_, a, pl)] = set_charging_profiles(
        sch, "1.6", transaction_ids={"42": 1}, station_max=False, tx_default=False
    )
    validate(a, pl, "1.6")


def test_off_grid_limit_would_fail_schema():
    """The validator is real: a limit with two decimals is rejected."""
    sch = _one_session_schedule([8.1])
    [(_, a, pl)] = set_charging_profiles(
        sch, "1.6", transaction_ids={"42": 1}, station_max=False, tx_default=False
    )
    pl["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] = 8.15
    with pytest.raises(FormatViolationError):
        validate(a, pl, "1.6")


def _tx_schedule(sch, v):
    """The validated chargingSchedule of the one TxProfile of ``sch`` for version ``v``."""
    [(_, a, pl)] = set_charging_profiles(
        sch, v, transaction_ids={"42": 1}, station_max=False, tx_default=False
    )
    validate(a, pl, v)
    body = pl.get("csChargingProfiles") or pl["chargingProfile"]
    return body["chargingSchedule"] if v == "1.6" else body["chargingSchedule"][0]


def test_watts_are_amps_times_volts_times_phases_rounded_down():
    sch = _one_session_schedule([16.1, 7.3], rate_unit="W", voltage=229.7)
    for v in VERSIONS:
        sched = _tx_schedule(sch, v)
        lims = [q["limit"] for q in sched["chargingSchedulePeriod"]]
        assert sched["chargingRateUnit"] == "W"
        if v == "1.6":
            # the car's phase count is unknown in 1.6: safe for a 1-phase car (issue 10 item 4)
            # 16.1 × 229.7 = 3698.17 → 3698.1 ; 7.3 × 229.7 = 1676.81 → 1676.8
            assert lims == [3698.1, 1676.8]
            assert sched["minChargingRate"] == 1378.2  # 6 × 229.7
        else:
            # 16.1 × 229.7 × 3 = 11094.51 → 11094.5 ; 7.3 × 229.7 × 3 = 5030.43 → 5030.4
            assert lims == [11094.5, 5030.4]
            assert sched["minChargingRate"] == 4134.6  # 6 × 229.7 × 3


def test_1_6_watts_never_overload_a_line_with_a_one_phase_car():
    """Issue 10 item 4: a 1-phase car under a 1.6 W limit on a 3-phase EVSE draws the whole
    power on one line; that line's current never exceeds the planned per-line limit."""
    for amps in (6.0, 10.4, 16.0, 31.9):
        sch = _one_session_schedule([amps], rate_unit="W", voltage=230.0)
        w = _tx_schedule(sch, "1.6")["chargingSchedulePeriod"][0]["limit"]
        assert w / 230.0 <= amps + 1e-9


def test_number_phases_and_phase_to_use():
    n_ph = np.array([[3, 1, 1]])
    sch = _one_session_schedule([16.0, 16.0, 10.0], switch=True, n_phases=n_ph)
    for v in VERSIONS:
        sched = _tx_schedule(sch, v)
        per = sched["chargingSchedulePeriod"]
        assert [q["numberPhases"] for q in per] == [3, 1, 1]
        assert [q.get("phaseToUse") for q in per] == ([None] * 3 if v == "1.6" else [None, 1, 1])


def test_2_1_per_phase_limits_for_unbalanced_allowances():
    """A feeder with 40/25/30 A per phase gives a station default that differs per line."""
    s = lo.Site(
        nodes=(lo.Node(id="g", max_current=(40.0, 25.0, 30.0)),),
        evses=(lo.Evse(id="e", node="g", charge_point_id="CP"),),
    )
    p = lo.compile_problem(s, [], lo.Horizon(start=T0, step_s=900, n_periods=4))
    sch = Schedule(p, np.zeros((0, 4)), ScheduleStatus.FEASIBLE, "t")
    msgs = set_charging_profiles(sch, "2.1")
    validate_all(msgs, "2.1")
    dflt = next(
        pl
        for _, _, pl in msgs
        if pl["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"
    )
    per = dflt["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    assert (per["limit"], per["limit_L2"], per["limit_L3"]) == (32.0, 25.0, 30.0)  # EVSE max 32
    old = set_charging_profiles(sch, "2.0.1")
    validate_all(old, "2.0.1")
    dflt = next(
        pl
        for _, _, pl in old
        if pl["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"
    )
    assert (
        dflt["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 25.0
    )


# ------------------------------------------------------------------------------ merging
def test_merge_equal_neighbours_and_to_max_periods():
    starts = np.arange(6) * 100
    lim = np.repeat(np.array([[160], [160], [80], [90], [90], [0]]), 3, axis=1)
    s, lm, _ph = merge_periods(starts, lim, np.full(6, 3), 24, 600)
    assert s.tolist() == [0, 200, 300, 500] and lm[:, 0].tolist() == [160, 80, 90, 0]
    s, lm, _ = merge_periods(starts, lim, np.full(6, 3), 3, 600)
    assert s.tolist() == [0, 200, 500] and lm[:, 0].tolist() == [160, 80, 0]  # 80|90 → 80
    s, lm, _ = merge_periods(starts, lim, np.full(6, 3), 1, 600)
    assert s.tolist() == [0] and lm[:, 0].tolist() == [0]


@st.composite
def _step_function(draw):
    k = draw(st.integers(1, 30))
    durs = draw(st.lists(st.integers(1, 5000), min_size=k, max_size=k))
    starts = np.concatenate(([0], np.cumsum(durs)[:-1]))
    vals = draw(st.lists(st.integers(0, 320), min_size=k, max_size=k))
    lim = (
        np.array(vals)[:, None]
        + np.array(draw(st.lists(st.integers(-5, 5), min_size=3, max_size=3)))[None, :]
    )
    phases = np.array(draw(st.lists(st.sampled_from([1, 3]), min_size=k, max_size=k)))
    return starts, np.maximum(lim, 0), phases, int(np.sum(durs))


@settings(derandomize=True, deadline=None, max_examples=300)
@given(_step_function(), st.integers(1, 12))
def test_merging_never_raises_a_limit(fn, max_periods):
    starts, lim, phases, end = fn
    s, lm, ph = merge_periods(starts, lim, phases, max_periods, end)
    assert s.size <= max_periods and s[0] == 0 and np.all(np.diff(s) > 0)
    t = np.union1d(starts, s)
    assert np.all(value_at(s, lm, t) <= value_at(starts, lim, t))
    assert np.all(value_at(s, ph, t) <= value_at(starts, phases, t))


# ------------------------------------------------------------------------------ safety
@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    st.integers(0, 10_000),
    st.integers(0, 6),
    st.sampled_from([1, 2, 5, 24]),
    st.sampled_from([None, 30.0, 8.0]),
    st.sampled_from([None, "grid", "f1", "f2"]),
    st.sampled_from([0.0, 4.0]),
)
def test_limit_in_force_never_above_schedule_and_defaults_keep_limits(
    seed, n_sess, maxp, grid_kw, base_node, base_kw
):
    """At every instant, a TxProfile's limit ≤ the schedule's; TxDefault newcomers on every idle
    EVSE plus the schedule, and every station at its cap, keep every site limit (with the
    base load on any node)."""
    rng = np.random.default_rng(seed)
    s = site(grid_kw=grid_kw, max_periods=(maxp, 3)).model_copy(
        update={"base_load_node": base_node}
    )
    sch = random_schedule(
        s, sessions(s, n_sess, rng), rng, n=8, signals=lo.Signals(base_load_kw=base_kw)
    )
    profs = build_profiles(sch, transaction_ids=_tx_ids(sch))
    p = sch.problem
    step = p.horizon.step_s
    for pr in profs:
        if pr.purpose != "tx":
            continue
        i = p.session_index(pr.session_id)
        t = np.union1d(pr.starts, np.arange(p.n_periods) * step)
        held = value_at(pr.starts, pr.limits, t)  # (K, 3) deci-amps
        want = np.floor(sch.current[i, np.minimum(t // step, p.n_periods - 1)] * 10 + 1e-6)
        assert np.all(held <= want[:, None]), pr.session_id
        ev = s.evse(p.sessions[i].evse)
        assert pr.starts.size <= ev.max_periods
    assert worst_case_violations(sch, profs) == []
    assert station_cap_violations(sch, profs) == []
    # the same judged from the wire alone (tests/ocpp_helpers.SimStation, raw site objects): each
    # station holds its payloads, a car runs each planned transaction on its own phases, a car
    # of any phases may plug into every idle EVSE (its TxDefault); every instant of the horizon
    busy = {
        (s.evse(x.evse).charge_point_id, s.evse(x.evse).connector_id): (
            int(x.id),
            min(x.phases, s.evse(x.evse).phases),
        )
        for x in p.sessions
        if x.arrival <= p.horizon.start < x.departure
    }
    t0 = p.horizon.start.timestamp()
    instants = {t0 + k * step for k in range(p.n_periods)}
    for pr in profs:
        instants.update(t0 + pr.starts[pr.starts < p.n_periods * step])
    for v in VERSIONS:
        wire = []
        for pr in profs:
            validate("SetChargingProfile", to_payload(pr, v), v)
            if pr.purpose != "station_max":  # (the simulated station has no station cap)
                wire.append((pr.charge_point_id, to_payload(pr, v)))
        sims = stations_holding(s, wire, v, busy)
        for t in sorted(instants):
            assert site_excess(s, sims, t, None, base_kw) == [], (v, t - t0)


def test_tx_default_shares_spare_among_idle_evses():
    """16 A breaker, 2 idle EVSEs, nothing scheduled: each newcomer may take 8 A (≥ 6 A)."""
    s = lo.Site(
        nodes=(lo.Node(id="g", max_current=16.0),),
        evses=tuple(
            lo.Evse(id=f"e{k}", node="g", charge_point_id="CP", connector_id=k) for k in (1, 2)
        ),
    )
    p = lo.compile_problem(s, [], lo.Horizon(start=T0, step_s=900, n_periods=4))
    sch = Schedule(p, np.zeros((0, 4)), ScheduleStatus.FEASIBLE, "t")
    profs = build_profiles(sch)
    d = {pr.connector: pr.limits[0, 0] for pr in profs if pr.purpose == "tx_default"}
    assert d == {1: 80, 2: 80}
    cap = next(pr for pr in profs if pr.purpose == "station_max")
    assert cap.limits[0].tolist() == [160, 160, 160]
    # 10 A breaker: 5 A each is below the 6 A minimum → 0 (no charging until scheduled)
    s2 = s.model_copy(update={"nodes": (lo.Node(id="g", max_current=10.0),)})
    p2 = lo.compile_problem(s2, [], lo.Horizon(start=T0, step_s=900, n_periods=4))
    sch2 = Schedule(p2, np.zeros((0, 4)), ScheduleStatus.FEASIBLE, "t")
    d2 = {
        pr.connector: pr.limits[0, 0] for pr in build_profiles(sch2) if pr.purpose == "tx_default"
    }
    assert d2 == {1: 0, 2: 0}


def test_w_limits_without_a_known_car_are_safe_for_a_one_phase_car():
    """2.x TxDefault and station caps in W on a 3-phase EVSE: no car is known yet, so the W
    limit is per-line A × V × 1 (a 1-phase newcomer may put it all on one line); a 2.x
    TxProfile keeps A × V × numberPhases."""
    from datetime import UTC, datetime, timedelta

    import loadopt as lo
    from loadopt.ocpp import build_profiles, to_payload

    t0 = datetime(2026, 5, 4, 8, tzinfo=UTC)
    site = lo.Site(
        nodes=(lo.Node(id="g", max_current=20.0),),
        evses=(
            lo.Evse(id="a", node="g", charge_point_id="A", rate_unit="W"),
            lo.Evse(id="b", node="g", charge_point_id="B", rate_unit="W"),
        ),
    )
    sess = [
        lo.Session(id="s", evse="b", arrival=t0, departure=t0 + timedelta(hours=4), energy_kwh=30.0)
    ]
    sched = lo.solve(lo.compile_problem(site, sess, lo.Horizon(start=t0, n_periods=4)))
    for prof in build_profiles(sched, transaction_ids={"s": "tx-1"}):
        lines_a = prof.limits[:, :3].max(axis=1) / 10.0
        pay = to_payload(prof, "2.0.1")
        periods = pay["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
        watts = [p["limit"] for p in periods]
        per_line = [a * 230.0 for a in lines_a]
        if prof.purpose == "tx":
            assert any(w > pl + 1e-6 for w, pl in zip(watts, per_line, strict=True))
        else:  # never more power than one line may carry
            assert all(w <= pl + 1e-6 for w, pl in zip(watts, per_line, strict=True)), prof.purpose
