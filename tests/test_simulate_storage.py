"""The simulator replays storage: V2G vehicles follow their limit and discharge setpoint, a
stationary battery follows the plan, energy states tracked with the efficiencies.

The energy states are re-derived here from the raw objects (EVSE voltage and phases, the site
voltage, the V2X and battery parameters), not from the library's storage arrays.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loadopt as lo
from loadopt.errors import InputError
from loadopt.session import V2xParameters
from loadopt.simulate import simulate, simulation_table
from loadopt.site import Battery

from .conftest import examples
from .test_storage import v2g_and_two_site

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DT_H = 0.25


def at(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def _scenario(*, battery: bool = True, eta: float = 0.9) -> lo.Scenario:
    price = tuple(lo.SeriesPoint(start=at(h), value=v) for h, v in ((0, 0.1), (2, 1.0), (3, 0.1)))
    bats = (
        Battery(
            id="bat",
            node="grid",
            capacity_kwh=20.0,
            soc=0.5,
            min_soc=0.2,
            max_soc=0.9,
            max_charge_kw=8.0,
            max_discharge_kw=8.0,
            charge_efficiency=eta,
            discharge_efficiency=eta,
        ),
    )
    site = lo.Site(
        nodes=(lo.Node(id="grid", max_current=63.0),),
        evses=(
            lo.Evse(
                id="e1", node="grid", charge_point_id="CP1", max_current=16.0, bidirectional=True
            ),
            lo.Evse(id="e2", node="grid", charge_point_id="CP2", max_current=16.0),
        ),
        batteries=bats if battery else (),
    )
    v2x = V2xParameters(
        min_v2x_energy_kwh=-4.0,
        max_v2x_energy_kwh=40.0,
        max_discharge_current=16.0,
        charge_efficiency=eta,
        discharge_efficiency=eta,
    )
    sessions = (
        lo.Session(id="van", evse="e1", arrival=T0, departure=at(6), energy_kwh=15.0, v2x=v2x),
        lo.Session(id="car", evse="e2", arrival=at(1), departure=at(5), energy_kwh=10.0),
    )
    return lo.Scenario(
        site=site,
        horizon=lo.Horizon(start=T0, step_s=900, n_periods=28),
        sessions=sessions,
        signals=lo.Signals(import_price=price, export_price=price),
    )


def _independent_soc(sc: lo.Scenario, r) -> tuple[np.ndarray, np.ndarray]:
    """Van energy (kWh since plug-in) and battery energy (kWh) at every period end, from the raw
    objects and the replayed currents."""
    van = sc.sessions[0]
    ev = sc.site.evse(van.evse)
    kw_van = ev.voltage_v * min(ev.phases, van.phases) / 1000.0
    i = r.schedule.problem.session_index("van")
    e_in = van.v2x.charge_efficiency * r.schedule.current[i] * kw_van * DT_H
    e_out = r.schedule.discharge[i] * kw_van * DT_H / van.v2x.discharge_efficiency
    van_e = np.cumsum(e_in - e_out)
    b = sc.site.batteries[0]
    kw = r.schedule.battery_a[0] * 3 * sc.site.voltage_v / 1000.0 * DT_H
    bat_e = b.soc * b.capacity_kwh + np.cumsum(
        b.charge_efficiency * np.maximum(kw, 0) - np.maximum(-kw, 0) / b.discharge_efficiency
    )
    return van_e, bat_e


def test_replay_discharges_v2g_at_the_peak_and_keeps_every_energy_bound():
    sc = _scenario()
    r = simulate(sc, "controller", horizon_h=7.0)
    assert r.n_violations == 0
    r.schedule.check()  # both directions, energy floors and ceilings, on the true problem
    i = r.schedule.problem.session_index("van")
    dis = r.schedule.discharge[i]
    assert dis[8:12].sum() > 0  # gives back at the price peak (2 h .. 3 h)
    assert not dis[:8].any() and not dis[12:].any()
    assert not (dis * r.schedule.current[i]).any()  # never both at once
    van_e, bat_e = _independent_soc(sc, r)
    v = sc.sessions[0].v2x
    assert van_e.min() >= v.min_v2x_energy_kwh - 1e-6
    assert van_e.max() <= v.max_v2x_energy_kwh + 1e-6
    assert van_e[-1] == pytest.approx(15.0, abs=0.3)  # departs at its target
    b = sc.site.batteries[0]
    assert bat_e.min() >= b.min_soc * b.capacity_kwh - 1e-6
    assert bat_e.max() <= b.max_soc * b.capacity_kwh + 1e-6
    # what the simulator recorded is what the efficiencies say
    np.testing.assert_allclose(r.soc_kwh[0, 1:], van_e, atol=1e-6)
    np.testing.assert_allclose(r.soc_kwh[1, 1:], bat_e, atol=1e-6)
    np.testing.assert_allclose(r.soc_kwh, r.schedule.soc_kwh, atol=1e-6)
    # the battery works the peak too: it discharges there and charges at the cheap price
    assert (r.schedule.battery_a[0, 8:12] < 0).any()
    k = r.kpis
    assert k.sessions[1].delivered_kwh >= 0.99 * 10.0  # the charge-only car (tapering) too
    st = k.storage
    assert st.v2g_discharged_kwh == pytest.approx(dis.sum() * 230.0 * 3 / 1000.0 * DT_H, rel=1e-9)
    assert st.battery_discharged_kwh > 0
    assert st.battery_cycles[0] > 0
    assert st.revenue > 0
    assert "energy discharged" in simulation_table([r])


def test_baselines_keep_charging_only_and_controller_beats_them_on_cost():
    sc = _scenario()
    res = lo.simulate.compare(sc, ("edf",), horizon_h=7.0)
    ctl, edf = res
    assert edf.schedule.discharge is None or not edf.schedule.discharge.any()
    assert edf.schedule.battery_a is None or not edf.schedule.battery_a.any()
    assert edf.n_violations == 0 and ctl.n_violations == 0
    assert edf.kpis.storage.discharged_kwh == 0
    assert ctl.kpis.energy_cost < edf.kpis.energy_cost
    # the battery holds its state under a baseline
    np.testing.assert_allclose(edf.soc_kwh[1], 10.0)


def test_a_battery_at_its_floor_is_never_driven_below_it():
    """A plan asking for more than the battery holds is cut to what is above its floor."""
    sc = _scenario()
    b = sc.site.batteries[0].model_copy(update={"soc": 0.2})
    sc = sc.model_copy(update={"site": sc.site.model_copy(update={"batteries": (b,)})})
    r = simulate(sc, "controller", horizon_h=7.0)
    assert r.n_violations == 0
    _, bat_e = _independent_soc(sc, r)
    assert bat_e.min() >= 0.2 * 20.0 - 1e-6
    assert r.soc_kwh[1].min() >= 4.0 - 1e-9


def test_set_battery_soc_validates():
    sc = _scenario()
    ctl = lo.Controller(sc.site, n_periods=4, step_s=900)
    ctl.set_battery_soc("bat", 0.3)
    assert ctl.site.batteries[0].soc == 0.3
    with pytest.raises(InputError, match="unknown battery 'nope'"):
        ctl.set_battery_soc("nope", 0.3)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InputError, match="battery 'bat'"):
            ctl.set_battery_soc("bat", bad)
    assert ctl.site.batteries[0].soc == 0.3


def test_replay_meets_a_dr_cap_with_discharge():
    """Two cars charging, a grid-operator cap of one car's full power for an hour: in the replay
    the V2G car discharges through the cap hour so the others keep charging; the DR KPI counts
    the energy discharged inside the window and the cap is met."""
    kw_a3 = 3 * 230.0 / 1000.0
    site = v2g_and_two_site()
    v2x = V2xParameters(min_v2x_energy_kwh=-15.0, max_v2x_energy_kwh=30.0)
    ss = [lo.Session(id="v", evse="e0", arrival=T0, departure=at(5), energy_kwh=0.0, v2x=v2x)]
    ss += [
        lo.Session(id=f"c{k}", evse=f"e{k}", arrival=T0, departure=at(5), energy_kwh=40.0)
        for k in (1, 2)
    ]
    sc = lo.Scenario(
        site=site,
        horizon=lo.Horizon(start=T0, step_s=900, n_periods=20),
        sessions=tuple(ss),
        signals=lo.Signals(
            grid_signals=(lo.GridSignal(id="dr", start=at(1), end=at(2), import_cap_kw=16 * kw_a3),)
        ),
    )
    ctl, edf = lo.simulate.compare(sc, ("edf",), horizon_h=5.0)
    assert ctl.n_violations == 0 and edf.n_violations == 0
    dr = ctl.kpis.demand_response[0]
    assert dr.compliant
    dis = ctl.schedule.discharge[ctl.schedule.problem.session_index("v")]
    assert (
        dr.discharged_kwh == pytest.approx(dis[4:8].sum() * kw_a3 * DT_H) and dr.discharged_kwh > 0
    )
    assert edf.kpis.demand_response[0].discharged_kwh == 0
    # with the discharge the two cars get more than the cap alone would let them have
    cars = lambda r: sum(s.delivered_kwh for s in r.kpis.sessions[1:])  # noqa: E731
    assert cars(ctl) > cars(edf)
    assert ctl.soc_kwh[0].min() >= -15.0 - 1e-9  # its V2X floor
    assert ctl.soc_kwh[0, -1] == pytest.approx(0.0, abs=0.3)  # given back what it lent


@settings(max_examples=examples(6), deadline=None)
@given(
    eta=st.floats(0.8, 1.0),
    soc=st.floats(0.0, 1.0),
    floor=st.floats(-10.0, 0.0),
    peak=st.integers(1, 9),
    noise=st.sampled_from([0.0, 0.3]),
)
def test_replay_keeps_every_limit_and_energy_bound(eta, soc, floor, peak, noise):
    """Random efficiencies, battery state, V2X floor, price peak and vehicle noise: 0 violations
    both ways, and the energy states re-derived from the raw objects stay in their bounds and
    equal what the simulator recorded."""
    sc = _scenario(eta=eta)
    b = sc.site.batteries[0]
    b = b.model_copy(update={"soc": float(np.clip(soc, b.min_soc, b.max_soc))})
    van = sc.sessions[0]
    v = van.v2x.model_copy(update={"min_v2x_energy_kwh": floor})
    price = (
        lo.SeriesPoint(start=at(0), value=0.1),
        lo.SeriesPoint(start=at(peak * 0.25), value=1.0),
        lo.SeriesPoint(start=at(peak * 0.25 + 1), value=0.1),
    )
    sc = sc.model_copy(
        update={
            "site": sc.site.model_copy(update={"batteries": (b,)}),
            "sessions": (van.model_copy(update={"v2x": v}), *sc.sessions[1:]),
            "signals": lo.Signals(import_price=price, export_price=price),
            "horizon": lo.Horizon(start=T0, step_s=900, n_periods=16),
        }
    )
    r = simulate(sc, "controller", horizon_h=4.0, noise=noise, seed=3)
    assert r.n_violations == 0
    van_e, bat_e = _independent_soc(sc, r)
    assert van_e.min() >= floor - 1e-6 and van_e.max() <= v.max_v2x_energy_kwh + 1e-6
    assert b.min_soc * 20.0 - 1e-6 <= bat_e.min() and bat_e.max() <= b.max_soc * 20.0 + 1e-6
    np.testing.assert_allclose(r.soc_kwh[:, 1:], np.vstack([van_e, bat_e]), atol=1e-6)


def test_a_van_arriving_below_its_v2x_minimum_charges_to_it_then_may_discharge():
    """ISO 15118-20: a positive evMinV2XEnergyRequest means the van must be charged to it first.
    The replay follows its setpoints once it is above the minimum (it used to be replayed and
    scored as a charge-only vehicle: it never gave back), scores it with its true floor, and
    feeds the export register back to the controller."""
    sc = _scenario(battery=False, eta=1.0)
    van = sc.sessions[0]
    v2x = van.v2x.model_copy(update={"min_v2x_energy_kwh": 3.0})
    sc = sc.model_copy(update={"sessions": (van.model_copy(update={"v2x": v2x}), *sc.sessions[1:])})
    r = simulate(sc, "controller", horizon_h=7.0)
    assert r.n_violations == 0
    r.schedule.check()
    i = r.schedule.problem.session_index("van")
    dis = r.schedule.discharge[i]
    assert dis[8:12].sum() > 0  # it gives back at the peak, once above its minimum
    ev = sc.site.evse(van.evse)
    kw = ev.voltage_v * min(ev.phases, van.phases) / 1000.0
    e = np.cumsum((r.schedule.current[i] - dis) * kw * DT_H)
    gave = np.flatnonzero(dis > 0)
    assert (e[gave] >= 3.0 - 1e-6).all()  # never below its V2X minimum after giving
    assert (e[: gave[0]] >= 0).all() and e[gave[0] - 1] >= 3.0  # charged to it first
    assert e[-1] == pytest.approx(15.0, abs=0.3)
