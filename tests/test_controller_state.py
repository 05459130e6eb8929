"""``Controller.to_state`` / ``Controller.from_state``: the controller's public state document
(what loadopt.fleet.state saves per site), and the energy estimate between meter readings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from loadopt import InputError, Session
from loadopt.controller import Controller
from loadopt.synthetic import make_site

T0 = datetime(2026, 6, 10, 8, tzinfo=UTC)


def _site():
    return make_site(
        6,
        evses_per_circuit=2,
        circuit_a=32.0,
        feeder_a=63.0,
        grid_a=40.0,
        transformer_kw=200.0,
        share_single_phase_evse=0.0,
        seed=1,
    )


def _sess(i, evse, hours=8.0, kwh=20.0, arrival=T0, **kw):
    return Session(
        id=f"s{i}",
        evse=evse,
        arrival=arrival,
        departure=arrival + timedelta(hours=hours),
        energy_kwh=kwh,
        **kw,
    )


def _busy_controller() -> Controller:
    c = Controller(
        _site(),
        step_s=900,
        n_periods=8,
        pilots=False,
        overdraw_tolerance_a=2.5,
        meter_max_age_s=7200.0,
        meter_max_lead_s=600.0,
        reshare_headroom_a=3.0,
        warm_min_mapped=0.7,
        warm_min_rows=250,
    )
    c.start_session(_sess(1, "evse0", kwh=30.0))
    c.start_session(_sess(2, "evse2", kwh=25.0, phases=1))
    c.step(T0)
    t1 = T0 + timedelta(minutes=15)
    c.meter("s1", t1, energy_kwh=2.0, current_a=6.0)  # under its limit: re-shared
    c.meter("s2", t1, current_a=(30.0, 0.0, 0.0))  # above its limit: budgeted (observed)
    c.expect_session(_sess(3, "evse4", arrival=T0 + timedelta(hours=2), kwh=10.0))
    c.reserve("evse5", 8.0, until=T0 + timedelta(hours=1), reason="silent station")
    c.step(t1)
    return c


def test_the_state_is_json_and_a_restored_controller_continues_the_same_plan():
    c = _busy_controller()
    doc = json.loads(json.dumps(c.to_state()))  # only JSON types
    r = Controller.from_state(doc)
    assert isinstance(r, Controller)
    for k in (
        "step_s",
        "n_periods",
        "pilots",
        "overdraw_tolerance_a",
        "meter_max_age_s",
        "meter_max_lead_s",
        "reshare_headroom_a",
        "warm_min_mapped",
        "warm_min_rows",
        "coarse_step_s",
    ):
        assert getattr(r, k) == getattr(c, k), k
    assert r.pilots is False  # a setting the state document did not keep before
    assert r.sessions == c.sessions and r.expected == c.expected
    assert r.reservations == c.reservations
    assert r._state == c._state and r._observed == c._observed and r._clock == c._clock
    t2 = T0 + timedelta(minutes=30)
    assert r.planned_sessions(t2) == c.planned_sessions(t2)
    a, b = c.step(t2), r.step(t2)
    assert b.objective == pytest.approx(a.objective, rel=1e-7)
    assert b.violations() == []
    assert r.to_state()["settings"] == c.to_state()["settings"]


def test_a_document_without_the_newer_settings_restores_their_defaults():
    c = _busy_controller()
    doc = c.to_state()
    for k in ("pilots", "overdraw_tolerance_a", "meter_max_age_s", "meter_max_lead_s"):
        del doc["settings"][k]
    r = Controller.from_state(doc)
    assert r.pilots is True and r.overdraw_tolerance_a == 1.0
    assert r.meter_max_age_s == 2 * r.step_s and r.sessions == c.sessions


def test_from_state_rejects_what_it_cannot_restore():
    c = _busy_controller()
    with pytest.raises(InputError, match="unknown controller setting"):
        Controller.from_state({**c.to_state(), "settings": {"step_s": 900, "speed": 3}})
    with pytest.raises(InputError, match="must be a mapping"):
        Controller.from_state([1, 2])  # type: ignore[arg-type]
    bad = c.to_state()
    bad["sessions"][0]["flux"] = 1
    with pytest.raises(InputError, match="unknown session state field"):
        Controller.from_state(bad)
    custom = Controller(_site(), planner=lambda p: __import__("loadopt").solve(p, "fast"))
    with pytest.raises(InputError, match="custom planner"):
        Controller.from_state(custom.to_state())
    again = Controller.from_state(custom.to_state(), planner=custom.planner)
    assert again.planner is custom.planner


def test_the_energy_estimate_uses_the_evse_voltage_and_the_phases_drawn():
    """Between readings the energy received is estimated at the measured current on the
    phases the car draws on (min(EVSE, vehicle)) at the EVSE's voltage."""
    site = _site()
    ev = site.evse("evse0")
    assert ev.phases == 3
    c = Controller(site, step_s=900, n_periods=8, reshare=False)
    c.start_session(_sess(1, "evse0", kwh=40.0, phases=1))
    c.step(T0)
    c.meter("s1", T0, energy_kwh=0.0, current_a=10.0)
    later = T0 + timedelta(hours=1)
    planned = c.planned_sessions(later)[0]
    limit = c._state["s1"].last_limit_a
    rate = min(10.0, limit)
    assert planned.energy_kwh == pytest.approx(40.0 - rate * ev.voltage_v * 1 / 1000.0)


def test_a_session_on_an_evse_the_replaced_site_lacks_is_an_input_error_naming_it():
    """``ctl.site`` replaced by a site without a busy EVSE: the next step says which EVSE is
    unknown (an InputError), also where re-sharing reads its step table first (was a KeyError)."""
    c = Controller(_site(), step_s=900, n_periods=8, pilots=False)
    c.start_session(_sess(1, "evse0"))
    c.step(T0)
    t1 = T0 + timedelta(minutes=15)
    c.meter("s1", t1, current_a=2.0)  # a reading after the limit: re-sharing looks at it
    site = c.site
    c.site = site.model_copy(update={"evses": tuple(e for e in site.evses if e.id != "evse0")})
    with pytest.raises(InputError, match="evse0"):
        c.step(t1)
