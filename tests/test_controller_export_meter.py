"""``Controller.meter(exported_kwh=)``: the V2G export register (OCPP 2.1
``Energy.Active.Export.Register``) replaces the setpoint-based estimate of what a vehicle gave
back, without ever letting the V2X floor be overestimated."""

from __future__ import annotations

import pytest

import loadopt as lo
from loadopt.errors import InputError
from loadopt.session import V2xParameters

from .test_storage import _v2g_site, at, steps

KW_PER_A3 = 3 * 230.0 / 1000.0


def _controller():
    price = steps((0, 1.0), (2, 0.1))  # dear first: the van is told to give back at once
    ctl = lo.Controller(
        _v2g_site(),
        n_periods=16,
        step_s=900,
        signals=lo.Signals(import_price=price, export_price=price),
    )
    v2x = V2xParameters(min_v2x_energy_kwh=-6.0, max_v2x_energy_kwh=40.0)
    van = lo.Session(id="van", evse="e1", arrival=at(0), departure=at(4), energy_kwh=5.0, v2x=v2x)
    ctl.start_session(van)
    return ctl


def _floor(ctl, now) -> float:
    (s,) = [x for x in ctl.planned_sessions(now) if x.id == "van"]
    return s.v2x.min_v2x_energy_kwh


def test_export_reading_replaces_the_setpoint_estimate():
    ctl = _controller()
    s = ctl.step(at(0))
    d = s.discharge[s.problem.session_index("van"), 0]
    assert d > 0  # told to give back in the dear first hour
    told = d * KW_PER_A3 * 0.25
    # without a reading: the van is taken to have given all it was told (an upper bound)
    assert _floor(ctl, at(0.25)) == pytest.approx(-6.0 + told, abs=1e-6)
    # the register says it gave only 0.5 kWh: the floor is that far from its V2X minimum
    assert ctl.meter("van", at(0.25), exported_kwh=0.5)
    assert _floor(ctl, at(0.25)) == pytest.approx(-6.0 + 0.5, abs=1e-6)
    # and the estimate runs on from the reading at the setpoint in force
    assert _floor(ctl, at(0.5)) == pytest.approx(-6.0 + 0.5 + told, abs=1e-6)


def test_export_reading_is_cumulative_and_validated():
    ctl = _controller()
    ctl.step(at(0))
    assert ctl.meter("van", at(0.2), exported_kwh=1.0)
    assert not ctl.meter("van", at(0.25), exported_kwh=0.4)  # below the last: rejected
    assert "exported" in ctl.rejected_readings[-1].reason
    assert not ctl.meter("van", at(0.1), exported_kwh=2.0)  # older than the last: rejected
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(InputError, match=r"van.*exported_kwh"):
            ctl.meter("van", at(0.25), exported_kwh=bad)
    assert _floor(ctl, at(0.2)) == pytest.approx(-6.0 + 1.0, abs=1e-6)


def test_an_old_export_reading_only_lowers_the_estimate_within_what_was_possible():
    """A reading from before the last step: what followed it is bounded by the vehicle's
    maximum discharge current, so the estimate stays an upper bound."""
    ctl = _controller()
    ctl.step(at(0))
    ctl.step(at(0.25))  # folds the estimate up to 0.25 h
    est = _floor(ctl, at(0.25)) + 6.0  # what it is taken to have given (kWh)
    assert est > 0
    assert ctl.meter("van", at(0.2), exported_kwh=0.0)
    max_kw = 32.0 * KW_PER_A3  # the V2X default maximum discharge current, three phases
    assert _floor(ctl, at(0.25)) + 6.0 == pytest.approx(min(est, max_kw * 0.05), abs=1e-6)
